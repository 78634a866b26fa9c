"""Zero-shot classification accuracy (units: examples), by one of three methods: nli (the HF zero-shot-classification
pipeline's scores, methods.py), loglikelihood (a causal LM scores each label's continuation as lm-evaluation-harness
does, through scoring.causal_lm; optional contextual calibration) or embedding (cosine similarity to label
descriptions, methods.py). Labels, templates and the default method live in the task YAML. The scorers (torch) are
imported when scoring starts: the command line reads this module (settings, checks) before torch is imported."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from evalkit.config.settings import is_number, setting
from evalkit.data import load_examples
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest, Outcome, Units
from evalkit.evaluators.classification.labels import check_labels, check_template, nli_label_ids, softmax
from evalkit.hashing import sha256_text
from evalkit.metrics import classification_metrics, count_bytes

METHODS = {"nli": "sequence-classification", "loglikelihood": "causal-lm", "embedding": "encoder"}
TEMPLATES = {"nli": ("hypothesis_template",), "loglikelihood": ("prompt", "continuation"), "embedding": ("description",)}
# nli, embedding: model inputs per forward pass under batch_size=auto (an NLI example is one per label)
CPU_ROWS, CUDA_ROWS = 16, 128


@dataclass(frozen=True)
class Settings:
    method: str | None = setting(None, "nli | loglikelihood | embedding; null: the task's own default",
                                 choices=tuple(METHODS))
    multi_label: bool = setting(False, "nli: score each label on its own (entailment vs contradiction)")
    calibrate: bool = setting(False, "loglikelihood: contextual calibration against the task's content-free inputs")


@dataclass
class State:
    method: str
    labels: list[str]
    inputs: list[str]  # texts, or prompts around them (loglikelihood)
    score_texts: functools.partial | None  # nli, embedding: (texts, batch_size) -> [texts, labels] scores
    rows_per_example: int
    examples: object
    continuations: list[str] | None = None
    lm: object = None  # loglikelihood: scoring.causal_lm.CausalLM
    encoded: object = None  # loglikelihood: scoring.causal_lm.EncodedQuestions, one question per example
    prior: np.ndarray | None = None  # calibration: log label probabilities given content-free inputs


class Classification(Evaluator):
    name = "classification"
    Settings = Settings
    throughput = "examples"
    progress_unit = "ex"
    unit_name = "example"
    metrics = (
        Metric("accuracy", "share of examples whose top-scored label is the true one", True, "", headline=True,
               interval="accuracy_ci95"),
        Metric("macro_f1", "F1 per label, averaged over labels", True),
        Metric("accuracy_norm", "loglikelihood: accuracy with scores divided by continuation bytes", True),
        Metric("accuracy_uncalibrated", "loglikelihood with calibrate=true: accuracy before calibration", True),
        Metric("examples", "examples evaluated", None, count=True),
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
        from evalkit.evaluators.classification.methods import embedding_scores, nli_scores

        loaded, examples = models["model"], data.content
        model, tokenizer = loaded.model, loaded.tokenizer
        labels = [str(label) for label in task["labels"]]
        templates = task[settings.method]
        state = State(settings.method, labels, examples.texts, None, 1, examples)
        if settings.method == "loglikelihood":
            return label_likelihoods(state, loaded, templates, settings.calibrate)
        if settings.method == "nli":
            hypotheses = [templates["hypothesis_template"].format(label) for label in labels]
            state.score_texts = functools.partial(nli_scores, model, tokenizer, hypotheses=hypotheses,
                                                  multi_label=settings.multi_label)
            state.rows_per_example = len(labels)
        else:
            descriptions = [templates["description"].format(label) for label in labels]
            state.score_texts = functools.partial(embedding_scores, model, tokenizer, descriptions=descriptions)
        order = sorted(range(len(state.inputs)), key=lambda i: len(state.inputs[i]))  # batches of similar length
        return state, Units(len(state.inputs), [1.0] * len(state.inputs), order=order)

    def auto_batch_size(self, state: State, device) -> int:
        if state.lm is not None:
            return state.lm.auto_batch_size()
        return max(1, (CPU_ROWS if device.type == "cpu" else CUDA_ROWS) // state.rows_per_example)

    def score(self, state: State, batch: list[int]) -> list[dict]:
        if state.lm is not None:
            questions = state.lm.loglikelihood_tokens([state.encoded.pairs[i] for i in batch],
                                                      state.encoded.shared[batch[0]])
            return [{"scores": [ll for ll, _ in question]} for question in questions]
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


def label_likelihoods(state: State, loaded, templates: Mapping, calibrate: bool) -> tuple[State, Units]:
    """method=loglikelihood: each example a question whose choices are its labels, the pairs (prompt around the
    text, continuation around the label) scored by lm-eval's rule as multiple_choice scores them; with calibrate,
    the label probabilities given the task's content-free inputs, normalised over the labels and averaged."""
    from evalkit.scoring.causal_lm import CausalLM

    state.lm = CausalLM(loaded)
    state.continuations = [templates["continuation"].format(label) for label in state.labels]
    state.inputs = [templates["prompt"].format(text) for text in state.inputs]
    state.encoded = state.lm.encode([[(prompt, c) for c in state.continuations] for prompt in state.inputs])
    if calibrate:
        free = [templates["prompt"].format(text) for text in templates.get("content_free") or ["N/A"]]
        scores = state.lm.loglikelihood([(prompt, c) for prompt in free for c in state.continuations])
        lls = np.array([ll for ll, _ in scores]).reshape(len(free), len(state.labels))
        state.prior = np.log(softmax(lls).mean(0))
    count = len(state.inputs)
    return state, Units(count, [1.0] * count, state.encoded.groups(), state.encoded.order())


EVALUATOR = Classification()
