"""Fused GPU kernels for the eager forward of Llama-like models in bfloat16 or float16 (fused_kernels=auto|liger):
Liger's Triton kernels (liger-kernel, evalkit's `[gpu]` extra) compute each RMSNorm, each rotary embedding and each
SwiGLU gate in one pass over the activations, where transformers' code makes several (an RMSNorm upcasts, squares,
averages, scales, downcasts and weights: six passes). Same function, other rounding; float32 and CPU models are
never touched, so their numbers stay bit-identical. What they gave: benchmarks/results/gpu_h200_llama3-8b_fusions.json.

The swaps keep each layer's parameters and their names (the state dict is unchanged). The rotary embedding is a
module-level function of the modeling file, not a layer: it is replaced there by a dispatcher that runs the fused
kernel only inside the attention layers of a model given fused kernels, and transformers' own function elsewhere.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from evalkit.errors import EvalkitError

# Architectures whose RMSNorm is Llama's (float32 statistics, the weight applied after the cast back), whose MLP is
# down(silu(gate(x)) * up(x)), and whose attention calls its modeling file's apply_rotary_pos_emb(q, k, cos, sin).
FAMILIES = ("Llama", "Mistral", "Qwen2", "Qwen3")
NORMS = {f"{family}RMSNorm" for family in FAMILIES}
MLPS = {f"{family}MLP" for family in FAMILIES}
ATTENTIONS = {f"{family}Attention" for family in FAMILIES}
HALF_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Kernels:
    """The fused functions, each None where that part stays unfused: rms_norm(x, weight, eps), silu_mul(gate, up)
    -> silu(gate) * up, rope(q, k, cos, sin) -> (q, k)."""

    name: str
    rms_norm: Callable | None = None
    silu_mul: Callable | None = None
    rope: Callable | None = None


def liger_kernels() -> Kernels | None:
    """Liger's kernels, or None when liger-kernel is not installed."""
    try:
        from liger_kernel.transformers.functional import liger_rms_norm, liger_rope, liger_swiglu
    except ImportError:
        return None
    return Kernels(f"liger-kernel {importlib.metadata.version('liger-kernel')}",
                   functools.partial(liger_rms_norm, in_place=False), liger_swiglu, liger_rope)


class FusedRMSNorm(torch.nn.Module):
    def __init__(self, norm: torch.nn.Module, kernel: Callable):
        super().__init__()
        self.weight, self.variance_epsilon, self.kernel = norm.weight, norm.variance_epsilon, kernel
        object.__setattr__(self, "original", norm)  # kept for unfuse, not as a submodule (the state dict is unchanged)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.kernel(hidden_states, self.weight, self.variance_epsilon)


class FusedGatedMLP(torch.nn.Module):
    def __init__(self, mlp: torch.nn.Module, kernel: Callable):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj, self.kernel = mlp.gate_proj, mlp.up_proj, mlp.down_proj, kernel
        object.__setattr__(self, "original", mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.kernel(self.gate_proj(x), self.up_proj(x)))


# the fused rope of the attention layer running now (None outside a fused model's attention)
ACTIVE_ROPE: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("evalkit_fused_rope", default=None)


class RopeDispatch:
    """Stands in for a modeling file's apply_rotary_pos_emb: the fused kernel inside a fused model's attention
    (ACTIVE_ROPE), transformers' function (kept as `original`) everywhere else."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, q, k, cos, sin, *args, **kwargs):
        if torch.compiler.is_compiling():  # dynamo cannot trace a ContextVar (a graph break per call); compiled
            return self.original(q, k, cos, sin, *args, **kwargs)  # models are never fused
        rope = ACTIVE_ROPE.get()
        if rope is None or args or kwargs:
            return self.original(q, k, cos, sin, *args, **kwargs)
        return rope(q, k, cos, sin)


def with_rope(attention: torch.nn.Module, rope: Callable) -> None:
    """Run this attention layer's forward with `rope` active (an instance attribute: other models are unchanged)."""
    forward = attention.forward

    def forward_with_rope(*args, **kwargs):
        token = ACTIVE_ROPE.set(rope)
        try:
            return forward(*args, **kwargs)
        finally:
            ACTIVE_ROPE.reset(token)

    forward_with_rope.fused = True
    attention.forward = forward_with_rope
    modeling = sys.modules[type(attention).__module__]
    if not isinstance(modeling.apply_rotary_pos_emb, RopeDispatch):
        modeling.apply_rotary_pos_emb = RopeDispatch(modeling.apply_rotary_pos_emb)


def is_transformers_layer(module: torch.nn.Module, names: set[str]) -> bool:
    """One of transformers' own classes of these names (a model's remote code may reuse a name for other code)."""
    return type(module).__name__ in names and type(module).__module__.startswith("transformers.models.")


def fusible(model: torch.nn.Module) -> bool:
    """A model of a known family whose weights are all on one GPU in half precision."""
    parameters = list(model.parameters())
    return (any(is_transformers_layer(m, NORMS) for m in model.modules())
            and all(p.device.type == "cuda" and p.dtype in HALF_DTYPES for p in parameters)
            and len({p.device for p in parameters}) == 1)


def fuse(model: torch.nn.Module, kernels: Kernels) -> dict[str, int]:
    """Swap in the fused version of every layer `kernels` has a kernel for; returns how many of each kind."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    counts = {"RMSNorm": 0, "SwiGLU": 0, "RoPE": 0}
    for parent, name, child in swaps:
        if is_transformers_layer(child, NORMS) and kernels.rms_norm:
            setattr(parent, name, FusedRMSNorm(child, kernels.rms_norm))
            counts["RMSNorm"] += 1
        elif (is_transformers_layer(child, MLPS) and kernels.silu_mul
              and getattr(child.config, "hidden_act", None) in ("silu", "swish")):
            setattr(parent, name, FusedGatedMLP(child, kernels.silu_mul))
            counts["SwiGLU"] += 1
        elif is_transformers_layer(child, ATTENTIONS) and kernels.rope:
            with_rope(child, kernels.rope)
            counts["RoPE"] += 1
    return {kind: count for kind, count in counts.items() if count}


def unfuse(model: torch.nn.Module) -> None:
    """Put back every layer fuse swapped (before torch.compile, which fuses them itself)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (FusedRMSNorm, FusedGatedMLP)):
                setattr(parent, name, child.original)
            elif getattr(vars(child).get("forward"), "fused", False):
                del child.forward


@functools.cache
def note_unfused() -> None:
    print("evalkit: note: liger-kernel is not installed, so RMSNorm, RoPE and SwiGLU run unfused (slower on a GPU); "
          "pip install 'evalkit[gpu]' brings it", file=sys.stderr)


def fuse_if_asked(model: torch.nn.Module, setting: str) -> str | None:
    """fused_kernels=auto|liger|none for a loaded model: a description for the provenance, or None when nothing was
    fused (the model is not fusible, or auto found no liger-kernel: said once a process, since it costs speed)."""
    if setting == "none":
        return None
    if not fusible(model):
        if setting == "liger":
            raise EvalkitError(f"fused_kernels=liger applies to {'/'.join(FAMILIES)} models on one GPU in bfloat16 "
                               "or float16; use fused_kernels=auto or none")
        return None
    kernels = liger_kernels()
    if kernels is None:
        if setting == "liger":
            raise EvalkitError("fused_kernels=liger needs liger-kernel: pip install 'evalkit[gpu]' (or "
                               "fused_kernels=auto|none)")
        note_unfused()
        return None
    counts = fuse(model, kernels)
    return f"{kernels.name}: " + ", ".join(f"{kind} x{count}" for kind, count in counts.items())
