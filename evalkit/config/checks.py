"""What can be checked about a job without torch, transformers or any weights: every key and value, the evaluator's
own checks, and the pairings that a model's config.json decides (method vs saved head, window vs context length,
NLI labels). The runner's plan() starts here; the command line runs it before torch is imported, so that a bad
setting fails in about a second rather than after the libraries' import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from omegaconf import OmegaConf

from evalkit import evaluators
from evalkit.config.keys import TASK_SECTIONS, check_known, check_model_keys, known_keys_hint
from evalkit.config.settings import check_only_with, read_settings
from evalkit.data import TASK_FIELDS, check_task
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import NOT_SETTINGS, Evaluator, ModelCheck, ModelRequest, RunSettings
from evalkit.loading.facts import ModelFacts, check_trained_head, file_facts
from evalkit.loading.options import LoadOptions, check_combinations

GROUPS = ("model", "task")
TASK_DIR_KEY = "task_dir"  # the folder of the user's own tasks (task_folders.py): recorded, read by no evaluator
RUN_KEYS = tuple(f.name for f in fields(RunSettings))
LOADING_KEYS = tuple(f.name for f in fields(LoadOptions))


def allowed_keys(evaluator_name: str) -> tuple[str, ...]:
    own = tuple(f.name for f in fields(evaluators.get(evaluator_name).Settings))
    return (*GROUPS, TASK_DIR_KEY, *RUN_KEYS, *LOADING_KEYS, *own)


def check_keys(config: Mapping, evaluator_name: str, task: str) -> None:
    """Every top-level key must be one the run, the loading layer or the task's evaluator reads."""
    allowed = allowed_keys(evaluator_name)
    for key in config:
        if key not in allowed:
            raise EvalkitError(f"key '{key}' is not read by the {evaluator_name} evaluator (task {task}); "
                               f"{known_keys_hint(str(key), allowed)}")


@dataclass
class CheckedConfig:
    """A config whose keys and values are checked, read into the settings of each scope."""

    evaluator: Evaluator
    config: dict  # the whole resolved config, as written into results.json
    run: RunSettings
    loading: LoadOptions
    settings: Any  # the evaluator's Settings

    def scoped_settings(self) -> dict:
        """The settings by scope: what the cache key and the leaderboard hold (not where files are)."""
        run = {k: v for k, v in asdict(self.run).items() if k not in NOT_SETTINGS}
        return {"run": run, "loading": asdict(self.loading), self.evaluator.name: asdict(self.settings)}


def check_config(cfg) -> CheckedConfig:
    """Keys, values (a key read only with another's value, e.g. its method, after the task's defaults are
    resolved) and the evaluator's checks across settings and task."""
    config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    task = config["task"]
    check_task(task)
    evaluator = evaluators.get(task.get("evaluator"))
    check_keys(config, evaluator.name, task.get("name"))
    check_known(task, (*TASK_FIELDS, *TASK_SECTIONS, *evaluator.task_keys), "task")
    check_model_keys(config["model"])
    run = read_settings(RunSettings, config)
    loading = read_settings(LoadOptions, config)
    check_combinations(loading)
    settings = evaluator.validate(read_settings(evaluator.Settings, config), run, task)
    check_only_with(settings)
    return CheckedConfig(evaluator, config, run, loading, settings)


def check_pairing(checked: CheckedConfig, role: str, request: ModelRequest, facts: ModelFacts) -> None:
    """The evaluator's checks of a model's facts (their hints name what would work), then the head's."""
    model = ModelCheck(role, request.spec, facts)
    checked.evaluator.validate(checked.settings, checked.run, checked.config["task"], model)
    check_trained_head(request.spec, facts, request.head)


def check_config_files(checked: CheckedConfig) -> None:
    """The pairings that the models' config files decide, where a file is at hand without a download or a
    transformers import (the runner checks every model again on its transformers config)."""
    facts = file_facts(checked.config["model"])
    if facts is None:
        return
    for role, request in checked.evaluator.models(checked.settings, checked.config["model"], facts).items():
        role_facts = facts if role == "model" else file_facts(request.spec)
        if role_facts is not None:
            check_pairing(checked, role, request, role_facts)
