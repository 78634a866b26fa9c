"""The parts of zero-shot classification that need no torch, so the command line checks them before it is imported:
candidate labels, templates, an NLI model's entailment and contradiction ids, label probabilities."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evalkit.errors import EvalkitError


def check_labels(labels: list) -> None:
    if not labels:
        raise EvalkitError("task.labels is empty; give the candidate labels, e.g. task.labels=[negative,positive]")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise EvalkitError(f"task.labels has duplicates: {', '.join(map(str, duplicates))}; each label once")


def check_template(template: str, key: str) -> None:
    if "{}" not in str(template):
        raise EvalkitError(f"{key}={template!r} has no '{{}}' where the text or label goes")


def nli_label_ids(label2id: Mapping) -> tuple[int, int]:
    """(entailment id, contradiction id) from an NLI model's label2id, matched by name as the pipeline does."""
    lowered = {str(k).lower(): v for k, v in (label2id or {}).items()}
    entailment = next((v for k, v in lowered.items() if k.startswith("entail")), None)
    contradiction = next((v for k, v in lowered.items() if k.startswith("contra")), None)
    if entailment is None or contradiction is None:
        raise EvalkitError(
            f"the NLI model's config.label2id ({dict(label2id or {})}) has no entailment or contradiction "
            "label; method=nli needs an NLI (MNLI-style) model such as model=bart-large-mnli (a causal LM: "
            "method=loglikelihood)"
        )
    return entailment, contradiction


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
