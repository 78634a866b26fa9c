"""Where a task's text comes from: an explicit local file, a file under the data directory, or the hub.

A text task is one stream: its rows joined with the task's `join` string, exactly as the hub split's rows would be.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalkit import files
from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class TextSource:
    text: str
    origin: str  # a file path, or hub:<path>/<name>:<split>


# the task fields the data readers use, with what each may be (None: null allowed)
TASK_FIELDS = {
    "name": (str,), "evaluator": (str,), "path": (str, None), "data_file": (str, None), "hub": (Mapping, None),
    "text_field": (str, list), "label_field": (str,), "label_offset": (int,), "labels": (list,),
    "format": (str, None), "line_rows": (bool,), "join": (str,), "method": (str, None), "questions": (str, None),
    "context_field": (str,), "choices_field": (str,), "gold_field": (str,), "choice_labels": (list, None),
    "documents": (str, None),
    "detokenize": (str, None), "columns": (list, None), "description": (str, None), "fewshot": (Mapping, None),
    "subsets": (Mapping, None), "num_fewshot": (int,), "prompt": (str,), "target": (str,), "until": (list,),
    "max_gen_toks": (int, None), "filters": (Mapping,), "exact_match": (Mapping, None), "target_delimiter": (str,),
    "fewshot_delimiter": (str,),
}
KINDS = {str: "a string", list: "a list", Mapping: "a mapping", int: "an integer", bool: "true or false", None: "null"}


def check_task(task: Mapping) -> None:
    """Each field the data readers use has the type they need: one line naming the first that does not."""
    for key, kinds in TASK_FIELDS.items():
        if key not in task:
            continue
        value = task[key]
        fits = any(value is None if kind is None else isinstance(value, kind) and not (
            kind is int and isinstance(value, bool)) for kind in kinds)
        if fits and key == "text_field" and isinstance(value, list):
            fits = bool(value) and all(isinstance(item, str) for item in value)
        if not fits:
            allowed = " or ".join(KINDS[kind] for kind in kinds) + (" of strings" if key == "text_field" else "")
            raise EvalkitError(f"task.{key}={value} is not allowed; allowed: {allowed}")


def read_text(path: Path, newline: str | None = None, limit: int = files.DATA_LIMIT) -> str:
    """A data file's text (`newline` as open() takes it: None makes every CRLF and CR a newline); a file that is
    not regular, larger than `limit`, not UTF-8 text, or unreadable is a clear error."""
    text = files.read_text(path, limit)
    return text.replace("\r\n", "\n").replace("\r", "\n") if newline is None else text


def read_jsonl(path: Path, limit: int = files.DATA_LIMIT) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file; a bad line is a clear error. Lines end at a
    newline (or CR) alone: a string may hold U+2028 or U+0085 raw, which str.splitlines would split at."""
    records = []
    for number, line in enumerate(files.jsonl_lines(read_text(path, limit=limit)), 1):
        if line.strip():
            try:
                record = files.parse_json(line, f"{path}:{number}")
            except json.JSONDecodeError as error:
                raise EvalkitError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise EvalkitError(f"{path}:{number} is not a JSON object")
            records.append((number, record))
    return records


def rows_from_file(path: Path, task: Mapping) -> list[str]:
    """A local file's rows. JSON Lines: the `text_field` of each record. Plain text with `line_rows`: each line is a
    row (newline kept, as the hub's wikitext builder yields it) and a whitespace-only line is an empty row; otherwise
    the whole file is one row."""
    raw = read_text(path)
    if path.suffix in (".jsonl", ".json"):
        field = task.get("text_field") or "text"
        if not isinstance(field, str):
            raise EvalkitError(f"task.text_field={field} is not allowed for a text stream; allowed: one field name")
        rows = []
        for number, record in read_jsonl(path):
            if field not in record:
                raise EvalkitError(f"{path}:{number} has no '{field}' field (set task.text_field=NAME)")
            if not isinstance(record[field], str):
                raise EvalkitError(f"{path}:{number} has '{field}': {json.dumps(record[field])}, not a text")
            rows.append(record[field])
        return rows
    if task.get("line_rows"):
        return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    return [raw]


def hub_dataset(hub: Mapping, looked_in: str = ""):
    import datasets  # imported here: a local run never pays for it

    try:
        return datasets.load_dataset(hub["path"], hub.get("name"), split=hub["split"])
    except Exception as error:  # offline, unknown dataset, ...: the datasets library raises many kinds
        raise EvalkitError(
            f"could not load {hub['path']}/{hub.get('name')} from the hub ({type(error).__name__}); "
            f"point at a local copy with task.path=FILE, data_dir=DIR or EVALKIT_DATA_DIR=DIR{looked_in}"
        ) from None


def local_file(task: Mapping, data_dir: str | None, folder: bool = False) -> tuple[Path | None, str]:
    """The task's local data (task.path, else data_dir/task.data_file; a file, or a folder with `folder`), or None
    and where it was looked for."""
    exists = Path.is_dir if folder else Path.is_file
    if task.get("path"):
        path = Path(str(task["path"])).expanduser()
        if not exists(path):
            raise EvalkitError(
                f"task.path={task['path']} does not exist (or is not a {'folder' if folder else 'file'})")
        return path, ""
    if data_dir and task.get("data_file"):
        path = Path(str(data_dir)).expanduser() / str(task["data_file"])
        if exists(path):
            return path, ""
        return None, f" (not found: {path})"
    return None, ""


def hub_origin(hub: Mapping) -> str:
    return f"hub:{hub['path']}/{hub.get('name')}:{hub['split']}"


def load_text(task: Mapping, data_dir: str | None) -> TextSource:
    """The task's text, found in order: task.path, then data_dir/task.data_file, then the hub."""
    rows, origin, where = text_rows(task, data_dir)
    return TextSource(_joined(rows, task, where), origin)


def text_rows(task: Mapping, data_dir: str | None) -> tuple[list[str], str, str]:
    """A text task's rows, their origin and how to name where they came from: task.path, then
    data_dir/task.data_file (rows_from_file), then the hub's text_field column (its `hub` section may rename it)."""
    path, looked_in = local_file(task, data_dir)
    if path:
        return rows_from_file(path, task), str(path.resolve()), str(path)
    hub = task.get("hub")
    if not hub:
        raise EvalkitError(f"task '{task.get('name')}' needs a file: task.path=FILE{looked_in}")
    rows = list(hub_dataset(hub, looked_in)[{**task, **hub}.get("text_field") or "text"])
    if not all(isinstance(row, str) for row in rows):
        raise EvalkitError(f"{hub_origin(hub)} has rows that are not text")
    return rows, hub_origin(hub), "the hub split"


def _joined(rows: list[str], task: Mapping, where: str) -> str:
    text = str(task.get("join", "\n\n")).join(rows)
    if not text.strip():
        raise EvalkitError(f"{where} holds no text (empty or whitespace only)")
    return text


@dataclass(frozen=True)
class Examples:
    """Labelled texts: labels are indices into the task's label names."""

    texts: list[str]
    labels: list[int]
    origin: str


def records_from_file(path: Path, task: Mapping, fallback: str = "label_first") -> list[dict]:
    """A local file's records. `label_first`: "LABEL TEXT" per line (the Kim 2014 SST-2 files); `csv`: a header row,
    or the task's `columns` names for a file without one (MMLU's); `jsonl`: one JSON object per line. task.format,
    else the suffix (.csv, .jsonl), else `fallback`, says which."""
    file_format = task.get("format") or {".csv": "csv", ".jsonl": "jsonl"}.get(path.suffix, fallback)
    if file_format == "jsonl":
        return [record for _, record in read_jsonl(path)]
    handle = io.StringIO(read_text(path, newline=""), newline="")  # lines as csv and the Kim 2014 files expect
    if file_format == "csv":
        return list(csv.DictReader(handle, fieldnames=task.get("columns")))
    if file_format == "label_first":
        label_field, text_field = task.get("label_field") or "label", task.get("text_field") or "text"
        if not isinstance(text_field, str):
            raise EvalkitError(f"task.text_field={text_field} is not allowed for task.format=label_first; allowed: "
                               "one field name")
        return [dict(zip((label_field, text_field), line.rstrip("\n").split(" ", 1)))
                for line in handle if line.strip()]
    raise EvalkitError(f"task.format={file_format} is not allowed; allowed: label_first, csv, jsonl")


def label_index(value, names: list[str], offset: int, row: int) -> int:
    """A data label (an index, possibly 1-based by `offset`, or a label name) -> index into the label names."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    whole = isinstance(value, int) and not isinstance(value, bool)  # true or 1.9 is no label (never index 1)
    digits = isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit()
    index = int(value) - offset if whole or digits else -1
    if not 0 <= index < len(names):
        raise EvalkitError(f"label {value!r} in row {row} is not a candidate; candidates: {', '.join(names)}")
    return index


def task_records(task: Mapping, data_dir: str | None, fallback: str = "label_first") -> tuple[list, str, Mapping]:
    """A task's records, their origin, and the task as they read it: task.path, then data_dir/task.data_file (read
    by records_from_file), then the hub (whose `hub` section may override the task's field names)."""
    path, looked_in = local_file(task, data_dir)
    if path:
        return records_from_file(path, task, fallback), str(path.resolve()), task
    if task.get("hub"):
        return hub_dataset(task["hub"], looked_in), hub_origin(task["hub"]), {**task, **task["hub"]}
    raise EvalkitError(f"task '{task.get('name')}' needs a file: task.path=FILE{looked_in}")


def load_examples(task: Mapping, data_dir: str | None, limit: int | None = None) -> Examples:
    """A classification task's examples (task_records), with text_field, label_field and label_offset."""
    records, origin, task = task_records(task, data_dir)
    text_fields = task.get("text_field") or "text"
    text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
    label_field = task.get("label_field") or "label"
    names = list(task["labels"])
    texts, labels = [], []
    for row, record in enumerate(records):
        if limit is not None and row >= limit:
            break
        missing = [f for f in [*text_fields, label_field] if f not in record]
        if missing:
            raise EvalkitError(f"{origin} row {row} has no column {missing[0]!r}; columns: {', '.join(record)}")
        bad = next((f for f in text_fields if not isinstance(record[f], (str, int, float))
                    or isinstance(record[f], bool)), None)
        if bad is not None:
            raise EvalkitError(f"{origin} row {row} has {bad!r}: {record[bad]!r}, not a text")
        texts.append(" ".join(str(record[f]) for f in text_fields))
        labels.append(label_index(record[label_field], names, int(task.get("label_offset") or 0), row))
    if not texts:
        raise EvalkitError(f"{origin} holds no examples")
    return Examples(texts, labels, origin)


@dataclass(frozen=True)
class Utterance:
    """One speech example: audio is a file path, a {"array", "sampling_rate"} record, or None when missing."""

    id: str
    audio: object
    text: str | None


def load_utterances(task: Mapping, data_dir: str | None, limit: int | None = None) -> tuple[list[Utterance], str]:
    """A speech task's utterances and their origin: a JSON Lines manifest, a LibriSpeech-layout folder, or the hub."""
    path, looked_in = local_file(task, data_dir, folder=task.get("format") == "librispeech")
    if path is None:
        hub = task.get("hub")
        if not hub:
            raise EvalkitError(f"task '{task.get('name')}' needs data: task.path=PATH{looked_in}")
        records = hub_dataset(hub, looked_in)
        field = hub.get("text_field") or "text"
        utterances = [Utterance(str(r.get("id", i)), r.get("audio"), r.get(field)) for i, r in enumerate(records)]
        return utterances[:limit], hub_origin(hub)
    if task.get("format") == "librispeech":
        utterances = []
        for transcript in sorted(path.rglob("*.trans.txt")):
            for line in read_text(transcript).split("\n"):
                if line.strip():
                    key, _, text = line.partition(" ")
                    utterances.append(Utterance(key, transcript.parent / f"{key}.flac", text))
    else:
        utterances = [manifest_utterance(record, path, number) for number, record in read_jsonl(path)]
    return utterances[:limit], str(path.resolve())


def manifest_utterance(record: Mapping, path: Path, number: int) -> Utterance:
    """A manifest line: `audio` a path (relative to the manifest), `text` the reference, optional `id`."""
    for key, kinds in (("audio", (str,)), ("text", (str,)), ("id", (str, int))):
        if record.get(key) is not None and (isinstance(record[key], bool) or not isinstance(record[key], kinds)):
            raise EvalkitError(f"{path}:{number} has '{key}': {json.dumps(record[key])}; allowed: "
                               f"{' or '.join(KINDS[kind] for kind in kinds)}")
    audio = path.parent / record["audio"] if record.get("audio") else None
    return Utterance(str(record["id"]) if record.get("id") is not None else str(number), audio,
                     record.get("text"))


def utterances_fingerprint(utterances: list[Utterance]) -> str:
    """sha256 over every utterance's id, reference text and audio bytes (a file's contents, or a record's samples)."""
    digest = hashlib.sha256()
    for utterance in utterances:
        digest.update(f"{utterance.id}\t{utterance.text}\t".encode())
        if isinstance(utterance.audio, Mapping):
            digest.update(np.asarray(utterance.audio["array"]).tobytes())
            digest.update(str(utterance.audio["sampling_rate"]).encode())
        elif utterance.audio is not None and Path(utterance.audio).is_file():
            with open(utterance.audio, "rb") as audio:  # a block at a time: hours of audio need not fit in memory
                hashlib.file_digest(audio, lambda: digest)
        else:
            digest.update(b"<missing audio>")
    return digest.hexdigest()
