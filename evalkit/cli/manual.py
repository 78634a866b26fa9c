"""`python -m evalkit --help`: a manual. Every key with its meaning, default and allowed values (from the settings
dataclasses, so it cannot drift from what is checked), the tasks with their evaluators, and the model presets."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from evalkit import evaluators
from evalkit.cli.startup import command_line_overrides
from evalkit.config import packaged
from evalkit.config.compose import CONF_DIR, choices
from evalkit.config.settings import describe, shown
from evalkit.config.task_folders import task_folders, user_tasks
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import RunSettings
from evalkit.loading import LoadOptions

WIDTH = 118
USAGE = """evalkit: language-model evaluation you can trust and compare.

usage: python -m evalkit [model=PRESET] [task=TASK] [KEY=VALUE ...]
       python -m evalkit task_dir=DIR task=NAME    your own task, DIR/NAME.yaml (or DIR/task/NAME.yaml)
       python -m evalkit -m KEY=A,B,C ...         a sweep (Hydra multirun), e.g. -m stride=256,512,1024
       python -m evalkit task=TASK --cfg job       the composed config, nothing run
       python -m evalkit.leaderboard outputs/     tables and a page of every run
Without model= and task=: the packaged SmolLM2-135M on WikiText-2 (data_dir=../shared/data or EVALKIT_DATA_DIR)."""
FOOTER = """Results: outputs/DATE/TIME-PID/results.json (metrics, settings by scope, provenance) and samples.jsonl.
Hydra's own options: --hydra-help."""


def leading_comment(path) -> str:
    """The comment block a YAML file opens with, as one line."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    return " ".join(lines)


def wrapped(text: str, indent: int, hanging: int = 0) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * (indent + hanging))


def key_lines(title: str, schema: type) -> list[str]:
    """Each key with its default, meaning and allowed values."""
    lines = ["", title]
    for key, default, meaning, allowed in describe(schema):
        lines.append(f"  {key}={shown(default)}")
        lines += wrapped(meaning + (f" (allowed: {allowed})" if allowed else ""), 6)
    return lines


def own_tasks(argv: list[str]) -> tuple[dict[str, Path], str]:
    """The user's tasks that the command line's task folders hold, and the line saying why none could be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(command_line_overrides(argv))
        return user_tasks(task_folders(parsed, argv)), ""
    except EvalkitError as error:
        return {}, f"  your tasks: error: {error}"
    except Exception:  # a command line Hydra cannot read: the run says so; the manual lists the packaged tasks
        return {}, ""


def manual(argv: list[str] | None = None) -> str:
    """The manual; the tasks of the task folders on the command line (`argv`, default this process's) with them."""
    lines = [USAGE, "", "Models (model=PRESET; or model.name_or_path=HUB_ID, a folder or a .gguf file):"]
    for name in choices("model"):
        lines += wrapped(f"{name}: {leading_comment(CONF_DIR / 'model' / f'{name}.yaml')}", 2, 4)
    lines += ["", "Tasks (task=NAME; a task's fields are overridden as task.FIELD=...; your own: task_dir=DIR):"]
    own, problem = own_tasks(sys.argv[1:] if argv is None else argv)
    files = {**packaged("task"), **own}
    tasks = {name: str(OmegaConf.load(path).get("evaluator")) for name, path in files.items()}
    for name, evaluator in tasks.items():
        origin = f", from {files[name].parent}" if name in own else ""
        lines += wrapped(f"{name} ({evaluator}{origin}): {leading_comment(files[name])}", 2, 4)
    lines += [problem] if problem else []
    lines += key_lines("Run keys (every task):", RunSettings)
    lines += ["  task_dir=null", *wrapped("a folder of your own task YAMLs (DIR/NAME.yaml, or DIR/task/NAME.yaml); "
                                         "task=NAME picks one, as hydra.searchpath=[file://DIR] does for DIR/task/", 6)]
    lines += key_lines("Loading keys (every task):", LoadOptions)
    for name in evaluators.names():
        using = ", ".join(task for task, evaluator in tasks.items() if evaluator == name)
        lines += key_lines(f"{name} keys (tasks: {using}; other tasks reject them):", evaluators.get(name).Settings)
    return "\n".join([*lines, "", FOOTER])
