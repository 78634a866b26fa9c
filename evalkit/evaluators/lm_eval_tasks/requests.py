"""lm-eval's requests as evalkit's units, answered by evalkit's request layer (scoring/causal_lm.py) with lm-eval's
HFLM semantics: `loglikelihood` pairs by its pair rule, the requests that share a context scored as one question
through the context's key/value cache; `loglikelihood_rolling` in HFLM's disjoint rolling windows (lm-eval's own
window function, at the model's max length, after the prefix token); `generate_until` with the request's stop
strings and max_gen_toks, greedy or sampled. One unit per request, so the runner's cache, resume, sharding and
out-of-memory policy apply to each; a batch holds one request type (and one context length, or one set of generation
arguments)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

from evalkit.errors import EvalkitError
from evalkit.evaluators.base import BOOL, NUMBER, Outcome, PreparedJob, Units, numbers, texts
from evalkit.evaluators.lm_eval_tasks.results import outcome

SAMPLED_OPTIONS = ("temperature", "top_p")  # beyond until, max_gen_toks and do_sample: what evalkit's sampling takes
DEFAULT_MAX_GEN_TOKS = 256  # HFLM's


@dataclass
class Generations:
    """One set of generation arguments: stop strings, token budget, sampling."""

    until: list[str]
    max_gen_toks: int
    sampling: object  # scoring.generation.Sampling


def generation_arguments(gen_kwargs: dict, task_name: str, seed: int) -> Generations:
    """A request's generation arguments as HFLM reads them (lm-eval's normalize_gen_kwargs); an argument evalkit's
    generation does not take is one error line."""
    from lm_eval.models.utils import normalize_gen_kwargs

    from evalkit.scoring.generation import Sampling

    kwargs = normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKS)
    until, max_gen_toks, do_sample = kwargs.pop("until"), kwargs.pop("max_gen_toks"), kwargs.pop("do_sample")
    unknown = sorted(set(kwargs) - set(SAMPLED_OPTIONS))
    if unknown:
        raise EvalkitError(f"lm-eval task {task_name} asks generate_until for {', '.join(unknown)}, which evalkit's "
                           f"generation cannot serve; allowed: until, max_gen_toks, do_sample, "
                           f"{', '.join(SAMPLED_OPTIONS)}")
    temperature = float(kwargs.get("temperature") or 1.0)
    return Generations([str(text) for text in until], max_gen_toks,
                       Sampling(bool(do_sample), temperature, float(kwargs.get("top_p", 1.0)), seed))


@dataclass
class RequestsJob(PreparedJob):
    """Every lm-eval request of a job, encoded once, scored by request type."""

    lm: object  # scoring.causal_lm.CausalLM
    built: object  # building.Built: lm-eval's tasks, groups and requests
    bootstrap_iters: int  # lm-eval's, for its standard errors
    seed: int  # sampled generation's
    units: Units = None
    instances: list = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    questions: object = None  # the loglikelihood requests grouped by context (causal_lm.EncodedQuestions)
    places: dict = field(default_factory=dict)  # unit -> (question, pair) of a loglikelihood request
    windows: dict = field(default_factory=dict)  # unit -> its rolling windows as (context ids, continuation ids)
    prompts: dict = field(default_factory=dict)  # unit -> generate_until prompt ids
    arguments: dict = field(default_factory=dict)  # unit -> its Generations' key in `generations`
    generations: dict = field(default_factory=dict)
    cpu_auto_batch: ClassVar[int] = 8
    cuda_auto_batch: ClassVar[int] = 256

    def __post_init__(self):
        self.instances = self.built.instances
        self.kinds = [instance.request_type for instance in self.instances]
        groups: list = [None] * len(self.instances)
        order = self.encode_loglikelihood(groups) + self.encode_rolling(groups) + self.encode_generation(groups)
        self.units = Units(len(self.instances), [1.0] * len(self.instances), groups, order)

    def of_kind(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == kind]

    def encode_loglikelihood(self, groups: list) -> list[int]:
        """Requests with one context become one question (as HFLM's loglikelihood caches a shared context's
        logits); questions run longest first, each question's requests together."""
        members: dict[str, list[int]] = {}
        for i in self.of_kind("loglikelihood"):
            members.setdefault(self.instances[i].args[0], []).append(i)
        questions = list(members.values())
        self.questions = self.lm.encode([[tuple(self.instances[i].args) for i in q] for q in questions])
        for number, (question, group) in enumerate(zip(questions, self.questions.groups())):
            for pair, unit in enumerate(question):
                self.places[unit], groups[unit] = (number, pair), ("loglikelihood", group)
        return [unit for number in self.questions.order() for unit in questions[number]]

    def encode_rolling(self, groups: list) -> list[int]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        for i in self.of_kind("loglikelihood_rolling"):
            tokens = self.lm.tokenizer(self.instances[i].args[0], add_special_tokens=False)["input_ids"]
            self.windows[i] = [make_disjoint_window(window) for window in get_rolling_token_windows(
                token_list=tokens, prefix_token=self.lm.prefix_id, max_seq_len=self.lm.max_length, context_len=1)]
            groups[i] = ("loglikelihood_rolling",)
        return sorted(self.windows, key=lambda i: -sum(len(c) for _, c in self.windows[i]))

    def encode_generation(self, groups: list) -> list[int]:
        from evalkit.scoring.generation import longest_first

        units = self.of_kind("generate_until")
        for i in units:
            context, gen_kwargs = self.instances[i].args
            key = json.dumps(gen_kwargs, sort_keys=True, default=str)
            if key not in self.generations:
                self.generations[key] = generation_arguments(gen_kwargs, self.instances[i].task_name, self.seed)
            self.arguments[i], groups[i] = key, ("generate_until", key)
            self.prompts[i] = self.lm.encode_prompt(context, self.generations[key].max_gen_toks)
        order = longest_first([self.instances[i].args[0] for i in units], [self.prompts[i] for i in units])
        return [units[k] for k in order]

    def record_type(self, index: int) -> dict:
        kind = self.kinds[index]
        if kind == "loglikelihood":
            return {"loglikelihood": NUMBER, "is_greedy": BOOL}
        if kind == "loglikelihood_rolling":
            return {"loglikelihood": NUMBER}
        repeats = self.instances[index].repeats
        return {"responses": texts(repeats), "generated_tokens": numbers(repeats)}

    def score(self, batch: list[int]) -> list[dict]:
        kind = self.kinds[batch[0]]
        if kind == "loglikelihood":
            return self.score_loglikelihood(batch)
        if kind == "loglikelihood_rolling":
            return self.score_rolling(batch)
        return self.score_generation(batch)

    def score_loglikelihood(self, batch: list[int]) -> list[dict]:
        """A batch's share of each question (a question may be split between two batches) as its own question."""
        from evalkit.scoring.causal_lm import EncodedQuestions

        parts: dict[int, list[int]] = {}
        for unit in batch:
            parts.setdefault(self.places[unit][0], []).append(unit)
        encoded = EncodedQuestions(
            [[self.questions.pairs[q][self.places[unit][1]] for unit in units] for q, units in parts.items()],
            [self.questions.shared[q] for q in parts])
        scores = self.lm.loglikelihood_tokens(encoded, list(range(len(parts))))
        found = {unit: score for units, part in zip(parts.values(), scores) for unit, score in zip(units, part)}
        return [{"loglikelihood": found[unit][0], "is_greedy": bool(found[unit][1])} for unit in batch]

    def score_rolling(self, batch: list[int]) -> list[dict]:
        """Every window of the batch's texts in one batch (HFLM scores each window as a token pair); a text's
        log-likelihood is the sum over its windows."""
        from evalkit.scoring.causal_lm import EncodedQuestions

        encoded = EncodedQuestions([self.windows[unit] for unit in batch], [False] * len(batch))
        scores = self.lm.loglikelihood_tokens(encoded, list(range(len(batch))))
        return [{"loglikelihood": float(sum(score for score, _ in windows))} for windows in scores]

    def score_generation(self, batch: list[int]) -> list[dict]:
        from dataclasses import replace

        arguments = self.generations[self.arguments[batch[0]]]
        repeats = max(self.instances[unit].repeats for unit in batch)
        records = [{"responses": [], "generated_tokens": []} for _ in batch]
        for repeat in range(repeats):
            sampling = replace(arguments.sampling, seed=arguments.sampling.seed + repeat)
            generated = self.lm.generate_tokens([self.prompts[unit] for unit in batch], arguments.until,
                                                arguments.max_gen_toks, sampling)
            for unit, record, generation in zip(batch, records, generated):
                if repeat < self.instances[unit].repeats:
                    record["responses"].append(generation.text)
                    record["generated_tokens"].append(generation.tokens)
        return records

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        return outcome(self.built, records, self.bootstrap_iters)
