"""Perplexity at Llama-3-8B's shape on one GPU (the `random-llama3-8b` preset: random weights built on the GPU,
bfloat16), every variant in one process, against the plain code a user would write; writes JSON.

Variants: the HF docs loop (one window per forward, on the first --docs-windows windows, its time scaled to all),
a plain batched loop (the body, then the output layer and cross-entropy over scored positions in chunks of 1,024),
evalkit eager (batch_size=auto, and at --batch with and without its chunked output layer, for peak memory), and
evalkit compile=true (the first pass compiles). Each reports seconds, tokens/s, model TFLOP/s with causal attention,
the fraction of the measured dense bfloat16 matmul rate (MFU), peak memory; NLLs are compared with evalkit eager's.

    python benchmarks/gpu_llama8b.py --tokens-file .bench/wikitext_ids.pt --tokenizer .bench/tokenizer --out X.json
    python benchmarks/gpu_llama8b.py ... --compile-only --out Y.json   # a second process: the compile cache's gain
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

from gpu import forward_flops, matmul_tflops, stream_parser, timed  # benchmarks/gpu.py
from evalkit import nll
from evalkit.loading import LoadOptions, load_fresh
from evalkit.loading.fingerprints import tensors_fingerprint
from evalkit.presets import model_spec
from evalkit.reference import docs_loop_nll
from evalkit.results import hardware, library_versions, write_json
from evalkit.windows import window_schedule


@torch.inference_mode()
def plain_chunked_nll(model, tokens, windows, batch_size: int, chunk: int = 1024) -> float:
    """What plain code does well: equal-length windows batched, the body once, then the output layer and float32
    cross-entropy over the scored positions, 1,024 at a time."""
    device = next(model.parameters()).device
    total = 0.0
    by_shape: dict[tuple, list] = {}
    for w in windows:
        by_shape.setdefault((w.length, w.target_begin - w.begin), []).append(w)
    for (length, offset), group in by_shape.items():
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            ids = torch.stack([tokens[w.begin : w.end] for w in rows]).to(device)
            hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
            for begin in range(max(offset, 1) - 1, length - 1, chunk):
                end = min(begin + chunk, length - 1)
                logits = model.lm_head(hidden[:, begin:end]).float()
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, begin + 1 : end + 1].flatten(),
                                                         reduction="sum")
                total += loss.double().item()
    return total


def load(tokenizer: str, **options):
    spec = {**model_spec("random-llama3-8b"), "tokenizer": {"name_or_path": tokenizer}}
    started = time.perf_counter()
    loaded = load_fresh(spec, LoadOptions(device="cuda", dtype="bfloat16", **options), "causal-lm")
    torch.cuda.synchronize()
    return loaded, time.perf_counter() - started


def main() -> None:
    parser = stream_parser(__doc__.splitlines()[0], 4096, 2048)
    parser.add_argument("--batch", type=int, default=8, help="the fixed batch of the plain loop and the memory rows")
    parser.add_argument("--docs-windows", type=int, default=16)
    parser.add_argument("--compile-only", action="store_true", help="only load with compile=true and time two passes")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    tokens = torch.load(args.tokens_file)[: args.tokens].long()
    windows = window_schedule(len(tokens), args.max_length, args.stride)
    scored = sum(w.num_targets for w in windows)
    report: dict = {"benchmark": "perplexity-gpu-llama3-8b-shape", "tokens": len(tokens), "tokens_scored": scored,
                    "windows": len(windows), "max_length": args.max_length, "stride": args.stride,
                    "hardware": hardware(), "versions": library_versions(), "variants": {}}
    peak = report["matmul_bf16_tflops_measured"] = matmul_tflops()
    flops = None

    def record(name, nll_sum, seconds, memory, **extra):
        row = {"seconds": seconds, "tokens_per_second": scored / seconds, "nll_sum": nll_sum,
               "peak_memory_gib": memory / 2**30, "tflops": flops / seconds / 1e12,
               "mfu": flops / seconds / 1e12 / peak, **extra}
        report["variants"][name] = row
        print(f"{name:34s} {seconds:8.2f} s  mfu={row['mfu']:.3f}  mem={row['peak_memory_gib']:.1f} GiB  "
              f"nll={nll_sum:.4f}  {extra}", flush=True)
        write_json(Path(args.out), report)  # a time-out leaves what was measured

    def evalkit_pass(model, batch_size, compile_nll=False):
        (scores, size), seconds, memory = timed(lambda: nll.score_windows(model, tokens, windows, batch_size,
                                                                            compile_nll=compile_nll))
        return float(scores["nll"].sum()), seconds, memory, size

    if args.compile_only:
        loaded, report["load_seconds"] = load(args.tokenizer, compile=True)
        flops = forward_flops(loaded.model, windows)
        for run in (1, 2):
            total, seconds, memory, size = evalkit_pass(loaded.model, "auto", compile_nll=True)
            record(f"evalkit_compile_run{run}", total, seconds, memory, batch_size=size)
        return

    loaded, report["load_seconds"] = load(args.tokenizer)
    model = loaded.model
    report["load_fingerprint_seconds"] = timed(lambda: tensors_fingerprint(model))[1]  # part of load_seconds
    flops = report["flops"] = forward_flops(model, windows)
    print(f"load (random init on the GPU) {report['load_seconds']:.1f} s; {flops / 1e15:.2f} PFLOP", flush=True)

    for run in (1, 2):  # the first pass includes the out-of-memory halving from 128 and the allocator's warm-up
        total, seconds, memory, size = evalkit_pass(model, "auto")
        record(f"evalkit_eager_auto_run{run}", total, seconds, memory, batch_size=size)
    reference = total
    total, seconds, memory, size = evalkit_pass(model, args.batch)
    record(f"evalkit_eager_b{args.batch}_chunked", total, seconds, memory, batch_size=size)
    budget, nll.LOGIT_BUDGET = nll.LOGIT_BUDGET, 1 << 62  # the whole batch's logits at once
    total, seconds, memory, size = evalkit_pass(model, args.batch)
    record(f"evalkit_eager_b{args.batch}_unchunked", total, seconds, memory, batch_size=size)
    nll.LOGIT_BUDGET = budget

    prefix = windows[: args.docs_windows]
    sums, seconds, memory = timed(lambda: docs_loop_nll(model, tokens, prefix))
    share = sum(w.length for w in prefix) / sum(w.length for w in windows)
    (prefix_scores, _), _, _ = timed(lambda: nll.score_windows(model, tokens, prefix, args.batch))
    record("docs_loop_bfloat16_scaled", sum(sums) / share, seconds / share, memory, measured_windows=len(prefix),
           measured_seconds=seconds, prefix_nll_relative_to_evalkit=abs(sum(sums) - float(prefix_scores["nll"].sum()))
           / float(prefix_scores["nll"].sum()))
    total, seconds, memory = timed(lambda: plain_chunked_nll(model, tokens, windows, args.batch))
    record(f"plain_batched_chunked_b{args.batch}", total, seconds, memory)

    model = loaded = None  # one 16 GB model on the card at a time
    gc.collect()
    torch.cuda.empty_cache()
    compiled, report["compile_load_seconds"] = load(args.tokenizer, compile=True)
    for run in (1, 2):
        total, seconds, memory, size = evalkit_pass(compiled.model, "auto", compile_nll=True)
        record(f"evalkit_compile_run{run}", total, seconds, memory, batch_size=size)
    for row in report["variants"].values():
        if not row.get("measured_windows"):
            row["nll_relative_to_evalkit_eager"] = abs(row["nll_sum"] - reference) / reference
    write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
