"""Where a model's files are, known without importing torch or transformers: a hub id, a local directory, a local
.gguf file (or its dequantized copy), files shipped inside an installed Python package, or a random init from a
config. The command line's checks use it before the libraries are imported."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.hashing import sha256_files

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


def cache_root() -> Path | None:
    """EVALKIT_WEIGHTS_CACHE (empty: off), else ~/.cache/evalkit/weights."""
    value = os.environ.get("EVALKIT_WEIGHTS_CACHE", "~/.cache/evalkit/weights")
    return Path(value).expanduser() if value else None


def copy_folder(location: Location) -> Path | None:
    """Where the dequantized copy of a GGUF location is (or would be); None for other locations or cache off."""
    root = cache_root()
    if not location.gguf_file or location.source == "hub" or root is None:
        return None
    return root / sha256_files([Path(location.path) / location.gguf_file])


def dequantized(location: Location) -> Location | None:
    """The dequantized copy of a GGUF location as a plain folder location, when it exists."""
    folder = copy_folder(location)
    if folder is None or not (folder / "config.json").is_file():
        return None
    return Location(location.source, str(folder))
