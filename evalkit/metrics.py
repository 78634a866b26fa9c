"""Metrics as pure functions of counts: no models, no tensors."""

from __future__ import annotations

import math
import re

import numpy as np


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word_perplexity: pieces of a split on whitespace runs."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def perplexity_metrics(nll_sum: float, tokens: int, num_bytes: int, num_words: int) -> dict:
    """Corpus-level figures from a summed negative log-likelihood (nats), never from a mean of window means."""
    nll_per_token = nll_sum / tokens
    return {
        "perplexity": math.exp(nll_per_token),
        "nll_per_token": nll_per_token,
        "nll_sum": nll_sum,
        "bits_per_byte": nll_sum / (num_bytes * math.log(2)),
        "byte_perplexity": math.exp(nll_sum / num_bytes),
        "word_perplexity": math.exp(nll_sum / num_words),
        "tokens_scored": tokens,
        "bytes": num_bytes,
        "words": num_words,
    }


def bootstrap_ratio_interval(
    numerators: np.ndarray, denominators: np.ndarray, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap interval of sum(numerators) / sum(denominators), resampling the units (windows,
    examples, utterances) with replacement: the interval of a corpus-level ratio, not of a mean of unit ratios.
    None for fewer than two units, where resampling can say nothing."""
    numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
    if len(numerators) < 2:
        return None
    picks = np.random.default_rng(seed).integers(0, len(numerators), size=(resamples, len(numerators)))
    ratios = numerators[picks].sum(1) / denominators[picks].sum(1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return [float(low), float(high)]


def perplexity_interval(window_nll, window_tokens) -> list[float] | None:
    """95% bootstrap interval of the corpus perplexity, resampling windows (their scored tokens are disjoint)."""
    interval = bootstrap_ratio_interval(window_nll, window_tokens)
    return interval and [math.exp(bound) for bound in interval]


def divergence_metrics(
    token_kl: np.ndarray, window_kl: np.ndarray, window_tokens: np.ndarray, top1_agree: float, reference_nll: float,
    nll: float,
) -> dict:
    """A model against a reference on the same tokens: KL(reference || model) per scored token (nats), top-1
    agreement, and the perplexity change."""
    tokens = len(token_kl)
    perplexity, reference_perplexity = math.exp(nll / tokens), math.exp(reference_nll / tokens)
    return {
        "reference_perplexity": reference_perplexity,
        "delta_ppl": perplexity - reference_perplexity,
        "ppl_ratio": perplexity / reference_perplexity,
        "kl_mean": float(window_kl.sum() / tokens),
        "kl_mean_ci95": bootstrap_ratio_interval(window_kl, window_tokens),
        "kl_median": float(np.median(token_kl)),
        "kl_p99": float(np.percentile(token_kl, 99)),
        "kl_max": float(token_kl.max()),
        "top1_agreement": top1_agree / tokens,
        "reference_nll_sum": reference_nll,
    }


def classification_metrics(truth: np.ndarray, predictions: np.ndarray, labels: list[str]) -> dict:
    """Accuracy (with a 95% bootstrap interval), macro-F1, per-class precision/recall/F1 and the confusion matrix
    (rows: true label, columns: predicted)."""
    truth, predictions = np.asarray(truth), np.asarray(predictions)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (truth, predictions), 1)
    per_class = {}
    for k, label in enumerate(labels):
        hits, predicted, actual = confusion[k, k], confusion[:, k].sum(), confusion[k].sum()
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                            "support": int(actual)}
    correct = (truth == predictions).astype(float)
    return {
        "accuracy": float(correct.mean()),
        "accuracy_ci95": bootstrap_ratio_interval(correct, np.ones_like(correct)),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "confusion_labels": list(labels),
    }
