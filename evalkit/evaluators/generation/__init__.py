"""Generation with answer filters, as lm-evaluation-harness scores generate_until tasks (units: documents). Each
document's prompt (few-shot examples, then its question: prompts.py) is continued greedily, or sampled `repeats`
times, until a stop string or max_gen_toks (scoring/generation.py); each of the task's named filters turns the
responses into one answer (answers.py), scored by exact match against the document's target with the task's options.
The scoring code (torch) is imported when scoring starts: the command line reads this module before torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np

from evalkit.config.settings import setting
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest, Outcome, PreparedJob, Units, numbers, texts
from evalkit.evaluators.generation.answers import exact_match, filter_pipeline
from evalkit.evaluators.generation.prompts import Document, read_documents
from evalkit.fewshot import chat_turns, num_fewshot_of
from evalkit.hashing import canonical_json, sha256_text
from evalkit.metrics import bootstrap_ratio_interval

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's
EXACT_MATCH_OPTIONS = ("ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore")


@dataclass(frozen=True)
class Settings:
    num_fewshot: int | None = setting(None, "examples ahead of each question; null: the task's own (gsm8k: 5)",
                                      minimum=0)
    max_gen_toks: int | None = setting(None, "most tokens generated per response; null: the task's, else 256",
                                       minimum=1)
    temperature: float = setting(0.0, "0: greedy decoding (lm-eval's default); above 0: sampled at this temperature",
                                 minimum=0)
    top_p: float = setting(1.0, "sampled decoding: the nucleus mass kept", minimum=0)
    sampling_seed: int = setting(1234, "sampled decoding: the seed of each batch's draws (`seed` is the random-init "
                                "weights' seed)")
    repeats: int = setting(1, "responses per document (sampled tasks); the filters choose among them", minimum=1)
    apply_chat_template: bool = setting(False, "render each prompt with the tokenizer's chat template, as lm-eval's "
                                        "--apply_chat_template does")
    system_instruction: str | None = setting(None, "a system turn ahead of the prompt (lm-eval's "
                                             "--system_instruction)")
    fewshot_as_multiturn: bool = setting(False, "with apply_chat_template: each few-shot example as its own user and "
                                         "assistant turns, not one user turn", only_with={"apply_chat_template": True})


class Generation(Evaluator):
    name = "generation"
    Settings = Settings
    throughput = "documents"
    progress_unit = "doc"
    unit_name = "document"
    metrics = (
        Metric("exact_match", "share of documents whose answer (the task's first filter) matches the target", True,
               headline=True, interval="exact_match_ci95"),
        Metric("filters", "per filter: exact_match and its 95% interval", None, breakdown="filter"),
        Metric("documents", "documents evaluated", None, count=True, units=True),
        Metric("num_fewshot", "few-shot examples ahead of each question", None),
        Metric("generated_tokens", "tokens generated over every response", None, "tokens"),
    )

    def validate(self, settings: Settings, run, task: Mapping, model=None) -> Settings:
        filters = task.get("filters") or {}  # its type is checked with the task's fields (data.TASK_FIELDS)
        if not filters:
            raise EvalkitError("task.filters is empty; allowed: filter names and their steps, e.g. "
                               "{exact: [{function: remove_whitespace}, {function: take_first}]}")
        for name, steps in filters.items():
            filter_pipeline(steps, f"task.filters.{name}")
        if not all(isinstance(text, str) for text in task.get("until", [])):
            raise EvalkitError(f"task.until={task.get('until')} is not allowed; allowed: a list of stop strings")
        if settings.repeats > 1 and settings.temperature == 0:
            raise EvalkitError(f"repeats={settings.repeats} with temperature=0 repeats one greedy response; allowed: "
                               "repeats=1, or temperature > 0")
        max_gen_toks = settings.max_gen_toks or task.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS
        context = model.facts.context_length if model is not None else None
        if context and max_gen_toks >= context:
            raise EvalkitError(f"max_gen_toks={max_gen_toks} leaves no room for a prompt in the model's context "
                               f"({context}); allowed: max_gen_toks < {context}")
        return replace(settings, num_fewshot=num_fewshot_of(settings.num_fewshot, task), max_gen_toks=max_gen_toks)

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, "causal-lm")}

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        documents, origin = read_documents(task, settings.num_fewshot, run.data_dir, run.limit,
                                           settings.system_instruction)
        fingerprint = sha256_text(canonical_json([[asdict(turn) for turn in d.turns] + [d.reference]
                                                  for d in documents]))
        return Data(documents, fingerprint, origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> GenerationJob:
        from evalkit.scoring.causal_lm import CausalLM
        from evalkit.scoring.generation import Sampling, longest_first

        lm = CausalLM(models["model"])
        max_gen_toks = settings.max_gen_toks
        prompts = [document.prompt for document in data.content]
        if settings.apply_chat_template:
            prompts = [lm.chat_prompt(chat_turns(d.turns, settings.fewshot_as_multiturn)) for d in data.content]
        prompt_ids = [lm.encode_prompt(prompt, max_gen_toks) for prompt in prompts]
        sampling = Sampling(settings.temperature > 0, settings.temperature or 1.0, settings.top_p,
                            settings.sampling_seed)
        filters = {name: filter_pipeline(steps, f"task.filters.{name}") for name, steps in task["filters"].items()}
        options = {key: value for key, value in (task.get("exact_match") or {}).items() if key in EXACT_MATCH_OPTIONS}
        order = longest_first(prompts, prompt_ids)
        units = Units(len(prompt_ids), [1.0] * len(prompt_ids), order=order)
        return GenerationJob(units, lm, data.content, prompts, prompt_ids, list(task.get("until") or []), max_gen_toks,
                             sampling, settings.repeats, filters, options, settings.num_fewshot, data.origin)


@dataclass
class GenerationJob(PreparedJob):
    units: Units
    lm: object  # scoring.causal_lm.CausalLM
    documents: list[Document]
    prompts: list[str]  # as the model reads them (chat template applied)
    prompt_ids: list[list[int]]
    until: list[str]
    max_gen_toks: int
    sampling: object  # scoring.generation.Sampling
    repeats: int
    filters: dict  # name -> the filter pipeline
    match_options: dict
    num_fewshot: int
    origin: str
    cpu_auto_batch: ClassVar[int] = 8
    cuda_auto_batch: ClassVar[int] = 64

    def record_type(self, index: int) -> dict:
        return {"responses": texts(self.repeats), "generated_tokens": numbers(self.repeats)}

    def score(self, batch: list[int]) -> list[dict]:
        records = [{"responses": [], "generated_tokens": []} for _ in batch]
        for repeat in range(self.repeats):
            sampling = replace(self.sampling, seed=self.sampling.seed + repeat)
            generations = self.lm.generate_tokens([self.prompt_ids[i] for i in batch], self.until, self.max_gen_toks,
                                                  sampling)
            for record, generation in zip(records, generations):
                record["responses"].append(generation.text)
                record["generated_tokens"].append(generation.tokens)
        return records

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        samples, hits = [], {name: [] for name in self.filters}
        for index, (document, record) in enumerate(zip(self.documents, records)):
            answers = {name: pipeline(list(record["responses"]))[0] for name, pipeline in self.filters.items()}
            for name, answer in answers.items():
                hits[name].append(exact_match(answer, document.reference, **self.match_options))
            samples.append({"index": index, "prompt": self.prompts[index], "target": document.reference,
                            "responses": record["responses"], "answers": answers,
                            "exact_match": {name: bool(hits[name][-1]) for name in hits}})
        per_filter = {name: {"exact_match": float(np.mean(values)),
                             "exact_match_ci95": bootstrap_ratio_interval(np.array(values, float),
                                                                          np.ones(len(values)))}
                      for name, values in hits.items()}
        generated = sum(sum(record["generated_tokens"]) for record in records)
        metrics = {**per_filter[next(iter(per_filter))], "filters": per_filter, "documents": len(records),
                   "num_fewshot": self.num_fewshot, "generated_tokens": generated}
        timing = {"generated_tokens_per_second": throughput * generated / len(records)}  # documents/s x tokens each
        return Outcome(metrics, samples, {"origin": self.origin, "documents": len(records)}, timing)


EVALUATOR = Generation()
