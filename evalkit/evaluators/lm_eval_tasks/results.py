"""The responses handed back to lm-eval, and what lm-eval's own code makes of them, exactly as its `evaluate` does
after the model call: each request's `resps`, the task's filters (`apply_filters`), `process_results` per document
and filter, lm-eval's per-sample log, then its aggregation, standard errors and groups (`_process_results`). evalkit
adds a 95% percentile-bootstrap interval (`METRIC_ci95,FILTER`) beside each of a task's figures, and a headline."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np

from evalkit.evaluators.base import Outcome
from evalkit.metrics import bootstrap_ratio_interval

RESAMPLES = 1000
CORPUS_METRICS = ("bleu", "chrf", "chrf++", "ter")  # a corpus score per resample: lm-eval caps these at 100 too
FIGURE_SKIPPED = ("alias", "name", "sample_len", "sample_count")


def responses(instance, record: dict) -> list:
    """A request's responses as lm-eval's LM gives them, one per repeat: (log-likelihood, is_greedy), a rolling
    log-likelihood, or a generated text."""
    if instance.request_type == "loglikelihood":
        return [(record["loglikelihood"], record["is_greedy"])] * instance.repeats
    if instance.request_type == "loglikelihood_rolling":
        return [record["loglikelihood"]] * instance.repeats
    return list(record["responses"])


def process_task(accumulated: dict, limit: int | None) -> None:
    """lm-eval's evaluate() after the model call, for one task on one process: filters, then process_results of each
    document under each filter, with its sample log."""
    from lm_eval.utils import handle_non_serializable, hash_string

    task = accumulated["task"]
    task.apply_filters()
    by_doc = defaultdict(list)
    for instance in task.instances:
        by_doc[instance.doc_id].append(instance)
    for instances in by_doc.values():
        instances.sort(key=lambda instance: instance.idx)
    for filter_key in task.instances[0].filtered_resps:
        for doc_id, doc in task.doc_iterator(rank=0, limit=limit, world_size=1, samples=None):
            requests = by_doc[doc_id]
            metrics = task.process_results(doc, [request.filtered_resps[filter_key] for request in requests])
            target = task.doc_to_target(doc)
            doc_text = json.dumps(requests[0].doc, indent=2, default=handle_non_serializable, ensure_ascii=False)
            accumulated["logged_samples"].append({
                "doc_id": doc_id, "doc": doc, "target": target, "arguments": [r.args for r in requests],
                "resps": [r.resps for r in requests],
                "filtered_resps": [r.filtered_resps[filter_key] for r in requests],
                "filter": filter_key, "metrics": list(metrics), "doc_hash": hash_string(doc_text),
                "prompt_hash": hash_string(requests[0].arguments[0]), "target_hash": hash_string(str(target)),
                **metrics})
            for metric, value in metrics.items():
                accumulated["raw_metrics"][(metric, filter_key)].append(value)


def interval(aggregate, items: list, metric: str) -> list[float] | None:
    """95% percentile-bootstrap interval of the task's aggregate of its documents' values, resampling documents
    (seed 0); a mean of numbers through the vectorised ratio bootstrap."""
    from lm_eval.api.metrics import mean

    if len(items) < 2:
        return None
    if aggregate is mean and all(isinstance(item, (int, float)) for item in items):
        return bootstrap_ratio_interval(np.array(items, float), np.ones(len(items)))
    resamples = 100 if metric in CORPUS_METRICS else RESAMPLES
    picks = np.random.default_rng(0).integers(0, len(items), size=(resamples, len(items)))
    values = [aggregate([items[j] for j in pick]) for pick in picks]
    if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in values):
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def add_intervals(results: dict, accumulated: dict) -> None:
    from lm_eval.api.metrics import mean

    for name, acc in accumulated.items():
        aggregations = acc["task"].aggregation()
        for (metric, filter_key), items in acc["raw_metrics"].items():
            bounds = interval(aggregations.get(metric, mean), items, metric)
            results[name][f"{metric}_ci95,{filter_key}"] = bounds


def figures(entry: dict) -> list[str]:
    """The metric keys of one results entry (`acc,none`), without its standard errors and intervals."""
    return [key for key, value in entry.items() if key not in FIGURE_SKIPPED and "," in key
            and "_stderr," not in key and "_ci95," not in key and isinstance(value, (int, float))]


def headline(out: dict, names: list[str]) -> dict:
    """The first figure of the named tasks and groups (in their order) for which lm-eval says higher is better, else
    (only lower-is-better figures, e.g. perplexities) the first figure."""
    entries = [name for name in dict.fromkeys([*names, *out["results"]]) if figures(out["results"].get(name, {}))]
    candidates = [(name, key) for name in entries for key in figures(out["results"][name])]
    better = [(name, key) for name, key in candidates
              if out["higher_is_better"].get(name, {}).get(key.partition(",")[0]) is True]
    name, key = (better or candidates)[0]
    metric, _, filter_key = key.partition(",")
    return {"score": out["results"][name][key], "score_ci95": out["results"][name].get(f"{metric}_ci95,{filter_key}"),
            "score_metric": f"{name}: {key}", "score_higher_is_better": bool(better)}


def outcome(built, records: list[dict], bootstrap_iters: int) -> Outcome:
    """lm-eval's results from the responses: its metric names with standard errors (`acc,none`,
    `acc_stderr,none`), groups and their aggregates, and its per-sample log as evalkit's samples."""
    from lm_eval.evaluator_utils import _process_results
    from lm_eval.utils import handle_non_serializable

    for instance, record in zip(built.instances, records, strict=True):
        instance.resps, instance.filtered_resps = responses(instance, record), {}
    accumulated = {name: {"task": task, "raw_metrics": defaultdict(list), "logged_samples": []}
                   for name, task in built.tasks.items()}
    for acc, limit in zip(accumulated.values(), built.limits, strict=True):
        process_task(acc, limit)
    raw = _process_results(accumulated, built.groups, bootstrap_iters)._to_eval_results(
        samples={name: acc["logged_samples"] for name, acc in accumulated.items()})
    out = json.loads(json.dumps(raw, default=handle_non_serializable))  # as lm-eval writes its results files
    add_intervals(out["results"], accumulated)
    samples = [{"task": name, **sample} for name, logged in out["samples"].items() for sample in logged]
    documents = sum(count["effective"] for count in out["n-samples"].values())
    metrics = {**headline(out, built.names), "results": out["results"], "groups": out.get("groups", {}),
               "documents": documents, "requests": len(records)}
    data = {"origin": built.origin, "lm_eval_version": built.version,
            **{key: out[key] for key in ("group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples")}}
    return Outcome(metrics, samples, data)
