"""What each fused kernel gives an eager pass at Llama-3-8B's shape on one GPU (evalkit/loading/fusions.py), in one
process on one model: nothing fused, then RMSNorm, + SwiGLU, + RoPE (Liger's kernels), then each attention kernel
with all three; the GPU time of a profiled prefix by kind of kernel, unfused and fused; every NLL against the
unfused pass's. Writes JSON (each row as it is measured).

    python benchmarks/gpu_llama8b_fusions.py --tokens-file .bench/wikitext_ids.pt --tokenizer .bench/tokenizer \
        --out X.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu import forward_flops, stream_parser  # benchmarks/gpu.py
from gpu_llama8b import Bench, kernel_shares, load  # benchmarks/gpu_llama8b.py
from torch.nn.attention import SDPBackend, sdpa_kernel

from evalkit.files import write_json
from evalkit.loading import fusions
from evalkit.scoring import rolling as nll

ATTENTION = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def profiled_shares(model, bench: Bench, batch: int, windows: int) -> dict:
    """GPU seconds by kind of kernel over the first `windows` windows, with the 12 costliest kernels by name."""
    prefix = bench.windows[:windows]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        nll.score_windows(model, bench.tokens, prefix, batch)
    shares = kernel_shares(profile)
    events = [e for e in profile.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    shares["top_kernels"] = [{"name": e.key[:120], "seconds": e.self_device_time_total / 1e6, "calls": e.count}
                             for e in sorted(events, key=lambda e: -e.self_device_time_total)[:12]]
    return shares


def generation_check(tokenizer_dir: str, prompts_file: str, count: int = 32) -> dict:
    """Greedy gsm8k generations of a random model of SmolLM2-135M's shape in bfloat16 (evalkit's decode loop, with
    its static cache and CUDA graphs), fused against unfused: identical responses, seconds, warnings."""
    import json
    import time
    import warnings

    import transformers

    from evalkit.config.presets import model_spec
    from evalkit.scoring.generation import generate_until

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts = json.loads(Path(prompts_file).read_text())[:count]
    config = transformers.LlamaConfig(**model_spec("random-smollm2-135m")["config"])
    outputs, report = {}, {}
    for name in ("unfused", "fused"):
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
        if name == "fused":
            report["fused_layers"] = fusions.fuse(model, fusions.liger_kernels())
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            started = time.perf_counter()
            outputs[name] = generate_until(model, tokenizer, prompts, ["Question:"], 64, 2048, batch_size=count)
            report[f"{name}_seconds"] = time.perf_counter() - started
        report[f"{name}_warnings"] = sorted({str(w.message)[:200] for w in caught})
    report["identical_responses"] = sum(a == b for a, b in zip(outputs["unfused"], outputs["fused"]))
    report["responses"] = count
    return report


def main() -> None:
    parser = stream_parser(__doc__.splitlines()[0], 4096, 2048)
    parser.add_argument("--profile-windows", type=int, default=32)
    parser.add_argument("--prompts", default=".bench/gsm8k_prompts.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    bench = Bench(args)
    loaded, bench.report["load_seconds"] = load(args.tokenizer, fused_kernels="none")
    model = loaded.model
    bench.flops = bench.report["flops"] = forward_flops(model, bench.windows)
    bench.report["sdp_default_order"] = [str(b) for b in torch._C._get_sdp_priority_order()]
    reference = bench.evalkit_pass("unfused_auto", model, "auto")  # the first pass finds the batch size
    batch = bench.report["variants"]["unfused_auto"]["batch_size"]
    bench.evalkit_pass("unfused", model, batch)
    bench.report["profile_unfused"] = profiled_shares(model, bench, args.profile_windows, args.profile_windows)
    write_json(Path(args.out), bench.report)
    liger = fusions.liger_kernels()
    steps = {"rms_norm": fusions.Kernels("liger", rms_norm=liger.rms_norm),
             "swiglu": fusions.Kernels("liger", silu_mul=liger.silu_mul),
             "rope": fusions.Kernels("liger", rope=liger.rope)}
    fused = []
    for name, kernels in steps.items():
        fusions.fuse(model, kernels)
        fused.append(name)
        bench.evalkit_pass("+".join(fused), model, batch)
    for name, backend in ATTENTION.items():
        with sdpa_kernel([backend]):
            try:
                bench.evalkit_pass(f"fused_attention_{name}", model, batch)
            except RuntimeError as error:  # a backend that cannot run this shape
                bench.report["variants"][f"fused_attention_{name}"] = {"error": str(error)[:300]}
    bench.report["profile_fused"] = profiled_shares(model, bench, args.profile_windows, args.profile_windows)
    for row in bench.report["variants"].values():
        if "nll_sum" in row:
            row["nll_relative_to_unfused"] = abs(row["nll_sum"] - reference) / reference
    write_json(Path(args.out), bench.report)
    del model, loaded
    torch.cuda.empty_cache()
    bench.report["generation_check"] = generation_check(args.tokenizer, args.prompts)
    write_json(Path(args.out), bench.report)


if __name__ == "__main__":
    main()
