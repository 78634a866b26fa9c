"""Multiple choice and LAMBADA as lm-evaluation-harness scores them (units: questions). Each question's choices are
scored by the log-likelihood of their continuation (choice_scoring.py); acc takes the most likely choice, acc_norm
divides by the choice's length first; a one-choice task (LAMBADA) reports acc as "the target is the greedy
continuation" and the perplexity of the targets, exp(-mean log-likelihood), as lm-eval's lambada_openai does. The
task YAML names its question format (choice_tasks.py), its data file and hub copy. choice_scoring (torch) is
imported when scoring starts: the command line reads this module before torch is imported."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from evalkit import loading
from evalkit.config.settings import is_number, setting
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest, Outcome, Units
from evalkit.evaluators.multiple_choice.questions import Question, load_questions, question_format
from evalkit.hashing import canonical_json, sha256_text
from evalkit.metrics import bootstrap_ratio_interval, count_bytes

DEFAULT_MAX_LENGTH = 2048  # lm-eval's, for a model whose config names no context length


@dataclass(frozen=True)
class Settings:
    norm: str = setting("characters", "what acc_norm divides a choice's log-likelihood by: characters (lm-eval's "
                        "acc_norm: the length of the choice's text), bytes (its UTF-8 bytes), tokens",
                        choices=("characters", "bytes", "tokens"))


@dataclass
class State:
    model: object
    questions: list[Question]
    pairs: list[list[tuple[list[int], list[int]]]]  # per question, per choice: (context ids, continuation ids)
    shared: list[bool]  # per question: whether its choices share one context (choice_scoring.shares_context)
    max_length: int
    norm: str
    origin: str


def choice_lengths(question: Question, pairs: list, norm: str) -> np.ndarray:
    if norm == "tokens":
        return np.array([len(continuation) for _, continuation in pairs], dtype=float)
    measure = count_bytes if norm == "bytes" else len
    return np.array([measure(choice) for choice in question.choices], dtype=float)


class MultipleChoice(Evaluator):
    name = "multiple_choice"
    Settings = Settings
    throughput = "questions"
    progress_unit = "q"
    unit_name = "question"
    cpu_auto_batch, cuda_auto_batch = 8, 256  # questions; a batch holds one context length, halved on OOM
    metrics = (
        Metric("acc", "share of questions whose most likely choice is the gold one (one-choice tasks: whose target "
               "is the greedy continuation)", True, headline=True, interval="acc_ci95"),
        Metric("acc_norm", "acc with each choice's log-likelihood divided by its length (norm=)", True),
        Metric("perplexity", "one-choice tasks (LAMBADA): exp(-mean log-likelihood of the targets)", False),
        Metric("questions", "questions evaluated", None, count=True),
        Metric("norm", "what acc_norm divided by", None),
    )

    def check(self, settings: Settings, run, task: Mapping) -> None:
        question_format(task)

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, "causal-lm")}

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        questions, origin = load_questions(task, run.data_dir, run.limit)
        return Data(questions, sha256_text(canonical_json([asdict(q) for q in questions])), origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> tuple[State, Units]:
        from evalkit.scoring.pairs import encode_pair, shares_context

        loaded = models["model"]
        loading.ensure_causal(loaded.model, loaded.provenance.get("name"))
        tokenizer = loaded.tokenizer
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        pairs = [[encode_pair(tokenizer, context, continuation, prefix)
                  for context, continuation in zip(q.contexts, q.continuations)] for q in data.content]
        max_length = loaded.context_length or DEFAULT_MAX_LENGTH
        shared = [shares_context(question, max_length) for question in pairs]
        state = State(loaded.model, data.content, pairs, shared, max_length, settings.norm, data.origin)
        # a batch holds questions whose shared contexts have one length (no padding there), or unshared ones
        groups = [len(question[0][0]) if is_shared else "unshared" for question, is_shared in zip(pairs, shared)]
        order = sorted(range(len(pairs)), key=lambda i: -max(len(c) + len(t) for c, t in pairs[i]))
        return state, Units(len(pairs), [1.0] * len(pairs), groups, order)

    def score(self, state: State, batch: list[int]) -> list[dict]:
        from evalkit.scoring.pairs import batch_scores

        scores = batch_scores(state.model, [state.pairs[i] for i in batch], state.max_length, state.shared[batch[0]])
        return [{"loglikelihoods": [ll for ll, _ in question], "is_greedy": [greedy for _, greedy in question]}
                for question in scores]

    def check_record(self, state: State, index: int, record: dict) -> bool:
        lls, greedy = record.get("loglikelihoods"), record.get("is_greedy")
        choices = len(state.pairs[index])
        return (set(record) == {"loglikelihoods", "is_greedy"} and isinstance(lls, list) and len(lls) == choices
                and all(is_number(v) for v in lls) and isinstance(greedy, list) and len(greedy) == choices
                and all(isinstance(v, bool) for v in greedy))

    def aggregate(self, state: State, records: list[dict], throughput: float) -> Outcome:
        one_choice = all(len(q.choices) == 1 for q in state.questions)
        samples, correct, correct_norm = [], [], []
        for index, (question, record) in enumerate(zip(state.questions, records)):
            lls = np.array(record["loglikelihoods"])
            prediction = int(lls.argmax())
            prediction_norm = int((lls / choice_lengths(question, state.pairs[index], state.norm)).argmax())
            correct.append(record["is_greedy"][0] if one_choice else prediction == question.gold)
            correct_norm.append(prediction_norm == question.gold)
            samples.append({"index": index, "contexts": sorted(set(question.contexts)), "choices": question.choices,
                            "gold": question.gold, "loglikelihoods": record["loglikelihoods"],
                            "is_greedy": record["is_greedy"], "prediction": prediction,
                            "prediction_norm": prediction_norm, "correct": bool(correct[-1])})
        hits = np.array(correct, dtype=float)
        metrics = {"acc": float(hits.mean()), "acc_ci95": bootstrap_ratio_interval(hits, np.ones_like(hits)),
                   "questions": len(records), "norm": state.norm}
        if one_choice:
            metrics["perplexity"] = math.exp(-float(np.mean([r["loglikelihoods"][0] for r in records])))
        else:
            metrics["acc_norm"] = float(np.mean(correct_norm))
        return Outcome(metrics, samples, {"origin": state.origin, "questions": len(records)})


EVALUATOR = MultipleChoice()
