"""The evaluators: every module here defining `EVALUATOR` is one, named by the module (a task's `evaluator:`)."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from evalkit.errors import EvalkitError
from evalkit.evaluators.base import Evaluator


@functools.cache
def names() -> list[str]:
    """The evaluator packages (each folder here), listed once per process (the leaderboard asks for every
    results.json it reads). Modules beside them (base.py) are not evaluators."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if module.ispkg)


def get(name: str) -> Evaluator:
    if name not in names():
        raise EvalkitError(f"task.evaluator={name} is not known; allowed: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}").EVALUATOR

