"""compile=auto: compile a job only when the time compiling is expected to save exceeds what it costs, both as measured
here before. Every job run eagerly or compiled records its rate (units of work a second: tokens, examples) and, when
it compiled graphs, its compile seconds, under a key of what sets them (job/compile_choice.py's rate_key); they are
kept beside the compiled graphs (EVALKIT_COMPILE_CACHE), since a compile's cost depends on what that cache holds, a
file `<key>.json` for each key. Nothing measured means no compile: auto never bets on a loss.

The compiled rate counts the run's whole evaluation except dynamo's compile seconds, so Inductor's first-launch tuning
stays in it: the estimate errs towards eager. Also here: `eager_for`, in which a compiled model runs eagerly (probes,
and batches of a shape that comes once), so that a job compiles one graph per region, not one per odd shape.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

from evalkit.config.settings import is_number
from evalkit.errors import EvalkitError
from evalkit.files import parse_json, read_bytes, write_json

ENTRY_LIMIT = 1 << 16  # one key's measurements: a few numbers
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


def entry_path(key: str) -> Path:
    """Where the store keeps `key`'s measurements: a file of its own, so that jobs recording other keys at once (a
    sweep's processes, an array's jobs on a shared filesystem) never overwrite each other's. EvalkitError (one line)
    when there is no store to keep them in."""
    folder = compile_cache()
    if folder is None:
        raise EvalkitError("EVALKIT_COMPILE_CACHE is empty (compiled graphs in torch's own folder)")
    return folder / f"{key}.json"


def read_entry(path: Path) -> dict:
    """The measurements kept at `path` ({} when none yet); EvalkitError (one line) when they cannot be read: read as
    every file evalkit reads, so that a FIFO there cannot block a job."""
    if not os.path.lexists(path):
        return {}
    data = read_bytes(path, ENTRY_LIMIT, "compile=auto's measurements")
    try:
        entry = parse_json(data.decode("utf-8"), str(path))
    except ValueError as error:  # not UTF-8, not JSON
        raise EvalkitError(f"compile=auto's measurements {path} are not JSON ({error})") from None
    if not isinstance(entry, dict):
        raise EvalkitError(f"compile=auto's measurements {path} are not a JSON object")
    return entry


@dataclass(frozen=True)
class Decision:
    compile: bool
    reason: str


def decide(key: str, amount: float, unit: str) -> Decision:
    """Whether compiling this job (`amount` units of work) should pay, from what the store measured for its key."""
    try:
        path = entry_path(key)
    except EvalkitError as error:
        return Decision(False, f"{error}; compile=auto keeps what it measures in that folder, so it cannot measure "
                               "and stays eager (compile=true compiles without measurements)")
    try:
        entry = read_entry(path)
    except EvalkitError as error:
        return Decision(False, f"{error}; nothing measured for this job (its next run's measurement replaces it)")
    if not measured(entry):
        return Decision(False, "nothing measured here yet for this job's model, task, settings, processes, GPU and "
                               "library versions both with and without compiling (a compile=true run and an eager one "
                               "measure it)")
    saving = amount / entry["eager_rate"] - amount / entry["compiled_rate"]
    cost = entry["compile_seconds"]
    worth = saving > cost
    return Decision(worth, f"expected saving {saving:.1f} s on {amount:,.0f} {unit} "
                           f"{'exceeds' if worth else 'does not exceed'} the {cost:.1f} s compiling cost measured here")


def measured(entry: dict) -> bool:
    """Both rates, and the compile cost: finite numbers (JSON also reads Infinity and NaN), the rates above 0."""
    rates, cost = (entry.get("eager_rate"), entry.get("compiled_rate")), entry.get("compile_seconds")
    return all(is_number(rate) and rate > 0 for rate in rates) and is_number(cost) and cost >= 0


def record(key: str, compiled: bool, amount: float, eval_seconds: float, compile_seconds: float | None = None) -> None:
    """Keep a finished job's measured rate (and compile cost: None when the job compiled nothing, its model compiled
    before, which keeps the cost measured) under its key; an entry that cannot be read is measured anew, and a store
    that cannot be written is said on stderr (decide says why auto then stays eager)."""
    if amount <= 0 or eval_seconds <= (compile_seconds or 0.0):
        return
    try:
        path = entry_path(key)
    except EvalkitError:  # no store: decide says so
        return
    try:  # what was kept and can be kept again: strict JSON takes no Infinity
        entry = {name: value for name, value in read_entry(path).items() if is_number(value)}
    except EvalkitError:  # measured anew
        entry = {}
    if compiled:
        entry["compiled_rate"] = amount / (eval_seconds - (compile_seconds or 0.0))
        if compile_seconds is not None:
            entry["compile_seconds"] = compile_seconds
    else:
        entry["eager_rate"] = amount / eval_seconds
    try:
        write_json(path, entry)  # whole or not at all: through a temporary file of a unique name, renamed
    except OSError as error:
        print(f"evalkit: compile=auto: this job's rate is not kept ({error})", file=sys.stderr)
