"""Where a process's first eager pass loses time, at Llama-3-8B's shape on one GPU (random init, bfloat16, WikiText-2
ids, windows of 4,096 every 2,048): every batch timed (synchronised), the first pass, then two more, in one process.
Prints JSON lines; run from the repository root with .bench/ made by benchmarks/prepare_gpu_inputs.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu_llama8b import load  # benchmarks/gpu_llama8b.py

from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.scoring import rolling


def main() -> None:
    tokens = torch.load(".bench/wikitext_ids.pt").long()
    windows = window_schedule(len(tokens), 4096, 2048)
    loaded, load_seconds = load(".bench/tokenizer")
    batches: list = []
    score_batch = rolling.score_batch

    def timed_batch(*args, **kwargs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        result = score_batch(*args, **kwargs)
        torch.cuda.synchronize()
        batches.append((tuple(args[1].shape), round(time.perf_counter() - started, 3)))
        return result

    rolling.score_batch = timed_batch
    print(json.dumps({"load_seconds": load_seconds, "fused_kernels": loaded.provenance.get("fused_kernels")}))
    for name in ("first", "second", "third"):
        batches.clear()
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            rolling.score_windows(loaded.model, tokens, windows, "auto" if name == "first" else 128)
        torch.cuda.synchronize()
        print(json.dumps({"pass": name, "seconds": time.perf_counter() - started, "batches": batches}), flush=True)


if __name__ == "__main__":
    main()
