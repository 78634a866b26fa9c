"""Loading a transformers model with the head a caller names: weights from any source, on the asked device and
dtype, quantized, spread by a device map, with its tokenizer or processor and a provenance record."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
import transformers

from evalkit.errors import EvalkitError
from evalkit.extras import extra
from evalkit.loading import ctranslate2, gguf_cache
from evalkit.loading.compile_policy import eager_for
from evalkit.loading.facts import context_length
from evalkit.loading.fingerprints import init_generator, random_init_recipe, recipe_digest, weights_fingerprint
from evalkit.loading.kernels import speed_up
from evalkit.loading.loaded import LoadedModel, weight_devices
from evalkit.loading.locations import (
    Location,
    dequantized,
    is_ctranslate2,
    is_random_init,
    resolve_location,
    tokenizer_location,
)
from evalkit.loading.options import QUANTIZATIONS, LoadOptions, torch_dtype
from evalkit.loading.sources import HEADS, check_head, model_class, model_config
from evalkit.scoring.probes import model_device


def load_fresh(spec: Mapping, options: LoadOptions, head: str, config: Any = None) -> LoadedModel:
    """Load a model with the given head, its tokenizer and a provenance record (`config`: the model's transformers
    config when the caller has read it already)."""
    device = options.check()
    if is_ctranslate2(spec):
        return ctranslate2.load_checkpoint(spec, options, device, head)
    config = config if config is not None else model_config(spec, options.trust_remote_code)
    check_head(spec, config, head)
    location = None if is_random_init(spec) else resolve_location(spec)
    copy = location and dequantized(location)  # a GGUF dequantized before: a plain folder
    dtype = model_dtype(options, config, device)
    kwargs = load_kwargs(options, dtype, device)
    print(f"evalkit: loading {spec.get('name')} from {loading_from(location, copy)}", file=sys.stderr, flush=True)
    model = build_model(spec, config, copy or location, head, options, kwargs, device)
    if not {"device_map", "distributed_config"} & set(kwargs):  # else placed while loading
        model.to(device)
    model.eval()
    tokenizer_at = tokenizer_location(spec)
    tokenizer = load_tokenizer(copy if copy and tokenizer_at == location else tokenizer_at, head, options)
    if location and location.gguf_file and not copy and not {"quantization_config", "device_map"} & set(kwargs):
        gguf_cache.keep(location, model, tokenizer)
    provenance = describe(spec, options, model, config, location, tokenizer_at, dtype, device)  # as built
    if QUANTIZATIONS[options.quantization][0] == "torchao":
        torchao_quantize(model, options.quantization)
    if copy:
        provenance["loaded_from"] = f"{copy.path} (the GGUF's dequantized copy)"
    speed_up(model, options, provenance)
    return LoadedModel(model=model, tokenizer=tokenizer, device=model_device(model), head=head,
                       context_length=context_length(config), provenance=provenance)


def loading_from(location: Location | None, copy: Location | None) -> str:
    if location is None:
        return "its config (random init)"
    if copy:
        return f"{copy.path} (the dequantized copy of {location.gguf_file}, kept by an earlier load)"
    if location.gguf_file:
        return f"{location.path}/{location.gguf_file} (GGUF: parsed and dequantized by transformers)"
    return f"{location.path} ({location.source}" + (f", revision {location.revision})" if location.revision else ")")


def load_tokenizer(location: Location, head: str, options: LoadOptions) -> Any:
    try:
        return getattr(transformers, HEADS[head][1]).from_pretrained(
            location.path, trust_remote_code=options.trust_remote_code, **location.from_pretrained_kwargs()
        )
    except Exception as error:  # as for the weights: many kinds
        raise EvalkitError(f"could not load the tokenizer of '{location.path}' ({first_line(error)})") from None


def model_dtype(options: LoadOptions, config: Any, device: torch.device) -> torch.dtype:
    """The asked dtype; auto: the checkpoint's own, but never half precision on CPU."""
    dtype = torch_dtype(options.dtype)
    if dtype is not None:
        return dtype
    dtype = getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.float32 if device.type == "cpu" and dtype == torch.float16 else dtype


def load_kwargs(options: LoadOptions, dtype: torch.dtype, device: torch.device) -> dict:
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": options.trust_remote_code}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    if QUANTIZATIONS[options.quantization][0] == "bitsandbytes":
        kwargs["quantization_config"] = bitsandbytes_config(options.quantization, dtype)
        kwargs["device_map"] = options.device_map or {"": device}
    elif options.device_map:
        kwargs["device_map"] = options.device_map
    if options.tp_plan:
        from transformers.distributed import DistributedConfig

        kwargs["distributed_config"] = DistributedConfig(tp_plan=options.tp_plan)
    if options.max_memory:
        kwargs["max_memory"] = dict(options.max_memory)
    return kwargs


def build_model(spec: Mapping, config: Any, location: Location | None, head: str, options: LoadOptions,
                kwargs: dict, device: torch.device) -> torch.nn.Module:
    """Random weights from the config (seeded; built on the GPU itself when it runs there), or the weights at
    `location`."""
    auto_class = model_class(head)
    if location is None:
        if {"device_map", "distributed_config"} & set(kwargs):
            raise EvalkitError("device_map and tp_plan need weights on disk; save the random-init model and load it "
                               "by path")
        torch.manual_seed(options.seed)
        try:
            with torch.device(device if init_generator(device.type) == "cuda" else "cpu"):
                return auto_class.from_config(config, **kwargs)
        except Exception as error:  # a model.config value of the wrong type or size
            raise EvalkitError(f"could not build the random-init model of '{spec.get('name')}' from model.config "
                               f"({first_line(error)})") from None
    try:
        return auto_class.from_pretrained(location.path, **location.from_pretrained_kwargs(), **kwargs)
    except Exception as error:  # truncated or corrupt files raise many kinds (OSError, ValueError, struct.error, ...)
        raise EvalkitError(f"could not load the weights of '{location.path}' ({first_line(error)})") from None


def describe(spec: Mapping, options: LoadOptions, model: torch.nn.Module, config: Any, location: Location | None,
             tokenizer_at: Location, dtype: torch.dtype, device: torch.device) -> dict:
    """The provenance record: where the weights came from and their fingerprint, and how they were loaded."""
    provenance = {
        "name": spec.get("name"),
        "source": "random-init" if location is None else location.source,
        "location": location and location.path,
        "gguf_file": location and location.gguf_file,
        "revision": location and location.revision,
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
            "source_format": "gguf (dequantized on load)" if location and location.gguf_file else None,
        },
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "context_length": context_length(config),
        "tokenizer": tokenizer_at.path + (f"/{tokenizer_at.gguf_file}" if tokenizer_at.gguf_file else ""),
    }
    if options.tp_plan:
        provenance["tensor_parallel"] = model.tp_size
    if location is None:
        recipe = random_init_recipe(spec, options.seed, device.type)
        provenance.update(seed=recipe["seed"], config=config.to_diff_dict(), weights_sha256=recipe_digest(recipe),
                          weights_identified_by="random-init recipe")
    elif location.source != "hub":
        provenance.update(weights_fingerprint(location))
    return provenance


def torchao_quantize(model: torch.nn.Module, scheme: str) -> None:
    quantization = extra("torchao.quantization")
    config = quantization.Int8WeightOnlyConfig() if scheme == "torchao-int8" else quantization.Int4WeightOnlyConfig(
        group_size=128)
    quantization.quantize_(model, config)


def bitsandbytes_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    if quantization == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no message'}"


@torch.inference_mode()
def ensure_causal(model: torch.nn.Module, name: str) -> None:
    """Reject models whose outputs at a position depend on later tokens (e.g. a BERT given a causal-LM head), and
    models whose outputs are not finite."""
    vocab = model.get_input_embeddings().num_embeddings
    device = model_device(model)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(0, vocab, (2, 4), generator=generator)
    probe[1, :3] = probe[0, :3]  # same prefix, different last token
    with eager_for(model):  # a probe's shape is never worth a compile
        logits = model(input_ids=probe.to(device), use_cache=False).logits.float()
    if not logits.isfinite().all():
        raise EvalkitError(f"model '{name}' gives non-finite outputs (NaN or infinity) on a probe input; its weights "
                           "may be corrupt, or the dtype too narrow for it")
    if not torch.allclose(logits[0, :3], logits[1, :3], rtol=1e-3, atol=1e-3):
        raise EvalkitError(
            f"model '{name}' is not causal (its outputs depend on later tokens); this evaluation needs a causal LM"
        )
