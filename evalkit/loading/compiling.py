"""torch.compile for `compile=...`: each transformer block and the output layer, with Inductor's kernel tuning and a
pass that runs a tanh-GELU applied to a bias matmul's output in cuBLASLt's matmul epilogue (`torch._addmm_activation`),
so the activation makes no pass of its own over memory. Importing this module imports Inductor (seconds): the loading
layer does so only when asked to compile.
"""

from __future__ import annotations

import os
import sys

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from evalkit.loading.compile_policy import compile_cache
from evalkit.scoring.probes import model_device

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


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
    the matmul out, then read it back for a separate GELU kernel (what that cost: benchmarks/results/gpu_notes.md)."""

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


def keep_compiled_artifacts() -> None:
    """Inductor's and AOTAutograd's caches (compiled graphs and tuned kernels, keyed by graph, options and versions)
    in evalkit's cache folder, so that a second process (the next job of a sweep, a Slurm array on a shared
    filesystem) skips most of the compiling: compile_policy.compile_cache. A TORCHINDUCTOR_CACHE_DIR the user set
    wins (importing Inductor sets torch's default there: that one is replaced)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder = compile_cache()  # here, as one line: Inductor would fail deep inside the first compile with a traceback
    if folder and os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def compile_regions(model: torch.nn.Module, mode: str | None) -> str:
    """torch.compile each repeated block (the classes transformers keeps whole on one device, `_no_split_modules`) and
    the output layer; the model's own forward stays eager. Why not the whole forward: traced, transformers cannot
    prove a mask redundant, so it builds an explicit causal mask and SDPA leaves its flash path for a slower kernel;
    and the blocks share one graph (parameters are its inputs), so compiling is quicker.
    Shapes are static: an evaluator feeds a handful of distinct shapes, each worth its own specialised graph.

    Beyond the mode's own options, Inductor tunes its elementwise and reduction kernels (coordinate descent: its
    default LayerNorm kernel of gpt2-large's block ran far below memory bandwidth, benchmarks/results/gpu_notes.md)
    and runs `GeluEpilogue`."""
    keep_compiled_artifacts()
    if os.environ.get("RANK", "0") == "0":  # the first batches wait for it, under a still bar: said once per job
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        print(f"evalkit: compiling the model (mode {mode or 'default'}) as its first batches run; compiled graphs "
              f"are kept in {cache_dir()} for later runs", file=sys.stderr)
    options = {**torch._inductor.list_mode_options(mode or "default"), "coordinate_descent_tuning": True,
               "pre_grad_custom_pass": GeluEpilogue()}
    if model_device(model).type == "cpu":
        # weights as constants: Inductor prepacks them for oneDNN and fuses the ops around each matmul (what
        # cpu_linear=onednn does for eager runs, which compiling cannot take)
        options["freezing"] = True
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


def compile_statistics() -> dict[str, float]:
    """What compiling has cost this process so far: seconds in torch.compile (tracing, then Inductor or its cache),
    graphs compiled, and how many of them Inductor's compiled-graph cache served."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    return {"compile_seconds": sum(compilation_time_metrics.get("_compile.compile_inner", ())),
            "graphs_compiled": counters["frames"]["ok"], "graphs_from_cache": counters["inductor"]["fxgraph_cache_hit"]}
