"""Zero-shot classification accuracy (units: examples), by one of three methods (zero_shot.py): nli (the HF
zero-shot-classification pipeline's scores), loglikelihood (a causal LM scores each label's continuation; optional
contextual calibration) or embedding (cosine similarity to label descriptions). Labels, templates and the default
method live in the task YAML. zero_shot.py (torch) is imported when scoring starts: the command line reads this
module (settings, checks) before torch is imported."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from evalkit import loading
from evalkit.config.settings import is_number, setting
from evalkit.data import load_examples
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest, Outcome, Units
from evalkit.evaluators.classification.labels import check_labels, check_template, nli_label_ids, softmax
from evalkit.hashing import sha256_text
from evalkit.metrics import classification_metrics, count_bytes

METHODS = {"nli": "sequence-classification", "loglikelihood": "causal-lm", "embedding": "encoder"}
TEMPLATES = {"nli": ("hypothesis_template",), "loglikelihood": ("prompt", "continuation"), "embedding": ("description",)}
CPU_ROWS, CUDA_ROWS = 16, 128  # model inputs per forward pass under batch_size=auto (an NLI example is one per label)


@dataclass(frozen=True)
class Settings:
    method: str | None = setting(None, "nli | loglikelihood | embedding; null: the task's own default",
                                 choices=tuple(METHODS))
    multi_label: bool = setting(False, "score each label on its own (entailment vs contradiction)",
                                only_with={"method": "nli"})
    calibrate: bool = setting(False, "contextual calibration against the task's content-free inputs",
                              only_with={"method": "loglikelihood"})


@dataclass
class State:
    method: str
    labels: list[str]
    inputs: list[str]  # texts, or prompts around them (loglikelihood)
    score_texts: functools.partial  # (texts, batch_size) -> [texts, labels] scores
    rows_per_example: int
    examples: object
    continuations: list[str] | None = None
    prior: np.ndarray | None = None  # calibration: log label probabilities given content-free inputs


class Classification(Evaluator):
    name = "classification"
    Settings = Settings
    throughput = "examples"
    progress_unit = "ex"
    unit_name = "example"
    metrics = (
        Metric("accuracy", "share of examples whose top-scored label is the true one", True, "", headline=True,
               interval="accuracy_ci95", lm_eval_name="acc"),
        Metric("macro_f1", "F1 per label, averaged over labels", True),
        Metric("accuracy_norm", "loglikelihood: accuracy with scores divided by continuation bytes", True,
               lm_eval_name="acc_norm"),
        Metric("accuracy_uncalibrated", "loglikelihood with calibrate=true: accuracy before calibration", True),
        Metric("examples", "examples evaluated", None, count=True, units=True),
        Metric("per_class", "per label: precision, recall, F1 and support (examples of that label)", None),
        Metric("confusion_matrix", "counts: rows the true label, columns the predicted, in confusion_labels' order",
               None),
        Metric("confusion_labels", "the labels in the confusion matrix's row and column order", None),
        Metric("method", "how labels were scored: nli | loglikelihood | embedding", None),
        Metric("calibrated", "whether scores were calibrated by the content-free prior", None),
    )

    def resolve(self, settings: Settings, task: Mapping) -> Settings:
        method = settings.method or task.get("method")
        if method not in METHODS:
            raise EvalkitError(f"method={method} is not allowed; allowed: {', '.join(METHODS)}")
        return replace(settings, method=method)

    def check(self, settings: Settings, run, task: Mapping) -> None:
        labels = task.get("labels")
        if labels is not None and not isinstance(labels, list):
            raise EvalkitError(f"task.labels={labels} is not a list; give the candidate labels, e.g. "
                               "task.labels=[negative,positive]")
        check_labels([str(label) for label in labels or []])
        templates = task.get(settings.method) or {}
        for key in TEMPLATES[settings.method]:
            check_template(templates.get(key, ""), f"task.{settings.method}.{key}")

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, METHODS[settings.method])}

    def check_model(self, settings: Settings, role: str, spec: Mapping, facts) -> None:
        if settings.method == "nli":
            nli_label_ids(facts.label2id)
        if settings.method == "loglikelihood" and facts.without_lm_head:
            instead = "method=nli (for an NLI model)" if facts.classifier_only else "method=embedding"
            raise EvalkitError(f"method=loglikelihood needs a causal LM, but model '{spec.get('name')}' was saved as "
                               f"{', '.join(facts.architectures)}; use {instead} with it, or a causal LM")
        if settings.method == "embedding" and facts.decoder_only:
            raise EvalkitError(f"method=embedding compares sentence-encoder embeddings, but model '{spec.get('name')}' "
                               "is a causal LM; use method=loglikelihood with it, or a sentence encoder (e.g. "
                               "model=minilm-l6-v2)")

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        examples = load_examples(task, run.data_dir, run.limit)
        fingerprint = sha256_text("\n".join(f"{label}\t{text}" for label, text in zip(examples.labels, examples.texts)))
        return Data(examples, fingerprint, examples.origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> tuple[State, Units]:
        from evalkit.evaluators.classification.methods import embedding_scores, loglikelihood_scores, nli_scores

        loaded, examples = models["model"], data.content
        model, tokenizer = loaded.model, loaded.tokenizer
        labels = [str(label) for label in task["labels"]]
        templates = task[settings.method]
        state = State(settings.method, labels, examples.texts, None, 1, examples)
        if settings.method == "nli":
            hypotheses = [templates["hypothesis_template"].format(label) for label in labels]
            state.score_texts = functools.partial(nli_scores, model, tokenizer, hypotheses=hypotheses,
                                                  multi_label=settings.multi_label)
            state.rows_per_example = len(labels)
        elif settings.method == "embedding":
            descriptions = [templates["description"].format(label) for label in labels]
            state.score_texts = functools.partial(embedding_scores, model, tokenizer, descriptions=descriptions)
        else:
            loading.ensure_causal(model, loaded.provenance.get("name"))
            state.continuations = [templates["continuation"].format(label) for label in labels]
            state.score_texts = functools.partial(loglikelihood_scores, model, tokenizer,
                                                  continuations=state.continuations)
            state.inputs = [templates["prompt"].format(text) for text in examples.texts]
            state.rows_per_example = 1 + sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) > 1
                                             for c in state.continuations)
            if settings.calibrate:
                free = [templates["prompt"].format(text) for text in templates.get("content_free") or ["N/A"]]
                # label probabilities given a content-free input, normalised over the labels and averaged
                state.prior = np.log(softmax(state.score_texts(free, batch_size=len(free))).mean(0))
        order = sorted(range(len(state.inputs)), key=lambda i: len(state.inputs[i]))  # batches of similar length
        return state, Units(len(state.inputs), [1.0] * len(state.inputs), order=order)

    def auto_batch_size(self, state: State, device) -> int:
        return max(1, (CPU_ROWS if device.type == "cpu" else CUDA_ROWS) // state.rows_per_example)

    def score(self, state: State, batch: list[int]) -> list[dict]:
        scores = state.score_texts([state.inputs[i] for i in batch], batch_size=len(batch) * state.rows_per_example)
        return [{"scores": [float(value) for value in row]} for row in scores]

    def check_record(self, state: State, index: int, record: dict) -> bool:
        scores = record.get("scores")
        return (set(record) == {"scores"} and isinstance(scores, list) and len(scores) == len(state.labels)
                and all(is_number(value) for value in scores))

    def aggregate(self, state: State, records: list[dict], throughput: float) -> Outcome:
        scores = np.array([record["scores"] for record in records], dtype=float)
        truth, labels = np.array(state.examples.labels), state.labels
        extra = {}
        if state.method == "loglikelihood":
            lengths = np.array([count_bytes(c) for c in state.continuations], dtype=float)
            extra["norm"] = (scores / lengths).argmax(1)
            if state.prior is not None:
                extra["uncalibrated"] = scores.argmax(1)
                scores = np.log(softmax(scores)) - state.prior
        predictions = scores.argmax(1)
        metrics = classification_metrics(truth, predictions, labels)
        for name, predicted in extra.items():
            metrics[f"accuracy_{name}"] = float((predicted == truth).mean())
        metrics.update(method=state.method, examples=len(truth), calibrated=state.prior is not None)
        samples = [
            {"index": i, "text": text, "label": labels[truth[i]], "prediction": labels[predictions[i]],
             "correct": bool(truth[i] == predictions[i]), "scores": dict(zip(labels, map(float, scores[i])))}
            for i, text in enumerate(state.examples.texts)
        ]
        data = {"origin": state.examples.origin, "examples": len(truth)}
        return Outcome(metrics, samples, data)


EVALUATOR = Classification()
