"""The user's own tasks: task YAMLs in a folder of theirs, named on the command line as `task_dir=DIR` (the YAMLs in
DIR/task/ if that folder exists, else those in DIR itself), or in Hydra's config-folder layout, DIR/task/NAME.yaml,
through `hydra.searchpath=[file://DIR]` or `--config-dir DIR`. Each is checked to be a task, may not take a packaged
task's name (one clear error, never a silent choice of one of two tasks), and is put into Hydra's config store as
`task/NAME`, so that it composes exactly as a packaged task does, for the command line and the Python API alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from evalkit import evaluators
from evalkit.config import packaged
from evalkit.config.checks import TASK_DIR_KEY
from evalkit.errors import EvalkitError

CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
STORED: set[str] = set()  # the user's task names this process has put into Hydra's config store


@dataclass(frozen=True)
class TaskFolder:
    path: Path
    named_by: str  # task_dir, hydra.searchpath or --config-dir

    @property
    def searched_by_hydra(self) -> bool:  # Hydra itself reads DIR/task/NAME.yaml; task_dir= is evalkit's own key
        return self.named_by != TASK_DIR_KEY


def folders_of_task_dir(*values) -> list[TaskFolder]:
    """The folders of task_dir's values (null: none)."""
    return [TaskFolder(Path(str(value)), TASK_DIR_KEY) for value in values if value is not None]


def searchpath_folders(value) -> list[Path]:
    """The local folders of a hydra.searchpath value (`file://DIR` entries; pkg:// ones hold no task of the user's)."""
    entries = value if isinstance(value, (list, tuple)) else [value]
    return [Path(str(entry).removeprefix("file://")) for entry in entries if str(entry).startswith("file://")]


def task_folders(parsed_overrides, argv: list[str]) -> list[TaskFolder]:
    """The task folders the command line names: `task_dir=` (every value of a sweep), hydra.searchpath's local
    folders and `--config-dir`."""
    folders = []
    for override in parsed_overrides:
        key = override.key_or_group
        if key == TASK_DIR_KEY and not override.is_delete():
            values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
            folders += folders_of_task_dir(*values)
        elif key == "hydra.searchpath":
            folders += [TaskFolder(path, key) for path in searchpath_folders(override.value())]
    for position, argument in enumerate(argv):
        flag, _, attached = argument.partition("=")
        if flag in CONFIG_DIR_FLAGS and (attached or position + 1 < len(argv)):
            folder = attached or argv[position + 1]
            folders.append(TaskFolder(Path(folder), "--config-dir"))
    return folders


def task_files(folder: TaskFolder) -> list[Path]:
    """The task YAMLs of one folder. A missing task_dir, or one without any YAML, is an error; a Hydra config folder
    without task/ simply adds no task (it may hold other configs)."""
    hydra_layout = folder.path / "task"
    if hydra_layout.is_dir():
        return sorted(hydra_layout.glob("*.yaml"))
    if folder.searched_by_hydra:
        return []
    if not folder.path.is_dir():
        raise EvalkitError(f"task_dir={folder.path}: no such folder; allowed: a folder of task YAMLs (DIR/NAME.yaml or "
                           "DIR/task/NAME.yaml)")
    files = sorted(folder.path.glob("*.yaml"))
    if not files:
        raise EvalkitError(f"task_dir={folder.path} holds no task: no *.yaml in {folder.path} or in {hydra_layout}")
    return files


def evaluator_of(path: Path) -> str:
    """The evaluator a user's task YAML names, once it is known to be a task: a mapping naming a known evaluator,
    `name:` its file's name (results are labelled by it), and its defaults pulling that evaluator's keys."""
    try:
        task = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # YAML's and OmegaConf's errors are of several kinds
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalkitError(f"{path} is not a task: it cannot be read as YAML ({first})") from None
    known = evaluators.names()
    evaluator = task.get("evaluator") if isinstance(task, Mapping) else None
    if evaluator not in known:
        raise EvalkitError(f"{path} is not a task: evaluator: {evaluator} is not an evaluator; allowed: "
                           f"{', '.join(known)} (see evalkit/conf/task/*.yaml)")
    if task.get("name") != path.stem:
        raise EvalkitError(f"{path}: name: {task.get('name')} is not allowed; allowed: name: {path.stem} (the file's "
                           "name: task=NAME chooses it and results are labelled by it)")
    pulled = {str(value) for entry in task.get("defaults") or [] if isinstance(entry, Mapping)
              for key, value in entry.items() if key == "/evaluator@_global_"}
    if pulled != {evaluator}:
        raise EvalkitError(f"{path}: its defaults do not pull its evaluator's keys; allowed: "
                           f"defaults: [/evaluator@_global_: {evaluator}]")
    return evaluator


def user_tasks(folders: list[TaskFolder]) -> dict[str, Path]:
    """NAME -> YAML of every task in the folders, each checked; a name that a packaged task or another of the user's
    files already has is an error (which of two tasks ran would otherwise depend on Hydra's search order)."""
    packaged_names, found = packaged("task"), {}
    for folder in folders:
        for path in task_files(folder):
            evaluator_of(path)
            if path.stem in packaged_names:
                raise EvalkitError(f"{path} has the name of a packaged task ({path.stem}); allowed: another file "
                                   f"name and name: (packaged tasks: {', '.join(packaged_names)})")
            if found.get(path.stem, path).resolve() != path.resolve():
                raise EvalkitError(f"task {path.stem} is in two folders ({found[path.stem]}, {path}); allowed: one")
            found[path.stem] = path
    return found


def register_user_tasks(tasks: Mapping[str, Path], folders: list[TaskFolder]) -> None:
    """The tasks of task_dir= folders into Hydra's config store as task/NAME, composed like a packaged task (their
    defaults pull the evaluator's keys). Those in folders Hydra searches itself are left to it: the same name in the
    store too would make Hydra read the store's copy as the file's schema, which it refuses for a defaults list."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in STORED:  # an earlier call's tasks (the Python API composes many jobs in one process)
        store.repo.get("task", {}).pop(f"{name}.yaml", None)
    STORED.clear()
    searched = {(folder.path / "task").resolve() for folder in folders if folder.searched_by_hydra}
    for name, path in tasks.items():
        if path.parent.resolve() not in searched:
            store.store(group="task", name=name, node=OmegaConf.load(path), provider=f"evalkit task_dir {path.parent}")
            STORED.add(name)


def with_config_dirs(overrides: list[str], parsed_overrides, folders: list[TaskFolder]) -> list[str]:
    """The overrides for composing outside Hydra's command line, which alone reads `--config-dir`: with that folder
    first in hydra.searchpath, as Hydra puts it."""
    config_dirs = [f"file://{folder.path.resolve()}" for folder in folders if folder.named_by == "--config-dir"]
    if not config_dirs:
        return overrides
    given = next((override.value() for override in parsed_overrides if override.key_or_group == "hydra.searchpath"),
                 [])
    entries = [*config_dirs, *(given if isinstance(given, (list, tuple)) else [given])]
    return [*(o for o in overrides if not o.startswith("hydra.searchpath=")),
            f"hydra.searchpath=[{','.join(map(str, entries))}]"]
