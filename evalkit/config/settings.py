"""Typed settings: a dataclass of `setting(...)` fields (default, meaning, allowed values) is a scope of config
keys; read_settings() checks each value against its type and allowed values with one clear line."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, field, fields
from typing import Any

from evalkit.errors import EvalkitError


def setting(default: Any, help: str, choices: tuple | None = None, minimum: int | None = None,
            allowed: str | None = None) -> Any:
    """A settings field: its default, what it means (shown in --help), and its allowed values (`allowed`: in words,
    for a field whose type says too little, checked by its own code)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum, "allowed": allowed})


def _allowed(kind: type, optional: bool, choices: tuple | None, minimum: int | None) -> str:
    if choices:
        text = ", ".join(map(str, choices))
    elif kind is bool:
        text = "true, false"
    elif kind is int:
        text = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    elif kind is float:
        text = "a number" + (f" >= {minimum}" if minimum is not None else "")
    else:
        text = "a string"
    return text + (", or null" if optional else "")


def _type_of(annotation) -> tuple[type | None, bool]:
    """(the base type, whether None is allowed) of a settings annotation such as `int | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (inner[0] if len(inner) == 1 else None), True
    return (annotation if isinstance(annotation, type) else None), False


def _valid(value, kind: type | None, minimum) -> bool:
    if kind is None:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return False
    if kind is int and not isinstance(value, int):
        return False
    if kind is str:
        return isinstance(value, str)
    return minimum is None or value >= minimum


def read_settings(schema: type, values: Mapping) -> Any:
    """An instance of the settings dataclass `schema` from config values (absent keys take their defaults), each
    value checked against its type and allowed values; the first bad one is a one-line error."""
    hints = typing.get_type_hints(schema)
    chosen = {}
    for spec in fields(schema):
        value = values.get(spec.name, spec.default if spec.default is not MISSING else None)
        kind, optional = _type_of(hints[spec.name])
        choices, minimum = spec.metadata.get("choices"), spec.metadata.get("minimum")
        ok = (value is None and optional) or (value is not None and _valid(value, kind, minimum)
                                              and (not choices or value in choices))
        if not ok:
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
            raise EvalkitError(f"{spec.name}={shown} is not allowed; allowed: "
                               f"{_allowed(kind, optional, choices, minimum)}")
        chosen[spec.name] = value
    return schema(**chosen)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe(schema: type) -> list[tuple[str, Any, str, str]]:
    """(key, default, meaning, allowed values) for each field of a settings dataclass, for --help."""
    hints = typing.get_type_hints(schema)
    rows = []
    for spec in fields(schema):
        kind, optional = _type_of(hints[spec.name])
        allowed = spec.metadata.get("allowed") or (
            _allowed(kind, optional, spec.metadata.get("choices"), spec.metadata.get("minimum")) if kind else "")
        rows.append((spec.name, spec.default, spec.metadata.get("help", ""), allowed))
    return rows
