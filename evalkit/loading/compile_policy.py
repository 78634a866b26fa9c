"""compile=auto: compile a job only when the time compiling is expected to save exceeds what it costs, both as measured
here before. Every job run eagerly or compiled records its rate (units of work a second: tokens, examples) and, when
compiled, its compile seconds, under a key of what sets them (the model's shape and dtype, the evaluator and its
settings, the batch size, the GPU, torch); they are kept beside the compiled graphs (EVALKIT_COMPILE_CACHE), since a
compile's cost depends on what that cache holds, a file `<key>.json` for each key. Nothing measured means no compile:
auto never bets on a loss.

The compiled rate counts the run's whole evaluation except dynamo's compile seconds, so Inductor's first-launch tuning
stays in it: the estimate errs towards eager. Also here: `eager_for`, in which a compiled model runs eagerly (probes,
and batches of a shape that comes once), so that a job compiles one graph per region, not one per odd shape.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.job.results import write_json

COMPILED: weakref.WeakSet = weakref.WeakSet()  # models whose regions compile_regions wrapped


def eager_for(model):
    """Context in which a compiled model runs eagerly (nothing changes for one that is not compiled)."""
    if model not in COMPILED:
        return contextlib.nullcontext()
    import torch

    return torch.compiler.set_stance("force_eager")


def compile_cache() -> Path | None:
    """The folder of compiled graphs and of what compiling cost, made if need be: EVALKIT_COMPILE_CACHE, else
    ~/.cache/evalkit/compiled; None when set empty (torch's own folder in /tmp, nothing measured kept). EvalkitError
    (one line) when it cannot be created and written."""
    folder = os.environ.get("EVALKIT_COMPILE_CACHE", "~/.cache/evalkit/compiled")
    if not folder:
        return None
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as error:
        raise EvalkitError(f"EVALKIT_COMPILE_CACHE={folder} cannot be the compiled-graph cache ({error.strerror}: it "
                           "must be a folder this process can create and write); set another, or empty for torch's "
                           "own") from None
    return path


def entry_path(key: str) -> Path | None:
    """Where the store keeps `key`'s measurements: a file of its own, so that jobs recording other keys at once (a
    sweep's processes, an array's jobs on a shared filesystem) never overwrite each other's."""
    folder = compile_cache()
    return folder / f"{key}.json" if folder else None


def read_entry(key: str) -> dict:
    """What the store measured for `key` ({} when nothing)."""
    try:
        path = entry_path(key)
        entry = json.loads(path.read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError, EvalkitError):  # none yet, or unreadable: nothing measured
        return {}
    return entry if isinstance(entry, dict) else {}


@dataclass(frozen=True)
class Decision:
    compile: bool
    reason: str


def decide(key: str, amount: float, unit: str) -> Decision:
    """Whether compiling this job (`amount` units of work) should pay, from what the store measured for its key."""
    entry = read_entry(key)
    if not all(is_positive(entry.get(k)) for k in ("eager_rate", "compiled_rate")) \
            or not is_positive(entry.get("compile_seconds"), zero=True):
        return Decision(False, "nothing measured here yet for this model, task and batch size with and without "
                               "compiling (a compile=true run and an eager one measure it)")
    saving = amount / entry["eager_rate"] - amount / entry["compiled_rate"]
    cost = entry["compile_seconds"]
    worth = saving > cost
    return Decision(worth, f"expected saving {saving:.1f} s on {amount:,.0f} {unit} "
                           f"{'exceeds' if worth else 'does not exceed'} the {cost:.1f} s compiling cost measured here")


def is_positive(value, zero: bool = False) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or zero and value == 0)


def record(key: str, compiled: bool, amount: float, eval_seconds: float, compile_seconds: float = 0.0) -> None:
    """Keep a finished job's measured rate (and compile cost) under its key; a store that cannot be written is
    skipped (auto then stays eager)."""
    if amount <= 0 or eval_seconds <= compile_seconds:
        return
    try:
        path = entry_path(key)
    except EvalkitError:
        return
    if path is None:
        return
    entry = read_entry(key)
    if compiled:
        entry.update(compiled_rate=amount / (eval_seconds - compile_seconds), compile_seconds=compile_seconds)
    else:
        entry["eager_rate"] = amount / eval_seconds
    try:
        write_json(path, entry)  # whole or not at all: through a temporary file of a unique name, renamed
    except OSError:
        pass
