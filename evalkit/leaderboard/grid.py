"""The leaderboard's views of its rows: per task, the columns worth a table (the settings that vary within the task,
the headline and every other scored metric of the evaluator's catalogue, with units and directions); across tasks,
the models x tasks grid of headline metrics, comparing like with like."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields

from evalkit import evaluators
from evalkit.config.settings import is_number, keys_with
from evalkit.hashing import canonical_json
from evalkit.loading.options import LoadOptions

# loading settings that change the numbers (LoadOptions marks them): a model run with another of these is another row
# of the grid
VARIANT_KEYS = keys_with(LoadOptions, variant=True)
VARIANT_DEFAULTS = {spec.name: spec.default for spec in fields(LoadOptions) if spec.name in VARIANT_KEYS}


def evaluator_keys(name: str, **metadata) -> tuple[str, ...]:
    """The keys of an evaluator's settings marked so, e.g. compared=False: settings that add figures but change none
    of the others (runs that differ only in these compare); plotted=True: settings worth a sweep plot."""
    return keys_with(evaluators.get(name).Settings, **metadata)


def variant_label(model: str, loading: dict) -> str:
    """'smollm2-135m', or 'smollm2-135m (torchao-int8, bfloat16)' for a quantized or re-typed run of it."""
    parts = [str(loading[key]) for key in VARIANT_KEYS if loading.get(key, VARIANT_DEFAULTS[key]) !=
             VARIANT_DEFAULTS[key]]
    return f"{model} ({', '.join(parts)})" if parts else model


def varying_settings(rows: list[dict]) -> list[str]:
    """The settings whose values differ between these rows (one task's)."""
    return sorted(key for key in {k for row in rows for k in row["settings"]}
                  if len({canonical_json(row["settings"].get(key)) for row in rows}) > 1)


def natural_order(settings: dict) -> list:
    """A sort key for rows by their settings: numbers by value (stride 128 before 1024), then anything else by its
    JSON text; any mix of types compares."""
    return [(key, (0, float(value), "") if is_number(value) else (1, 0.0, canonical_json(value)))
            for key, value in sorted(settings.items())]


def arrow(higher_is_better: bool | None) -> str:
    return {True: "\u2191", False: "\u2193"}.get(higher_is_better, "")


def rows_by_task(rows: list[dict]) -> dict[str, list[dict]]:
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    return by_task


def task_views(rows: list[dict]) -> list[dict]:
    """Per task: its evaluator's headline, and the table's columns (key into a row's `cells`, header, numeric)."""
    views = []
    for task, task_rows in sorted(rows_by_task(rows).items()):
        evaluator = evaluators.get(task_rows[0]["evaluator"])
        headline = evaluator.headline()
        varying = sorted({key for row in task_rows for key in row["varying"]})
        columns = [{"key": "label", "header": "model", "numeric": False}]
        columns += [{"key": f"settings.{key}", "header": key, "numeric": False} for key in varying]
        columns.append({"key": "value", "header": header(headline), "numeric": True})
        columns.append({"key": "interval", "header": "95% interval", "numeric": False})
        columns += [{"key": f"metrics.{metric.name}", "header": header(metric), "numeric": True}
                    for metric in evaluator.metrics if not metric.headline and metric.higher_is_better is not None
                    and any(metric.name in row["metrics"] for row in task_rows)]
        columns += [{"key": "rate", "header": f"{evaluator.throughput}/s", "numeric": True},
                    {"key": "eval_seconds", "header": "seconds", "numeric": True},
                    {"key": "started_at", "header": "started", "numeric": False}]
        views.append({"task": task, "evaluator": evaluator.name, "metric": headline.name,
                      "higher_is_better": headline.higher_is_better, "arrow": arrow(headline.higher_is_better),
                      "unit": headline.unit, "columns": columns})
    return views


def header(metric) -> str:
    unit = f" ({metric.unit})" if metric.unit else ""
    return f"{metric.name}{unit} {arrow(metric.higher_is_better)}".strip()


def cells(row: dict) -> dict:
    """A row's values under the column keys of task_views."""
    values = {"label": row["label"], "value": row["value"], "rate": row["rate"],
              "eval_seconds": row["timing"].get("eval_seconds"), "started_at": row["started_at"],
              "interval": row["interval"]}
    values.update({f"settings.{key}": value for key, value in row["settings"].items()})
    values.update({f"metrics.{key}": value for key, value in row["metrics"].items()})
    return values


def compared_key(row: dict) -> str:
    return canonical_json(row["compared"])


def grid(rows: list[dict], include_partial: bool) -> dict:
    """Models (with their variants) x tasks of headline values. Per task, the cells compare the evaluation settings
    that most models were run with (`compared`); a model run only with other settings shows that run, marked
    (`same_settings` false). Partial runs (a `limit`) are left out unless asked for."""
    by_task = defaultdict(list)
    for index, row in enumerate(rows):
        if include_partial or not row["partial"]:
            by_task[row["task"]].append((index, row))
    cells_by_model, compared = defaultdict(dict), {}
    for task, task_rows in by_task.items():
        groups = defaultdict(list)
        for index, row in task_rows:
            groups[compared_key(row)].append((index, row))
        chosen = max(groups, key=lambda key: (len({row["label"] for _, row in groups[key]}),
                                              max(row["started_at"] or "" for _, row in groups[key])))
        compared[task] = groups[chosen][0][1]["compared"]
        runs_by_label = defaultdict(list)
        for index, row in task_rows:
            runs_by_label[row["label"]].append((compared_key(row) == chosen, row["started_at"] or "",
                                                index))
        for label, runs in runs_by_label.items():
            same, _, index = max(runs)
            row = rows[index]
            cells_by_model[label][task] = {"row": index, "value": row["value"], "interval": row["interval"],
                                           "partial": row["partial"], "same_settings": same}
    return {"models": sorted(cells_by_model), "tasks": sorted(by_task), "cells": cells_by_model,
            "compared": compared}
