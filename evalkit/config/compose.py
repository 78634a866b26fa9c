"""The configuration: Hydra composition of evalkit/conf (also for the Python API) and the command-line check, which
rejects a key the chosen evaluator does not read before Hydra composes anything, then runs checks.py on the composed
config: every bad value or config-file pairing is one line before torch is imported."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from evalkit import evaluators
from evalkit.cli.startup import command_line_overrides, default_choice
from evalkit.config import CONF_DIR, packaged
from evalkit.config.checks import GROUPS, check_config, check_config_files, check_keys
from evalkit.config.task_folders import (
    TASK_DIR_KEY,
    folders_of_task_dir,
    register_user_tasks,
    task_folders,
    user_tasks,
    with_config_dirs,
)
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import RunSettings
from evalkit.loading.options import LoadOptions


def run_id() -> str:
    """What tells apart runs started in the same second: the process id (under torchrun, the launcher's, which
    every rank shares, so that the ranks agree on one folder)."""
    return str(os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid())


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("evalkit_run_id"):
        OmegaConf.register_new_resolver("evalkit_run_id", run_id, use_cache=True)


def register_defaults() -> None:
    """The settings' defaults as Hydra configs, from the dataclasses that declare them: `keys/run` and `keys/loading`,
    which config.yaml pulls in at the top level, and each evaluator's as `evaluator/NAME`, which a task pulls in
    (`defaults: [/evaluator@_global_: NAME]`), so that `stride=256` is a key exactly when the task reads it."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    # task_dir sits with the run keys: a key of the command line (where the user's tasks are), recorded in
    # results.json's config but read by no evaluator; what the task holds reaches the cache key as the composed task
    store.store(group="keys", name="run", node={**asdict(RunSettings()), TASK_DIR_KEY: None})
    store.store(group="keys", name="loading", node=asdict(LoadOptions()))
    for name in evaluators.names():
        store.store(group="evaluator", name=name, node=asdict(evaluators.get(name).Settings()))


def choices(group: str) -> list[str]:
    return list(packaged(group))


def task_evaluator(task: str, own: Mapping[str, Path] | None = None) -> str:
    """The evaluator of a packaged task or of one of the user's (`own`: NAME -> YAML, from their task folders)."""
    known = {**packaged("task"), **(own or {})}
    if task not in known:
        raise EvalkitError(f"task={task} is not known; allowed: {', '.join(sorted(known))}, or a task of your own "
                           "with task_dir=DIR")
    return str(OmegaConf.load(known[task]).get("evaluator"))


def name_overridden_model(cfg: DictConfig, overrides: list[str]) -> None:
    """A model given by `model.name_or_path=` on the command line is labelled by that path in results, not by the
    preset whose other keys it reuses, unless `model.name=` is given too."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    if "model.name_or_path" in keys and "model.name" not in keys:
        cfg.model.name = cfg.model.name_or_path


def check_command_line(argv: list[str]) -> None:
    """Before Hydra composes: an unknown model or task preset, or a top-level key that the chosen task's evaluator
    does not read (Hydra would reject it in several lines, or a later job of a sweep would), is one clear error.
    A single run's composed config then goes through checks.py (a sweep's jobs are checked as each starts)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = command_line_overrides(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # Hydra's override grammar: say which argument, in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalkitError(f"cannot read the command line ({first}); quote values with special characters, e.g. "
                           "hydra.run.dir='\"runs/a=b\"'") from None
    values = {}
    for override in parsed:
        if override.key_or_group in ("hydra.run.dir", "hydra.sweep.dir"):
            values[override.key_or_group] = str(override.value())
        if override.key_or_group in GROUPS and not override.is_delete():
            picked = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
            values[override.key_or_group] = [str(v) for v in picked]
    for preset in values.get("model", []):
        if preset not in choices("model"):
            raise EvalkitError(f"model={preset} is not a preset; allowed: {', '.join(choices('model'))} (or "
                               "model.name_or_path=HUB_ID_OR_PATH)")
    check_output_folder(values, multirun="-m" in argv or "--multirun" in argv)
    folders = task_folders(parsed, argv)
    own = user_tasks(folders)
    register_user_tasks(own, folders)  # before Hydra composes, here and in the job that follows in this process
    for task in values.get("task", [default_choice("task")]):
        evaluator = task_evaluator(task, own)
        for override in parsed:
            key = override.key_or_group
            if "." in key or "/" in key or override.is_delete():
                continue
            check_keys({key: None}, evaluator, task)
    if not any(override.is_sweep_override() for override in parsed):
        cfg = check_composition(with_config_dirs(overrides, parsed, folders))
        name_overridden_model(cfg, overrides)
        check_config_files(check_config(cfg))


def check_composition(overrides: list[str]) -> DictConfig:
    """Compose the config as Hydra will (without its own `hydra` node): its composition errors (appending a key
    that exists, a bad group, ...) become one line here."""
    from hydra import compose, initialize_config_dir

    register_defaults()
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception as error:  # Hydra's composition raises several kinds
        text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
        raise EvalkitError(f"the command line does not compose: {text or type(error).__name__}") from None
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_output_folder(values: dict, multirun: bool) -> None:
    """The run's folder must be one this process can create and write (Hydra would fail with a traceback)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = Path(values.get(key) or "outputs").absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise EvalkitError(f"{key}={folder} cannot be written ({existing} is not a writable folder); choose another "
                           f"with {key}=DIR")


def model_argument(model):
    """The API's `model`: a preset name, a hub id or path (a path object is its text), a model spec mapping, or
    None (the default preset); anything else is one line, never the default model evaluated in its place."""
    if isinstance(model, os.PathLike):  # a path even where its text names a preset (a folder called gpt2)
        return {"name": os.fspath(model), "name_or_path": os.fspath(model)}
    if model is None or isinstance(model, Mapping) or (isinstance(model, str) and model.strip()):
        return model
    raise EvalkitError(f"model={model!r} is not allowed; allowed: a preset name ({', '.join(choices('model'))}), a "
                       "hub id or local path (str or pathlib.Path), a model spec mapping, or None for the default")


def compose_config(model: str | Mapping | None = None, task: str | None = None, **settings) -> DictConfig:
    """The config a command line would compose: `model` a preset, a hub id or path, or a model spec mapping; `task`
    a task name; every other key a top-level setting (checked by the runner like a command-line key)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evalkit.config.presets import model_spec

    model = model_argument(model)
    register_defaults()
    register_resolvers()
    if settings.get(TASK_DIR_KEY) is not None:  # recorded as text, as the command line's task_dir= is
        settings[TASK_DIR_KEY] = str(settings[TASK_DIR_KEY])
    folders = folders_of_task_dir(settings.get(TASK_DIR_KEY))
    own = user_tasks(folders)
    register_user_tasks(own, folders)
    if task is not None:
        task_evaluator(task, own)  # an unknown task is one clear error, not Hydra's
    overrides = [f"task={task}"] if task else []
    if isinstance(model, str) and model in choices("model"):
        overrides.append(f"model={model}")
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: evalkit's config is already on its path
        cfg = compose("config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        if isinstance(model, Mapping):
            cfg.model = dict(model)
        elif isinstance(model, str) and model not in choices("model"):
            cfg.model = model_spec(model)
        for key, value in settings.items():  # a dotted key (task.path=...) reaches into its group, as on the CLI
            OmegaConf.update(cfg, key, value, merge=False)
        name_overridden_model(cfg, list(settings))  # labelled by its path, as on the CLI
    return cfg
