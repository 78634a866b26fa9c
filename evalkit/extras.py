"""The optional dependencies (pyproject's extras), imported where they are used: the core package runs every command
that needs none of them, and a missing one is one line naming the pip command that brings it."""

from __future__ import annotations

import importlib
from types import ModuleType

from evalkit.errors import EvalkitError

# module -> the extra that installs it
EXTRAS = {"jiwer": "asr", "soundfile": "asr", "soxr": "asr", "whisper_normalizer": "asr", "torchao": "quant"}


def extra(module: str) -> ModuleType:
    """`import module` (a dotted submodule too), or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.partition(".")[0]
        if error.name is None or error.name.partition(".")[0] != top:
            raise  # the module is there but one of its own imports is not: not a missing extra
        name = EXTRAS[top]
        raise EvalkitError(f"{top} is not installed; it comes with evalkit's {name} extra: "
                           f"pip install 'evalkit[{name}]'") from None
