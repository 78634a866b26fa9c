"""What one evaluation job leaves for later ones: a result cache and a per-batch progress log.

A job is identified by the model's weights fingerprint, the data's fingerprint, the settings the evaluator reads
(with the loading settings and the model and task definitions) and the versions of the libraries that compute it.
A job finished before is reused from the cache instead of recomputed (unless force=true); an interrupted one (Ctrl-C,
kill -9, out of memory) left the records of its finished batches in the progress log, and rerunning the same command
computes only the rest.

    cache_dir/<key>/key.json             what the key was made of
    cache_dir/<key>/progress.rankR.jsonl one record per finished unit (window, example, utterance), a batch at a time
    cache_dir/<key>/results.json         the finished result (+ samples.jsonl), written atomically
    cache_dir/<key>/sha256.json          written last: both files' sha256, checked before a hit is served (a
                                         results.json edited by hand, or beside other samples, is never a hit)
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import evalkit
from evalkit import files
from evalkit.errors import EvalkitError
from evalkit.files import strict_json, write_json
from evalkit.hashing import canonical_json, sha256_bytes
from evalkit.job import distributed
from evalkit.job.results import library_versions, write_run

COMPUTING_LIBRARIES = ("torch", "transformers", "tokenizers", "torchao", "jiwer", "whisper-normalizer")
PRESENTATION = ("cli", "leaderboard")  # evalkit's packages that compute no number: left out of the code digest
SEAL = "sha256.json"


@functools.cache
def code_digest() -> str:
    """sha256 of evalkit's own source that computes results (every module but the command line's and the
    leaderboard's): a result computed by other code is never served, whatever the version number says."""
    package = Path(evalkit.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        name = source.relative_to(package).as_posix()
        if name.split("/")[0] not in PRESENTATION:
            digest.update(f"{name}\n".encode() + source.read_bytes())
    return digest.hexdigest()


def computing_versions() -> dict:
    versions = library_versions()
    return {"evalkit": evalkit.__version__, "evalkit_code": code_digest(),
            **{name: versions.get(name) for name in COMPUTING_LIBRARIES}}


def warn(message: str) -> None:
    print(f"evalkit: warning: {message}", file=sys.stderr)


class Progress:
    """Finished units of one job: those of earlier attempts (`done`, index -> record) and this attempt's, appended a
    batch at a time and flushed, so a killed process loses at most the batch in flight. Lines that are no record of a
    unit of this job (torn by a kill, foreign, or two different records for one unit) are set aside, and those units
    computed again. Without a folder nothing is kept (cache off); a log that cannot be written is given up with a
    warning (it only saves time)."""

    def __init__(self, folder: Path | None = None, units: int = 0):
        self.done: dict[int, dict] = {}
        self.path = None
        if folder is None:
            return
        bad, conflicting = 0, set()
        for log in sorted(folder.glob("progress.rank*.jsonl")):
            try:
                text = files.read_bytes(log, files.DATA_LIMIT).decode("utf-8", errors="replace")
            except EvalkitError as error:
                warn(f"{error}: its units are computed again")
                continue
            for line in filter(str.strip, files.jsonl_lines(text)):
                index, record = parse_record(line, units)
                if record is None:
                    bad += 1
                elif index in self.done and self.done[index] != record:
                    conflicting.add(index)
                else:
                    self.done[index] = record
        for index in conflicting:
            del self.done[index]
        if bad > 1 or conflicting:  # one torn line is what a kill leaves
            warn(f"{bad + len(conflicting)} progress records in {folder} are unreadable or conflict; set aside, "
                 "those units are computed again")
        self.path = folder / f"progress.rank{distributed.rank()}.jsonl"

    def keep_only(self, valid) -> None:
        """Set aside records that `valid(index, record)` refuses (read back, but not of the shape this job writes)."""
        refused = [index for index, record in self.done.items() if not valid(index, record)]
        for index in refused:
            del self.done[index]
        if refused:
            warn(f"{len(refused)} progress records do not fit this job (e.g. unit {refused[0]}); computed again")

    def save(self, indices: list[int], records: list[dict]) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as log:
                log.write("".join(strict_json({"index": i, **r}) + "\n" for i, r in zip(indices, records)))
                log.flush()  # in the OS's hands: survives the process being killed
        except OSError as error:
            warn(f"the progress log {self.path} cannot be written ({error.strerror}); this run cannot be resumed")
            self.path = None


def parse_record(line: str, units: int) -> tuple[int | None, dict | None]:
    """(unit index, record) of a progress-log line, or (None, None) for anything else."""
    try:
        record = files.parse_json(line, "a progress record")
    except (json.JSONDecodeError, EvalkitError):  # torn, or nested too deeply to read
        return None, None
    index = record.pop("index", None) if isinstance(record, dict) else None
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < units:
        return None, None
    return index, record


@dataclass
class CachedResult:
    """A cache entry checked to be served: where it is, its results record and its samples."""

    entry: Path
    record: dict
    samples: list[dict]


def read_entry(entry: Path) -> CachedResult:
    """A cache entry's result, checked against the digests written beside it; EvalkitError saying why it cannot be
    served (incomplete, unreadable, changed since it was cached, not of evalkit's shape)."""
    seal = files.parse_json(files.read_text(entry / SEAL, files.RECORD_LIMIT), str(entry / SEAL))
    results = files.read_bytes(entry / "results.json", files.RECORD_LIMIT)
    samples = files.read_bytes(entry / "samples.jsonl", files.DATA_LIMIT)
    if seal != {"results.json": sha256_bytes(results), "samples.jsonl": sha256_bytes(samples)}:
        raise EvalkitError("its results.json or samples.jsonl changed after it was cached (their sha256 differ "
                           f"from {SEAL}'s)")
    record = files.parse_json(results.decode("utf-8"), "results.json")
    lines = files.jsonl_lines(samples.decode("utf-8"))
    rows = [files.parse_json(line, "samples.jsonl") for line in lines if line.strip()]
    if not (isinstance(record, dict) and isinstance(record.get("metrics"), dict) and isinstance(record.get("run"), dict)
            and all(isinstance(row, dict) for row in rows)):
        raise EvalkitError("its results.json or samples.jsonl is not of evalkit's shape")
    return CachedResult(entry, record, rows)


def checked_entry(entry: Path) -> CachedResult | None:
    """The entry's result when it can be served, else None and one line saying why it is recomputed."""
    try:
        return read_entry(entry)
    except (EvalkitError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = str(error) if isinstance(error, EvalkitError) else f"unreadable ({error})"
        warn(f"cache entry {entry} is incomplete or corrupt, so not served ({reason}); recomputing")
        return None


class Job:
    """One evaluation job's key, cache entry and progress: the runner calls lookup() once the data is read and
    before any weights are, progress() once it knows the units, and finish() with the result. The cache only saves
    time: when it cannot be read or written, the job says so and goes on without it."""

    def __init__(self, cache_dir: str | None = None, force: bool = False):
        self.force = force
        self.root = Path(cache_dir).expanduser() if cache_dir else None
        self.key: str | None = None
        self.entry: Path | None = None
        self.resumed = 0
        self.note = None if self.root else "result cache off (cache_dir=null)"

    def lookup(self, parts: dict, fingerprints: list[str | None]) -> CachedResult | None:
        """The cache entry of an identical finished job (None: compute). `parts` identify the job but for the
        models' fingerprints; a model that cannot be fingerprinted turns the cache off for the job."""
        if self.root is None:
            return None
        if None in fingerprints:
            self.note = "result cache off for this job: a hub model's revision could not be pinned to a commit"
            return None
        parts = {**parts, "models": fingerprints, "versions": computing_versions()}
        self.key = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
        entry = self.root / self.key
        if (entry / "results.json").exists():
            hit = None if self.force else checked_entry(entry)
            if hit is not None:
                return hit
            self.note = ("force=true: cached result ignored and recomputed" if self.force else
                         "the cached result was incomplete, corrupt or changed: recomputed")
        try:
            entry.mkdir(parents=True, exist_ok=True)
            if self.force:
                for log in entry.glob("progress.rank*.jsonl"):
                    log.unlink()
            if distributed.is_main() and not (entry / "key.json").is_file():
                write_json(entry / "key.json", parts)
        except OSError as error:
            self.note = f"result cache off for this job: cache_dir={self.root} is not writable ({error.strerror})"
            warn(f"{self.note}; set cache_dir=DIR or null")
            return None
        self.entry = entry
        return None

    def progress(self, units: int, valid) -> Progress:
        """The job's progress: finished units of earlier attempts that `valid(index, record)` accepts."""
        progress = Progress(self.entry, units)
        progress.keep_only(valid)
        self.resumed = len(progress.done)
        return progress

    def summary(self) -> dict:
        return {"cache_key": self.key, "cache_hit": False, "resumed_units": self.resumed, "note": self.note}

    def finish(self, record: dict, samples: list[dict]) -> None:
        """Store the finished result in the cache (results.json last) and drop the progress log."""
        if self.entry is None:
            return
        try:
            write_json(self.entry / SEAL, write_run(self.entry, record, samples, exclusive=False))
            for log in self.entry.glob("progress.rank*.jsonl"):
                log.unlink()
        except OSError as error:
            reason = getattr(error, "strerror", None) or error
            warn(f"the result could not be cached in {self.entry} ({reason}); it is written to the run "
                 "folder all the same")
