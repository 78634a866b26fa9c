"""lm-evaluation-harness's tasks and their requests, built by lm-eval's own code exactly as its `simple_evaluate` and
`evaluate` build them before the model call: its TaskManager (with the user's include path), its global seeds, the
num_fewshot override rule, the few-shot seed, `limit` through its get_sample_size, and each task's
`build_all_requests` (prompts, few-shot examples, chat template). lm-eval is imported here only, when a job reads its
data: the command line's checks ask `require_lm_eval` alone."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.hashing import sha256_text

INSTALL = "pip install 'evalkit[lm-eval]'"
RANDOM_SEED, OTHER_SEED = 0, 1234  # lm-eval's DEFAULT_RANDOM_SEED and DEFAULT_OTHER_SEED (numpy, torch, few-shot)
REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")  # multiple_choice arrives as the first


def require_lm_eval() -> None:
    """lm-eval must be installed (found, not imported: this runs before torch is imported)."""
    try:
        found = importlib.util.find_spec("lm_eval") is not None
    except ValueError:  # sys.modules["lm_eval"] is None: the import is blocked
        found = False
    if not found:
        raise EvalkitError(f"task=lm_eval needs lm-evaluation-harness, which is not installed; install it with "
                           f"{INSTALL}")


def task_names(task: Mapping) -> list[str]:
    """The task's lm-eval names: a list, or one text of comma-separated names (`[a,b]` as the Python API passes a
    command line's value); anything else is one error line."""
    names = task.get("names")
    if isinstance(names, str):
        names = [name.strip() for name in names.strip().strip("[]").split(",") if name.strip()]
    if not names or not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
        raise EvalkitError(f"task.names={task.get('names')} is not allowed; allowed: a list of lm-eval task, group or "
                           "tag names, e.g. task.names=[arc_easy,gsm8k]")
    return list(names)


@dataclass
class Built:
    """The loaded tasks and groups (lm-eval's TaskManager.load), each task's sample limit, and every request."""

    tasks: dict  # name -> lm-eval Task, in lm-eval's order
    groups: dict  # name -> lm-eval Group
    limits: list  # per task, lm-eval's get_sample_size
    instances: list  # every lm-eval Instance of every task, in task order
    version: str  # lm-eval's
    names: list  # as the task lists them
    origin: str
    after_loading: tuple  # Python's and numpy's global generator states once the tasks were loaded


@contextlib.contextmanager
def lm_eval_seeds(state: tuple | None = None):
    """lm-eval's global seeds (simple_evaluate sets Python's and numpy's before loading tasks, which may draw from
    them), or `state`, the generators as they stood after loading; this process's own are restored afterwards."""
    python, numpy = random.getstate(), np.random.get_state()
    if state is None:
        random.seed(RANDOM_SEED)
        np.random.seed(OTHER_SEED)
    else:
        random.setstate(state[0])
        np.random.set_state(state[1])
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def load_tasks(task: Mapping, num_fewshot: int | None):
    """lm-eval's TaskManager.load of the task's names, with simple_evaluate's config overrides; its errors (an
    unknown name, a dataset the offline hub cannot give) as one line."""
    from lm_eval.tasks import TaskManager

    names = task_names(task)
    try:
        manager = TaskManager(include_path=task.get("include_path"),
                              include_defaults=task.get("include_defaults", True))
        loaded = manager.load(names)
    except KeyError as error:
        raise EvalkitError(f"task.names={names}: {error.args[0]}; allowed: lm-eval's task, group or tag names, or your "
                           "own in task.include_path=DIR") from None
    except (ConnectionError, OSError) as error:
        raise EvalkitError(f"task.names={names}: a dataset is not available ({first_line(error)}); offline, point the "
                           "task's YAML at local files (dataset_path: json, dataset_kwargs: {data_files: ...}) in "
                           "task.include_path=DIR, or run once online to fill the datasets cache") from None
    except Exception as error:  # lm-eval's task building raises many kinds: one line naming the tasks
        raise EvalkitError(f"lm-eval could not build task.names={names} ({type(error).__name__}: "
                           f"{first_line(error)})") from None
    for name, task_obj in loaded["tasks"].items():
        check_servable(name, task_obj)
        if num_fewshot is not None and task_obj.get_config("num_fewshot") != 0:  # a 0 in the YAML is never overridden
            task_obj.set_config(key="num_fewshot", value=num_fewshot)
        elif num_fewshot is None and task_obj.get_config("num_fewshot") is None:
            task_obj.set_config(key="num_fewshot", value=0)
    return loaded


def check_servable(name: str, task_obj) -> None:
    if getattr(task_obj, "MULTIMODAL", False):
        raise EvalkitError(f"lm-eval task {name} needs a multimodal model, which evalkit cannot serve; allowed: text "
                           "tasks")
    if getattr(task_obj, "UNSAFE_CODE", False):
        raise EvalkitError(f"lm-eval task {name} runs generated code, which evalkit does not; allowed: other tasks")
    output_type = task_obj.get_config("output_type")
    if output_type not in (*REQUEST_TYPES, "multiple_choice"):
        raise EvalkitError(f"lm-eval task {name} has output_type {output_type}, which evalkit cannot serve; allowed: "
                           "multiple_choice, loglikelihood, loglikelihood_rolling, generate_until")


def build(task: Mapping, settings, limit: int | None) -> Built:
    """The tasks and their requests, as lm-eval's simple_evaluate and evaluate build them on one process (rank 0 of
    1: evalkit's runner shards the requests itself), without a chat template (with_chat_template adds it)."""
    import lm_eval

    with lm_eval_seeds():
        loaded = load_tasks(task, settings.num_fewshot)
        after_loading = random.getstate(), np.random.get_state()
        limits, instances = build_requests(loaded["tasks"], settings, limit)
    where = f" (include path {task['include_path']})" if task.get("include_path") else ""
    origin = f"lm-eval {lm_eval.__version__}: {', '.join(task_names(task))}{where}"
    return Built(loaded["tasks"], loaded["groups"], limits, instances, lm_eval.__version__, task_names(task), origin,
                 after_loading)


def with_chat_template(built: Built, settings, limit: int | None, chat_template: Callable,
                       tokenizer_name: str) -> Built:
    """The requests built again with the chat template (which needs the loaded tokenizer), by the same loaded tasks
    from the global generators as they stood after loading: what loading and building with the template at once
    gives, without loading the tasks (their datasets) a second time."""
    with lm_eval_seeds(built.after_loading):
        limits, instances = build_requests(built.tasks, settings, limit, chat_template, tokenizer_name)
    return replace(built, limits=limits, instances=instances)


def build_requests(tasks: dict, settings, limit: int | None, chat_template: Callable | None = None,
                   tokenizer_name: str = "") -> tuple[list, list]:
    """Each task's sample limit (lm-eval's get_sample_size) and every task's requests (its build_all_requests, its
    few-shot seed set first), in task order."""
    from lm_eval.evaluator_utils import get_sample_size

    limits = []
    for task_obj in tasks.values():
        task_obj.set_fewshot_seed(seed=OTHER_SEED)
        limits.append(get_sample_size(task_obj, limit))
        task_obj.build_all_requests(
            limit=limits[-1], rank=0, world_size=1, system_instruction=settings.system_instruction,
            apply_chat_template=chat_template is not None, fewshot_as_multiturn=settings.fewshot_as_multiturn,
            chat_template=chat_template, tokenizer_name=tokenizer_name)
    instances = [instance for task_obj in tasks.values() for instance in task_obj.instances]
    for instance in instances:
        if instance.request_type not in REQUEST_TYPES:
            raise EvalkitError(f"lm-eval task {instance.task_name} asks for {instance.request_type} requests, which "
                               f"evalkit cannot serve; allowed: {', '.join(REQUEST_TYPES)}")
    return limits, instances


def fingerprint(built: Built) -> str:
    """sha256 of every request (its task, document, type and arguments: the prompts as the model reads them), each
    task's config (its metrics and filters decide the figures too) and lm-eval's version: a change to any of them is
    another job for the result cache."""
    requests = [[i.task_name, i.doc_id, i.idx, i.repeats, i.request_type, list(i.args)] for i in built.instances]
    configs = {name: task_obj.dump_config() for name, task_obj in built.tasks.items()}
    groups = {name: sorted(map(str, getattr(group, "child_names", []))) for name, group in built.groups.items()}
    content = {"lm_eval": built.version, "requests": requests, "configs": configs, "groups": groups}
    return sha256_text(json.dumps(content, sort_keys=True, default=stable_repr, ensure_ascii=False))


def stable_repr(value) -> str:
    """A non-JSON value (a task's function) as text that is the same in every process (no memory address)."""
    name = getattr(value, "__qualname__", None)
    return f"{getattr(value, '__module__', '')}.{name}" if name else type(value).__qualname__


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
