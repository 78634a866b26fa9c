"""evalkit: language-model evaluation you can trust."""

from __future__ import annotations

from evalkit.errors import EvalkitError

__version__ = "0.1.0"
__all__ = ["EvalkitError", "__version__", "evaluate"]


def evaluate(model=None, task: str | None = None, out_dir=None, **settings) -> dict:
    """Run one evaluation on the same path as the command line and return its results record (results.json's
    content); with `out_dir`, also write results.json and samples.jsonl there.

        evalkit.evaluate(model="smollm2-135m-instruct-q4_1", task="wikitext", stride=512, limit=4096)

    `model` is a preset, a hub id or local path, or a model spec mapping; `task` a task name; every other keyword is
    a key as on the command line (dotted keys reach into a group: `**{"task.path": "notes.txt"}`). Bad input raises
    EvalkitError."""
    import sys
    from pathlib import Path

    from evalkit.cli import noise, startup

    if "huggingface_hub" not in sys.modules and (offline := startup.go_offline_if_unreachable()):
        print(offline, file=sys.stderr)  # probed once per process, before the Hub's client reads the setting
    noise.quiet(settings.get("verbose") is True)  # the known-harmless notices the command line hides too
    from evalkit.config.compose import compose_config
    from evalkit.job import runner

    cfg = compose_config(model, task, **settings)
    return runner.run(cfg, Path(out_dir) if out_dir is not None else None)
