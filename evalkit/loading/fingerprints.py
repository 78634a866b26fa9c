"""What identifies a model's weights: sha256 of local files (hashed once per process while they are unchanged), the
pinned hub commit, the recipe of a random init, or a hash of tensors built in memory."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from evalkit.loading.ctranslate2 import weight_files as ctranslate2_weight_files
from evalkit.loading.sources import Location, is_ctranslate2, is_random_init, resolve_location
from evalkit.results import canonical_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


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


def random_init_recipe(spec: Mapping, seed: int) -> dict:
    return {"architecture": spec["architecture"], "config": dict(spec.get("config") or {}), "seed": seed}


def model_fingerprint(spec: Mapping, seed: int = 0) -> str | None:
    """What identifies a model's weights, known before they are loaded: sha256 of local weight files, the pinned hub
    commit, or the recipe of a random init (with the seed). None when a hub revision cannot be pinned."""
    if is_random_init(spec):
        return "random-init:" + hashlib.sha256(canonical_json(random_init_recipe(spec, seed)).encode()).hexdigest()
    location = resolve_location(spec)
    if is_ctranslate2(spec):
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
