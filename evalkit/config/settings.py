"""Typed settings: a dataclass of `setting(...)` fields (default, meaning, allowed values) is a scope of config
keys; read_settings() checks each value against its type and allowed values with one clear line.

A field's type is a union of kinds: bool, int, float, str, a Literal of values, `tuple[str, ...]` (a list of strings),
a mapping, or None (null), e.g. `batch_size: int | Literal["auto"]`."""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, field, fields
from typing import Any, Literal

from evalkit.errors import EvalkitError

ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})
STRINGS = tuple[str, ...]  # the list-of-strings kind (a tuple: settings are frozen and hashable)


def setting(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
            pattern: str | None = None, allowed: str | None = None, only_with: Mapping | None = None,
            compared: bool = True, plotted: bool = False, variant: bool = False) -> Any:
    """A settings field: its default (a tuple for a list of strings), what it means (shown in --help), and its
    allowed values: `choices`, a `minimum` for numbers, a `pattern` a string must match in full; `allowed`: the
    allowed values in words, where the type and these say too little (then its own code checks the rest).
    `only_with={"method": "nli"}`: the key is read only when `method` is nli (one of a tuple), so setting it with
    another method is an error. For the leaderboard: `compared=False` for a setting that adds figures but changes
    none of the others (runs differing only in it compare); `plotted=True` for a setting worth a sweep plot;
    `variant=True` for a loading setting that makes a run another variant of its model (another row of the grid)."""
    needs = {key: wanted if isinstance(wanted, tuple) else (wanted,) for key, wanted in (only_with or {}).items()}
    return field(default=default, metadata={
        "help": help, "choices": choices, "minimum": minimum, "pattern": pattern, "allowed": allowed,
        "only_with": needs,
        "compared": compared, "plotted": plotted, "variant": variant})


def kinds_of(annotation) -> list:
    """The kinds a settings annotation allows: `int | Literal["auto"] | None` -> [int, Literal["auto"], NoneType]."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [kind for inner in typing.get_args(annotation) for kind in kinds_of(inner)]
    return [annotation]


def is_number(value) -> bool:
    """Whether `value` is a finite number as a float holds it (an integer of 400 digits is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def accepts(kind, value, spec: Field) -> bool:
    """Whether `value` is one of `kind`'s values under the field's minimum and pattern."""
    minimum, pattern = spec.metadata.get("minimum"), spec.metadata.get("pattern")
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(kind))
    if kind == STRINGS:
        return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
    if kind in (int, float):
        whole = isinstance(value, int) or (kind is float and isinstance(value, float))
        return whole and is_number(value) and (minimum is None or value >= minimum)
    if kind is str:
        return isinstance(value, str) and (pattern is None or re.fullmatch(pattern, value) is not None)
    return isinstance(kind, type) and isinstance(value, kind)  # bool, a mapping, ...


def words_for(kind, spec: Field) -> list[str]:
    """What `kind` allows, item by item (the field's choices, a Literal's values, `an integer >= 1`, ...)."""
    minimum, choices = spec.metadata.get("minimum"), spec.metadata.get("choices")
    at_least = f" >= {minimum}" if minimum is not None else ""
    if typing.get_origin(kind) is Literal:
        return list(map(str, typing.get_args(kind)))
    named = {bool: ["true", "false"], int: ["an integer" + at_least], float: ["a number" + at_least],
             STRINGS: ["a list of strings"], str: list(map(str, choices)) if choices else
             [f"a string matching {spec.metadata['pattern']}" if spec.metadata.get("pattern") else "a string"],
             type(None): ["null"]}
    return named.get(kind, [f"a {kind.__name__.lower()}"])  # a mapping, ...


def allowed_words(spec: Field, annotation) -> str:
    """The allowed values in words: the field's own `allowed`, or from its kinds (`an integer >= 1, or auto`)."""
    if spec.metadata.get("allowed"):
        return spec.metadata["allowed"]
    kinds = sorted(kinds_of(annotation), key=lambda kind: kind is type(None))  # null last
    items = [item for kind in kinds for item in words_for(kind, spec)]
    return ", ".join(items) if len(kinds) == 1 else ", ".join(items[:-1]) + ", or " + items[-1]


def shown(value) -> str:
    """A value as it is written on the command line, on one line (an error is one line)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(shown, value)) + "]"
    return str(value).translate(ESCAPES)


def default_of(spec: Field):
    return spec.default if spec.default is not MISSING else None


def checked(spec: Field, annotation, value):
    """`value` if the field allows it (a list of strings as a tuple); else a one-line error naming what is allowed."""
    kinds, choices = kinds_of(annotation), spec.metadata.get("choices")
    if not (any(accepts(kind, value, spec) for kind in kinds) and (not choices or value is None or value in choices)):
        raise EvalkitError(f"{spec.name}={shown(value)} is not allowed; allowed: {allowed_words(spec, annotation)}")
    if STRINGS in kinds and isinstance(value, list):
        return tuple(value)
    if float in kinds and int not in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # temperature=0 and the default 0.0 are one setting, one cache identity
    return value


def read_settings(schema: type, values: Mapping) -> Any:
    """An instance of the settings dataclass `schema` from config values (absent keys take their defaults), each
    value checked against its type and allowed values; the first bad one is a one-line error."""
    hints = typing.get_type_hints(schema)
    return schema(**{spec.name: checked(spec, hints[spec.name], values.get(spec.name, default_of(spec)))
                     for spec in fields(schema)})


def check_setting(schema: type, key: str, value):
    """One key's value checked as read_settings checks it (for a caller that is given one value, not a config)."""
    spec = next(spec for spec in fields(schema) if spec.name == key)
    return checked(spec, typing.get_type_hints(schema)[key], value)


def check_only_with(settings) -> None:
    """A key set (away from its default) where it is not read is an error: `calibrate=true` with `method=nli`. Run
    on the settings as resolved, where the method may be the task's default."""
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        if value == default_of(spec):
            continue
        for key, wanted in spec.metadata.get("only_with", {}).items():
            chosen = f"{key}={shown(getattr(settings, key))}"
            if getattr(settings, key) not in wanted:
                needed = " or ".join(map(shown, wanted))
                raise EvalkitError(f"{spec.name}={shown(value)} applies only with {key}={needed}, not {chosen}; "
                                   f"allowed with {chosen}: {spec.name}={shown(default_of(spec))}")


def keys_with(schema: type, **metadata) -> tuple[str, ...]:
    """The keys of a settings dataclass whose metadata has these values, e.g. keys_with(Settings, plotted=True)."""
    return tuple(spec.name for spec in fields(schema)
                 if all(spec.metadata.get(name) == value for name, value in metadata.items()))


def describe(schema: type) -> list[tuple[str, Any, str, str]]:
    """(key, default, meaning, allowed values) for each field of a settings dataclass, for --help."""
    hints = typing.get_type_hints(schema)
    rows = []
    for spec in fields(schema):
        needs = "; ".join(f"{key}={' or '.join(map(shown, wanted))}"
                          for key, wanted in spec.metadata.get("only_with", {}).items())
        meaning = spec.metadata.get("help", "") + (f" (read only with {needs})" if needs else "")
        rows.append((spec.name, default_of(spec), meaning, allowed_words(spec, hints[spec.name])))
    return rows
