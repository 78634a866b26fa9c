"""The leaderboard's rows as flat tables: leaderboard.md and leaderboard.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from evalkit.files import write_atomic
from evalkit.leaderboard.lm_eval_export import settings_label


def table_rows(rows: list[dict]) -> list[dict]:
    """The flat view shown in the .md/.csv/.html tables."""
    return [{
        "model": row["label"], "task": row["task"], "settings": settings_label(row), "metric": row["metric"],
        "value": row["value"],
        "ci95_low": row["interval"][0] if row["interval"] else None,
        "ci95_high": row["interval"][1] if row["interval"] else None,
        "partial": row["partial"], "throughput": row["rate"], "throughput_unit": row["rate_unit"],
        "eval_seconds": row["timing"].get("eval_seconds"), "started_at": row["started_at"], "run_dir": row["run_dir"],
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
