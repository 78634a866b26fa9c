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

from evalkit.config.settings import setting
from evalkit.data import load_examples
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import (
    Data,
    Evaluator,
    Metric,
    ModelCheck,
    ModelRequest,
    Outcome,
    PreparedJob,
    Units,
    numbers,
)
from evalkit.evaluators.classification.labels import check_labels, check_template, nli_label_ids, softmax
from evalkit.hashing import sha256_text
from evalkit.metrics import classification_metrics, count_bytes

METHODS = {"nli": "sequence-classification", "loglikelihood": "causal-lm", "embedding": "encoder"}
TEMPLATES = {"nli": ("hypothesis_template",), "loglikelihood": ("prompt", "continuation"),
             "embedding": ("description",)}
# nli, embedding: model inputs per forward pass under batch_size=auto (an NLI example is one per label)
CPU_ROWS, CUDA_ROWS = 16, 128


@dataclass(frozen=True)
class Settings:
    method: str | None = setting(None, "nli | loglikelihood | embedding; null: the task's own default",
                                 choices=tuple(METHODS))
    multi_label: bool = setting(False, "score each label on its own (entailment vs contradiction)",
                                only_with={"method": "nli"})
    calibrate: bool = setting(False, "contextual calibration against the task's content-free inputs",
                              only_with={"method": "loglikelihood"})


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

    def validate(self, settings: Settings, run, task: Mapping, model: ModelCheck | None = None) -> Settings:
        method = settings.method or task.get("method")
        if method not in METHODS:
            raise EvalkitError(f"method={method} is not allowed; allowed: {', '.join(METHODS)}")
        check_labels_and_templates(task, method)
        if model is not None:
            check_model_suits(method, model)
        return replace(settings, method=method)

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, METHODS[settings.method])}

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        examples = load_examples(task, run.data_dir, run.limit)
        fingerprint = sha256_text("\n".join(f"{label}\t{text}" for label, text in zip(examples.labels, examples.texts)))
        return Data(examples, fingerprint, examples.origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> ClassificationJob:
        from evalkit.evaluators.classification.methods import embedding_scores, nli_scores

        loaded, examples = models["model"], data.content
        labels = [str(label) for label in task["labels"]]
        templates = task[settings.method]
        if settings.method == "loglikelihood":
            return label_likelihoods(loaded, examples, labels, templates, settings.calibrate)
        texts = examples.texts
        units = Units(len(texts), [1.0] * len(texts), order=sorted(range(len(texts)), key=lambda i: len(texts[i])))
        if settings.method == "nli":
            hypotheses = [templates["hypothesis_template"].format(label) for label in labels]
            score_texts = functools.partial(nli_scores, loaded.model, loaded.tokenizer, hypotheses=hypotheses,
                                            multi_label=settings.multi_label)
            return TextScoresJob(units, settings.method, labels, examples, score_texts, len(labels))
        descriptions = [templates["description"].format(label) for label in labels]
        score_texts = functools.partial(embedding_scores, loaded.model, loaded.tokenizer, descriptions=descriptions)
        return TextScoresJob(units, settings.method, labels, examples, score_texts, 1)


def check_labels_and_templates(task: Mapping, method: str) -> None:
    labels = task.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise EvalkitError(f"task.labels={labels} is not a list; give the candidate labels, e.g. "
                           "task.labels=[negative,positive]")
    check_labels([str(label) for label in labels or []])
    templates = task.get(method) or {}
    for key in TEMPLATES[method]:
        check_template(templates.get(key, ""), f"task.{method}.{key}")


def check_model_suits(method: str, model: ModelCheck) -> None:
    """Whether the model's config (saved heads, NLI labels) suits the method; the error names what would."""
    facts, name = model.facts, model.spec.get("name")
    if method == "nli":
        nli_label_ids(facts.label2id)
    if method == "loglikelihood" and facts.without_lm_head:
        instead = "method=nli (for an NLI model)" if facts.classifier_only else "method=embedding"
        raise EvalkitError(f"method=loglikelihood needs a causal LM, but model '{name}' was saved as "
                           f"{', '.join(facts.architectures)}; use {instead} with it, or a causal LM")
    if method == "embedding" and facts.decoder_only:
        raise EvalkitError(f"method=embedding compares sentence-encoder embeddings, but model '{name}' is a causal "
                           "LM; use method=loglikelihood with it, or a sentence encoder (e.g. model=minilm-l6-v2)")


@dataclass
class ClassificationJob(PreparedJob):
    """Each example's score per label (units: examples, batched by length), and the metrics of their argmax."""

    units: Units
    method: str
    labels: list[str]
    examples: object  # data.Examples

    def record_type(self, index: int) -> dict:
        return {"scores": numbers(len(self.labels))}

    def adjusted(self, scores: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The scores predictions are made from, and other predictions reported as accuracy_<name>."""
        return scores, {}

    def calibrated(self) -> bool:
        return False

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        scores, extra = self.adjusted(np.array([record["scores"] for record in records], dtype=float))
        truth, labels = np.array(self.examples.labels), self.labels
        predictions = scores.argmax(1)
        metrics = classification_metrics(truth, predictions, labels)
        for name, predicted in extra.items():
            metrics[f"accuracy_{name}"] = float((predicted == truth).mean())
        metrics.update(method=self.method, examples=len(truth), calibrated=self.calibrated())
        samples = [
            {"index": i, "text": text, "label": labels[truth[i]], "prediction": labels[predictions[i]],
             "correct": bool(truth[i] == predictions[i]), "scores": dict(zip(labels, map(float, scores[i])))}
            for i, text in enumerate(self.examples.texts)
        ]
        return Outcome(metrics, samples, {"origin": self.examples.origin, "examples": len(truth)})


@dataclass
class TextScoresJob(ClassificationJob):
    """nli, embedding: a methods.py scorer of (texts, batch_size), `rows` model inputs per example."""

    score_texts: functools.partial
    rows: int

    def auto_batch_size(self, device) -> int:
        return max(1, (CPU_ROWS if device.type == "cpu" else CUDA_ROWS) // self.rows)

    def score(self, batch: list[int]) -> list[dict]:
        scores = self.score_texts([self.examples.texts[i] for i in batch], batch_size=len(batch) * self.rows)
        return [{"scores": [float(value) for value in row]} for row in scores]


@dataclass
class LabelLikelihoodJob(ClassificationJob):
    """loglikelihood: each example a question whose choices are its labels, scored by the causal LM as
    multiple_choice scores a question; optionally calibrated by a content-free prior (Zhao et al. 2021)."""

    lm: object  # scoring.causal_lm.CausalLM
    encoded: object  # scoring.causal_lm.EncodedQuestions: per example, per label (prompt ids, continuation ids)
    continuations: list[str]
    prior: np.ndarray | None  # calibration: log label probabilities given content-free inputs

    def auto_batch_size(self, device) -> int:
        return self.lm.auto_batch_size()

    def score(self, batch: list[int]) -> list[dict]:
        return [{"scores": [ll for ll, _ in question]} for question in self.lm.loglikelihood_tokens(self.encoded,
                                                                                                   batch)]

    def adjusted(self, scores: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        lengths = np.array([count_bytes(c) for c in self.continuations], dtype=float)
        extra = {"norm": (scores / lengths).argmax(1)}
        if self.prior is None:
            return scores, extra
        return np.log(softmax(scores)) - self.prior, {**extra, "uncalibrated": scores.argmax(1)}

    def calibrated(self) -> bool:
        return self.prior is not None


def label_likelihoods(loaded, examples, labels: list[str], templates: Mapping, calibrate: bool) -> LabelLikelihoodJob:
    """The pairs (prompt around the text, continuation around the label) of every example, encoded by lm-eval's
    rule; with calibrate, the prior: label probabilities given the task's content-free inputs, normalised over the
    labels and averaged."""
    from evalkit.scoring.causal_lm import CausalLM

    lm = CausalLM(loaded)
    continuations = [templates["continuation"].format(label) for label in labels]
    prompts = [templates["prompt"].format(text) for text in examples.texts]
    encoded = lm.encode([[(prompt, c) for c in continuations] for prompt in prompts])
    prior = None
    if calibrate:
        free = [templates["prompt"].format(text) for text in templates.get("content_free") or ["N/A"]]
        scores = lm.loglikelihood([(prompt, c) for prompt in free for c in continuations])
        prior = np.log(softmax(np.reshape([ll for ll, _ in scores], (len(free), len(labels)))).mean(0))
    units = Units(len(prompts), [1.0] * len(prompts), encoded.groups(), encoded.order())
    return LabelLikelihoodJob(units, "loglikelihood", labels, examples, lm, encoded, continuations, prior)


EVALUATOR = Classification()
