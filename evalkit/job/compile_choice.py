"""compile=... for one job: compile=auto's choice once the job's size is known (loading/compile_policy.py decides from
what earlier runs measured here), the job's compile statistics, and the rates it leaves for later choices."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from evalkit.hashing import canonical_json, sha256_text
from evalkit.loading import LoadedModel, compile_policy
from evalkit.loading.kernels import compile_model
from evalkit.loading.options import LoadOptions


@dataclass
class CompileChoice:
    key: str | None  # what this job's rates are kept under; None: nothing kept (not on a GPU)
    compiled: bool
    before: dict = field(default_factory=dict)  # this process's compile statistics when the job began scoring


def compile_statistics() -> dict[str, float]:
    from evalkit.loading.compiling import compile_statistics as statistics  # Inductor: imported only when compiling

    return statistics()


def rate_key(main: LoadedModel, evaluator: str, settings: dict) -> str:
    """The digest of what sets a job's rates, under which the store keeps them: the model's shape and dtype, the
    evaluator's settings and the batch size (the scoped settings, compile itself left out), the GPU and torch."""
    config = {k: v for k, v in main.model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}
    loading = {k: v for k, v in settings["loading"].items() if k not in ("compile", "seed")}
    return sha256_text(canonical_json({"config": config, "dtype": main.provenance.get("dtype"), "evaluator": evaluator,
                                       "settings": {**settings, "loading": loading},
                                       "gpu": torch.cuda.get_device_name(main.device), "torch": torch.__version__}))


def choose(options: LoadOptions, main: LoadedModel, evaluator: str, settings: dict, amount: float,
           unit: str) -> CompileChoice:
    """Compile now when compile=auto finds it worth it for `amount` units of work (said on stderr and in the model's
    provenance either way; never over fused_kernels=liger, which asks for the fused eager layers); compile=true was
    applied while loading."""
    key = None
    if main.device.type == "cuda" and hasattr(main.model, "config"):
        key = rate_key(main, evaluator, settings)
    if options.compile == "auto" and options.fused_kernels != "liger" and key is not None:
        decision = compile_policy.decide(key, amount, unit)
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
