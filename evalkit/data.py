"""Where a task's text comes from: an explicit local file, a file under the data directory, or the hub.

A text task is one stream: its rows joined with the task's `join` string, exactly as the hub split's rows would be.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class TextSource:
    text: str
    origin: str  # a file path, or hub:<path>/<name>:<split>


def rows_from_file(path: Path, task: Mapping) -> list[str]:
    """A local file's rows. JSON Lines: the `text_field` of each record. Plain text with `line_rows`: each line is a
    row (newline kept, as the hub's wikitext builder yields it) and a whitespace-only line is an empty row; otherwise
    the whole file is one row."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise EvalkitError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if path.suffix in (".jsonl", ".json"):
        field = task.get("text_field") or "text"
        rows = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvalkitError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or field not in record:
                raise EvalkitError(f"{path}:{number} has no '{field}' field (set task.text_field=NAME)")
            rows.append(str(record[field]))
        return rows
    if task.get("line_rows"):
        return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    return [raw]


def rows_from_hub(hub: Mapping, field: str, looked_in: str = "") -> list[str]:
    import datasets  # imported here: a local run never pays for it

    try:
        dataset = datasets.load_dataset(hub["path"], hub.get("name"), split=hub["split"])
    except Exception as error:  # offline, unknown dataset, ...: the datasets library raises many kinds
        raise EvalkitError(
            f"could not load {hub['path']}/{hub.get('name')} from the hub ({type(error).__name__}); "
            f"point at a local copy with task.path=FILE, data_dir=DIR or EVALKIT_DATA_DIR=DIR{looked_in}"
        ) from None
    return list(dataset[field])


def load_text(task: Mapping, data_dir: str | None) -> TextSource:
    """The task's text, found in order: task.path, then data_dir/task.data_file, then the hub."""
    if task.get("path"):
        path = Path(str(task["path"])).expanduser()
        if not path.is_file():
            raise EvalkitError(f"task.path={task['path']} does not exist (a UTF-8 text or JSON Lines file is expected)")
        return TextSource(_joined(rows_from_file(path, task), task, str(path)), str(path.resolve()))
    looked_in = ""
    if data_dir and task.get("data_file"):
        path = Path(str(data_dir)).expanduser() / str(task["data_file"])
        if path.is_file():
            return TextSource(_joined(rows_from_file(path, task), task, str(path)), str(path.resolve()))
        looked_in = f" (not found: {path})"
    hub = task.get("hub")
    if not hub:
        raise EvalkitError(f"task '{task.get('name')}' needs a file: task.path=FILE{looked_in}")
    rows = rows_from_hub(hub, task.get("text_field") or "text", looked_in)
    return TextSource(_joined(rows, task, "the hub split"), f"hub:{hub['path']}/{hub.get('name')}:{hub['split']}")


def _joined(rows: list[str], task: Mapping, where: str) -> str:
    text = str(task.get("join", "\n\n")).join(rows)
    if not text.strip():
        raise EvalkitError(f"{where} holds no text (empty or whitespace only)")
    return text
