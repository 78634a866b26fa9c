"""Grouped tasks, as lm-evaluation-harness's groups (mmlu: 57 subjects in four categories): a task whose `subsets`
names its parts by category. Each part is read as a task of its own (its questions, its few-shot pool, its
description), with `{subset}` in the task's sources and `{subject}` in its description filled in; the figures are
given per subset, per category and overall, each the mean over its questions (lm-eval's weight_by_size). Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.evaluators.multiple_choice.questions import Question

FILLED = ("path", "data_file", "hub", "fewshot", "description")  # the task fields a subset's name is filled into


def subsets_of(task: Mapping) -> list[tuple[str, str]]:
    """(category, subset) for each subset of a grouped task, in the task's order; [] for a task of one part."""
    groups = task.get("subsets")
    if groups is None:
        return []
    if not isinstance(groups, Mapping) or not all(isinstance(names, list) and names for names in groups.values()):
        raise EvalkitError(f"task.subsets={groups} is not allowed; allowed: a mapping of categories to lists of "
                           "subset names, e.g. {stem: [anatomy, astronomy]}")
    return [(str(category), str(name)) for category, names in groups.items() for name in names]


def filled(value, subset: str):
    """A task field with `{subset}` (and `{subject}`: the subset's words) filled in, through mappings and lists."""
    if isinstance(value, str):
        return value.replace("{subset}", subset).replace("{subject}", subset.replace("_", " "))
    if isinstance(value, Mapping):
        return {key: filled(item, subset) for key, item in value.items()}
    if isinstance(value, list):
        return [filled(item, subset) for item in value]
    return value


def load_grouped(task: Mapping, read_part: Callable[[Mapping], tuple[list[Question], str]]) -> tuple[list, str]:
    """Every subset's questions (each marked with its subset), read by `read_part` from the task with that subset
    filled in, and where they came from."""
    questions, origins = [], []
    for _, subset in subsets_of(task):
        part = {**task, "name": f"{task.get('name')}_{subset}", "subsets": None,
                **{key: filled(task[key], subset) for key in FILLED if key in task}}
        part_questions, origin = read_part(part)
        questions += [replace(question, subset=subset) for question in part_questions]
        origins.append(origin)
    return questions, f"{origins[0]} and {len(origins) - 1} more subsets" if len(origins) > 1 else origins[0]


def grouped_accuracy(task: Mapping, questions: list[Question], correct: list[bool]) -> dict:
    """acc and question count per subset and per category: each the mean over its questions."""
    hits: dict[str, list[bool]] = {}
    for question, hit in zip(questions, correct):
        hits.setdefault(question.subset, []).append(bool(hit))
    categories: dict[str, list[bool]] = {}
    for category, subset in subsets_of(task):
        categories.setdefault(category, []).extend(hits.get(subset, []))

    def figures(values: list[bool]) -> dict:
        return {"acc": float(np.mean(values)) if values else None, "questions": len(values)}

    return {"subsets": {name: figures(values) for name, values in hits.items()},
            "groups": {name: figures(values) for name, values in categories.items()}}
