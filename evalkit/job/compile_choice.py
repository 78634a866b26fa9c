"""compile=... for one job: compile=auto's choice once the job's size is known (loading/compile_policy.py decides from
what earlier runs measured here), the job's compile statistics, and the rates it leaves for later choices."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import transformers

from evalkit.hashing import canonical_json, sha256_text
from evalkit.job import distributed
from evalkit.loading import LoadedModel, compile_policy
from evalkit.loading.kernels import compile_model

if TYPE_CHECKING:
    from evalkit.job.runner import Plan


@dataclass
class CompileChoice:
    key: str | None  # what this job's rates are kept under; None: nothing kept (not on a GPU)
    compiled: bool
    before: dict = field(default_factory=dict)  # this process's compile statistics when the job began scoring


def compile_statistics() -> dict[str, float]:
    from evalkit.loading.compiling import compile_statistics as statistics  # Inductor: imported only when compiling

    return statistics()


def device_name(device: torch.device) -> str | None:
    """The accelerator whose rates compile=auto weighs; None where it does not choose (the CPU, MPS)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def rate_key(job: Plan, main: LoadedModel, device: str) -> str:
    """The digest of what sets a job's rates, and only that: the model's shape, dtype, quantization, attention and
    fused kernels in effect; the processes and tensor-parallel ranks; the task, the evaluator's settings and the batch
    size; the device's name (not its index) and the torch and transformers versions. Not how much of the task a run
    takes (limit): the rates are what extrapolates to a job's size."""
    provenance = main.provenance
    shape = {k: v for k, v in main.model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    return sha256_text(canonical_json({
        "model": shape, "dtype": provenance.get("dtype"), "quantization": job.loading.quantization,
        "attention": provenance.get("attn_implementation"), "fused_kernels": provenance.get("fused_kernels"),
        "devices": sorted(place.split(":")[0] for place in provenance.get("devices", ())),
        "processes": distributed.world_size(), "tensor_parallel": provenance.get("tensor_parallel", 1),
        "task": job.config["task"], "evaluator": job.evaluator.name, "settings": asdict(job.settings),
        "batch_size": job.run.batch_size, "device": device, "torch": torch.__version__,
        "transformers": transformers.__version__}))


def choose(job: Plan, main: LoadedModel, amount: float) -> CompileChoice:
    """Compile now when compile=auto finds it worth it for `amount` units of work (said on stderr and in the model's
    provenance either way; never over fused_kernels=liger, which asks for the fused eager layers); compile=true was
    applied while loading."""
    options, device = job.loading, device_name(main.device)
    key = rate_key(job, main, device) if device and hasattr(main.model, "config") else None
    if options.compile == "auto" and options.fused_kernels != "liger" and key is not None:
        decision = compile_policy.decide(key, amount, job.evaluator.throughput)
        print(f"evalkit: compile=auto: {'compiling' if decision.compile else 'eager'} ({decision.reason})",
              file=sys.stderr)
        main.provenance["compile_auto"] = decision.reason
        if decision.compile and not main.provenance.get("compile"):  # a sweep's model may be compiled already
            compile_model(main.model, True, main.provenance)
    compiled = bool(main.provenance.get("compile"))
    return CompileChoice(key, compiled, compile_statistics() if compiled else {})


def finish(choice: CompileChoice, timing: dict, amount: float) -> None:
    """Add the job's compile statistics to its timing and keep its rate for compile=auto."""
    if choice.compiled:
        timing.update({key: value - choice.before[key] for key, value in compile_statistics().items()})
    if choice.key is not None:
        compile_policy.record(choice.key, choice.compiled, amount, timing["eval_seconds"],
                              timing.get("compile_seconds", 0.0))
