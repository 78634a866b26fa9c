"""Reading the runs' results.json files for the leaderboard, whatever lies in the folder: only regular files of at most
MAX_BYTES, read by files.read_bytes (a FIFO, a device or a link to one is never read: it could block or never end),
JSON nested at most MAX_DEPTH deep, every value the rows use of the type they need. Anything else is a reason to skip
the file, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit import evaluators, files
from evalkit.config.settings import is_number
from evalkit.errors import EvalkitError

REQUIRED_KEYS = {"schema_version", "task", "evaluator", "metrics", "model", "config", "settings"}
MAX_BYTES = 64 << 20  # a run's results.json is kilobytes; a grouped task's breakdowns stay far below this
MAX_DEPTH = 32  # results.json nests about 4 deep (settings.scope.key, metrics.subsets.name.metric)


def too_deep(value) -> bool:
    """Whether `value` nests lists and mappings deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            stack.extend((inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return False


def read_results(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) for an evalkit results.json; (None, reason) for anything else."""
    try:
        record = json.loads(files.read_bytes(path, MAX_BYTES).decode("utf-8"))
    except EvalkitError as error:  # not a regular file, too large, unreadable: the warning names the path already
        return None, str(error).removeprefix(f"{path} ")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable JSON ({type(error).__name__}: {str(error).splitlines()[0]})"
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    if too_deep(record):
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    if not isinstance(record, dict) or not REQUIRED_KEYS <= set(record):
        return None, ("not an evalkit results.json of schema 2 or later (missing schema_version/task/evaluator/"
                      "metrics/model/config/settings)")
    return (None, reason) if (reason := malformed(record)) else (record, None)


def malformed(record: dict) -> str | None:
    """Why a results.json of evalkit's keys cannot be a row (wrong types, an unknown evaluator), or None."""
    shapes = {"task": str, "evaluator": str, "metrics": dict, "model": dict, "config": dict, "settings": dict}
    for key, kind in shapes.items():
        if not isinstance(record[key], kind):
            return f"{key} is {type(record[key]).__name__}, not {kind.__name__}"
    if record["evaluator"] not in evaluators.names():
        return f"unknown evaluator {record['evaluator']!r}"
    if not all(isinstance(scope, dict) for scope in record["settings"].values()):
        return "settings holds a scope that is not a mapping"
    if not isinstance(record["model"].get("name") or record["model"].get("location"), str):
        return "the model has no name"
    for key, kind in (("timing", dict), ("started_at", str)):
        if record.get(key) is not None and not isinstance(record[key], kind):
            return f"{key} is {type(record[key]).__name__}, not {kind.__name__}"
    headline = evaluators.get(record["evaluator"]).headline()
    if not is_number(record["metrics"].get(headline.name)):
        return f"its headline metric {headline.name} is not a finite number"
    return None


def headline_interval(record: dict) -> tuple[list | None, str | None]:
    """The headline's 95% interval, or None with why when the file has one that cannot be shown: not two finite
    numbers, or bounds that leave out the value (beyond rounding: a bootstrap of identical windows may differ from
    the value in its last digit)."""
    headline = evaluators.get(record["evaluator"]).headline()
    interval = record["metrics"].get(headline.interval) if headline.interval else None
    if interval is None:
        return None, None
    if not (isinstance(interval, list) and len(interval) == 2 and all(map(is_number, interval))):
        return None, f"its {headline.interval} is not two finite numbers"
    value, (low, high) = record["metrics"][headline.name], interval
    slack = 1e-9 * max(abs(low), abs(high), abs(value))
    if not low - slack <= value <= high + slack:
        return None, f"its {headline.interval} {interval} leaves out its {headline.name} {value}"
    return interval, None
