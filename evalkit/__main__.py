"""The command line: `python -m evalkit model=... task=... key=value ...` (Hydra; `--help` lists the groups)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from evalkit import noise

noise.quiet(sys.argv[1:])  # before torch and transformers are imported: some of their noise comes at import

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from evalkit import distributed, evaluators, runner
from evalkit.config import CONF_DIR, check_command_line, register_resolvers
from evalkit.errors import EvalkitError, Interrupted
from evalkit.sweeps import record_failure


def summary(record: dict, out_dir: Path) -> str:
    """The headline and other scored metrics of the evaluator's catalogue, with intervals and directions."""
    evaluator = evaluators.get(record["evaluator"])
    metrics = record["metrics"]
    lines = [f"{record['model']['name']} on {record['task']} ({record['evaluator']}):"]
    for metric in evaluator.metrics:
        value = metrics.get(metric.name)
        if metric.higher_is_better is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        interval = metrics.get(metric.interval) if metric.interval else None
        shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        direction = "higher is better" if metric.higher_is_better else "lower is better"
        lines.append(f"  {metric.name:<22}{value:>12.4f}  {shown:<20}  {direction}{', ' + metric.unit if metric.unit else ''}")
    timing, run = record["timing"], record.get("run") or {}
    rates = ", ".join(f"{value:.1f} {key.removesuffix('_per_second')}/s" for key, value in timing.items()
                      if key.endswith("_per_second"))
    origin = f" [cached: computed in {run['computed_in']}]" if run.get("cache_hit") else ""
    lines.append(f"{timing['eval_seconds']:.1f} s ({rates}); results in {out_dir}{origin}")
    return "\n".join(lines)


def name_overridden_model(cfg: DictConfig, overrides: list[str]) -> None:
    """A model given by `model.name_or_path=` on the command line is labelled by that path in results, not by the
    preset whose other keys it reuses, unless `model.name=` is given too."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    if "model.name_or_path" in keys and "model.name" not in keys:
        cfg.model.name = cfg.model.name_or_path


# config_path as a file path: the same from a checkout, an editable install or the installed wheel
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    name_overridden_model(cfg, overrides)
    try:
        record = runner.run(cfg, out_dir)
    except EvalkitError as error:
        print(f"evalkit: error: {error}", file=sys.stderr)
        discard_failed_run(out_dir, hydra_config.job.name)
        if hydra_config.mode != RunMode.MULTIRUN:
            sys.exit(2)
        record_failure(Path(hydra_config.sweep.dir), hydra_config.job.num, overrides, str(error))
        return  # the sweep goes on; SweepReport names the failed jobs at its end
    except KeyboardInterrupt as interrupt:
        print(f"evalkit: interrupted: {interrupt}" if isinstance(interrupt, Interrupted) else "evalkit: interrupted",
              file=sys.stderr)
        discard_failed_run(out_dir, hydra_config.job.name)
        sys.exit(130)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if distributed.is_main():
        print(summary(record, out_dir))


def discard_failed_run(out_dir: Path, job_name: str) -> None:
    """A run that produced no result leaves no folder that looks like a run (Hydra made it: config and log only)."""
    if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= {".hydra", f"{job_name}.log"}:
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> None:
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        from evalkit.manual import manual

        print(manual())
        return
    try:
        check_command_line(sys.argv[1:])
    except EvalkitError as error:
        print(f"evalkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    evaluators.register_defaults()
    hydra_main()


if __name__ == "__main__":
    main()
