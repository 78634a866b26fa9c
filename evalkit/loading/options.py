"""How to load, independent of which model: the loading keys, their allowed values, and the checks that reject an
impossible combination before any weights are read."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from evalkit.config.settings import read_settings, setting
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: the checkpoint's
# name -> (backend, what it does): bitsandbytes quantizes while loading (CUDA only); torchao quantizes the loaded
# model in place, so it also applies to GGUF files and random-init models, which transformers will not combine with a
# quantization_config.
QUANTIZATIONS = {
    "none": (None, None),
    "int8": ("bitsandbytes", "LLM.int8() 8-bit weights"),
    "int4": ("bitsandbytes", "NF4 4-bit weights"),
    "torchao-int8": ("torchao", "int8 weight-only, per-channel scales"),
    "torchao-int4": ("torchao", "int4 weight-only, groups of 128"),
}
CPU_LINEAR = ("auto", "onednn", "native")
FUSED_KERNELS = ("auto", "liger", "none")
MEMORY_PLACES = ("cpu", "disk", "mps")  # what accelerate's max_memory takes besides GPU indices
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # or true / false
COMPILE_CHOICES = ("auto", *COMPILE_MODES)


@dataclass(frozen=True)
class LoadOptions:
    """The loading keys of the config (top-level keys on the command line: `dtype=bfloat16`). The leaderboard labels
    a model run with another value of a `variant` key as a variant of it, in this order: `gpt2 (int8, bfloat16)`."""

    device: str = setting("auto", "where the model runs; auto: a GPU when there is one (under torchrun, this "
                          "process's), else the CPU", pattern=r"auto|cpu|mps|cuda(:\d+)?",
                          allowed="auto, cpu, cuda, cuda:N, mps")
    quantization: str = setting("none", "int8 / int4: bitsandbytes while loading (CUDA); torchao-int8 (CPU too) / "
                                "torchao-int4 (CUDA): the loaded model quantized in place",
                                choices=tuple(QUANTIZATIONS), variant=True)
    dtype: str = setting("auto", "the weights' dtype; auto: the checkpoint's (never float16 on a CPU)",
                         choices=DTYPES, variant=True)
    device_map: str | None = setting(None, "spread a model too large for one device over several, through "
                                     "accelerate (e.g. auto)")
    max_memory: Mapping | None = setting(None, "with device_map: per-device caps, e.g. {0: 10GiB, cpu: 60GiB}",
                                         allowed="a mapping of GPU index, cpu, disk or mps to a size, or null")
    tp_plan: Literal["auto"] | None = setting(None, "tensor parallel: every layer sharded over the processes "
                                              "torchrun starts, by the model's own plan (auto); each process then "
                                              "runs every unit")
    attn_implementation: str | None = setting(None, "the attention kernel; null: transformers' default",
                                              allowed="eager, sdpa, flash_attention_2, flex_attention, ..., a hub "
                                              "kernel (org/repo), or null")
    trust_remote_code: bool = setting(False, "run the model's own code from its folder or hub repository (read it "
                                      "first)")
    cpu_linear: str = setting("auto", "CPU float32 linear layers through oneDNN with prepacked weights (auto, "
                              "onednn) or PyTorch's default (native)", choices=CPU_LINEAR)
    fused_kernels: str = setting("auto", "Llama/Mistral/Qwen models on a GPU in bfloat16/float16, eager: RMSNorm, "
                                 "RoPE and SwiGLU as Liger's fused kernels (auto: when liger-kernel is installed, "
                                 "the [gpu] extra; liger: required; none: transformers' own)", choices=FUSED_KERNELS)
    compile: bool | Literal[COMPILE_CHOICES] = setting(
        "auto", "torch.compile each block, the output layer and the NLL (true, max-autotune-no-cudagraphs; the "
        "CUDA-graph modes compile the whole forward); auto: on a GPU, only when runs measured here say the job's "
        "saving exceeds the compiling cost (README: job size vs mode)")
    seed: int = setting(0, "random-init models are built from this seed")

    def check(self) -> torch.device:
        """The device these options mean here; raises on anything impossible, before any weights are read. Each value
        is checked again: a library caller builds LoadOptions itself."""
        read_settings(LoadOptions, asdict(self))
        check_combinations(self)
        device = resolve_device(self.device)
        check_on_device(self, device)
        return device


def compile_at_load(options: LoadOptions) -> bool | str:
    """What the loading layer compiles: true or a mode as asked; nothing for false and auto (auto is the runner's
    choice, once the job's size is known)."""
    return False if options.compile == "auto" else options.compile


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a `dtype=` value (None for auto: the checkpoint's)."""
    import torch

    return None if name == "auto" else getattr(torch, name)


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N | mps (as read_settings checked it) -> a device that exists here, or a clear error.
    Under torchrun, auto and cuda mean this process's GPU (cuda:LOCAL_RANK)."""
    import torch

    from evalkit.job import distributed

    name = str(name)
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank()) if distributed.world_size() > 1 else torch.device("cuda")
    if name == "auto":
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EvalkitError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EvalkitError(f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise EvalkitError(f"device={name} but MPS is not available here; use device=cpu or device=auto")
    return device


def check_attention(name: str) -> None:
    """transformers' attention kernels by name, or a hub kernel (`org/repo`)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    allowed = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name not in allowed and "/" not in name:
        raise EvalkitError(f"attn_implementation={name} is not allowed; allowed: {', '.join(allowed)}, a hub kernel "
                           "(org/repo), or null")


def check_combinations(options: LoadOptions) -> None:
    """What the values rule out together, before torch is imported (the command line's checks run this); each value
    alone was checked when read (read_settings)."""
    if compile_at_load(options) and options.cpu_linear == "onednn":
        raise EvalkitError("cpu_linear=onednn cannot be combined with compile; use cpu_linear=auto (with compile, "
                           "Inductor chooses the CPU matmul kernels)")
    check_fused_kernels(options, str(options.device).partition(":")[0])
    if options.max_memory and not options.device_map:
        raise EvalkitError("max_memory only applies with a device_map (e.g. device_map=auto)")
    check_tensor_parallel(options)
    if str(options.device).startswith(("cpu", "mps")):
        check_quantization_device(options, str(options.device))
    if QUANTIZATIONS[options.quantization][0] != "bitsandbytes" or str(options.device).startswith("cuda"):
        check_quantization_package(options)  # bitsandbytes on device=auto: once the device is known (CUDA or not)


def check_quantization_package(options: LoadOptions) -> None:
    backend = QUANTIZATIONS[options.quantization][0]
    if backend and importlib.util.find_spec(backend) is None:
        install = "pip install 'evalkit[quant]'" if backend == "torchao" else f"pip install {backend}"
        raise EvalkitError(f"quantization={options.quantization} needs the {backend} package: {install}")


def check_tensor_parallel(options: LoadOptions) -> None:
    if options.tp_plan is None:
        return
    if options.device_map or options.quantization != "none":
        raise EvalkitError(
            "tp_plan=auto shards the model itself: it cannot be combined with device_map or quantization")
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        started = ("torchrun started one process (WORLD_SIZE=1); give it --nproc_per_node N with N >= 2"
                   if "WORLD_SIZE" in os.environ else "start evalkit with torchrun --nproc_per_node N, N >= 2")
        raise EvalkitError(f"tp_plan=auto shards the model over several processes (one per GPU): {started}, or "
                           "leave tp_plan out to run on one device")


def check_fused_kernels(options: LoadOptions, device_type: str) -> None:
    """fused_kernels=liger asks for the fused layers or an error: what rules them out is said before loading."""
    if options.fused_kernels != "liger":
        return
    if compile_at_load(options):
        ruled_out = f"compile={str(options.compile).lower()} (compiling fuses the same layers itself)"
    elif device_type in ("cpu", "mps"):
        ruled_out = f"device={options.device}"
    elif options.dtype == "float32":
        ruled_out = "dtype=float32 (only bfloat16 and float16 are fused)"
    elif options.device_map or options.tp_plan or options.quantization != "none":
        ruled_out = "a model spread over devices or quantized (device_map, tp_plan, quantization)"
    elif importlib.util.find_spec("liger_kernel") is None:
        raise EvalkitError("fused_kernels=liger needs liger-kernel: pip install 'evalkit[gpu]' (or "
                           "fused_kernels=auto|none)")
    else:
        return
    raise EvalkitError(f"fused_kernels=liger applies to eager runs on one GPU in bfloat16 or float16, not with "
                       f"{ruled_out}; use fused_kernels=auto or none")


def check_quantization_device(options: LoadOptions, device_type: str) -> None:
    backend = QUANTIZATIONS[options.quantization][0]
    if (backend == "bitsandbytes" or options.quantization == "torchao-int4") and device_type != "cuda":
        hint = "; on CPU use quantization=torchao-int8" if options.quantization != "torchao-int8" else ""
        raise EvalkitError(f"quantization={options.quantization} ({backend}) needs a CUDA device, not "
                           f"{device_type}{hint}")


def check_on_device(options: LoadOptions, device: torch.device) -> None:
    """What the device here rules out (and the attention kernels this transformers knows)."""
    import torch

    if options.dtype == "float16" and device.type == "cpu":
        raise EvalkitError("dtype=float16 is not supported on CPU (slow and inexact kernels); use float32 or bfloat16")
    if options.attn_implementation is not None:
        check_attention(str(options.attn_implementation))
    places = [*map(str, range(torch.cuda.device_count())), *MEMORY_PLACES]
    for key in options.max_memory or {}:
        if str(key) not in places:
            raise EvalkitError(f"max_memory names '{key}', which is no device here; allowed keys: {', '.join(places)}")
    check_quantization_device(options, device.type)
    check_quantization_package(options)
    check_fused_kernels(options, device.type)
