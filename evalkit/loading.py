"""The shared model-loading layer.

Every evaluator gets its model here. This module knows model sources (hub id, local directory, GGUF file, a file
shipped inside an installed Python package, random init from a config), devices, dtypes, quantization, device maps
and attention kernels — and nothing about tasks: a caller names the head it needs ("causal-lm", ...).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import transformers

from evalkit import ctranslate2_whisper, distributed
from evalkit.errors import EvalkitError
from evalkit.kernels import align_output_layer, fuse_tanh_gelu
from evalkit.results import canonical_json

# head name -> (model auto class, preprocessor auto class)
HEADS = {
    "causal-lm": ("AutoModelForCausalLM", "AutoTokenizer"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "AutoProcessor"),
    "ctc": ("AutoModelForCTC", "AutoProcessor"),
    "sequence-classification": ("AutoModelForSequenceClassification", "AutoTokenizer"),
    "encoder": ("AutoModel", "AutoTokenizer"),
}
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
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
MEMORY_PLACES = ("cpu", "disk", "mps")  # what accelerate's max_memory takes besides GPU indices
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # or true / false
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class LoadOptions:
    """How to load, independent of which model: the top-level loading keys of the Hydra config."""

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    max_memory: Mapping | None = None
    attn_implementation: str | None = None
    quantization: str = "none"
    trust_remote_code: bool = False
    cpu_linear: str = "auto"
    compile: bool | str = False
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping) -> LoadOptions:
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device  # where inputs go (the first device under a device map)
    provenance: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Location:
    """Where a model's (or tokenizer's) files are: a hub id or a local directory, plus an optional GGUF file in it."""

    source: str  # hub | local | packaged
    path: str
    gguf_file: str | None = None
    revision: str | None = None

    def from_pretrained_kwargs(self) -> dict:
        kwargs = {}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        if self.revision:
            kwargs["revision"] = self.revision
        return kwargs


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N | mps -> a device that exists here, or a clear error. Under torchrun, auto and
    cuda mean this process's GPU (cuda:LOCAL_RANK)."""
    name = str(name)
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank()) if distributed.world_size() > 1 else torch.device("cuda")
    if name == "auto":
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EvalkitError(f"device={name} is not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EvalkitError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EvalkitError(f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise EvalkitError(f"device={name} but MPS is not available here; use device=cpu or device=auto")
    elif device.type != "cpu":
        raise EvalkitError(f"device={name} is not supported; allowed: auto, cpu, cuda, cuda:N, mps")
    return device


def weight_devices(model: torch.nn.Module) -> list[str]:
    """Where the weights live: accelerate's device map when there is one (weights it offloads to the CPU or disk sit
    on the 'meta' device until their layer runs), else the parameters' devices."""
    placement = getattr(model, "hf_device_map", None)
    if placement:
        return sorted({f"cuda:{place}" if isinstance(place, int) else str(place) for place in placement.values()})
    return sorted({str(p.device) for p in model.parameters()})


def check_options(options: LoadOptions, device: torch.device) -> None:
    """Reject impossible combinations before any weights are read."""
    if options.dtype not in DTYPES:
        raise EvalkitError(f"dtype={options.dtype} is not allowed; allowed: {', '.join(DTYPES)}")
    if options.dtype == "float16" and device.type == "cpu":
        raise EvalkitError("dtype=float16 is not supported on CPU (slow and inexact kernels); use float32 or bfloat16")
    if options.cpu_linear not in CPU_LINEAR:
        raise EvalkitError(f"cpu_linear={options.cpu_linear} is not allowed; allowed: {', '.join(CPU_LINEAR)}")
    if options.quantization not in QUANTIZATIONS:
        raise EvalkitError(f"quantization={options.quantization} is not allowed; allowed: {', '.join(QUANTIZATIONS)}")
    if not (isinstance(options.compile, bool) or options.compile in COMPILE_MODES):
        raise EvalkitError(f"compile={options.compile} is not allowed; allowed: true, false, {', '.join(COMPILE_MODES)}")
    if options.compile and options.cpu_linear == "onednn":
        raise EvalkitError("cpu_linear=onednn cannot be combined with compile; use cpu_linear=auto (with compile, "
                           "Inductor chooses the CPU matmul kernels)")
    if options.max_memory:
        places = [*map(str, range(torch.cuda.device_count())), *MEMORY_PLACES]
        for key in options.max_memory:
            if str(key) not in places:
                allowed = ", ".join(places)
                raise EvalkitError(f"max_memory names '{key}', which is no device here; allowed keys: {allowed}")
    backend = QUANTIZATIONS[options.quantization][0]
    needs_cuda = backend == "bitsandbytes" or options.quantization == "torchao-int4"
    if needs_cuda and device.type != "cuda":
        hint = "; on CPU use quantization=torchao-int8" if options.quantization != "torchao-int8" else ""
        raise EvalkitError(f"quantization={options.quantization} ({backend}) needs a CUDA device, not {device}{hint}")
    if backend and importlib.util.find_spec(backend) is None:
        raise EvalkitError(f"quantization={options.quantization} needs the {backend} package: pip install {backend}")


PACKAGE_SCHEME = "package:"


def local_path(name: str, install_hint: str | None = None) -> tuple[Path, str]:
    """`package:NAME/INNER` -> (folder of the installed package NAME / INNER, "packaged"); anything else ->
    (the path as given, "local")."""
    if not name.startswith(PACKAGE_SCHEME):
        return Path(name).expanduser(), "local"
    package, _, inner = name.removeprefix(PACKAGE_SCHEME).partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        hint = install_hint or f"install the package that provides '{package}'"
        raise EvalkitError(f"model package '{package}' is not installed: {hint}")
    return Path(list(found.submodule_search_locations)[0]) / inner, "packaged"


def resolve_location(spec: Mapping) -> Location:
    """A model spec's `name_or_path` (+ `gguf_file`, `revision`) -> where the files are.

    name_or_path is a hub id, a local directory, a local .gguf file, or `package:NAME/FILE_OR_DIR`: files shipped
    inside an installed Python package, found without importing it (its import may need heavy dependencies).
    """
    name = str(spec.get("name_or_path") or "")
    if not name:
        raise EvalkitError("the model has no source: set model.name_or_path=<hub id, local directory or .gguf file>")
    path, source = local_path(name, spec.get("install"))
    if path.is_file():
        if path.suffix != ".gguf":
            raise EvalkitError(f"model.name_or_path={name} is a file; only .gguf files or directories load")
        return Location(source, str(path.parent.resolve()), path.name)
    if path.is_dir():
        gguf_file = spec.get("gguf_file")
        if gguf_file and not (path / gguf_file).is_file():
            raise EvalkitError(f"GGUF file {gguf_file} not found in {path}")
        return Location(source, str(path.resolve()), gguf_file)
    if source == "packaged" or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise EvalkitError(f"model.name_or_path={name} does not exist (expected a hub id or a local path)")
    return Location("hub", name, spec.get("gguf_file"), spec.get("revision"))


def sha256_files(paths: list[Path]) -> str:
    """sha256 of the files' contents in order, as if concatenated (parts of one file hash as the whole file). Hashed
    once per process while the files' sizes and modification times stay the same (a sweep asks many times)."""
    stamps = tuple((str(Path(p).resolve()), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
    return _sha256_stamped_files(stamps)


@functools.lru_cache(maxsize=64)
def _sha256_stamped_files(stamps: tuple, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(location: Location) -> dict:
    """sha256 of the weight files of a local source (one digest, over per-file digests when there are several)."""
    root = Path(location.path)
    if location.gguf_file:
        files = [root / location.gguf_file]
    else:
        files = sorted(p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    digests = {p.name: sha256_files([p]) for p in files}
    if len(digests) == 1:
        combined = next(iter(digests.values()))
    else:
        combined = hashlib.sha256("".join(f"{n}:{d}\n" for n, d in digests.items()).encode()).hexdigest()
    return {"weights_sha256": combined, "weight_files": digests}


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit a hub id + revision means now: asked of the hub when online, else the one this machine's hub cache
    last resolved; None when neither can tell."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    import huggingface_hub

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        try:
            return huggingface_hub.HfApi().model_info(repo, revision=revision).sha
        except Exception:  # any failure to reach or ask the hub: fall back to what the local cache knows
            pass
    cached = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    ref = cached / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def model_fingerprint(spec: Mapping, options: LoadOptions) -> str | None:
    """What identifies a model's weights, known before they are loaded: sha256 of local weight files, the pinned hub
    commit, or the recipe of a random init (with the seed). None when a hub revision cannot be pinned."""
    if spec.get("architecture") is not None:
        recipe = {"architecture": spec["architecture"], "config": dict(spec.get("config") or {}), "seed": options.seed}
        return "random-init:" + hashlib.sha256(canonical_json(recipe).encode()).hexdigest()
    location = resolve_location(spec)
    if spec.get("format") == "ctranslate2":
        return "sha256:" + sha256_files(ctranslate2_weight_files(spec, location))
    if location.source == "hub":
        commit = hub_commit(location.path, location.revision)
        return f"hub:{location.path}@{commit}" if commit else None
    return "sha256:" + weights_fingerprint(location)["weights_sha256"]


def tensors_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the parameters and buffers of a model built in memory (random init has no files to hash)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def context_length(config: Any) -> int | None:
    """The longest input the model's positions allow, or None when its config does not say."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_config(location: Location, options: LoadOptions) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(
            location.path, trust_remote_code=options.trust_remote_code, **location.from_pretrained_kwargs()
        )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        raise EvalkitError(
            f"could not load model '{location.path}' ({first_line}); offline, point at a local copy with "
            f"model.name_or_path=DIR"
        ) from None


def model_config(spec: Mapping, options: LoadOptions) -> Any:
    """The transformers config of a model spec (random init: built from the spec's `architecture` and `config`)."""
    if spec.get("architecture") is not None:
        return transformers.AutoConfig.for_model(spec["architecture"], **dict(spec.get("config") or {}))
    return load_config(resolve_location(spec), options)


class ModelPool:
    """Models kept loaded between the jobs of a sweep run in one process (Hydra's basic launcher runs them one after
    another), keyed by the model spec, the loading options and the head. Before a model not in the pool is loaded,
    every model the current job has not asked for is dropped and the accelerator's cached memory released, so two
    different models never share the card. Off until a job starts: library callers get a fresh model each time."""

    def __init__(self):
        self.models: dict[str, LoadedModel] = {}
        self.wanted: set[str] = set()
        self.reused: list[str] = []
        self.enabled = False

    def start_job(self) -> None:
        self.enabled, self.wanted, self.reused = True, set(), []

    def get(self, spec: Mapping, options: LoadOptions, head: str) -> LoadedModel:
        if not self.enabled:
            return load_fresh(spec, options, head)
        key = canonical_json([dict(spec), asdict(options), head])
        self.wanted.add(key)
        if key in self.models:
            self.reused.append(spec.get("name") or str(spec.get("name_or_path")))
            print(f"evalkit: reusing the loaded model {self.reused[-1]} (same model and loading settings)",
                  file=sys.stderr)
            return self.models[key]
        stale = set(self.models) - self.wanted
        for key_to_drop in stale:
            del self.models[key_to_drop]
        if stale:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.models[key] = load_fresh(spec, options, head)
        return self.models[key]


MODELS = ModelPool()


def load_model(spec: Mapping, options: LoadOptions, head: str) -> LoadedModel:
    """A model with the given head, its tokenizer and a provenance record (from the pool when a sweep job runs)."""
    return MODELS.get(spec, options, head)


def load_fresh(spec: Mapping, options: LoadOptions, head: str) -> LoadedModel:
    """Load a model with the given head, its tokenizer and a provenance record."""
    model_class_name, preprocessor_class_name = HEADS[head]
    model_class = getattr(transformers, model_class_name)
    preprocessor_class = getattr(transformers, preprocessor_class_name)
    device = resolve_device(options.device)
    check_options(options, device)
    random_init = spec.get("architecture") is not None
    if spec.get("format") == "ctranslate2":
        return load_ctranslate2(spec, options, device, head)

    config = model_config(spec, options)
    if random_init:
        tokenizer_location = resolve_location(spec.get("tokenizer") or {})
    else:
        location = resolve_location(spec)
        tokenizer_location = resolve_location(spec["tokenizer"]) if spec.get("tokenizer") else location
    if type(config) not in model_class._model_mapping:
        raise EvalkitError(
            f"model '{spec.get('name')}' (model_type={config.model_type}) has no {head} head; "
            f"this evaluation needs a {head} model"
        )

    dtype = DTYPES[options.dtype]
    if dtype is None:  # auto: the checkpoint's own dtype, but never half precision on CPU
        dtype = getattr(config, "dtype", None) or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if device.type == "cpu" and dtype == torch.float16:
            dtype = torch.float32
    load_kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": options.trust_remote_code}
    if options.attn_implementation:
        load_kwargs["attn_implementation"] = options.attn_implementation
    if QUANTIZATIONS[options.quantization][0] == "bitsandbytes":
        load_kwargs["quantization_config"] = bitsandbytes_config(options.quantization, dtype)
        load_kwargs["device_map"] = options.device_map or {"": device}
    elif options.device_map:
        load_kwargs["device_map"] = options.device_map
    if options.max_memory:
        if "device_map" not in load_kwargs:
            raise EvalkitError("max_memory only applies with a device_map (e.g. device_map=auto)")
        load_kwargs["max_memory"] = dict(options.max_memory)

    if random_init:
        if "device_map" in load_kwargs:
            raise EvalkitError("device_map needs weights on disk; save the random-init model and load it by path")
        torch.manual_seed(options.seed)
        model = model_class.from_config(config, **load_kwargs)
    else:
        try:
            model = model_class.from_pretrained(location.path, **location.from_pretrained_kwargs(), **load_kwargs)
        except OSError as error:
            raise EvalkitError(f"could not load weights of '{location.path}': {str(error).splitlines()[0]}") from None
    if "device_map" not in load_kwargs:
        model.to(device)
    model.eval()
    if QUANTIZATIONS[options.quantization][0] == "torchao":
        torchao_quantize(model, options.quantization)
    tokenizer = preprocessor_class.from_pretrained(
        tokenizer_location.path, trust_remote_code=options.trust_remote_code, **tokenizer_location.from_pretrained_kwargs()
    )

    input_device = next(model.parameters()).device
    provenance = {
        "name": spec.get("name"),
        "source": "random-init" if random_init else location.source,
        "location": None if random_init else location.path,
        "gguf_file": None if random_init else location.gguf_file,
        "revision": None if random_init else location.revision,
        "commit": getattr(config, "_commit_hash", None),
        "model_type": config.model_type,
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "devices": weight_devices(model),
        "quantization": {
            "scheme": options.quantization,
            "backend": QUANTIZATIONS[options.quantization][0],
            "method": QUANTIZATIONS[options.quantization][1],
            "source_format": "gguf (dequantized on load)" if not random_init and location.gguf_file else None,
        },
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "context_length": context_length(config),
        "tokenizer": tokenizer_location.path + (f"/{tokenizer_location.gguf_file}" if tokenizer_location.gguf_file else ""),
    }
    if random_init:
        provenance.update(seed=options.seed, config=config.to_diff_dict(), weights_sha256=tensors_fingerprint(model))
    elif location.source != "hub":
        provenance.update(weights_fingerprint(location))
    if uses_onednn_linear(model, options):  # after fingerprinting: the swap moves weights out of the state dict
        swap_in_onednn_linear(model)
        provenance["cpu_linear"] = "onednn"
    # a model spread over several devices (device_map) runs under accelerate's hooks, which move each layer's inputs
    # to its device; a swapped-in output layer would have no hook and could be handed its input on another device
    if input_device.type == "cuda" and len(provenance["devices"]) == 1 and align_output_layer(model):
        provenance["output_layer"] = "padded to a multiple of 8 rows on the GPU (aligned matmul kernels)"
    if input_device.type == "cuda" and fuse_tanh_gelu(model):
        provenance["activation"] = "tanh-GELU formula computed as one gelu(approximate='tanh') op on the GPU"
    if options.compile:
        from evalkit.compiling import compile_regions  # imports Inductor: seconds, so only when compiling

        provenance["compile"] = compile_regions(model, None if options.compile is True else options.compile)
    return LoadedModel(model=model, tokenizer=tokenizer, device=input_device, provenance=provenance)


def ctranslate2_weight_files(spec: Mapping, location: Location) -> list[Path]:
    """model.bin, or the parts that concatenate to it (`model_bin`), each checked to exist."""
    parts = [local_path(str(p), spec.get("install"))[0] for p in spec.get("model_bin") or []]
    parts = parts or [Path(location.path) / "model.bin"]
    for part in parts:
        if not part.is_file():
            raise EvalkitError(f"CTranslate2 model file {part} does not exist")
    return parts


def load_ctranslate2(spec: Mapping, options: LoadOptions, device: torch.device, head: str) -> LoadedModel:
    """A faster-whisper / CTranslate2 Whisper folder, its model.bin optionally split into `model_bin` parts."""
    if head != "speech-seq2seq":
        raise EvalkitError(f"model '{spec.get('name')}' is a CTranslate2 Whisper checkpoint; this evaluation needs a {head}")
    if options.quantization != "none" or options.device_map:
        raise EvalkitError("CTranslate2 checkpoints load on one device, unquantized (quantization=none, no device_map)")
    location = resolve_location(spec)
    parts = ctranslate2_weight_files(spec, location)
    dtype = DTYPES[options.dtype] or torch.float32  # auto: CTranslate2 stores float16; evaluate in float32
    model, processor = ctranslate2_whisper.load(Path(location.path), parts, dtype)
    model.to(device)
    provenance = {
        "name": spec.get("name"), "source": location.source, "format": "ctranslate2", "location": location.path,
        "weight_files": [str(p) for p in parts], "weights_sha256": sha256_files(parts), "model_type": "whisper",
        "class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."), "devices": [str(device)],
        "quantization": {"scheme": "none", "backend": None, "method": None, "source_format": "ctranslate2"},
    }
    return LoadedModel(model=model, tokenizer=processor, device=device, provenance=provenance)


def torchao_quantize(model: torch.nn.Module, scheme: str) -> None:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig() if scheme == "torchao-int8" else Int4WeightOnlyConfig(group_size=128))


def bitsandbytes_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    if quantization == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )


class OneDNNLinear(torch.nn.Module):
    """nn.Linear for CPU inference through oneDNN with the weight prepacked once.

    Why: PyTorch's default CPU matmul (MKL sgemm) takes a slow path on some CPUs (AMD EPYC here: oneDNN measured
    1.2-1.4x faster on a transformer's linear layers, with float32 results equal to rounding)."""

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
    if options.compile:  # Inductor cannot lower an already packed oneDNN linear (check_options rejects onednn)
        return False
    on_cpu_float32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    if options.cpu_linear == "onednn" and not (on_cpu_float32 and torch.backends.mkldnn.is_available()):
        raise EvalkitError("cpu_linear=onednn needs a float32 model on the CPU and a PyTorch built with oneDNN")
    return on_cpu_float32 and torch.backends.mkldnn.is_available()


def swap_in_onednn_linear(module: torch.nn.Module) -> None:
    """Replace every nn.Linear below `module` by OneDNNLinear (inference only: no gradients flow through it)."""
    for name, child in module.named_children():
        if type(child) is torch.nn.Linear:
            setattr(module, name, OneDNNLinear(child))
        else:
            swap_in_onednn_linear(child)


@torch.inference_mode()
def ensure_causal(model: torch.nn.Module, name: str) -> None:
    """Reject models whose outputs at a position depend on later tokens (e.g. a BERT given a causal-LM head)."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(0, vocab, (2, 4), generator=generator)
    probe[1, :3] = probe[0, :3]  # same prefix, different last token
    logits = model(input_ids=probe.to(device), use_cache=False).logits.float()
    if not torch.allclose(logits[0, :3], logits[1, :3], rtol=1e-3, atol=1e-3):
        raise EvalkitError(
            f"model '{name}' is not causal (its outputs depend on later tokens); this evaluation needs a causal LM"
        )
