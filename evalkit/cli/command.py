"""The command line's job, once the first line is on screen: the command-line check, Hydra's composition and run,
one line per error (exit 2; a sweep records the failure and goes on), the end-of-run summary."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from evalkit.cli.summary import summary
from evalkit.cli.sweeps import record_failure
from evalkit.config.compose import (
    CONF_DIR,
    check_command_line,
    name_overridden_model,
    register_defaults,
    register_resolvers,
)
from evalkit.errors import EvalkitError, Interrupted


# config_path as a file path: the same from a checkout, an editable install or the installed wheel
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from evalkit.job import distributed, run_folder, runner  # here: the command line's checks run before torch loads

    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    name_overridden_model(cfg, overrides)
    try:
        record = runner.run(cfg, out_dir, run_folder.hydra_snapshot(cfg))
    except EvalkitError as error:
        print(f"evalkit: error: {error}", file=sys.stderr)
        discard_failed_run(out_dir)
        if hydra_config.mode != RunMode.MULTIRUN:
            sys.exit(2)
        record_failure(Path(hydra_config.sweep.dir), hydra_config.job.num, overrides, str(error))
        return  # the sweep goes on; SweepReport names the failed jobs at its end
    except KeyboardInterrupt as interrupt:
        print(f"evalkit: interrupted: {interrupt}" if isinstance(interrupt, Interrupted) else "evalkit: interrupted",
              file=sys.stderr)
        discard_failed_run(out_dir)
        sys.exit(130)
    if distributed.is_main():
        print(summary(record, out_dir))


def discard_failed_run(out_dir: Path) -> None:
    """A run that produced no result removed what it wrote (run_folder.py); the folder Hydra made for it goes too
    when empty. Never anything else: a run refused a folder leaves that folder's files alone."""
    with contextlib.suppress(OSError):
        out_dir.rmdir()


def run(argv: list[str]) -> None:
    try:
        check_command_line(argv)
    except EvalkitError as error:
        print(f"evalkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    register_defaults()
    hydra_main()
