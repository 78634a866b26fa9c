"""Perplexity speed: evalkit against the HF docs loop, same model, same tokens, one process; writes JSON.

    python benchmarks/perplexity.py --model smollm2-135m --tokens 16384 --stride 512 --out outputs/bench_cpu.json

Figures are ratios against the reference measured in the same run. `--model` is a preset in conf/model/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from pathlib import Path

import torch
import transformers

from evalkit.loading import LoadOptions, load_model, resolve_location
from evalkit.nll import score_windows
from evalkit.presets import model_spec
from evalkit.reference import docs_loop_perplexity
from evalkit.results import hardware, library_versions, write_json
from evalkit.windows import window_schedule

ROOT = Path(__file__).resolve().parent.parent
WIKITEXT = ROOT / ".." / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, device: torch.device):
    """(result, seconds, peak memory in bytes during fn: CUDA allocator peak, or sampled process RSS on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    peak, stop = [rss_bytes()], threading.Event()

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    return result, seconds, torch.cuda.max_memory_allocated() if device.type == "cuda" else peak[0]


def stream_tokens(tokenizer, count: int) -> torch.Tensor:
    """The first `count` tokens of WikiText-2 test (repeated if it is shorter)."""
    with open(WIKITEXT, encoding="utf-8") as handle:
        text = "\n\n".join(line if line.strip() else "" for line in handle)
    ids = torch.tensor(tokenizer(text, verbose=False).input_ids)
    return ids.repeat(math.ceil(count / len(ids)))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default="outputs/bench_perplexity.json")
    args = parser.parse_args()
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)

    spec = model_spec(args.model)
    ours = load_model(spec, LoadOptions(device=args.device, dtype=args.dtype), "causal-lm")
    device, dtype = ours.device, getattr(torch, args.dtype)
    if spec.get("architecture"):  # random init: the same seed gives the same weights
        torch.manual_seed(0)
        config = transformers.AutoConfig.for_model(spec["architecture"], **spec.get("config", {}))
        plain = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        location = resolve_location(spec)
        plain = transformers.AutoModelForCausalLM.from_pretrained(
            location.path, dtype=dtype, **location.from_pretrained_kwargs()
        )
    plain.to(device).eval()
    tokens = stream_tokens(ours.tokenizer, args.tokens)
    windows = window_schedule(len(tokens), args.max_length, args.stride)

    (ref_nll, ref_tokens), ref_seconds, ref_peak = measure(
        lambda: docs_loop_perplexity(plain, tokens, args.max_length, args.stride), device
    )
    (scores, used_batch), seconds, peak = measure(lambda: score_windows(ours.model, tokens, windows, batch_size), device)
    nll = scores["nll"]
    scored = sum(w.num_targets for w in windows)
    assert scored == ref_tokens, (scored, ref_tokens)
    report = {
        "benchmark": "perplexity",
        "model": ours.provenance,
        "tokens": len(tokens),
        "tokens_scored": scored,
        "windows": len(windows),
        "stride": args.stride,
        "max_length": args.max_length,
        "reference": {"name": "HF docs loop", "seconds": ref_seconds, "tokens_per_second": scored / ref_seconds,
                      "nll_sum": ref_nll, "peak_memory_bytes": ref_peak},
        "evalkit": {"seconds": seconds, "tokens_per_second": scored / seconds, "nll_sum": float(nll.sum()),
                    "batch_size": used_batch, "peak_memory_bytes": peak},
        "speedup": ref_seconds / seconds,
        "nll_relative_difference": abs(float(nll.sum()) - ref_nll) / abs(ref_nll),
        "hardware": hardware(),
        "versions": library_versions(),
    }
    write_json(Path(args.out), report)
    print(json.dumps({k: report[k] for k in ("speedup", "nll_relative_difference")}
                     | {"reference_tok_s": report["reference"]["tokens_per_second"],
                        "evalkit_tok_s": report["evalkit"]["tokens_per_second"]}, indent=1))


if __name__ == "__main__":
    main()
