"""Faster kernels for the same function, applied by the loading layer to a loaded model.

- an output layer of odd width is padded so the matrix multiply gets an aligned kernel (CUDA);
- the tanh-approximated GELU written out as a formula is swapped for the one-kernel `gelu(approximate="tanh")` (CUDA);
- `compile=...` torch.compiles each transformer block and the output layer; inside those graphs a tanh-GELU applied to
  a bias matmul's output runs in cuBLASLt's matmul epilogue (`torch._addmm_activation`), so the activation makes no
  pass of its own over memory.

Each changes rounding only: the model computes the same function.
"""

from __future__ import annotations

import torch
import transformers
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from evalkit.errors import EvalkitError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# transformers' activations that compute 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as a chain of elementwise ops
TANH_GELU_FORMULAS = (transformers.activations.NewGELUActivation, transformers.activations.FastGELUActivation)


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
    kernel in eager mode instead of eight, and a pattern `GeluEpilogue` can fuse). Returns how many."""
    swaps = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if type(child) in TANH_GELU_FORMULAS]
    for parent, name in swaps:
        setattr(parent, name, transformers.activations.GELUTanh())
    return len(swaps)


def is_tanh_gelu(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target is not torch._C._nn.gelu:
        return False
    return node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none") == "tanh"


def on_cuda(node: torch.fx.Node) -> bool:
    value = node.meta.get("example_value")  # what dynamo traced through this node
    return value is not None and value.device.type == "cuda"


class GeluEpilogue(CustomGraphPass):
    """Inductor pre-grad pass: on CUDA, tanh-GELU of `addmm(bias, x, w)` (optionally through a view, as transformers'
    Conv1D does) becomes `_addmm_activation(bias, x, w, use_gelu=True)`: cuBLASLt's GELU epilogue, the tanh
    approximation (on CPU that op computes the exact GELU, so CPU graphs are left alone). Inductor itself would write
    the matmul out, then read it back for a separate GELU kernel: on an H200, gpt2-large's block at 131,072 rows ran
    in 9.58 ms against 10.08 ms."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for gelu in [node for node in graph.nodes if is_tanh_gelu(node)]:
            source = gelu.args[0]
            view = source if source.op == "call_method" and source.target in ("view", "reshape") else None
            addmm = view.args[0] if view is not None else source
            if not (isinstance(addmm, torch.fx.Node) and addmm.op == "call_function" and addmm.target is torch.addmm
                    and len(addmm.args) == 3 and not addmm.kwargs and len(addmm.users) == 1
                    and (view is None or len(view.users) == 1) and on_cuda(addmm)):
                continue
            with graph.inserting_after(addmm):
                fused = graph.call_function(torch._addmm_activation, addmm.args, {"use_gelu": True})
            addmm.replace_all_uses_with(fused)
            gelu.replace_all_uses_with(fused if view is None else view)
            graph.erase_node(gelu)
            graph.erase_node(addmm)

    def uuid(self) -> bytes:  # Inductor's compiled-graph cache key: changes when this file does
        return get_hash_for_files((__file__,))


def check_compile(compile_: bool | str) -> None:
    if not (isinstance(compile_, bool) or compile_ in COMPILE_MODES):
        raise EvalkitError(f"compile={compile_} is not allowed; allowed: true, false, {', '.join(COMPILE_MODES)}")


def compile_regions(model: torch.nn.Module, mode: str | None) -> str:
    """torch.compile each repeated block (the classes transformers keeps whole on one device, `_no_split_modules`) and
    the output layer; the model's own forward stays eager. Why not the whole forward: traced, transformers cannot
    prove a mask redundant, so it builds an explicit causal mask and SDPA leaves its flash path (measured 3x slower
    attention on an H200); and the blocks share one graph (parameters are its inputs), so compiling is quicker.
    Shapes are static: an evaluator feeds a handful of distinct shapes, each worth its own specialised graph.

    Beyond the mode's own options, Inductor tunes its elementwise and reduction kernels (coordinate descent: on an
    H200 the default LayerNorm kernel of gpt2-large's block ran at a quarter of memory bandwidth, 0.66 ms against
    0.18 ms tuned) and runs `GeluEpilogue`."""
    options = {**torch._inductor.list_mode_options(mode or "default"), "coordinate_descent_tuning": True,
               "pre_grad_custom_pass": GeluEpilogue()}
    # one graph per input shape; a sweep reusing the loaded model (other strides, window lengths, batch sizes) needs
    # more than dynamo's default 8, past which it would silently run the blocks eagerly
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    block_classes = set(getattr(model, "_no_split_modules", None) or [])
    regions = [m for m in model.modules() if type(m).__name__ in block_classes]
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # CUDA-graph modes replay one captured graph per call: per-block graphs overwrite each other's outputs (measured:
    # "accessing tensor output of CUDAGraphs that has been overwritten"), so they, and models without a known block
    # structure, compile the whole forward
    if not regions or mode in CUDA_GRAPH_MODES:
        model.forward = torch.compile(model.forward, options=options, dynamic=False)
        return f"{mode or 'default'} (whole forward)"
    for module in regions + ([output_layer] if output_layer is not None else []):
        module.compile(options=options, dynamic=False)
    return f"{mode or 'default'} ({len(regions)} {'/'.join(sorted(block_classes))} blocks + output layer)"
