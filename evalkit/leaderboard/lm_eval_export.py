"""One model's leaderboard rows in lm-evaluation-harness's results layout, so that its tools read evalkit's runs."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections import defaultdict

from evalkit import evaluators
from evalkit.config.settings import keys_with
from evalkit.leaderboard.grid import VARIANT_DEFAULTS, VARIANT_KEYS

# lm-evaluation-harness's examples in context: an evaluator's setting of this name, if it has one (else none)
FEWSHOT = "num_fewshot"

TASK_VERSION = 1


def settings_label(row: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in row["varying"].items())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def figures(metrics: dict, names: dict, label: str) -> dict:
    """The float figures of a metrics mapping under lm-eval's keys (`acc,none`; `exact_match,strict-match`); the
    integers are counts and settings."""
    return {f"{names.get(name, name)},{label}": value for name, value in metrics.items() if isinstance(value, float)}


def lm_eval_results(rows: list[dict]) -> dict:
    """One model's rows in lm-evaluation-harness's results layout; a task run with several settings appears once
    per setting, as `task (settings)`. Standard errors are the 95% bootstrap half-width / 1.96."""
    out = {"results": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    counts = defaultdict(int)
    for row in rows:
        counts[row["task"]] += 1
    for row in rows:
        alias = row["task"] if counts[row["task"]] == 1 else f"{row['task']} ({settings_label(row)})"
        evaluator = evaluators.get(row["evaluator"])
        names = {metric.name: metric.lm_eval_name or metric.name for metric in evaluator.metrics}
        results = out["results"][alias] = {"alias": alias, **figures(row["metrics"], names, "none")}
        parts = {metric.name: metric.breakdown for metric in evaluator.metrics if metric.breakdown}
        for name, by_part in row["metrics"].items():
            for part, values in (by_part.items() if parts.get(name) else ()):
                if parts[name] == "filter":
                    results.update(figures(values, names, part))
                elif parts[name] == "task":  # lm-eval's own entries: its keys already
                    out["results"][part] = {"alias": part, **{key: value for key, value in values.items()
                                                              if isinstance(value, float)}}
                else:
                    out["results"][f"{alias}_{part}"] = {"alias": f" - {part}", **figures(values, names, "none")}
        if row["interval"]:
            low, high = row["interval"]
            results[f"{names[row['metric']]}_stderr,none"] = (high - low) / 2 / 1.96
        shots = row["settings"].get(FEWSHOT, 0) if FEWSHOT in keys_with(evaluator.Settings) else 0
        out["configs"][alias] = {"task": row["task"], "evaluator": row["evaluator"], FEWSHOT: shots,
                                 "metadata": {"evalkit_settings": row["settings"], "run_dir": row["run_dir"]}}
        out["versions"][alias] = TASK_VERSION
        out["n-shot"][alias] = shots
        out["higher_is_better"][alias] = {names[row["metric"]]: row["higher_is_better"]}
        units = next(metric.name for metric in evaluator.metrics if metric.units)
        count = int(row["metrics"].get(units, 0))
        out["n-samples"][alias] = {"original": count, "effective": count}
    first = rows[0]
    location = first["provenance"]["model"]["location"] or first["model"]
    variant = "".join(f",{key}={first['settings'][key]}" for key in VARIANT_KEYS
                      if first["settings"].get(key, VARIANT_DEFAULTS[key]) != VARIANT_DEFAULTS[key])
    out["config"] = {"model": "evalkit", "model_args": f"pretrained={location}{variant}", "model_name": first["model"]}
    out["model_name"] = first["model"]
    out["git_hash"] = first["provenance"]["git_commit"]
    out["date"] = datetime.datetime.now(datetime.timezone.utc).timestamp()
    return out


MAX_STEM = 80  # characters of a name kept in a file name: file systems allow 255 bytes, and paths grow


def file_stem(name: str) -> str:
    """A file name's stem for `name`: the name itself when it is a short slug; else its slug cut to MAX_STEM with a
    short hash of the whole name (so that org/model, org_model and 'org model' never share a file, nor two long
    names that begin alike)."""
    stem = slug(name)
    if stem == name and len(stem) <= MAX_STEM:
        return stem
    return f"{stem[:MAX_STEM]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def lm_eval_names(models: list[str]) -> dict[str, str]:
    """A file name per model (file_stem)."""
    return {model: file_stem(model) for model in models}
