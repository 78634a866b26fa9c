"""Faster kernels for the same function, applied by the loading layer to a loaded model.

- float32 linear layers on the CPU, and bfloat16 ones on CPUs with bfloat16 instructions (AVX512-BF16, AMX), run
  through oneDNN with prepacked weights (cpu_linear=auto|onednn);
- an output layer of odd width is padded so the matrix multiply gets an aligned kernel (CUDA);
- the tanh-approximated GELU written out as a formula is swapped for the one-kernel `gelu(approximate="tanh")` (CUDA);
- RMSNorm, RoPE and SwiGLU of Llama-like models as fused kernels (CUDA, half precision, eager): fusions.py;
- compile=...: compiling.py, imported only then.

Each changes rounding only: the model computes the same function.
"""

from __future__ import annotations

import functools
import sys

import torch
import transformers

from evalkit.errors import EvalkitError
from evalkit.loading.compile_policy import COMPILED
from evalkit.loading.fusions import fuse_if_asked, unfuse
from evalkit.loading.options import LoadOptions, compile_at_load
from evalkit.scoring.probes import model_device


class AlignedLinear(torch.nn.Module):
    """A linear layer computed with its output width padded to a multiple of 8, then cut back. cuBLAS has no fast
    kernel for an odd row stride (GPT-2's 50,257-wide output layer fell back to an old, several times slower kernel:
    benchmarks/results/gpu_notes.md). The weight copy costs out_features x in_features more memory."""

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


class OneDNNLinear(torch.nn.Module):
    """nn.Linear for CPU inference through oneDNN with the weight prepacked once.

    Why: PyTorch's default CPU matmul (MKL sgemm) takes a slow path on some CPUs (benchmarks/results has the
    figures per CPU), with float32 results equal to rounding."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1024)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def uses_onednn_linear(model: torch.nn.Module, options: LoadOptions) -> bool:
    if options.cpu_linear == "native" or options.quantization != "none":
        return False
    if compile_at_load(options):  # Inductor cannot lower a packed oneDNN linear (compile=auto: GPUs only)
        return False
    dtypes = onednn_dtypes()
    on_cpu = all(p.device.type == "cpu" and p.dtype in dtypes for p in model.parameters())
    if options.cpu_linear == "onednn" and not on_cpu:
        allowed = "float32" if dtypes == (torch.float32,) else "float32 or bfloat16"
        raise EvalkitError(f"cpu_linear=onednn needs a model on the CPU in {allowed} (bfloat16 only on CPUs with "
                           "bfloat16 instructions) and a PyTorch built with oneDNN")
    return on_cpu


@functools.cache  # a fact of this machine and this PyTorch build: asked once
def onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's prepacked linear serves here: float32, and bfloat16 where the CPU computes it natively
    (elsewhere it would be emulated, slower than float32)."""
    if not torch.backends.mkldnn.is_available():
        return ()
    return (torch.float32, torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else (torch.float32,)


def swap_in_onednn_linear(module: torch.nn.Module) -> None:
    """Replace every nn.Linear below `module` by OneDNNLinear (inference only: no gradients flow through it)."""
    for name, child in module.named_children():
        if type(child) is torch.nn.Linear:
            setattr(module, name, OneDNNLinear(child))
        else:
            swap_in_onednn_linear(child)


def speed_up(model: torch.nn.Module, options: LoadOptions, provenance: dict) -> None:
    """Apply every kernel swap that fits this model and device (after fingerprinting: the oneDNN swap moves weights
    out of the state dict), noting each in the provenance."""
    input_device = model_device(model)
    # the swaps replace or reshape layers, which tensor parallelism has sharded and hooked: then only compile applies
    swaps = not options.tp_plan
    if swaps and uses_onednn_linear(model, options):
        swap_in_onednn_linear(model)
        provenance["cpu_linear"] = "onednn"
    if input_device.type == "cpu" and provenance["dtype"] == "bfloat16" and torch.bfloat16 not in onednn_dtypes():
        print("evalkit: note: this CPU has no bfloat16 instructions (AVX512-BF16, AMX): bfloat16 is emulated here "
              "and runs slower than float32", file=sys.stderr)
    # a model spread over several devices (device_map) runs under accelerate's hooks, which move each layer's inputs
    # to its device; a swapped-in output layer would have no hook and could be handed its input on another device
    if swaps and input_device.type == "cuda" and len(provenance["devices"]) == 1 and align_output_layer(model):
        provenance["output_layer"] = "padded to a multiple of 8 rows on the GPU (aligned matmul kernels)"
    if swaps and input_device.type == "cuda" and fuse_tanh_gelu(model):
        provenance["activation"] = "tanh-GELU formula computed as one gelu(approximate='tanh') op on the GPU"
    mode = compile_at_load(options)
    if swaps and not mode and (fused := fuse_if_asked(model, options.fused_kernels)):
        provenance["fused_kernels"] = fused
    if mode:
        compile_model(model, mode, provenance)


def compile_model(model: torch.nn.Module, mode: bool | str, provenance: dict) -> None:
    """torch.compile the model's regions (compiling.py), its fused layers put back first: Inductor fuses them itself
    (compile=true at loading; compile=auto when the runner chooses it)."""
    from evalkit.loading.compiling import compile_regions  # imports Inductor: seconds, so only when compiling

    if provenance.pop("fused_kernels", None):
        unfuse(model)
    provenance["compile"] = compile_regions(model, None if mode is True else mode)
    COMPILED.add(model)
