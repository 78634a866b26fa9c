"""What identifies a model's weights: sha256 of local files (hashed once while they are unchanged: hashing.py), the
pinned hub commit, or the recipe of a random init."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from evalkit.files import check_regular
from evalkit.hashing import canonical_json, sha256_each, sha256_files
from evalkit.loading.ctranslate2 import weight_files as ctranslate2_weight_files
from evalkit.loading.locations import (
    Location,
    is_ctranslate2,
    is_random_init,
    resolve_location,
    tokenizer_location,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def weights_fingerprint(location: Location) -> dict:
    """sha256 of the weight files of a local source (one digest, over per-file digests when there are several)."""
    root = Path(location.path)
    if location.gguf_file:
        files = [root / location.gguf_file]
    else:
        files = model_files(root, WEIGHT_SUFFIXES)
    digests = {p.name: digest for p, digest in zip(files, sha256_each(files))}
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


def init_generator(device_type: str) -> str:
    """Whose random generator draws a random init: CUDA's on a GPU (weights built there directly: an 8B model's init
    on the CPU takes minutes), else the CPU's. The two draw different weights from one seed."""
    return "cuda" if device_type == "cuda" else "cpu"


def random_init_recipe(spec: Mapping, seed: int, device_type: str) -> dict:
    return {"architecture": spec["architecture"], "config": dict(spec.get("config") or {}), "seed": seed,
            "generator": init_generator(device_type)}


def recipe_digest(recipe: Mapping) -> str:
    """What identifies a random init's weights: its recipe (architecture, config, seed, generator) and the torch that
    drew them, not a hash of the tensors (an 8B model's 16 GB took 12.8 s to hash)."""
    return hashlib.sha256(canonical_json({**recipe, "torch": torch.__version__}).encode()).hexdigest()


# files beside the weights that change what a model computes: its config (activation, norm epsilon, rope), generation
# config, tokenizer (vocabulary, merges, special tokens, chat template) and remote code
DEFINITION_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".py", ".tiktoken")


def model_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A model folder's files with these suffixes; one that is a FIFO or a device is refused (one line), since the
    libraries that load it would block on it or read it without end."""
    found = sorted(p for p in root.iterdir() if p.suffix in suffixes and not p.is_dir())
    for path in found:
        check_regular(path, "model file")
    return found


def definition_fingerprint(spec: Mapping) -> str | None:
    """sha256 over the names and contents of the definition files of the model's folder and of its tokenizer's (when
    that is elsewhere): editing a config.json or tokenizer.json makes a new cache key, as editing weights does. None
    when there are no local files (a hub commit pins them)."""
    folders = [] if is_random_init(spec) else [resolve_location(spec)]
    if spec.get("tokenizer"):
        folders.append(tokenizer_location(spec))
    files = [p for folder in folders if folder.source != "hub"
             for p in model_files(Path(folder.path), DEFINITION_SUFFIXES)]
    digests = [f"{p}:{digest}" for p, digest in zip(files, sha256_each(files))]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest() if digests else None


def model_fingerprint(spec: Mapping, seed: int = 0, device_type: str = "cpu") -> str | None:
    """What identifies a model, known before its weights are loaded: sha256 of local weight files, the pinned hub
    commit, or the recipe of a random init (seed and generator); with the definition files of local folders (config,
    tokenizer, generation config). None when a hub revision cannot be pinned."""
    if is_random_init(spec):
        weights = "random-init:" + recipe_digest(random_init_recipe(spec, seed, device_type))
    else:
        location = resolve_location(spec)
        if is_ctranslate2(spec):
            weights = "sha256:" + sha256_files(ctranslate2_weight_files(spec, location))
        elif location.source == "hub":
            commit = hub_commit(location.path, location.revision)
            if commit is None:
                return None
            weights = f"hub:{location.path}@{commit}"
        else:
            weights = "sha256:" + weights_fingerprint(location)["weights_sha256"]
    definition = definition_fingerprint(spec)
    return f"{weights}+definition:{definition}" if definition else weights
