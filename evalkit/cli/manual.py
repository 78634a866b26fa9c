"""`python -m evalkit --help`: a manual. Every key with its meaning, default and allowed values (from the settings
dataclasses, so it cannot drift from what is checked), the tasks with their evaluators, and the model presets."""

from __future__ import annotations

import textwrap

from omegaconf import OmegaConf

from evalkit import evaluators
from evalkit.config.compose import CONF_DIR, choices
from evalkit.config.settings import describe, shown
from evalkit.evaluators.base import RunSettings
from evalkit.loading import LoadOptions

WIDTH = 118
USAGE = """evalkit: language-model evaluation you can trust and compare.

usage: python -m evalkit [model=PRESET] [task=TASK] [KEY=VALUE ...]
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


def manual() -> str:
    lines = [USAGE, "", "Models (model=PRESET; or model.name_or_path=HUB_ID, a folder or a .gguf file):"]
    for name in choices("model"):
        lines += wrapped(f"{name}: {leading_comment(CONF_DIR / 'model' / f'{name}.yaml')}", 2, 4)
    lines += ["", "Tasks (task=NAME; a task's fields are overridden as task.FIELD=...):"]
    tasks = {name: str(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml").get("evaluator")) for name in choices("task")}
    for name, evaluator in tasks.items():
        lines += wrapped(f"{name} ({evaluator}): {leading_comment(CONF_DIR / 'task' / f'{name}.yaml')}", 2, 4)
    lines += key_lines("Run keys (every task):", RunSettings)
    lines += key_lines("Loading keys (every task):", LoadOptions)
    for name in evaluators.names():
        using = ", ".join(task for task, evaluator in tasks.items() if evaluator == name)
        lines += key_lines(f"{name} keys (tasks: {using}; other tasks reject them):", evaluators.get(name).Settings)
    return "\n".join([*lines, "", FOOTER])
