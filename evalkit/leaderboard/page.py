"""The leaderboard's one self-contained page (no server, no network fetches): the models x tasks grid of headline
metrics with intervals and directions, then per task a comparison chart, its sweep plots and a table of its runs
(units in the headers, sortable by any column, each row linking to its run folder). Filters: task, model name, and
whether partial runs (a `limit`) enter the grid."""

from __future__ import annotations

import base64
import html
import json
import os
from importlib import resources
from pathlib import Path

from evalkit.leaderboard.grid import cells


def static(name: str) -> str:
    """One of the page's own files (static/page.css, page.js: package data), to be inlined: the page fetches
    nothing."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def page(rows: list[dict], views: list[dict], grids: dict, pictures: dict, summary: str, out: Path) -> str:
    """The page; `pictures`: task -> [(title, PNG path)] (its comparison chart first); links are relative to `out`,
    where the page will be."""
    data = {"views": views, "grid": grids, "rows": [page_row(index, row, out) for index, row in enumerate(rows)]}
    options = "".join(f'<option value="{html.escape(v["task"])}">{html.escape(v["task"])}</option>' for v in views)
    sections = "\n".join(task_section(view, pictures.get(view["task"], []), grids["full"]["compared"])
                         for view in views)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>evalkit leaderboard</title><style>
{static('page.css')}</style></head>
<body>
<h1>evalkit leaderboard</h1>
<p class="summary">{html.escape(summary)}</p>
<div class="controls">
<label>Task <select id="task-filter"><option value="">all tasks</option>{options}</select></label>
<label>Model <input id="model-filter" type="search" placeholder="part of a name"></label>
<label><input id="show-partial" type="checkbox"> partial runs (limit=N) in the grid</label>
</div>
<h2>Models &times; tasks</h2>
<p class="note">Each cell is the task's headline metric (&uarr; higher is better, &darr; lower is better) with its 95%
interval; the best of a column is highlighted. A cell marked * was run with other settings than the rest of its
column (hover for them). Click a value for its run; partial runs stay out unless the box above is ticked.</p>
<div class="scroll"><table id="grid"><thead></thead><tbody></tbody></table></div>
{sections}
<script id="board-data" type="application/json">{script_json(data)}</script>
<script>
{static('page.js')}</script>
</body></html>
"""


def page_row(index: int, row: dict, out: Path) -> dict:
    settings = " ".join(f"{key}={value}" for key, value in row["settings"].items())
    return {"id": index, "task": row["task"], "partial": row["partial"], "cells": cells(row), "settings_text": settings,
            "folder": link(Path(row["run_dir"]), out) + "/", "results": link(Path(row["results_path"]), out)}


def link(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path.absolute(), out.absolute())).as_posix()


def task_section(view: dict, pictures: list[tuple[str, Path]], compared: dict) -> str:
    task = html.escape(view["task"])
    settings = " ".join(f"{key}={value}" for key, value in compared.get(view["task"], {}).items()
                        if value is not None)
    images = "".join(f'<img alt="{html.escape(title)}" title="{html.escape(title)}" '
                     f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
                     for title, path in pictures)
    headers = "".join(f'<th data-key="{html.escape(c["key"])}">{html.escape(c["header"])}</th>'
                      for c in view["columns"])
    return f"""<section class="task" data-task="{task}" id="task-{task}">
<h2>{task}: {html.escape(view["metric"])} {view["arrow"]}</h2>
<p class="note">{html.escape(view["evaluator"])} evaluator; the grid compares runs with {html.escape(settings or
                                                                                            "the same settings")}</p>
<div class="charts">{images}</div>
<div class="scroll"><table class="runs" data-task="{task}"><thead><tr>{headers}<th>run</th></tr></thead>
<tbody></tbody></table></div>
</section>"""


def script_json(value) -> str:
    """JSON to embed in a <script>: no character that could end or comment out the script (<, >, & escaped), and
    no bare NaN (which JSON.parse refuses)."""
    text = json.dumps(value, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
