"""GGUF files dequantized once. transformers parses and dequantizes a GGUF file on every load (most of a run's start);
the first float32 load keeps the dequantized weights, config and tokenizer as a plain model folder, keyed by the
file's sha256, and later loads read that folder instead. The cache only saves time: when it cannot be written, the
load goes on from the GGUF file."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from evalkit.files import follow_umask
from evalkit.loading.locations import Location, copy_folder


def keep(location: Location, model: torch.nn.Module, tokenizer) -> None:
    """Save a freshly dequantized float32 model and its tokenizer as the GGUF's copy (written aside, then renamed
    into place: a copy is whole or absent)."""
    folder = copy_folder(location)
    if folder is None or folder.exists() or any(p.dtype != torch.float32 for p in model.parameters()):
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        follow_umask(staging, folder=True)  # mkdtemp's 0700 would keep the other users of a shared cache out
    except OSError as error:
        warn(location, error)
        return
    try:
        save_plain(model, staging)
        tokenizer.save_pretrained(staging)
        os.rename(staging, folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.exists():  # else another process kept the same copy first
            warn(location, error)


def save_plain(model: torch.nn.Module, folder: Path) -> None:
    """The weights as model.safetensors and the config without the GGUF origin (transformers refuses to save a model
    it loaded from a GGUF file: it counts it as quantized), naming the model class as a saved checkpoint does."""
    import copy

    from safetensors.torch import save_model

    save_model(model, str(folder / "model.safetensors"))
    config = copy.deepcopy(model.config)
    for name in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, name):
            delattr(config, name)
    config.architectures = [type(model).__name__]  # as save_pretrained records it: the command line's checks read it
    config.save_pretrained(folder)


def warn(location: Location, error: OSError) -> None:
    print(f"evalkit: warning: the dequantized copy of {location.gguf_file} could not be kept ({error.strerror}); "
          "the next load parses the GGUF again", file=sys.stderr)
