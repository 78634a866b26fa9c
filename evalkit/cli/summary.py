"""The end-of-run summary on the terminal: a small table of the evaluator's scored metrics (value, 95% interval,
direction, unit, from its catalogue), what the counts were, the model's real identity and where the results are."""

from __future__ import annotations

from pathlib import Path

from evalkit import evaluators
from evalkit.config.settings import is_number


def summary(record: dict, out_dir: Path | None) -> str:
    evaluator = evaluators.get(record["evaluator"])
    metrics = record["metrics"]
    counts = [f"{m.name}={metrics[m.name]:,}" for m in evaluator.metrics if m.count and m.name in metrics]
    limit = (record.get("data") or {}).get("limit")  # tokens for perplexity, examples elsewhere: said on the title
    lines = [f"{record['model']['name']} on {record['task']} ({record['evaluator']}"
             + (f": {', '.join(counts)})" if counts else ")")
             + (f"; limit: the first {limit['first']:,} {limit['of']}" if limit else ""),
             f"  {'metric':<22}{'value':>12}  {'95% interval':<22}  {'better':<7} unit"]
    for metric in evaluator.metrics:
        value = metrics.get(metric.name)
        if metric.higher_is_better is None or isinstance(value, bool) or not is_number(value):
            continue
        interval = metrics.get(metric.interval) if metric.interval else None
        shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        better = "higher" if metric.higher_is_better else "lower"
        lines.append(f"  {metric.name:<22}{value:>12.4f}  {shown:<22}  {better:<7} {metric.unit}".rstrip())
    lines.append(f"model: {model_identity(record['model'])}")
    timing, run = record["timing"], record.get("run") or {}
    rates = ", ".join(f"{value:,.1f} {key.removesuffix('_per_second')}/s" for key, value in timing.items()
                      if key.endswith("_per_second"))
    origin = f" [cached: computed in {run['computed_in']}]" if run.get("cache_hit") else ""
    where = f"; results in {out_dir / 'results.json'}" if out_dir else ""
    lines.append(f"{timing['eval_seconds']:.1f} s ({rates}){where}{origin}")
    return "\n".join(lines)


def model_identity(model: dict) -> str:
    """What was really evaluated: the file (a GGUF's quantization is in its name), how it was loaded and quantized,
    the dtype and devices, and the size."""
    if model.get("source") == "random-init":
        origin = f"random init (seed {model.get('seed')}) of a {model.get('model_type')} config"
    elif model.get("gguf_file"):
        origin = f"GGUF file {model['gguf_file']} in {model.get('location')}, dequantized on load"
    elif model.get("source") == "hub":
        origin = f"hub {model.get('location')}" + (f" @ {model['commit'][:12]}" if model.get("commit") else "")
    else:
        origin = f"{model.get('source')} {model.get('location')}"
    quantization = (model.get("quantization") or {}).get("scheme") or "none"
    parts = [origin, f"{model.get('dtype')} on {', '.join(map(str, model.get('devices') or [])) or '?'}",
             "not quantized" if quantization == "none" else f"quantized {quantization}"]
    if model.get("parameters"):
        parts.append(f"{model['parameters'] / 1e6:,.1f}M parameters")
    return "; ".join(parts)


def sweep_table(runs: list[tuple[str, list[str], dict]]) -> str:
    """A sweep's finished runs side by side: (job, its overrides, its results record) -> one line each with what
    sets it apart (the overrides not shared by every run), its headline metric and interval."""
    shared = set.intersection(*(set(overrides) for _, overrides, _ in runs)) if runs else set()
    varying = [" ".join(o for o in overrides if o not in shared) or "-" for _, overrides, _ in runs]
    width = max([len("overrides"), *map(len, varying)]) + 2
    lines = [f"{'job':<5}{'overrides':<{width}}{'metric':<16}{'value':>12}  95% interval"]
    for (job, _, record), overrides in zip(runs, varying):
        metric = evaluators.get(record["evaluator"]).headline()
        value = record["metrics"].get(metric.name)
        interval = record["metrics"].get(metric.interval) if metric.interval else None
        shown = f"{value:>12.4f}" if is_number(value) and not isinstance(value, bool) else f"{value!s:>12}"
        bounds = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        lines.append(f"{job:<5}{overrides:<{width}}{metric.name:<16}{shown}  {bounds}".rstrip())
    return "\n".join(lines)
