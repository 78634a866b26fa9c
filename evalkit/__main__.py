"""The command line: `python -m evalkit model=... task=... key=value ...` (Hydra; `--help` lists the groups)."""

from __future__ import annotations

import datetime
import importlib
import json
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evalkit import distributed
from evalkit.data import read_jsonl
from evalkit.errors import EvalkitError
from evalkit.loading import MODELS
from evalkit.results import results_record, write_run
from evalkit.runs import CachedResult, Job

EVALUATORS = {"perplexity": "evalkit.perplexity", "classification": "evalkit.classification", "asr": "evalkit.asr"}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Evaluate (or reuse an identical job's cached result), write samples.jsonl and results.json into out_dir, and
    return the results record."""
    evaluator = cfg.task.get("evaluator")
    if evaluator not in EVALUATORS:
        raise EvalkitError(f"task.evaluator={evaluator} is not known; allowed: {', '.join(EVALUATORS)}")
    MODELS.start_job()
    job = Job(cfg, cfg.get("cache_dir"), bool(cfg.get("force")))
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    try:
        result = importlib.import_module(EVALUATORS[evaluator]).evaluate(cfg, job)
    except CachedResult as hit:
        return reuse_cached(hit.entry, out_dir)
    record = results_record(result, OmegaConf.to_container(cfg, resolve=True), started, time.perf_counter() - clock)
    record["run"] = {**job.summary(), "out_dir": str(out_dir), "models_reused": MODELS.reused}
    if job.resumed:
        print(f"evalkit: resumed: {job.resumed} finished units of an interrupted run were reused", file=sys.stderr)
    if distributed.is_main():  # under torchrun every rank holds the full result; one writes it
        write_run(out_dir, record, result.samples)
        job.finish(out_dir)
    return record


def reuse_cached(entry: Path, out_dir: Path) -> dict:
    """Copy a cached result into this run's folder, saying where and when it was computed."""
    record = json.loads((entry / "results.json").read_text(encoding="utf-8"))
    print(f"evalkit: cache hit: this model, data and settings were evaluated in {record['run']['out_dir']} "
          f"(started {record['started_at']}); result copied, nothing recomputed (force=true recomputes)",
          file=sys.stderr)
    reused_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record["run"] = {**record["run"], "cache_hit": True, "out_dir": str(out_dir),
                     "computed_in": record["run"]["out_dir"], "reused_at": reused_at}
    if distributed.is_main():
        write_run(out_dir, record, [sample for _, sample in read_jsonl(entry / "samples.jsonl")])
    return record


def summary(record: dict, out_dir: Path) -> str:
    figures = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items() if isinstance(v, float))
    rates = ", ".join(f"{k.removesuffix('_per_second')}/s={v:.1f}" for k, v in record["timing"].items()
                      if k.endswith("_per_second"))
    run = record.get("run") or {}
    origin = f" [cached: computed in {run['computed_in']}]" if run.get("cache_hit") else ""
    return (
        f"{record['model']['name']} on {record['task']}: {figures}\n"
        f"{record['timing']['eval_seconds']:.1f} s ({rates}); results in {out_dir}{origin}"
    )


def name_overridden_model(cfg: DictConfig, overrides: list[str]) -> None:
    """A model given by `model.name_or_path=` on the command line is labelled by that path in results, not by the
    preset whose other keys it reuses, unless `model.name=` is given too."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    if "model.name_or_path" in keys and "model.name" not in keys:
        cfg.model.name = cfg.model.name_or_path


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    name_overridden_model(cfg, list(hydra_config.overrides.task))
    try:
        record = run(cfg, out_dir)
    except EvalkitError as error:
        print(f"evalkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if distributed.is_main():
        print(summary(record, out_dir))


if __name__ == "__main__":
    main()
