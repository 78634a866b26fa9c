"""The keys a model spec and a task may hold: a key that nothing reads (a typo such as `+model.name_or_pth=...` or
`+task.txt_field=body`) is one line with the nearest known key, as an unknown top-level key is, rather than a run
that silently ignores it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from evalkit.errors import EvalkitError

# what the loading layer reads of a model spec (locations.py, sources.py, facts.py, ctranslate2.py) and of its
# `tokenizer` section; `config` is the transformers config of a random-init model, passed on whole
MODEL_KEYS = ("name", "name_or_path", "gguf_file", "revision", "install", "tokenizer", "architecture", "config",
              "format", "model_bin")
TOKENIZER_KEYS = ("name_or_path", "gguf_file", "revision", "install")
# a classification task's per-method sections (templates), beside the fields data.TASK_FIELDS types
TASK_SECTIONS = ("nli", "loglikelihood", "embedding")


def known_keys_hint(key: str, allowed: Iterable[str]) -> str:
    """'did you mean stride? allowed: a, b, ...': the known key nearest to a misspelt one (if any is near), then all
    of them, sorted."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"{f'did you mean {close[0]}? ' if close else ''}allowed: {', '.join(allowed)}"


def check_known(given: Mapping, allowed: Iterable[str], scope: str) -> None:
    """Every key of `given` (the config node at `scope`, e.g. model) is one that is read."""
    allowed = tuple(allowed)
    for key in given:
        if key not in allowed:
            raise EvalkitError(f"{scope}.{key} is not a key of {scope}; {known_keys_hint(str(key), allowed)}")


def check_model_keys(spec, role: str = "model") -> None:
    if not isinstance(spec, Mapping):
        return  # a preset name or path (reference_model=...): read as such
    check_known(spec, MODEL_KEYS, role)
    if isinstance(spec.get("tokenizer"), Mapping):
        check_known(spec["tokenizer"], TOKENIZER_KEYS, f"{role}.tokenizer")
