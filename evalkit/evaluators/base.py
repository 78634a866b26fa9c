"""What an evaluator is: a small strategy the runner drives (runner.py owns the job).

An evaluator declares its typed settings (a dataclass of `setting(...)` fields: the top-level keys it reads), the
models it needs and with which head, how it reads its data, and its metric catalogue (name, meaning, direction,
unit, headline). Its prepare() turns data and loaded models into one job's PreparedJob: the units (windows,
examples, utterances), how a batch of them scores into per-unit records (JSON-able: they are the resume log, checked
against the record type the job declares), and how records aggregate into metrics and samples. The evaluator itself
holds nothing of a job. A new evaluator is one package in evalkit/evaluators/ defining `EVALUATOR`, plus a task YAML
naming it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from evalkit.config.settings import is_number, setting

if TYPE_CHECKING:  # torch is imported after the command line's checks, which read this module
    import torch

    from evalkit.loading.facts import ModelFacts


@dataclass(frozen=True)
class RunSettings:
    """The keys every evaluator shares: how much data, how large the batches, where files are. The folders' defaults
    are interpolations that Hydra resolves: an environment variable when set."""

    limit: int | None = setting(None, "perplexity: the first N TOKENS of the stream (limit=20 scores 19: the first "
                                "has no context), or N documents with task.documents; other tasks: the first N "
                                "examples / questions / utterances", minimum=1)
    batch_size: int | Literal["auto"] = setting("auto", "units (windows, examples, utterances) per forward pass; "
                                                "auto: a size that suits the device, halved on out-of-memory "
                                                "(finished units kept)", minimum=1)
    data_dir: str | None = setting("${oc.env:EVALKIT_DATA_DIR,null}", "folder holding local copies of task data "
                                   "(e.g. ../shared/data); by default $EVALKIT_DATA_DIR")
    cache_dir: str | None = setting("${oc.env:EVALKIT_CACHE_DIR,'~/.cache/evalkit'}", "result cache and progress "
                                    "of interrupted jobs; null: off; by default $EVALKIT_CACHE_DIR, else "
                                    "~/.cache/evalkit")
    force: bool = setting(False, "recompute even when an identical job's result is cached")
    verbose: bool = setting(False, "show every library's warnings (known-harmless ones are hidden otherwise)")


# RunSettings keys that say where files are, whether to recompute and what to show, not what is computed: left out
# of a job's identity (result cache key) and of its settings (leaderboard rows)
NOT_SETTINGS = ("force", "cache_dir", "data_dir", "verbose")


@dataclass(frozen=True)
class Metric:
    """One entry of an evaluator's metric catalogue, which names every key of results.json's `metrics`."""

    name: str
    meaning: str
    higher_is_better: bool | None = None  # None: a count or a descriptive figure, not a score
    unit: str = ""
    headline: bool = False  # the one figure a leaderboard ranks by
    interval: str | None = None  # the metrics key of its 95% interval
    count: bool = False  # how much was evaluated: shown in the summary's title line
    units: bool = False  # the count of units evaluated (the primary count: lm-evaluation-harness's n-samples)
    lm_eval_name: str | None = None  # lm-evaluation-harness's name for it, where that differs
    # a mapping of figures by part: "filter" (lm-eval's `exact_match,strict-match` keys), "subtask" (lm-eval's
    # `TASK_PART` entries: mmlu_anatomy, mmlu_stem) or "task" (lm-eval's own results entries, keyed as lm-eval keys
    # them: `acc,none`, `acc_stderr,none`)
    breakdown: str | None = None


@dataclass(frozen=True)
class ModelRequest:
    """A model the evaluator needs: its spec, the head, and whether it is loaded unquantized (a reference)."""

    spec: Mapping
    head: str
    unquantized: bool = False


@dataclass(frozen=True)
class ModelCheck:
    """A model a job's settings are validated against: its role, its spec and what its config says."""

    role: str
    spec: Mapping
    facts: ModelFacts


@dataclass
class Data:
    """A task's data as read: the content, sha256 of what is evaluated (part of the job's identity), its origin."""

    content: Any
    fingerprint: str
    origin: str


@dataclass
class Units:
    """What the runner schedules: `count` units; each one's share of the throughput figure (tokens scored, one
    example, audio seconds); optional groups (a batch never mixes groups: e.g. one window shape, so no padding) and
    a scoring order (e.g. by length, so batches pad little)."""

    count: int
    amounts: list[float]
    groups: list[Hashable] | None = None
    order: list[int] | None = None


@dataclass
class Outcome:
    """What aggregate() returns: corpus-level metrics, one sample per unit, and what the data was."""

    metrics: dict
    samples: list[dict]
    data: dict
    timing: dict = field(default_factory=dict)  # the evaluator's own timing figures, beside the runner's


@dataclass(frozen=True)
class Field:
    """One key of a unit's record: a number, a bool or a text, or (with `length`) a list of that many of them."""

    kind: str
    length: int | None = None

    def holds(self, value) -> bool:
        if self.length is None:
            return KINDS[self.kind](value)
        return isinstance(value, list) and len(value) == self.length and all(map(KINDS[self.kind], value))


KINDS = {"number": is_number, "bool": lambda value: isinstance(value, bool),
         "text": lambda value: isinstance(value, str)}
NUMBER, BOOL, TEXT = Field("number"), Field("bool"), Field("text")


def numbers(length: int) -> Field:
    return Field("number", length)


def bools(length: int) -> Field:
    return Field("bool", length)


def texts(length: int) -> Field:
    return Field("text", length)


class PreparedJob:
    """One job's work, made by Evaluator.prepare from the data and the loaded models: its units, how a batch of them
    scores, the record each unit keeps, and how records aggregate. Subclasses set `units` and override the methods
    that raise."""

    units: Units
    cpu_auto_batch: ClassVar[int] = 1
    cuda_auto_batch: ClassVar[int] = 64

    def record_type(self, index: int) -> dict[str, Field]:
        """The keys of unit `index`'s record and what each holds."""
        raise NotImplementedError

    def check_record(self, index: int, record: dict) -> bool:
        """Whether a record read back from a progress log has the type unit `index`'s record has (else the unit is
        computed again)."""
        fields = self.record_type(index)
        return set(record) == set(fields) and all(fields[key].holds(record[key]) for key in fields)

    def auto_batch_size(self, device: torch.device) -> int:
        return self.cpu_auto_batch if device.type == "cpu" else self.cuda_auto_batch

    def warm_up(self, todo: list[int]) -> None:
        """Untimed work before the timed scoring (e.g. kernels that compile on first use)."""

    def score(self, batch: list[int]) -> list[dict]:
        """Per-unit records (JSON-able) for one batch of unit indices."""
        raise NotImplementedError

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        """Metrics and samples from every unit's record (in unit order); `throughput` is the measured rate (e.g.
        audio seconds per second)."""
        raise NotImplementedError


class Evaluator:
    """The strategy interface; see the module docstring. Subclasses set the class attributes and override the
    methods that raise."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    metrics: ClassVar[tuple[Metric, ...]]
    throughput: ClassVar[str]  # timing key prefix: "tokens" -> tokens_per_second
    progress_unit: ClassVar[str] = "unit"  # on the progress bar
    unit_name: ClassVar[str] = "unit"  # in messages: window, example, utterance
    task_keys: ClassVar[tuple[str, ...]] = ()  # task keys only this evaluator reads (it checks their values)

    def validate(self, settings, run, task: Mapping, model: ModelCheck | None = None):
        """The settings with anything left to the task filled in (e.g. the task's default method), checked across
        settings and the task (each value's own type is checked already) before any data; with `model`, also
        against what that model's config says (loading/facts.py: e.g. its context length), before its weights are
        read. Asked without a model first, then for each model: on config.json alone before torch is imported,
        then on the transformers config."""
        return settings

    def models(self, settings, model: Mapping, facts: ModelFacts) -> dict[str, ModelRequest]:
        """The models to load by role ("model" first), given the model spec and what its config says."""
        raise NotImplementedError

    def read_data(self, task: Mapping, settings, run) -> Data:
        raise NotImplementedError

    def prepare(self, settings, run, task: Mapping, data: Data, models: dict) -> PreparedJob:
        """This job's PreparedJob from the data and the loaded models (role -> LoadedModel)."""
        raise NotImplementedError

    def limit_counts(self, task: Mapping) -> str:
        """What `limit` counts for this task (results.json and the summary say it: tokens or examples)."""
        return f"{self.unit_name}s"

    def limit_read(self, metrics: Mapping, task: Mapping) -> int | None:
        """How many of what `limit` counts the run read (its count metric of that name), None where unknown: fewer
        than `limit` means the limit cut nothing and the run is whole."""
        count = metrics.get(self.limit_counts(task))
        return count if isinstance(count, int) else None

    def headline(self) -> Metric:
        return next(metric for metric in self.metrics if metric.headline)

    def metric_keys(self) -> set[str]:
        """Every key results.json's `metrics` may hold: the catalogue's metrics and their intervals."""
        return {metric.name for metric in self.metrics} | {metric.interval for metric in self.metrics
                                                           if metric.interval}
