"""Perplexity speed on one machine: evalkit's variants (dtype, batch, CPU linear, compile) against the float32 HF
docs loop, same model, same tokens, one process; writes JSON.

    python benchmarks/perplexity.py --model smollm2-135m-instruct-q4_1 --tokens 16384 --stride 512 \
        --out outputs/bench_cpu.json
    python benchmarks/perplexity.py --model random-smollm2-135m --tokenizer DIR --variants float32,bfloat16 ...

Figures are ratios against the reference measured in the same run, NLLs relative to the reference's. `--model` is a
preset in conf/model/. The record holds the CPU model and its flags: CPU figures hold for that CPU only.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracles: tests/oracles.py

import argparse
import json
import math
import os
import threading
import time
from pathlib import Path

import torch
import transformers

from evalkit.config.presets import model_spec
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import LoadOptions, load_model, resolve_location
from evalkit.scoring import logprobs
from evalkit.scoring.rolling import score_windows
from oracles import docs_loop_perplexity  # noqa: E402 (tests/ joins the path first)

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


# name -> (dtype, batch size, other loading keys); compile variants are timed on their second pass; the
# `whole_log_softmax` ones take the log-softmax of a batch's logits in one call, as before logprobs.position_chunks
VARIANTS = {
    "float32": ("float32", "auto", {}),
    "float32_batch4": ("float32", 4, {}),
    "float32_whole_log_softmax": ("float32", "auto", {}),
    "bfloat16": ("bfloat16", 1, {}),
    "bfloat16_batch4": ("bfloat16", 4, {}),
    "bfloat16_native_linear": ("bfloat16", 1, {"cpu_linear": "native"}),
    "bfloat16_whole_log_softmax": ("bfloat16", 1, {}),
    "bfloat16_compile": ("bfloat16", 1, {"compile": True}),
    "float32_dynamic_int8": ("float32", "auto", {"cpu_linear": "native"}),  # measured, not offered: see README
}


def dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Every linear layer as torch.ao's dynamic int8 one (weights per channel, activations quantized per call)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def plain_model(spec: dict, dtype: torch.dtype, device: torch.device):
    """The model as the HF docs load it (random init: the same seed gives evalkit's weights)."""
    if spec.get("architecture"):
        torch.manual_seed(0)
        config = transformers.AutoConfig.for_model(spec["architecture"], **spec.get("config", {}))
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    location = resolve_location(spec)
    return transformers.AutoModelForCausalLM.from_pretrained(location.path, dtype=dtype,
                                                             **location.from_pretrained_kwargs()).to(device).eval()


def run_variant(spec: dict, name: str, device: str, tokens, windows, reference_nll: float) -> dict:
    dtype, batch_size, keys = VARIANTS[name]
    ours = load_model(spec, LoadOptions(device=device, dtype=dtype, **keys), "causal-lm")
    model = dynamic_int8(ours.model) if name.endswith("dynamic_int8") else ours.model
    first = None
    if keys.get("compile"):
        _, first, _ = measure(lambda: score_windows(model, tokens, windows, batch_size), ours.device)
    chunk = logprobs.CPU_LOG_SOFTMAX_ELEMENTS
    if name.endswith("whole_log_softmax"):
        logprobs.CPU_LOG_SOFTMAX_ELEMENTS = 1 << 62
    try:
        (scores, used_batch), seconds, peak = measure(
            lambda: score_windows(model, tokens, windows, batch_size), ours.device)
    finally:
        logprobs.CPU_LOG_SOFTMAX_ELEMENTS = chunk
    nll_sum = float(scores["nll"].sum())
    scored = sum(w.num_targets for w in windows)
    relative = abs(nll_sum - reference_nll) / abs(reference_nll)
    print(f"{name}: {seconds:.1f} s, {scored / seconds:.0f} tok/s, NLL {relative:.1e} off the reference", flush=True)
    return {"dtype": dtype, "batch_size": used_batch, **keys, "seconds": seconds, "first_pass_seconds": first,
            "tokens_per_second": scored / seconds, "nll_sum": nll_sum, "perplexity": math.exp(nll_sum / scored),
            "peak_memory_bytes": peak, "nll_relative_difference": relative,
            "cpu_linear_used": ours.provenance.get("cpu_linear", "native")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--tokenizer", help="a tokenizer folder instead of the preset's")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="float32", help=f"comma list of: {', '.join(VARIANTS)}")
    parser.add_argument("--out", default="outputs/bench_perplexity.json")
    args = parser.parse_args()
    spec = model_spec(args.model)
    if args.tokenizer:
        spec = {**spec, "tokenizer": {"name_or_path": args.tokenizer}}
    tokens = stream_tokens(transformers.AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer
                           else load_model(spec, LoadOptions(device=args.device), "causal-lm").tokenizer, args.tokens)
    windows = window_schedule(len(tokens), args.max_length, args.stride)
    plain = plain_model(spec, torch.float32, torch.device(args.device))
    (ref_nll, ref_tokens), ref_seconds, ref_peak = measure(
        lambda: docs_loop_perplexity(plain, tokens, args.max_length, args.stride), torch.device(args.device))
    scored = sum(w.num_targets for w in windows)
    assert scored == ref_tokens, (scored, ref_tokens)
    variants = {name: run_variant(spec, name, args.device, tokens, windows, ref_nll)
                for name in args.variants.split(",")}
    for row in variants.values():
        row["speedup"] = ref_seconds / row["seconds"]
    report = {
        "benchmark": "perplexity",
        "model": args.model, "tokens": len(tokens), "tokens_scored": scored, "windows": len(windows),
        "stride": args.stride, "max_length": args.max_length,
        "reference": {"name": "HF docs loop, float32", "seconds": ref_seconds,
                      "tokens_per_second": scored / ref_seconds, "nll_sum": ref_nll,
                      "perplexity": math.exp(ref_nll / scored), "peak_memory_bytes": ref_peak},
        "evalkit": variants,
        "hardware": hardware(),
        "versions": library_versions(),
    }
    write_json(Path(args.out), report)
    print(json.dumps({name: round(row["speedup"], 3) for name, row in variants.items()}
                     | {"reference_tok_s": round(scored / ref_seconds, 1)}, indent=1))


if __name__ == "__main__":
    main()
