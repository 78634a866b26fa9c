"""compile=... for one job: compile=auto's choice once the job's size is known (loading/compile_policy.py decides from
what earlier runs measured here), the job's compile statistics, and the rates it leaves for later choices."""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import transformers

from evalkit.hashing import canonical_json, sha256_text
from evalkit.job import distributed
from evalkit.loading import LoadedModel, compile_policy
from evalkit.loading.compile_policy import COMPILED
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


def choose(job: Plan, loaded: LoadedModel, record: dict, amount: float) -> CompileChoice:
    """Whether this job of `amount` units of work runs compiled: compile=auto's choice (said on stderr and in `record`,
    the job's copy of the model's provenance; never over fused_kernels=liger, which asks for the fused eager layers),
    else whether loading compiled the model. `loaded` is the model as loaded, which a sweep's jobs share: compiling
    it is said in its own provenance, which later jobs copy. A job auto runs eagerly on a model an earlier job
    compiled runs it under eager_for (the runner's), and its record says so."""
    options, device = job.loading, device_name(loaded.device)
    key = rate_key(job, loaded, device) if device and hasattr(loaded.model, "config") else None
    compiled = loaded.model in COMPILED
    if options.compile == "auto" and options.fused_kernels != "liger" and key is not None:
        # rank 0 alone reads the store: ranks reading it apart, while another job writes it, could choose apart
        decision = distributed.from_main(compile_policy.decide(key, amount, job.evaluator.throughput)
                                         if distributed.is_main() else None)
        reason = decision.reason
        if compiled and not decision.compile:
            reason += "; the model, compiled by an earlier job of this process, runs eagerly"
        elif decision.compile and not compiled:
            compile_model(loaded.model, True, loaded.provenance)
        compiled = decision.compile
        if distributed.is_main():
            print(f"evalkit: compile=auto: {'compiling' if compiled else 'eager'} ({reason})", file=sys.stderr)
        # in place: the job's scorer holds this dict (its compiled NLL follows "compile")
        record.clear()
        record.update(copy.deepcopy(loaded.provenance), compile_auto=reason)
        if not compiled:
            record.pop("compile", None)
    return CompileChoice(key, compiled, compile_statistics() if compiled else {})


def finish(choice: CompileChoice, timing: dict, amount: float) -> None:
    """Add the job's compile statistics to its timing and keep its rate for compile=auto; its compile seconds only
    when it compiled graphs (a job on a model compiled before costs none, and the measured cost stays)."""
    if choice.compiled:
        timing.update({key: value - choice.before[key] for key, value in compile_statistics().items()})
    if choice.key is not None and distributed.is_main():  # rank 0's rate: its clock waits for every rank's units
        compile_seconds = timing["compile_seconds"] if timing.get("graphs_compiled", 0) > 0 else None
        compile_policy.record(choice.key, choice.compiled, amount, timing["eval_seconds"], compile_seconds)
