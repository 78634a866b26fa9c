"""Models kept loaded between the jobs of a sweep run in one process (Hydra's basic launcher runs them one after
another)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from evalkit.hashing import canonical_json, file_stamp
from evalkit.loading.loaded import LoadedModel
from evalkit.loading.loader import load_fresh
from evalkit.loading.locations import is_random_init, resolve_location, tokenizer_location
from evalkit.loading.options import LoadOptions


class ModelPool:
    """Loaded models keyed by the model spec, the loading options, the head and the state of its files. Before a
    model not in the pool is loaded, every model the current job has not asked for is dropped and the accelerator's
    cached memory released, so two different models never share the card. Off until a job starts: library callers
    get a fresh model each time."""

    def __init__(self):
        self.models: dict[str, LoadedModel] = {}
        self.wanted: set[str] = set()
        self.reused: list[str] = []
        self.enabled = False

    def start_job(self) -> None:
        self.enabled, self.wanted, self.reused = True, set(), []

    def get(self, spec: Mapping, options: LoadOptions, head: str, config: Any = None) -> LoadedModel:
        if not self.enabled:
            return load_fresh(spec, options, head, config)
        key = canonical_json([dict(spec), asdict(options), head, files_stamp(spec)])
        self.wanted.add(key)
        if key in self.models:
            self.reused.append(spec.get("name") or str(spec.get("name_or_path")))
            print(f"evalkit: reusing the loaded model {self.reused[-1]} (same model and loading settings)",
                  file=sys.stderr)
            return self.models[key]
        stale = set(self.models) - self.wanted
        for key_to_drop in stale:
            del self.models[key_to_drop]
        if stale:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.models[key] = load_fresh(spec, options, head, config)
        return self.models[key]


def files_stamp(spec: Mapping) -> list:
    """The stamp (hashing.file_stamp) of every file in the model's local folders (weights, config, tokenizer): a
    model whose files changed since it was loaded is loaded again, never reused."""
    folders = [] if is_random_init(spec) else [resolve_location(spec)]
    if spec.get("tokenizer"):
        folders.append(tokenizer_location(spec))
    return [file_stamp(path) for folder in folders if folder.source != "hub"
            for path in sorted(Path(folder.path).iterdir()) if path.is_file()]


MODELS = ModelPool()


def load_model(spec: Mapping, options: LoadOptions, head: str, config: Any = None) -> LoadedModel:
    """A model with the given head, its tokenizer and a provenance record (from the pool when a sweep job runs);
    `config`: the model's transformers config when the caller has read it already."""
    return MODELS.get(spec, options, head, config)
