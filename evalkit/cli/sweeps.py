"""Sweeps that finish: a job that fails with a bad input is reported and skipped, the other jobs run, and the sweep
exits non-zero at the end with the list of failed jobs (Hydra would otherwise stop at the first failing job)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from evalkit.cli.summary import sweep_table

FAILED_JOBS = "failed_jobs.jsonl"  # in the sweep folder: one line per failed job, appended by the job itself


def is_first_rank() -> bool:
    """Whether this process speaks for the sweep: always, but under torchrun only rank 0 (read from torchrun's RANK,
    since this module stays free of torch). The other ranks run the same jobs and would say it all again."""
    return os.environ.get("RANK", "0") == "0"


def record_failure(sweep_dir: Path, job_number: int, overrides: list[str], error: str) -> None:
    if not is_first_rank():
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / FAILED_JOBS, "a", encoding="utf-8") as log:
        log.write(json.dumps({"job": job_number, "overrides": overrides, "error": error}) + "\n")


def finished_runs(sweep_dir: Path) -> list[tuple[str, list[str], dict]]:
    """(job number, its overrides, its results record) of every job folder of the sweep that holds a result."""
    runs = []
    for results in sweep_dir.glob("*/results.json"):
        try:
            record = json.loads(results.read_text(encoding="utf-8"))
            overrides = OmegaConf.load(results.parent / ".hydra" / "overrides.yaml")
        except (OSError, ValueError, yaml.YAMLError):
            continue  # not a run this sweep finished whole: it is not in the table
        runs.append((results.parent.name, list(map(str, overrides)), record))
    return sorted(runs, key=lambda run: int(run[0]) if run[0].isdigit() else -1)


class SweepReport(Callback):
    """At the end of a multirun, in the process that launched it (rank 0 under torchrun): the table of its runs; name
    the failed jobs and exit with status 2."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_rank():  # rank 0 may still be writing its last result: its report is the whole one
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        finished = finished_runs(sweep_dir)
        if finished:
            print(f"evalkit: sweep {sweep_dir}: {len(finished)} run(s) finished", file=sys.stderr)
            print(sweep_table(finished))
        log = sweep_dir / FAILED_JOBS
        if not log.is_file():
            return
        failures = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        print(f"evalkit: error: {len(failures)} sweep job(s) failed; the others finished:", file=sys.stderr)
        for failure in sorted(failures, key=lambda f: f["job"]):
            print(f"  job {failure['job']} ({' '.join(failure['overrides'])}): {failure['error']}", file=sys.stderr)
        sys.exit(2)
