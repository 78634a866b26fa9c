"""Faster kernels for the same function, applied by the loading layer to a loaded model.

- an output layer of odd width is padded so the matrix multiply gets an aligned kernel (CUDA);
- the tanh-approximated GELU written out as a formula is swapped for the one-kernel `gelu(approximate="tanh")` (CUDA).

Each changes rounding only: the model computes the same function. (`compile=...` is compiling.py.)
"""

from __future__ import annotations

import torch
import transformers


class AlignedLinear(torch.nn.Module):
    """A linear layer computed with its output width padded to a multiple of 8, then cut back. cuBLAS has no fast
    kernel for an odd row stride: GPT-2's 50,257-wide output layer took 45.7 ms per 64 windows on an H200 (an sm75
    fallback kernel) against 5.8 ms padded. The weight copy costs out_features x in_features more memory."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        rows = -linear.out_features % 8
        self.out_features = linear.out_features
        self.weight = torch.nn.Parameter(torch.nn.functional.pad(linear.weight.detach(), (0, 0, 0, rows)),
                                         requires_grad=False)
        bias = None if linear.bias is None else torch.nn.functional.pad(linear.bias.detach(), (0, rows))
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)[..., : self.out_features]


def align_output_layer(model: torch.nn.Module) -> bool:
    """Swap an output layer of odd width for an AlignedLinear; True when swapped."""
    get, set_ = getattr(model, "get_output_embeddings", None), getattr(model, "set_output_embeddings", None)
    layer = get() if get else None
    if type(layer) is not torch.nn.Linear or layer.out_features % 8 == 0 or set_ is None:
        return False
    set_(AlignedLinear(layer))
    return True


def fuse_tanh_gelu(model: torch.nn.Module) -> int:
    """Swap each formula-written tanh-GELU module for transformers' GELUTanh (one `gelu(approximate="tanh")` op: one
    kernel in eager mode instead of eight, and a pattern compiling.GeluEpilogue can fuse). Returns how many."""
    activations = transformers.activations  # imported here, not with evalkit: it pulls in transformers' loaders
    # the modules that compute 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as a chain of elementwise ops
    formulas = (activations.NewGELUActivation, activations.FastGELUActivation)
    swaps = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if type(child) in formulas]
    for parent, name in swaps:
        setattr(parent, name, activations.GELUTanh())
    return len(swaps)
