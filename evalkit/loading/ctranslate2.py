"""faster-whisper / CTranslate2 Whisper checkpoints (model.bin + config.json + tokenizer.json), read into transformers'
WhisperForConditionalGeneration without the CTranslate2 runtime. model.bin may be split into parts (`model_bin` in the
model spec) that concatenate to it.

model.bin (little-endian): uint32 binary version, uint16-length-prefixed spec name, uint32 revision, uint32 variable
count; per variable: uint16-length-prefixed name, uint8 rank, rank x uint32 shape, uint8 dtype id, uint32 byte count,
raw data; then uint32 alias count and (alias, target) name pairs.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import transformers

from evalkit.errors import EvalkitError
from evalkit.hashing import sha256_files
from evalkit.loading.loaded import LoadedModel
from evalkit.loading.locations import Location, local_path, resolve_location
from evalkit.loading.options import LoadOptions, torch_dtype

NUMPY_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5: bfloat16 bits


def read_variables(parts: list[Path]) -> dict[str, torch.Tensor]:
    """Every variable of a model.bin given as one file or as parts to concatenate in order."""
    data = memoryview(b"".join(part.read_bytes() for part in parts))
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def name() -> str:
        (length,) = take("H")
        nonlocal offset
        text = bytes(data[offset : offset + length]).decode().rstrip("\0")
        offset += length
        return text

    version = take("I")[0]
    if version != 6:
        raise EvalkitError(f"CTranslate2 model.bin binary version {version} is not supported (6 is)")
    spec = name()
    take("I")  # the spec revision (3 in both packaged checkpoints): reading the variables does not depend on it
    (count,) = take("I")
    if spec != "WhisperSpec":
        raise EvalkitError(f"model.bin holds a {spec}, not a WhisperSpec")
    variables = {}
    for _ in range(count):
        key = name()
        (rank,) = take("B")
        shape = take("I" * rank)
        dtype, size = take("B")[0], take("I")[0]
        array = np.frombuffer(data[offset : offset + size], dtype=NUMPY_DTYPES[dtype]).reshape(shape)
        offset += size
        tensor = torch.from_numpy(array.copy())
        variables[key] = tensor.view(torch.bfloat16) if dtype == 5 else tensor
    (aliases,) = take("I")
    for _ in range(aliases):
        alias, target = name(), name()
        variables[alias] = variables[target]
    if any(k.endswith("weight_scale") for k in variables):
        raise EvalkitError("int8-quantized CTranslate2 checkpoints are not supported; use a float16/float32 one")
    return variables


def count_layers(variables: dict, stack: str) -> int:
    return len({k.split("/")[1] for k in variables if re.match(rf"{stack}/layer_\d+/", k)})


def state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CTranslate2 names -> WhisperForConditionalGeneration names. Fused self-attention linear_0 holds q, k, v stacked
    on dim 0 (k has no bias in Whisper); cross-attention linear_0 is q and linear_1 holds k, v."""
    out = {}

    def linear(target: str, source: str):
        out[f"{target}.weight"] = variables[f"{source}/weight"]
        if f"{source}/bias" in variables:
            out[f"{target}.bias"] = variables[f"{source}/bias"]

    def norm(target: str, source: str):
        out[f"{target}.weight"], out[f"{target}.bias"] = variables[f"{source}/gamma"], variables[f"{source}/beta"]

    def fused(prefix: str, source: str, names: list[str]):
        weights = variables[f"{source}/weight"].chunk(len(names))
        biases = variables[f"{source}/bias"].chunk(len(names))
        for name, weight, bias in zip(names, weights, biases):
            out[f"{prefix}.{name}.weight"] = weight
            if name != "k_proj":
                out[f"{prefix}.{name}.bias"] = bias

    for stack in ("encoder", "decoder"):
        hf = f"model.{stack}"
        out[f"{hf}.embed_positions.weight"] = variables[f"{stack}/position_encodings/encodings"]
        norm(f"{hf}.layer_norm", f"{stack}/layer_norm")
        for i in range(count_layers(variables, stack)):
            layer, source = f"{hf}.layers.{i}", f"{stack}/layer_{i}"
            fused(f"{layer}.self_attn", f"{source}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            linear(f"{layer}.self_attn.out_proj", f"{source}/self_attention/linear_1")
            norm(f"{layer}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
            linear(f"{layer}.fc1", f"{source}/ffn/linear_0")
            linear(f"{layer}.fc2", f"{source}/ffn/linear_1")
            norm(f"{layer}.final_layer_norm", f"{source}/ffn/layer_norm")
            if stack == "decoder":
                linear(f"{layer}.encoder_attn.q_proj", f"{source}/attention/linear_0")
                fused(f"{layer}.encoder_attn", f"{source}/attention/linear_1", ["k_proj", "v_proj"])
                linear(f"{layer}.encoder_attn.out_proj", f"{source}/attention/linear_2")
                norm(f"{layer}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    return out


def whisper_config(variables: dict) -> transformers.WhisperConfig:
    embeddings = variables["decoder/embeddings/weight"]
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"]
    vocab_size, d_model = embeddings.shape
    multilingual = vocab_size >= 51865
    eos = 50257 if multilingual else 50256
    return transformers.WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=variables["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=count_layers(variables, "encoder"), decoder_layers=count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]), decoder_attention_heads=int(
            variables["decoder/num_heads"]), encoder_ffn_dim=ffn.shape[0], decoder_ffn_dim=ffn.shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=eos + 1,
        tie_word_embeddings=True,
    )


def generation_config(config: transformers.WhisperConfig, ct2: dict, tokenizer) -> transformers.GenerationConfig:
    """Whisper's generation settings from CTranslate2's config.json. English-only checkpoints get no language or task
    ids: generate() would otherwise force them into the prompt."""
    ids = tokenizer.convert_tokens_to_ids
    settings = dict(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=ct2.get("suppress_ids", []), begin_suppress_tokens=ct2.get("suppress_ids_begin", []),
        alignment_heads=ct2.get("alignment_heads", []), no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"), max_initial_timestamp_index=50, return_timestamps=False,
        is_multilingual=config.vocab_size >= 51865,
    )
    if settings["is_multilingual"]:
        settings["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in ct2.get("lang_ids", [])}
        settings["task_to_id"] = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return transformers.GenerationConfig(**settings)


def load(directory: Path, parts: list[Path], dtype: torch.dtype):
    """(WhisperForConditionalGeneration, WhisperProcessor) from a CTranslate2 Whisper folder."""
    variables = read_variables(parts)
    config = whisper_config(variables)
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(config)
    weights = state_dict(variables)
    missing = set(model.state_dict()) - set(weights) - {"proj_out.weight"}
    if missing:
        raise EvalkitError(f"the CTranslate2 checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=False, assign=True)
    model.tie_weights()
    tokenizer = transformers.WhisperTokenizer(tokenizer_file=str(directory / "tokenizer.json"))
    features = transformers.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    model.generation_config = generation_config(config, json.loads((directory / "config.json").read_text()), tokenizer)
    return model.eval(), transformers.WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)


def weight_files(spec: Mapping, location: Location) -> list[Path]:
    """model.bin, or the parts that concatenate to it (`model_bin`), each checked to exist."""
    parts = [local_path(str(p), spec.get("install"))[0] for p in spec.get("model_bin") or []]
    parts = parts or [Path(location.path) / "model.bin"]
    for part in parts:
        if not part.is_file():
            raise EvalkitError(f"CTranslate2 model file {part} does not exist")
    return parts


def load_checkpoint(spec: Mapping, options: LoadOptions, device: torch.device, head: str) -> LoadedModel:
    """A CTranslate2 Whisper checkpoint as a transformers model on `device`, with its provenance."""
    if head != "speech-seq2seq":
        raise EvalkitError(
            f"model '{spec.get('name')}' is a CTranslate2 Whisper checkpoint; this evaluation needs a {head}")
    if options.quantization != "none" or options.device_map:
        raise EvalkitError("CTranslate2 checkpoints load on one device, unquantized (quantization=none, no device_map)")
    location = resolve_location(spec)
    parts = weight_files(spec, location)
    dtype = torch_dtype(options.dtype) or torch.float32  # auto: CTranslate2 stores float16; evaluate in float32
    model, processor = load(Path(location.path), parts, dtype)
    model.to(device)
    provenance = {
        "name": spec.get("name"), "source": location.source, "format": "ctranslate2", "location": location.path,
        "weight_files": [str(p) for p in parts], "weights_sha256": sha256_files(parts), "model_type": "whisper",
        "class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."), "devices": [str(device)],
        "quantization": {"scheme": "none", "backend": None, "method": None, "source_format": "ctranslate2"},
    }
    return LoadedModel(model=model, tokenizer=processor, device=device, head=head, provenance=provenance)
