"""What a run leaves behind: results.json (metrics + how they were made) and samples.jsonl, written atomically."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import jsonlines

from evalkit.files import strict_json, write_atomic, write_json

PACKAGES = ("evalkit", "torch", "transformers", "datasets", "hydra-core", "numpy", "accelerate", "gguf", "tokenizers",
            "torchao", "jiwer", "whisper-normalizer", "soundfile", "soxr", "lm-eval")
SCHEMA_VERSION = 2  # 2: "settings" holds the settings by scope (run, loading, evaluator)


@dataclass
class EvalResult:
    metrics: dict
    samples: list[dict]
    model: dict  # the loading layer's provenance record
    data: dict  # origin and fingerprint of the evaluated data
    timing: dict = field(default_factory=dict)


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The evalkit checkout's commit, with '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")  # what CPU speed
# depends on (bfloat16 matrix units, VNNI int8): recorded with every figure, as CPUs of one name differ


def cpu() -> dict:
    """The CPU's model name and its matrix-relevant flags (Linux: /proc/cpuinfo; elsewhere the platform's name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": None}
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name"), "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def hardware() -> dict:
    import torch  # here: the command line's checks import this module before torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_jsonl(path: Path, records: list[dict]) -> str:
    return write_atomic(path, lambda stream: jsonlines.Writer(stream, dumps=strict_json).write_all(records))


def results_record(result: EvalResult, config: dict, settings: dict, started: datetime.datetime,
                   wall_seconds: float) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "task": config["task"]["name"],
        "evaluator": config["task"]["evaluator"],
        "metrics": result.metrics,
        "settings": settings,
        "model": result.model,
        "data": result.data,
        "timing": {**result.timing, "wall_seconds": wall_seconds},
        "config": config,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        "started_at": started.isoformat(timespec="milliseconds"),  # runs started in one second still order
    }


def write_run(out_dir: Path, record: dict, samples: list[dict], exclusive: bool = True) -> dict:
    """samples first, results.json last: a results.json only ever stands beside its complete samples; a finished
    results.json is never replaced (`exclusive`). Returns both files' sha256 by name."""
    samples_sha256 = write_jsonl(out_dir / "samples.jsonl", samples)
    return {"results.json": write_json(out_dir / "results.json", record, exclusive=exclusive),
            "samples.jsonl": samples_sha256}
