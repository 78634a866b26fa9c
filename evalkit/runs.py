"""What one evaluation job leaves for later ones: a result cache and a per-batch progress log.

A job is identified by the model's weights fingerprint, the data's fingerprint, the settings the evaluator reads
(with the loading settings and the model and task definitions) and the versions of the libraries that compute it.
A job finished before is reused from the cache instead of recomputed (unless force=true); an interrupted one (Ctrl-C,
kill -9, out of memory) left the records of its finished batches in the progress log, and rerunning the same command
computes only the rest.

    cache_dir/<key>/key.json             what the key was made of
    cache_dir/<key>/progress.rankR.jsonl one record per finished unit (window, example, utterance), a batch at a time
    cache_dir/<key>/results.json         the finished result (+ samples.jsonl), written last, atomically
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import evalkit
from evalkit import distributed
from evalkit.errors import EvalkitError
from evalkit.results import canonical_json, library_versions, write_atomic, write_json

COMPUTING_LIBRARIES = ("torch", "transformers", "tokenizers", "torchao", "jiwer", "whisper-normalizer")


def computing_versions() -> dict:
    versions = library_versions()
    return {"evalkit": evalkit.__version__, **{name: versions.get(name) for name in COMPUTING_LIBRARIES}}


class Progress:
    """Finished units of one job: those of earlier attempts (`done`, index -> record) and this attempt's, appended a
    batch at a time and flushed, so a killed process loses at most the batch in flight. A line that is not a record
    of a unit of this job (torn by a kill, or foreign) is set aside. Without a folder nothing is kept (cache off)."""

    def __init__(self, folder: Path | None = None, units: int = 0):
        self.done: dict[int, dict] = {}
        self.path = None
        if folder is None:
            return
        ignored = 0
        for log in sorted(folder.glob("progress.rank*.jsonl")):
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    index = record.pop("index")
                except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
                    ignored += 1  # the last line of a killed attempt, or not a record
                    continue
                if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < units:
                    self.done[index] = record
                else:
                    ignored += 1
        if ignored > 1:  # one torn line is what a kill leaves
            print(f"evalkit: warning: {ignored} unreadable progress records in {folder} set aside; those units are "
                  "computed again", file=sys.stderr)
        self.path = folder / f"progress.rank{distributed.rank()}.jsonl"

    def save(self, indices: list[int], records: list[dict]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as log:
            log.write("".join(json.dumps({"index": i, **r}) + "\n" for i, r in zip(indices, records)))
            log.flush()  # in the OS's hands: survives the process being killed


class Job:
    """One evaluation job's key, cache entry and progress: the runner calls lookup() once the data is read and
    before any weights are, progress() once it knows the units, and finish() once results.json is written."""

    def __init__(self, cache_dir: str | None = None, force: bool = False):
        self.force = force
        self.root = Path(cache_dir).expanduser() if cache_dir else None
        self.key: str | None = None
        self.entry: Path | None = None
        self.resumed = 0
        self.note = None if self.root else "result cache off (cache_dir=null)"

    def lookup(self, parts: dict, fingerprints: list[str | None]) -> Path | None:
        """The cache entry of an identical finished job (None: compute). `parts` identify the job but for the
        models' fingerprints; a model that cannot be fingerprinted turns the cache off for the job."""
        if self.root is None:
            return None
        if None in fingerprints:
            self.note = "result cache off for this job: a hub model's revision could not be pinned to a commit"
            return None
        parts = {**parts, "models": fingerprints, "versions": computing_versions()}
        self.key = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
        self.entry = self.root / self.key
        if (self.entry / "results.json").is_file():
            if not self.force:
                return self.entry
            self.note = "force=true: cached result ignored and recomputed"
        if self.force:
            for log in self.entry.glob("progress.rank*.jsonl"):
                log.unlink()
        try:
            self.entry.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EvalkitError(f"cache_dir={self.root} is not writable ({error}); set cache_dir=DIR or null") from None
        if distributed.is_main() and not (self.entry / "key.json").is_file():
            write_json(self.entry / "key.json", parts)
        return None

    def progress(self, units: int) -> Progress:
        progress = Progress(self.entry, units)
        self.resumed = len(progress.done)
        return progress

    def summary(self) -> dict:
        return {"cache_key": self.key, "cache_hit": False, "resumed_units": self.resumed, "note": self.note}

    def finish(self, out_dir: Path) -> None:
        """Store the finished result in the cache (results.json last) and drop the progress log."""
        if self.entry is None:
            return
        for name in ("samples.jsonl", "results.json"):
            write_atomic(self.entry / name, lambda stream: stream.write((out_dir / name).read_bytes()), binary=True)
        for log in self.entry.glob("progress.rank*.jsonl"):
            log.unlink()
