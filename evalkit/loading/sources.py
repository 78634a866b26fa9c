"""Where a model's files are and what its config says, known without reading any weights: a hub id, a local
directory, a local .gguf file, files shipped inside an installed Python package, or a random init from a config."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers

from evalkit.errors import EvalkitError

# head name -> (model auto class, preprocessor auto class)
HEADS = {
    "causal-lm": ("AutoModelForCausalLM", "AutoTokenizer"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "AutoProcessor"),
    "ctc": ("AutoModelForCTC", "AutoProcessor"),
    "sequence-classification": ("AutoModelForSequenceClassification", "AutoTokenizer"),
    "encoder": ("AutoModel", "AutoTokenizer"),
}
PACKAGE_SCHEME = "package:"


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


def is_random_init(spec: Mapping) -> bool:
    return spec.get("architecture") is not None


def is_ctranslate2(spec: Mapping) -> bool:
    return spec.get("format") == "ctranslate2"


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


def tokenizer_location(spec: Mapping) -> Location:
    """Where the tokenizer is: the spec's own `tokenizer` entry, else beside the weights."""
    if spec.get("tokenizer"):
        return resolve_location(spec["tokenizer"])
    if is_random_init(spec):
        raise EvalkitError("a random-init model needs a tokenizer: set model.tokenizer.name_or_path=...")
    return resolve_location(spec)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def check_tokenizer(spec: Mapping) -> None:
    """A local model folder without any tokenizer file fails here, by name, rather than later as an empty text."""
    if is_ctranslate2(spec):
        return
    location = tokenizer_location(spec)
    if location.source == "hub" or location.gguf_file:
        return
    if not any((Path(location.path) / name).is_file() for name in TOKENIZER_FILES):
        raise EvalkitError(f"{location.path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the "
                           "tokenizer beside the weights, or set model.tokenizer.name_or_path=...")


def load_config(location: Location, trust_remote_code: bool) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(
            location.path, trust_remote_code=trust_remote_code, **location.from_pretrained_kwargs()
        )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        hint = "offline, point at a local copy with model.name_or_path=DIR" if location.source == "hub" else \
            "is it a model folder?"
        raise EvalkitError(f"could not load model '{location.path}' ({first_line}); {hint}") from None
    except Exception as error:  # a corrupt config.json or GGUF header raises many kinds
        if "custom code" in str(error) and not trust_remote_code:
            raise EvalkitError(f"model '{location.path}' comes with its own code; trust_remote_code=true runs it "
                               "(read that code first)") from None
        text = str(error).strip().splitlines()
        raise EvalkitError(f"could not read the config of model '{location.path}' ({type(error).__name__}: "
                           f"{text[0] if text else 'no message'}); the file may be truncated or corrupt") from None


def model_config(spec: Mapping, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model spec (random init: built from the spec's `architecture` and `config`;
    a CTranslate2 checkpoint has none: None)."""
    if is_ctranslate2(spec):
        return None
    if is_random_init(spec):
        return transformers.AutoConfig.for_model(spec["architecture"], **dict(spec.get("config") or {}))
    from evalkit.loading.gguf_cache import dequantized  # it reads Location from here

    location = resolve_location(spec)
    return load_config(dequantized(location) or location, trust_remote_code)


def context_length(config: Any) -> int | None:
    """The longest input the model's positions allow, or None when its config does not say."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_class(head: str) -> type:
    return getattr(transformers, HEADS[head][0])


def has_head(config: Any, head: str) -> bool:
    """Whether transformers has a `head` model for this config (a CTranslate2 Whisper is a speech-seq2seq model)."""
    if config is None:
        return head == "speech-seq2seq"
    if getattr(config, "auto_map", None) and HEADS[head][0] in config.auto_map:
        return True  # remote code declares its own classes
    return type(config) in model_class(head)._model_mapping


def check_head(spec: Mapping, config: Any, head: str) -> None:
    if not has_head(config, head):
        model_type = getattr(config, "model_type", "ctranslate2 whisper")
        raise EvalkitError(
            f"model '{spec.get('name')}' (model_type={model_type}) has no {head} head; this evaluation needs a "
            f"{head} model"
        )
