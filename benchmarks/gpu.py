"""GPU perplexity speed on gpt2-large's shape (random init): the HF docs loop in float32 and bfloat16, a plain
batched loop, and evalkit's variants, on the same weights and tokens in one process; checks every NLL; writes JSON.

    python benchmarks/gpu.py --tokens-file ids.pt --tokenizer DIR --out bench_gpu.json

`--tokens-file` holds a 1-D tensor of token ids (the first --tokens of it are used); `--tokenizer` is any local
tokenizer directory (only the loading layer needs one; the ids are given).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import transformers

from evalkit.loading import LoadOptions, load_model
from evalkit.perplexity import score_windows
from evalkit.presets import model_spec
from evalkit.reference import docs_loop_perplexity
from evalkit.results import hardware, library_versions, write_json
from evalkit.windows import window_schedule


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - started, torch.cuda.max_memory_allocated()


@torch.inference_mode()
def plain_batched_nll(model, tokens, windows, batch_size: int) -> float:
    """A straightforward batched loop: windows right-padded into batches, full logits, labels -100 on context and
    padding, the model's mean loss times the tokens it averaged."""
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        width = max(w.length for w in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, w in enumerate(chunk):
            input_ids[row, : w.length] = tokens[w.begin : w.end]
            labels[row, w.target_begin - w.begin : w.length] = tokens[w.target_begin : w.end]
            mask[row, : w.length] = 1
        labels = labels.to(device)
        loss = model(input_ids.to(device), attention_mask=mask.to(device), labels=labels).loss
        total += loss.double().item() * int((labels[:, 1:] != -100).sum())
    return total


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    _, seconds, _ = timed(lambda: [a @ b for _ in range(repeats)])
    return 2 * n**3 * repeats / seconds / 1e12


def forward_flops(model, windows) -> float:
    """Matrix FLOPs of evalkit's work: 2 x non-embedding params per token forwarded, causal attention (QK^T and AV,
    half the square), and the output layer at scored positions only."""
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("wte.weight", "wpe.weight")))
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    forwarded = sum(w.length for w in windows)
    attention = sum(2 * config.n_layer * w.length**2 * config.n_embd for w in windows)
    output_layer = 2 * config.vocab_size * config.n_embd * sum(w.num_targets for w in windows)
    return 2 * non_embedding * forwarded + attention + output_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens-file", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--tokens", type=int, default=287_644)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--skip-slow", action="store_true", help="leave out the float32 docs loop")
    parser.add_argument("--variants", default="evalkit_bfloat16_auto,evalkit_bfloat16_compile_b32")
    parser.add_argument("--out", default="bench_gpu.json")
    args = parser.parse_args()

    tokens = torch.load(args.tokens_file)[: args.tokens].long()
    windows = window_schedule(len(tokens), args.max_length, args.stride)
    scored = sum(w.num_targets for w in windows)
    spec = model_spec("random-gpt2-large")
    spec["tokenizer"] = {"name_or_path": args.tokenizer}

    # one set of weights for every variant: evalkit's loads copy the float32 reference's state dict
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(spec["architecture"], **spec["config"])
    plain32 = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).cuda().eval()
    plain16 = copy.deepcopy(plain32).to(torch.bfloat16)
    peak = matmul_tflops()
    flops = forward_flops(plain32, windows)
    rows: dict[str, dict] = {}

    def record(name, nll, seconds, memory, **extra):
        rows[name] = {"seconds": seconds, "tokens_per_second": scored / seconds, "nll_sum": nll,
                      "peak_memory_gib": memory / 2**30, **extra}
        print(f"{name:40s} {seconds:8.3f} s  nll={nll:.6f}  {extra}", flush=True)

    if not args.skip_slow:
        (nll, _), s, m = timed(lambda: docs_loop_perplexity(plain32, tokens, args.max_length, args.stride))
        record("docs_loop_float32", nll, s, m)
    (nll, _), s, m = timed(lambda: docs_loop_perplexity(plain16, tokens, args.max_length, args.stride))
    record("docs_loop_bfloat16", nll, s, m)
    nll, s, m = timed(lambda: plain_batched_nll(plain16, tokens, windows, 32))
    record("plain_batched_bfloat16_b32", nll, s, m)

    loaded_models = {}

    def evalkit_variant(name, dtype="bfloat16", batch_size="auto", memory_fraction=None, runs=2, **options):
        options = LoadOptions(device="cuda", dtype=dtype, **options)
        if options not in loaded_models:
            loaded_models.clear()  # one evalkit model on the card at a time
            torch.cuda.empty_cache()
            loaded_models[options] = load_model(spec, options, "causal-lm")
            loaded_models[options].model.load_state_dict(plain32.state_dict())
        loaded = loaded_models[options]
        if memory_fraction:
            torch.cuda.set_per_process_memory_fraction(memory_fraction)
        for run in range(runs):  # the first run includes compilation / kernel autotuning / allocator warm-up
            (scores, size), s, m = timed(lambda: score_windows(loaded.model, tokens, windows, batch_size))
            nll = scores["nll"]
            record(f"{name}_run{run + 1}", float(nll.sum()), s, m, batch_size=size,
                   tflops=flops / s / 1e12, fraction_of_floor=flops / peak / 1e12 / s)
        torch.cuda.set_per_process_memory_fraction(1.0)

    variants = {
        "evalkit_float32": dict(dtype="float32", runs=1),
        "evalkit_bfloat16_auto": {},
        **{f"evalkit_bfloat16_b{size}": dict(batch_size=size, runs=1) for size in (8, 16, 32, 64)},
        "evalkit_bfloat16_eager_attention": dict(attn_implementation="eager", batch_size=32, runs=1),
        "evalkit_bfloat16_auto_oom_halving": dict(memory_fraction=0.08, runs=1),
        "evalkit_bfloat16_compile_b32": dict(compile=True, batch_size=32),
        "evalkit_bfloat16_compile_auto": dict(compile=True),
        "evalkit_bfloat16_compile_cudagraphs_b64": dict(compile="reduce-overhead", batch_size=64),
    }
    for name in args.variants.split(","):
        evalkit_variant(name, **variants[name])
        write_json(Path(args.out), {"partial": True, "variants": rows})  # a time-out still leaves the figures

    reference = (rows.get("docs_loop_float32") or rows["evalkit_float32_run1"])["nll_sum"]
    for row in rows.values():
        row["nll_relative_to_float32"] = abs(row["nll_sum"] - reference) / abs(reference)
    best = min((r for n, r in rows.items() if n.startswith("evalkit_bfloat16")), key=lambda r: r["seconds"])
    report = {
        "benchmark": "perplexity-gpu", "shape": "gpt2-large", "tokens": len(tokens), "tokens_scored": scored,
        "windows": len(windows), "stride": args.stride, "max_length": args.max_length,
        "matmul_bf16_tflops_measured": peak, "flops": flops, "floor_seconds": flops / peak / 1e12,
        "variants": rows, "best_evalkit_seconds": best["seconds"],
        "speedup_vs_docs_float32": rows.get("docs_loop_float32", {}).get("seconds", float("nan")) / best["seconds"],
        "speedup_vs_docs_bfloat16": rows["docs_loop_bfloat16"]["seconds"] / best["seconds"],
        "hardware": hardware(), "versions": library_versions(),
    }
    write_json(Path(args.out), report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("variants", "hardware", "versions")}, indent=1))


if __name__ == "__main__":
    main()
