"""One model's leaderboard rows in lm-evaluation-harness's results layout, so that its tools read evalkit's runs."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections import defaultdict

from evalkit.leaderboard.grid import VARIANT_DEFAULTS, VARIANT_KEYS

LM_EVAL_NAMES = {"accuracy": "acc", "accuracy_norm": "acc_norm"}  # evalkit metric -> lm-evaluation-harness metric
TASK_VERSION = 1


def settings_label(row: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in row["varying"].items())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def lm_eval_results(rows: list[dict]) -> dict:
    """One model's rows in lm-evaluation-harness's results layout; a task run with several settings appears once
    per setting, as `task (settings)`. Standard errors are the 95% bootstrap half-width / 1.96."""
    out = {"results": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    counts = defaultdict(int)
    for row in rows:
        counts[row["task"]] += 1
    for row in rows:
        alias = row["task"] if counts[row["task"]] == 1 else f"{row['task']} ({settings_label(row)})"
        results = {"alias": alias}
        for name, value in row["metrics"].items():
            if isinstance(value, float):  # metrics; the integers are counts and settings
                results[f"{LM_EVAL_NAMES.get(name, name)},none"] = value
        if row["interval"]:
            low, high = row["interval"]
            results[f"{LM_EVAL_NAMES.get(row['metric'], row['metric'])}_stderr,none"] = (high - low) / 2 / 1.96
        out["results"][alias] = results
        out["configs"][alias] = {"task": row["task"], "evaluator": row["evaluator"], "num_fewshot": 0,
                                 "metadata": {"evalkit_settings": row["settings"], "run_dir": row["run_dir"]}}
        out["versions"][alias] = TASK_VERSION
        out["n-shot"][alias] = 0
        out["higher_is_better"][alias] = {LM_EVAL_NAMES.get(row["metric"], row["metric"]): row["higher_is_better"]}
        counts_of = ("examples", "questions", "utterances", "windows")
        count = int(next((row["metrics"][k] for k in counts_of if k in row["metrics"]), 0))
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


def lm_eval_names(models: list[str]) -> dict[str, str]:
    """A file name per model: its slug, with a short hash when the slug is not the name itself (so that org/model,
    org_model and 'org model' never share a file)."""
    return {model: slug(model) if slug(model) == model else
            f"{slug(model)}-{hashlib.sha256(model.encode()).hexdigest()[:8]}" for model in models}


