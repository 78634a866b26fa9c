"""Collect every results.json below a folder into a leaderboard: tables, lm-evaluation-harness results, charts and
one static HTML page.

    python -m evalkit.leaderboard outputs/ [-o outputs/leaderboard]     (also: evalkit-leaderboard)

Writes into the output folder:
- leaderboard.json: {"schema": "evalkit-leaderboard", "schema_version": 1, "generated_at", "source", "summary",
  "rows": [...], "skipped": [{"path", "reason"}], "superseded": [{"path", "kept"}], "grid"}. A row is one (model,
  task, settings): "model", "label" (the model with its variant: quantization, dtype), "task", "evaluator",
  "settings" (every evaluation setting of the run, flattened with dots), "partial" (a `limit` left data out), "compared"
  (the settings that change its numbers), "varying" (the settings that differ between the rows of its task),
  "metric" (the headline one), "value", "interval" ([low, high] 95% bootstrap, or null), "higher_is_better",
  "metrics" (every scalar metric), "timing", "rate" and "rate_unit", "started_at", "run_dir", "results_path", and
  "provenance" (model, data, versions, git commit, hardware). "grid": the models x tasks view of full runs
  ("models", "tasks", "cells" label -> task -> {"row", "value", "interval", "partial", "same_settings"},
  "compared" task -> the settings its cells share).
- leaderboard.md and leaderboard.csv: the rows as tables;
- lm_eval/<model>.json: the rows of one model (variant) in lm-evaluation-harness's results layout ("results",
  "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config");
- plots/compare__<task>.png: the models' headline values with intervals; plots/<model>__<task>.png: the headline
  metric and the throughput against a setting its evaluator marks as plotted, where a model was run at several of
  its values;
- index.html: one self-contained page (no server, no network): the models x tasks grid, then per task its charts
  and a sortable table of its runs linking to their folders; filters by task, model and partial runs.

Unreadable or foreign JSON is skipped with a warning and counted; when one (model, task, settings) was run more
than once, the newest run is kept and the others are listed as superseded.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections import defaultdict
from pathlib import Path

from evalkit import evaluators
from evalkit.config.settings import is_number
from evalkit.errors import EvalkitError
from evalkit.files import write_atomic, write_json
from evalkit.hashing import canonical_json
from evalkit.leaderboard.folder import check_output, replace_folder
from evalkit.leaderboard.grid import (
    evaluator_keys,
    grid,
    natural_order,
    rows_by_task,
    task_views,
    variant_label,
    varying_settings,
)
from evalkit.leaderboard.lm_eval_export import lm_eval_names, lm_eval_results
from evalkit.leaderboard.page import page
from evalkit.leaderboard.plots import comparison_charts, sweep_plots
from evalkit.leaderboard.runs import headline_interval, read_results
from evalkit.leaderboard.tables import markdown, table_rows, write_csv

SCHEMA, SCHEMA_VERSION = "evalkit-leaderboard", 1


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


def compared_settings(record: dict) -> dict:
    """The run's evaluator settings that change its numbers (not those that only add figures)."""
    not_compared = evaluator_keys(record["evaluator"], compared=False)
    return {k: v for k, v in (record["settings"].get(record["evaluator"]) or {}).items() if k not in not_compared}


def make_row(record: dict, path: Path, interval: list | None) -> dict:
    """One row: the run's settings (those its evaluator reads, with the loading and run settings; the scopes' keys
    are distinct, so they are shown without the scope), its headline metric from the evaluator's catalogue."""
    settings = flatten({key: value for scope in record["settings"].values() for key, value in scope.items()})
    evaluator = evaluators.get(record["evaluator"])
    headline = evaluator.headline()
    metric, higher_is_better = headline.name, headline.higher_is_better
    metrics = record["metrics"]
    model = record["model"]
    name = model.get("name") or model.get("location")
    scopes = record["settings"]
    timing = {k: v for k, v in (record.get("timing") or {}).items() if is_number(v)}
    return {
        "model": name,
        "label": variant_label(name, scopes.get("loading") or {}),
        "task": record["task"],
        "evaluator": record["evaluator"],
        "settings": settings,
        "partial": limit_cut(record),
        "compared": {"limit": (scopes.get("run") or {}).get("limit"), **compared_settings(record)},
        "identity": canonical_json([record["config"].get("model"), record["config"].get("task"), settings]),
        "metric": metric,
        "value": metrics.get(metric),
        "interval": interval,
        "higher_is_better": higher_is_better,
        "metrics": {k: v for k, v in metrics.items() if is_number(v)},
        "timing": timing,
        "rate": timing.get(f"{evaluator.throughput}_per_second"),
        "rate_unit": f"{evaluator.throughput}/s",
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


def limit_cut(record: dict) -> bool:
    """Whether a `limit` left data out: a run whose limit exceeds its data is whole (results.json's data.limit.cut;
    older results, without it, count as cut)."""
    if (record["settings"].get("run") or {}).get("limit") is None:
        return False
    limit = (record.get("data") or {}).get("limit")
    return not isinstance(limit, dict) or limit.get("cut") is not False


def newest_first(row: dict) -> tuple:
    """Newest run first; a fresh computation before a cache copy of the same moment."""
    cache = row["provenance"]["cache"] if isinstance(row["provenance"]["cache"], dict) else {}
    return (row["started_at"] or "", not cache.get("cache_hit", False), row["results_path"])


def collect(source: Path, skip: Path | None = None) -> dict:
    """Rows (deduplicated, newest kept), skipped files with reasons, and superseded runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    skipped = []
    for path in sorted(source.rglob("results.json")):
        folder = path.parent.resolve()
        if (skip and (skip == folder or skip in folder.parents)) or (path.parent / "key.json").is_file():
            continue  # this export's own folder; a result-cache entry (a copy of a run, not a run)
        record, reason = read_results(path)
        if record is None:
            warn(f"skipped {path}: {reason}")
            skipped.append({"path": str(path), "reason": reason})
            continue
        interval, problem = headline_interval(record)
        if problem:
            warn(f"{path}: {problem}; shown without an interval")
        row = make_row(record, path, interval)
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
    name_data_files(rows)
    for task_rows in rows_by_task(rows).values():
        varying = varying_settings(task_rows)
        for row in task_rows:
            row["varying"] = {key: row["settings"].get(key) for key in varying}
    rows.sort(key=lambda r: (r["task"], r["model"], natural_order(r["varying"])))
    return {"rows": rows, "skipped": skipped, "superseded": superseded}


def data_origin(row: dict) -> str | None:
    data = row["provenance"]["data"]
    origin = data.get("origin") if isinstance(data, dict) else None
    return origin if isinstance(origin, str) else None


def name_data_files(rows: list[dict]) -> None:
    """A task run on several data files (task.path) shows which file each row scored, as `text (a.txt)`: its rows
    are then separate columns of the grid and separate tables, never one task's figures mixed."""
    for task, task_rows in rows_by_task(rows).items():
        origins = sorted({data_origin(row) or "" for row in task_rows})
        if len(origins) < 2:
            continue
        names = {origin: Path(origin).name or origin or "unknown data" for origin in origins}
        if len(set(names.values())) < len(origins):  # files of one name in different folders
            names = {origin: origin or "unknown data" for origin in origins}
        for row in task_rows:
            row["task"] = f"{task} ({names[data_origin(row) or '']})"


def build(source: Path, out: Path) -> dict:
    """Write every export into `out`, all or nothing (into a fresh folder that then replaces `out`, which must be
    new, empty or the leaderboard's own); return leaderboard.json's content."""
    if not source.is_dir():
        fail(f"{source} is not a folder of runs")
    try:
        check_output(source, out)
    except EvalkitError as error:
        fail(str(error))
    collected = collect(source, skip=out.resolve())
    board = {}
    try:
        replace_folder(out, lambda staging: board.update(export(source, staging, collected, final=out)))
    except OSError as error:
        fail(f"cannot write the exports into {out} ({error.strerror or error}); nothing was changed there")
    print(f"evalkit.leaderboard: {board['summary']}; written to {out}")
    return board


def fail(message: str) -> None:
    print(f"evalkit.leaderboard: error: {message}", file=sys.stderr)
    sys.exit(2)


def finite(value):
    """`value` with every NaN or infinity made null: strict JSON, whatever the runs held."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [finite(inner) for inner in value]
    return value


def export(source: Path, out: Path, collected: dict, final: Path) -> dict:
    """Every export into `out`; the page's links to the runs are relative to `final`, where `out` will be."""
    collected = finite(collected)
    rows = collected["rows"]
    summary = (f"{len(rows)} rows from {source}; {len(collected['skipped'])} files skipped, "
               f"{len(collected['superseded'])} older duplicate runs left out")
    views = task_views(rows)
    grids = {"full": grid(rows, include_partial=False), "all": grid(rows, include_partial=True)}
    board = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
             "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "source": str(source), "summary": summary, **collected, "grid": grids["full"]}
    flat = table_rows(rows)
    write_json(out / "leaderboard.json", board)
    write_atomic(out / "leaderboard.md", lambda stream: stream.write(markdown(flat)))
    write_csv(out / "leaderboard.csv", flat)
    by_model = defaultdict(list)
    for row in rows:
        by_model[row["label"]].append(row)
    names = lm_eval_names(list(by_model))
    for model, model_rows in by_model.items():
        write_json(out / "lm_eval" / f"{names[model]}.json", lm_eval_results(model_rows))
    pictures = defaultdict(list)
    for task, chart in comparison_charts(grids["full"], views, out / "plots").items():
        pictures[task].append((f"{task}: models compared", chart))
    for task, title, plot in sweep_plots(rows, out / "plots"):
        pictures[task].append((title, plot))
    text = page(rows, views, grids, pictures, summary, final)
    write_atomic(out / "index.html", lambda stream: stream.write(text))
    return board


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evalkit-leaderboard", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("outputs", type=Path, help="folder searched for results.json files (e.g. outputs/)")
    parser.add_argument("-o", "--out", type=Path, help="where the exports go (default: OUTPUTS/leaderboard)")
    args = parser.parse_args(argv)
    build(args.outputs, args.out or args.outputs / "leaderboard")


