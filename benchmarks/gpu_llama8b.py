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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracles: tests/oracles.py

import gc
import re
import time
from pathlib import Path

import torch
from gpu import forward_flops, matmul_tflops, stream_parser, timed  # benchmarks/gpu.py

from evalkit.config.presets import model_spec
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import LoadOptions, load_fresh
from evalkit.scoring import logprobs
from evalkit.scoring import rolling as nll
from oracles import docs_loop_nll  # noqa: E402 (tests/ joins the path first)


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


class Bench:
    """One process's measurements over the WikiText-2 ids; each row is written to --out when measured (a time-out
    leaves what was measured)."""

    def __init__(self, args):
        self.args = args
        self.tokens = torch.load(args.tokens_file)[: args.tokens].long()
        self.windows = window_schedule(len(self.tokens), args.max_length, args.stride)
        self.scored = sum(w.num_targets for w in self.windows)
        self.report: dict = {"benchmark": "perplexity-gpu-llama3-8b-shape", "tokens": len(self.tokens),
                             "tokens_scored": self.scored, "windows": len(self.windows),
                             "max_length": args.max_length, "stride": args.stride, "hardware": hardware(),
                             "versions": library_versions(), "variants": {}}
        self.peak = self.report["matmul_bf16_tflops_measured"] = matmul_tflops()
        self.flops = None

    def record(self, name, nll_sum, seconds, memory, **extra) -> None:
        row = {"seconds": seconds, "tokens_per_second": self.scored / seconds, "nll_sum": nll_sum,
               "peak_memory_gib": memory / 2**30, "tflops": self.flops / seconds / 1e12,
               "mfu": self.flops / seconds / 1e12 / self.peak, **extra}
        self.report["variants"][name] = row
        print(f"{name:34s} {seconds:8.2f} s  mfu={row['mfu']:.3f}  mem={row['peak_memory_gib']:.1f} GiB  "
              f"nll={nll_sum:.4f}  {extra}", flush=True)
        write_json(Path(self.args.out), self.report)

    def evalkit_pass(self, name, model, batch_size, compile_nll=False) -> float:
        (scores, size), seconds, memory = timed(lambda: nll.score_windows(model, self.tokens, self.windows, batch_size,
                                                                            compile_nll=compile_nll))
        self.record(name, float(scores["nll"].sum()), seconds, memory, batch_size=size)
        return float(scores["nll"].sum())

    def eager(self, model) -> float:
        """evalkit eager (auto batch twice; at --batch with and without chunks), the docs loop on a prefix, the plain
        loop; returns evalkit eager's NLL."""
        self.flops = self.report["flops"] = forward_flops(model, self.windows)
        for run in (1, 2):  # the first pass includes the out-of-memory halving from 128 and the allocator's warm-up
            reference = self.evalkit_pass(f"evalkit_eager_auto_run{run}", model, "auto")
        batch = self.args.batch
        self.evalkit_pass(f"evalkit_eager_b{batch}_chunked", model, batch)
        budget, logprobs.LOGIT_BUDGET = logprobs.LOGIT_BUDGET, 1 << 62  # the whole batch's logits at once
        self.evalkit_pass(f"evalkit_eager_b{batch}_unchunked", model, batch)
        logprobs.LOGIT_BUDGET = budget
        prefix = self.windows[: self.args.docs_windows]
        sums, seconds, memory = timed(lambda: docs_loop_nll(model, self.tokens, prefix))
        share = sum(w.length for w in prefix) / sum(w.length for w in self.windows)
        ours = float(nll.score_windows(model, self.tokens, prefix, batch)[0]["nll"].sum())
        self.record("docs_loop_bfloat16_scaled", sum(sums) / share, seconds / share, memory,
                    measured_windows=len(prefix), measured_seconds=seconds,
                    prefix_nll_relative_to_evalkit=abs(sum(sums) - ours) / ours)
        total, seconds, memory = timed(lambda: plain_chunked_nll(model, self.tokens, self.windows, batch))
        self.record(f"plain_batched_chunked_b{batch}", total, seconds, memory)
        return reference

    def compiled(self) -> None:
        loaded, self.report["compile_load_seconds"] = load(self.args.tokenizer, compile=True)
        self.flops = self.flops or forward_flops(loaded.model, self.windows)
        for run in (1, 2):
            self.evalkit_pass(f"evalkit_compile_run{run}", loaded.model, "auto", compile_nll=True)
        if self.args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
                nll.score_windows(loaded.model, self.tokens, self.windows, "auto", compile_nll=True)
            self.report["compiled_pass_kernels"] = kernel_shares(profile)
            print(self.report["compiled_pass_kernels"], flush=True)
            write_json(Path(self.args.out), self.report)


# kernel name pattern -> what it computes, first match wins (Inductor names a fused kernel after the ops it fuses)
KERNEL_KINDS = [
    (re.compile(r"gemm|nvjet|cutlass|xmma|cublas|matmul", re.I), "matmul"),
    (re.compile(r"flash|fmha|cudnn|attention", re.I), "attention"),
    (re.compile(r"logsumexp|gather|softmax", re.I), "output NLL"),
    (re.compile(r"rsqrt|rms_norm"), "RMSNorm (+ residual add)"),
    (re.compile(r"silu|swiglu"), "SwiGLU"),
    (re.compile(r"cat|neg|sin|cos|rope"), "RoPE"),
    (re.compile(r"^triton"), "other fused (Inductor)"),
]


def kernel_shares(profile) -> dict:
    """GPU seconds of one profiled pass by kind of kernel (KERNEL_KINDS, else `other`), and each kind's share."""
    seconds: dict[str, float] = {}
    for event in profile.key_averages():
        if event.device_type != torch.autograd.DeviceType.CUDA or not event.self_device_time_total:
            continue
        kind = next((kind for pattern, kind in KERNEL_KINDS if pattern.search(event.key)), "other")
        seconds[kind] = seconds.get(kind, 0.0) + event.self_device_time_total / 1e6
    total = sum(seconds.values()) or float("nan")
    return {"total_kernel_seconds": total,
            "kinds": {kind: {"seconds": value, "share": value / total} for kind, value in
                      sorted(seconds.items(), key=lambda item: -item[1])}}


def main() -> None:
    parser = stream_parser(__doc__.splitlines()[0], 4096, 2048)
    parser.add_argument("--batch", type=int, default=8, help="the fixed batch of the plain loop and the memory rows")
    parser.add_argument("--docs-windows", type=int, default=16)
    parser.add_argument("--compile-only", action="store_true", help="only load with compile=true and time two passes")
    parser.add_argument("--profile", action="store_true", help="profile a third compiled pass: GPU time by kernel kind")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    bench = Bench(args)
    if not args.compile_only:
        loaded, bench.report["load_seconds"] = load(args.tokenizer)
        reference = bench.eager(loaded.model)
        print(f"load (random init on the GPU) {bench.report['load_seconds']:.1f} s", flush=True)
        loaded = None  # one 16 GB model on the card at a time
        gc.collect()
        torch.cuda.empty_cache()
    bench.compiled()
    if not args.compile_only:
        for row in bench.report["variants"].values():
            if not row.get("measured_windows"):
                row["nll_relative_to_evalkit_eager"] = abs(row["nll_sum"] - reference) / reference
    write_json(Path(args.out), bench.report)


if __name__ == "__main__":
    main()
