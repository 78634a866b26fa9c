"""The leaderboard's pictures (PNG, embedded in the page and kept beside it): per task, the models' headline values
with their 95% intervals; per model and task run at several values of a swept setting (one its evaluator marks as
plotted), the headline metric and the throughput against it."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

from evalkit.config.settings import is_number
from evalkit.files import write_atomic
from evalkit.hashing import canonical_json
from evalkit.leaderboard.grid import VARIANT_KEYS, evaluator_keys
from evalkit.leaderboard.lm_eval_export import file_stem


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, folder: Path, name: str, taken: set[str]) -> Path:
    while name in taken:
        name = name.removesuffix(".png") + "_.png"
    taken.add(name)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot().close(figure)
    write_atomic(folder / name, lambda stream: stream.write(buffer.getvalue()), binary=True)
    return folder / name


LABEL_CHARACTERS = 40  # of a model's name on a chart's axis; the page's tables show it whole


def shorten(label: str) -> str:
    return label if len(label) <= LABEL_CHARACTERS else label[:LABEL_CHARACTERS - 1] + "\u2026"


def value_limits(cells: list[dict]) -> tuple[float, float]:
    """The value axis of a comparison chart: every value and interval with a margin of a tenth of their spread; for
    a single value without interval, 5% of its size on each side (matplotlib's own default there is +-0.04, which
    shows a perplexity of 48,000 as a dot on an axis of two labels)."""
    ends = [end for cell in cells for end in [*(cell["interval"] or ()), cell["value"]]]
    low, high = min(ends), max(ends)
    margin = (high - low) / 10 or abs(high) / 20 or 1.0
    return low - margin, high + margin


def comparison_charts(grid: dict, views: list[dict], folder: Path) -> dict[str, Path]:
    """Per task of the grid: one dot per model with its interval bar, best at the top."""
    plt, charts, taken = pyplot(), {}, set()
    for view in views:
        task = view["task"]
        cells = [(label, grid["cells"][label][task]) for label in grid["models"] if task in grid["cells"][label]]
        if not cells:
            continue
        cells.sort(key=lambda item: item[1]["value"], reverse=not view["higher_is_better"])
        longest = max(len(shorten(label)) for label, _ in cells)  # the axis labels need their width
        figure, axis = plt.subplots(figsize=(4.5 + 0.1 * longest, 0.45 * len(cells) + 1.3))
        for position, (_, cell) in enumerate(cells):
            low, high = cell["interval"] or (cell["value"], cell["value"])
            below, above = max(0.0, cell["value"] - low), max(0.0, high - cell["value"])  # rounding: never < 0
            axis.errorbar(cell["value"], position, xerr=[[below], [above]], fmt="o",
                          color="#1f5fa8" if cell["same_settings"] else "#999999", capsize=4)
        axis.set_yticks(range(len(cells)), [shorten(label) for label, _ in cells])
        axis.set_xlim(*value_limits([cell for _, cell in cells]))
        better = "higher" if view["higher_is_better"] else "lower"
        axis.set(xlabel=f"{view['metric']}{' (' + view['unit'] + ')' if view['unit'] else ''}, {better} is better"
                 "\nbars: 95% interval", title=task)
        axis.xaxis.set_major_locator(plt.MaxNLocator(5))  # a few ticks: a narrow axis of 5-digit values stays legible
        axis.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        charts[task] = save(figure, folder, f"compare__{file_stem(task)}.png", taken)
    return charts


def sweep_plots(rows: list[dict], folder: Path) -> list[tuple[str, str, Path]]:
    """(task, title, PNG) per (model, task, other settings) run at 2+ values of a setting its evaluator marks as
    plotted: the headline metric and the throughput against that setting."""
    plt, taken = pyplot(), set()
    sweeps = defaultdict(list)
    for row in rows:
        for key in evaluator_keys(row["evaluator"], plotted=True):
            if row["value"] is not None and is_number(row["settings"].get(key)):
                rest = {k: v for k, v in row["settings"].items() if k != key}
                sweeps[(key, row["label"], row["task"], canonical_json(rest))].append(row)
    plots = []
    for (key, model, task, _), sweep in sweeps.items():
        if len({r["settings"][key] for r in sweep}) < 2:
            continue
        sweep.sort(key=lambda r: r["settings"][key])
        values = [r["settings"][key] for r in sweep]
        left_out = (key, *VARIANT_KEYS, *evaluator_keys(sweep[0]["evaluator"], compared=False))
        fixed = " ".join(f"{k}={v}" for k, v in sweep[0]["varying"].items() if k not in left_out and v is not None)
        title = f"{model} on {task}" + (f" ({fixed})" if fixed else "")
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        figure.suptitle(title)
        left.plot(values, [r["value"] for r in sweep], marker="o")
        left.set(ylabel=sweep[0]["metric"])
        right.plot(values, [r["rate"] or math.nan for r in sweep], marker="o")
        right.set(ylabel=sweep[0]["rate_unit"])
        for axis in (left, right):
            axis.set(xscale="log" if min(values) > 0 else "linear", xlabel=key)
            axis.set_xticks(values, [str(value) for value in values])
            axis.minorticks_off()
            axis.grid(alpha=0.3)
        figure.tight_layout()
        plots.append((task, title, save(figure, folder, f"{file_stem(model)}__{file_stem(task)}.png", taken)))
    return plots
