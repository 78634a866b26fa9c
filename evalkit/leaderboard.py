"""Collect every results.json below a folder into leaderboard tables, lm-evaluation-harness results, plots and one
static HTML page.

    python -m evalkit.leaderboard outputs/ [-o outputs/leaderboard]     (also: evalkit-leaderboard)

Writes into the output folder:
- leaderboard.json: {"schema": "evalkit-leaderboard", "schema_version": 1, "generated_at", "source",
  "rows": [...], "skipped": [{"path", "reason"}], "superseded": [{"path", "kept"}]}. A row is one (model, task,
  settings): "model", "task", "evaluator", "settings" (every evaluation setting of the run, flattened with dots),
  "varying" (those settings that differ between rows, as shown in the tables), "metric" (the headline one),
  "value", "interval" ([low, high] 95% bootstrap, or null), "higher_is_better", "metrics" (every scalar metric),
  "timing", "started_at", "run_dir", "results_path", and "provenance" (model, data, versions, git commit, hardware).
- leaderboard.md and leaderboard.csv: the rows as tables;
- lm_eval/<model>.json: the rows of one model in lm-evaluation-harness's results layout ("results", "configs",
  "versions", "n-shot", "higher_is_better", "n-samples", "config");
- plots/<model>__<task>.png: perplexity and tokens/s against stride, where a model was run at several strides;
- index.html: one self-contained page (no server, no network) with the table, sortable by any column, filterable by
  task, and the plots embedded.

Unreadable or foreign JSON is skipped with a warning and counted; when one (model, task, settings) was run more
than once, the newest run is kept and the others are listed as superseded.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

from evalkit import evaluators
from evalkit.leaderboard_page import page
from evalkit.results import canonical_json, write_atomic, write_json

SCHEMA, SCHEMA_VERSION = "evalkit-leaderboard", 1
REQUIRED_KEYS = {"schema_version", "task", "evaluator", "metrics", "model", "config", "settings"}
LM_EVAL_NAMES = {"accuracy": "acc", "accuracy_norm": "acc_norm"}  # evalkit metric -> lm-evaluation-harness metric


def warn(message: str) -> None:
    print(f"evalkit.leaderboard: {message}", file=sys.stderr)


def flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_results(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) for an evalkit results.json; (None, reason) for anything else."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable JSON ({type(error).__name__}: {str(error).splitlines()[0]})"
    if not isinstance(record, dict) or not REQUIRED_KEYS <= set(record):
        return None, ("not an evalkit results.json of schema 2 or later (missing schema_version/task/evaluator/"
                      "metrics/model/config/settings)")
    if record["evaluator"] not in evaluators.names():
        return None, f"unknown evaluator {record['evaluator']!r}"
    return record, None


def make_row(record: dict, path: Path) -> dict:
    """One row: the run's settings (those its evaluator reads, with the loading and run settings; the scopes' keys
    are distinct, so they are shown without the scope), its headline metric from the evaluator's catalogue."""
    settings = flatten({key: value for scope in record["settings"].values() for key, value in scope.items()})
    evaluator = evaluators.get(record["evaluator"])
    headline = evaluator.headline()
    metric, higher_is_better = headline.name, headline.higher_is_better
    metrics = record["metrics"]
    interval = metrics.get(headline.interval) if headline.interval else None
    model = record["model"]
    return {
        "model": model.get("name") or model.get("location"),
        "task": record["task"],
        "evaluator": record["evaluator"],
        "settings": settings,
        "identity": canonical_json([record["config"].get("model"), record["config"].get("task"), settings]),
        "metric": metric,
        "value": metrics.get(metric),
        "interval": list(interval) if interval else None,
        "higher_is_better": higher_is_better,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        "timing": record.get("timing", {}),
        "rate": (record.get("timing") or {}).get(f"{evaluator.throughput}_per_second"),
        "started_at": record.get("started_at"),
        "run_dir": str(path.parent),
        "results_path": str(path),
        "provenance": {
            "model": {k: model.get(k) for k in ("source", "location", "gguf_file", "revision", "commit",
                                                "weights_sha256", "dtype", "quantization", "parameters")},
            "data": record.get("data"), "versions": record.get("versions"), "git_commit": record.get("git_commit"),
            "hardware": record.get("hardware"), "cache": record.get("run"),
        },
    }


def newest_first(row: dict) -> tuple:
    """Newest run first; a fresh computation before a cache copy of the same moment."""
    cache = row["provenance"]["cache"] or {}
    return (row["started_at"] or "", not cache.get("cache_hit", False), row["results_path"])


def collect(source: Path, skip: Path | None = None) -> dict:
    """Rows (deduplicated, newest kept), skipped files with reasons, and superseded runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    skipped = []
    for path in sorted(source.rglob("results.json")):
        if (skip and skip in path.parents) or (path.parent / "key.json").is_file():
            continue  # this export's own folder; a result-cache entry (a copy of a run, not a run)
        record, reason = read_results(path)
        if record is None:
            warn(f"skipped {path}: {reason}")
            skipped.append({"path": str(path), "reason": reason})
            continue
        row = make_row(record, path)
        groups[row.pop("identity")].append(row)
    rows, superseded = [], []
    for runs in groups.values():
        runs.sort(key=newest_first, reverse=True)
        rows.append(runs[0])
        for older in runs[1:]:
            superseded.append({"path": older["results_path"], "kept": runs[0]["results_path"]})
        if len(runs) > 1:
            warn(f"{len(runs)} runs of {runs[0]['model']} on {runs[0]['task']} with the same settings: kept the "
                 f"newest, {runs[0]['results_path']}")
    varying = sorted({key for key in {k for row in rows for k in row["settings"]}
                      if len({canonical_json(row["settings"].get(key)) for row in rows}) > 1})
    for row in rows:
        row["varying"] = {key: row["settings"].get(key) for key in varying}
    rows.sort(key=lambda r: (r["task"], r["model"], canonical_json(r["varying"])))
    return {"rows": rows, "skipped": skipped, "superseded": superseded}


def settings_label(row: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in row["varying"].items())


def table_rows(rows: list[dict]) -> list[dict]:
    """The flat view shown in the .md/.csv/.html tables."""
    return [{
        "model": row["model"], "task": row["task"], "settings": settings_label(row), "metric": row["metric"],
        "value": row["value"],
        "ci95_low": row["interval"][0] if row["interval"] else None,
        "ci95_high": row["interval"][1] if row["interval"] else None,
        "per_second": row["rate"], "eval_seconds": row["timing"].get("eval_seconds"),
        "started_at": row["started_at"], "run_dir": row["run_dir"],
    } for row in rows]


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(flat: list[dict]) -> str:
    columns = list(flat[0]) if flat else ["model", "task", "metric", "value"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]).replace("|", "\\|") for c in columns) + " |" for r in flat]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, flat: list[dict]) -> None:
    def write(stream):
        writer = csv.DictWriter(stream, fieldnames=list(flat[0]) if flat else ["model", "task"])
        writer.writeheader()
        writer.writerows(flat)

    write_atomic(path, write)


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
        out["versions"][alias] = SCHEMA_VERSION
        out["n-shot"][alias] = 0
        out["higher_is_better"][alias] = {LM_EVAL_NAMES.get(row["metric"], row["metric"]): row["higher_is_better"]}
        count = int(next((row["metrics"][k] for k in ("examples", "utterances", "windows") if k in row["metrics"]), 0))
        out["n-samples"][alias] = {"original": count, "effective": count}
    first = rows[0]
    location = first["provenance"]["model"]["location"] or first["model"]
    out["config"] = {"model": "evalkit", "model_args": f"pretrained={location}", "model_name": first["model"]}
    out["model_name"] = first["model"]
    out["git_hash"] = first["provenance"]["git_commit"]
    out["date"] = datetime.datetime.now(datetime.timezone.utc).timestamp()
    return out


def stride_plots(rows: list[dict], folder: Path) -> dict[str, Path]:
    """One PNG per (model, task, other settings) run at 2+ strides: perplexity and tokens/s against stride."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = defaultdict(list)
    for row in rows:
        if row["evaluator"] == "perplexity" and row["value"] is not None:
            rest = {k: v for k, v in row["settings"].items() if k != "stride"}
            sweeps[(row["model"], row["task"], canonical_json(rest))].append(row)
    plots = {}
    for (model, task, _), sweep in sweeps.items():
        if len({r["settings"]["stride"] for r in sweep}) < 2:
            continue
        sweep.sort(key=lambda r: r["settings"]["stride"])
        strides = [r["settings"]["stride"] for r in sweep]
        fixed = " ".join(f"{k}={v}" for k, v in sweep[0]["varying"].items() if k != "stride")
        title = f"{model} on {task}" + (f" ({fixed})" if fixed else "")
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        figure.suptitle(title)
        left.plot(strides, [r["value"] for r in sweep], marker="o")
        left.set(xscale="log", xlabel="stride (tokens)", ylabel="perplexity")
        right.plot(strides, [r["timing"].get("tokens_per_second") or math.nan for r in sweep], marker="o")
        right.set(xscale="log", xlabel="stride (tokens)", ylabel="tokens / s")
        for axis in (left, right):
            axis.set_xticks(strides, [str(s) for s in strides])
            axis.minorticks_off()
            axis.grid(alpha=0.3)
        figure.tight_layout()
        name = f"{slug(model)}__{slug(task)}.png"
        while name in {p.name for p in plots.values()}:
            name = name.removesuffix(".png") + "_.png"
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        write_atomic(folder / name, lambda stream: stream.write(buffer.getvalue()), binary=True)
        plots[title] = folder / name
    return plots


def build(source: Path, out: Path) -> dict:
    """Write every export into `out`; return leaderboard.json's content."""
    if not source.is_dir():
        raise SystemExit(f"evalkit.leaderboard: error: {source} is not a folder of runs")
    collected = collect(source, skip=out)
    rows = collected["rows"]
    board = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
             "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "source": str(source), **collected}
    flat = table_rows(rows)
    write_json(out / "leaderboard.json", board)
    write_atomic(out / "leaderboard.md", lambda stream: stream.write(markdown(flat)))
    write_csv(out / "leaderboard.csv", flat)
    by_model = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    for model, model_rows in by_model.items():
        write_json(out / "lm_eval" / f"{slug(model)}.json", lm_eval_results(model_rows))
    plots = stride_plots(rows, out / "plots")
    summary = (f"{len(rows)} rows from {source}; {len(collected['skipped'])} files skipped, "
               f"{len(collected['superseded'])} older duplicate runs left out")
    write_atomic(out / "index.html", lambda stream: stream.write(page(flat, plots, summary)))
    print(f"evalkit.leaderboard: {summary}; written to {out}")
    return board


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evalkit-leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path, help="folder searched for results.json files (e.g. outputs/)")
    parser.add_argument("-o", "--out", type=Path, help="where the exports go (default: OUTPUTS/leaderboard)")
    args = parser.parse_args(argv)
    build(args.outputs, args.out or args.outputs / "leaderboard")


if __name__ == "__main__":
    main()
