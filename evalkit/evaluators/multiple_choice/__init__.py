"""Multiple choice and LAMBADA as lm-evaluation-harness scores them (units: questions). Each question's choices are
scored by the log-likelihood of their continuation (scoring.causal_lm.CausalLM); acc takes the most likely choice,
acc_norm divides by the choice's length first; a one-choice task (LAMBADA) reports acc as "the target is the greedy
continuation" and the perplexity of the targets, exp(-mean log-likelihood), as lm-eval's lambada_openai does (its
`questions: lambada` format declares it; a one-choice question of any other format is refused). The
task YAML names its question format (questions.py), its data file and hub copy. The scoring layer (torch) is
imported when scoring starts: the command line reads this module before torch is imported."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np

from evalkit.config.settings import setting
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest, Outcome, PreparedJob, Units, bools, numbers
from evalkit.evaluators.multiple_choice.questions import Question, load_questions, question_format, scored_as_greedy
from evalkit.evaluators.multiple_choice.subsets import grouped_accuracy, load_grouped, subsets_of
from evalkit.fewshot import num_fewshot_of
from evalkit.hashing import canonical_json, sha256_text
from evalkit.metrics import bootstrap_ratio_interval, count_bytes


@dataclass(frozen=True)
class Settings:
    norm: str = setting("characters", "what acc_norm divides a choice's log-likelihood by: characters (lm-eval's "
                        "acc_norm: the length of the choice's text), bytes (its UTF-8 bytes), tokens",
                        choices=("characters", "bytes", "tokens"))
    num_fewshot: int | None = setting(None, "solved examples ahead of each question, drawn from the task's few-shot "
                                      "pool as lm-eval 0.4.13 draws them (seed 1234); null: the task's own, else 0",
                                      minimum=0)


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
    metrics = (
        Metric("acc", "share of questions whose most likely choice is the gold one (one-choice tasks: whose target "
               "is the greedy continuation)", True, headline=True, interval="acc_ci95"),
        Metric("acc_norm", "acc with each choice's log-likelihood divided by its length (norm=)", True),
        Metric("perplexity", "one-choice tasks (LAMBADA): exp(-mean log-likelihood of the targets)", False),
        Metric("questions", "questions evaluated", None, count=True, units=True),
        Metric("norm", "what acc_norm divided by", None),
        Metric("subsets", "grouped tasks (mmlu): acc and questions per subset", None, breakdown="subtask"),
        Metric("groups", "grouped tasks: acc and questions per category, each the mean over its questions", None,
               breakdown="subtask"),
    )

    def validate(self, settings: Settings, run, task: Mapping, model=None) -> Settings:
        question_format(task)
        subsets_of(task)
        return replace(settings, num_fewshot=num_fewshot_of(settings.num_fewshot, task))

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, "causal-lm")}

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        def read(part: Mapping) -> tuple[list[Question], str]:
            return load_questions(part, run.data_dir, run.limit, settings.num_fewshot)

        questions, origin = load_grouped(task, read) if subsets_of(task) else read(task)
        return Data(questions, sha256_text(canonical_json([asdict(q) for q in questions])), origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> ChoiceJob:
        from evalkit.scoring.causal_lm import CausalLM

        lm = CausalLM(models["model"])
        encoded = lm.encode([list(zip(q.contexts, q.continuations)) for q in data.content])
        units = Units(len(data.content), [1.0] * len(data.content), encoded.groups(), encoded.order())
        return ChoiceJob(units, lm, data.content, encoded, settings.norm, data.origin, task)


@dataclass
class ChoiceJob(PreparedJob):
    units: Units
    lm: object  # scoring.causal_lm.CausalLM
    questions: list[Question]
    encoded: object  # scoring.causal_lm.EncodedQuestions: per question, per choice (context ids, continuation ids)
    norm: str
    origin: str
    task: Mapping  # a grouped task's subsets and categories

    def record_type(self, index: int) -> dict:
        choices = len(self.questions[index].choices)
        return {"loglikelihoods": numbers(choices), "is_greedy": bools(choices)}

    def auto_batch_size(self, device) -> int:
        return self.lm.auto_batch_size()

    def score(self, batch: list[int]) -> list[dict]:
        return [{"loglikelihoods": [ll for ll, _ in question], "is_greedy": [greedy for _, greedy in question]}
                for question in self.lm.loglikelihood_tokens(self.encoded, batch)]

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        one_choice = scored_as_greedy(self.task)  # LAMBADA's acc: declared by the task's question format
        samples, correct, correct_norm = [], [], []
        for index, (question, record) in enumerate(zip(self.questions, records)):
            lls = np.array(record["loglikelihoods"])
            prediction = int(lls.argmax())
            prediction_norm = int((lls / choice_lengths(question, self.encoded.pairs[index], self.norm)).argmax())
            correct.append(record["is_greedy"][0] if one_choice else prediction == question.gold)
            correct_norm.append(prediction_norm == question.gold)
            samples.append({"index": index, "contexts": sorted(set(question.contexts)), "choices": question.choices,
                            "gold": question.gold, "loglikelihoods": record["loglikelihoods"],
                            "is_greedy": record["is_greedy"], "prediction": prediction,
                            "prediction_norm": prediction_norm, "correct": bool(correct[-1])})
        hits = np.array(correct, dtype=float)
        metrics = {"acc": float(hits.mean()), "acc_ci95": bootstrap_ratio_interval(hits, np.ones_like(hits)),
                   "questions": len(records), "norm": self.norm}
        if one_choice:
            metrics["perplexity"] = math.exp(-float(np.mean([r["loglikelihoods"][0] for r in records])))
        else:
            metrics["acc_norm"] = float(np.mean(correct_norm))
        if subsets_of(self.task):
            metrics.update(grouped_accuracy(self.task, self.questions, correct))
        return Outcome(metrics, samples, {"origin": self.origin, "questions": len(records)})


EVALUATOR = MultipleChoice()
