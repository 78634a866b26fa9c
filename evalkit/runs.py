"""What one evaluation job leaves for later ones: a result cache and a per-batch progress log.

A job is identified by the model's weights fingerprint, the data's fingerprint, every evaluation setting and the
versions of the libraries that compute it. A job finished before is reused from the cache instead of recomputed
(unless force=true); an interrupted one (Ctrl-C, kill -9, out of memory) left the records of its finished batches in
the progress log, and rerunning the same command computes only the rest.

    cache_dir/<key>/key.json            what the key was made of
    cache_dir/<key>/progress.rankR.jsonl one record per finished unit (window, example, utterance), a batch at a time
    cache_dir/<key>/results.json        the finished result (+ samples.jsonl), written last, atomically
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from omegaconf import OmegaConf

import evalkit
from evalkit import distributed
from evalkit.errors import EvalkitError
from evalkit.loading import LoadOptions, model_fingerprint
from evalkit.results import NOT_SETTINGS, canonical_json, library_versions, write_atomic, write_json

COMPUTING_LIBRARIES = ("torch", "transformers", "tokenizers", "torchao", "jiwer", "whisper-normalizer")


class CachedResult(Exception):
    """Raised by Job.start when an identical job has finished before; `entry` holds its results.json."""

    def __init__(self, entry: Path):
        super().__init__(str(entry))
        self.entry = entry


class Progress:
    """Finished units of one job: those of earlier attempts (`done`, index -> record) and this attempt's, appended a
    batch at a time and flushed, so a killed process loses at most the batch in flight. A line torn by a kill is
    ignored. Without a folder nothing is kept (a library call, or cache_dir=null)."""

    def __init__(self, folder: Path | None = None):
        self.done: dict[int, dict] = {}
        self.path = None
        if folder is None:
            return
        for log in sorted(folder.glob("progress.rank*.jsonl")):
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed attempt
                self.done[record["index"]] = record
        self.path = folder / f"progress.rank{distributed.rank()}.jsonl"

    @property
    def keeping(self) -> bool:
        return self.path is not None

    def save(self, records: list[dict]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as log:
            log.write("".join(json.dumps(record) + "\n" for record in records))
            log.flush()  # in the OS's hands: survives the process being killed


class Job:
    """One evaluation job's key, cache entry and progress. Evaluators call start() once their data is read and
    before any weights are; __main__ calls finish() once results.json is written."""

    def __init__(self, cfg: Mapping, cache_dir: str | None = None, force: bool = False):
        self.cfg, self.force = cfg, force
        self.root = Path(cache_dir).expanduser() if cache_dir else None
        self.key: str | None = None
        self.entry: Path | None = None
        self.resumed = 0
        self.note = None if self.root else "result cache off (cache_dir=null)"

    def key_parts(self, data_fingerprint: str, model_fingerprints: list[str]) -> dict:
        config = OmegaConf.to_container(self.cfg, resolve=True) if OmegaConf.is_config(self.cfg) else dict(self.cfg)
        versions = library_versions()
        return {
            "settings": {k: v for k, v in config.items() if k not in NOT_SETTINGS},
            "models": model_fingerprints,
            "data": data_fingerprint,
            "versions": {"evalkit": evalkit.__version__, **{n: versions.get(n) for n in COMPUTING_LIBRARIES}},
        }

    def start(self, data_fingerprint: str, models: list[Mapping] | None = None) -> Progress:
        """The job's progress so far; raises CachedResult when it has finished before (and force is off)."""
        if self.root is None:
            return Progress()
        options = LoadOptions.from_config(self.cfg)
        fingerprints = [model_fingerprint(spec, options) for spec in (models or [self.cfg.model])]
        if None in fingerprints:
            self.note = "result cache off for this job: a hub model's revision could not be pinned to a commit"
            return Progress()
        parts = self.key_parts(data_fingerprint, fingerprints)
        self.key = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
        self.entry = self.root / self.key
        if (self.entry / "results.json").is_file():
            if not self.force:
                raise CachedResult(self.entry)
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
        progress = Progress(self.entry)
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
