"""The leaderboard's one self-contained page (no server, no network fetches): the models x tasks grid of headline
metrics with intervals and directions, then per task a comparison chart, the stride plots and a table of its runs
(units in the headers, sortable by any column, each row linking to its run folder). Filters: task, model name, and
whether partial runs (a `limit`) enter the grid."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from evalkit.leaderboard.grid import cells

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em 2em; color: #1d2330; background: #fbfbfd; }
h1 { margin: 0 0 .2em; } h2 { margin: 1.6em 0 .4em; border-bottom: 2px solid #dde3ee; padding-bottom: .2em; }
.summary, .note { color: #5a6275; margin: .3em 0; }
.controls { display: flex; gap: 1.5em; align-items: center; padding: .7em 1em; background: #eef2f8;
            border-radius: 6px; position: sticky; top: 0; z-index: 1; }
table { border-collapse: collapse; margin: .8em 0; background: white; }
th, td { border-bottom: 1px solid #e3e7ef; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #f2f4f8; user-select: none; white-space: nowrap; }
table.runs th { cursor: pointer; }
th[data-order=ascending]::after { content: " \\25B2"; } th[data-order=descending]::after { content: " \\25BC"; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
#grid td.cell { text-align: right; font-variant-numeric: tabular-nums; min-width: 8em; }
#grid td.cell a { color: inherit; text-decoration: none; }
#grid td.best { font-weight: 700; background: #e6f4ea; }
#grid td.other { color: #8a8f99; }
small.interval { display: block; color: #6b7280; font-weight: 400; }
.badge { font-size: 11px; background: #fff4d6; color: #7a5a00; border-radius: 3px; padding: 0 4px; margin-left: 4px; }
tr:target { background: #fff8c4; }
.scroll { overflow-x: auto; max-width: 100%; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.charts img { max-width: 100%; border: 1px solid #e3e7ef; background: white; }
"""

SCRIPT = """
const data = JSON.parse(document.getElementById("board-data").textContent);
const views = Object.fromEntries(data.views.map(v => [v.task, v]));
const taskFilter = document.getElementById("task-filter");
const modelFilter = document.getElementById("model-filter");
const showPartial = document.getElementById("show-partial");
const sorting = {};
function show(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return "[" + value.map(show).join(", ") + "]";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return Math.abs(value) < 1e5 ? value.toFixed(4) : value.toPrecision(4);
  }
  return String(value);
}
function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, {numeric: true});
}
function modelShown(label) {
  const wanted = modelFilter.value.trim().toLowerCase();
  return !wanted || label.toLowerCase().includes(wanted);
}
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}
function gridCell(cell, view, best) {
  const td = element("td", undefined, "cell");
  if (!cell) return td;
  const link = element("a", show(cell.value));
  link.href = "#run-" + cell.row;
  td.appendChild(link);
  if (cell.interval) td.appendChild(element("small", show(cell.interval), "interval"));
  if (!cell.same_settings) {
    td.classList.add("other");
    link.textContent += " *";
    td.title = "run with other settings: " + data.rows[cell.row].settings_text;
  } else if (cell.value === best) td.classList.add("best");
  if (cell.partial) td.appendChild(element("span", "partial", "badge"));
  return td;
}
function renderGrid() {
  const grid = showPartial.checked ? data.grid.all : data.grid.full;
  const tasks = grid.tasks.filter(t => !taskFilter.value || t === taskFilter.value);
  const models = grid.models.filter(m => modelShown(m) && tasks.some(t => grid.cells[m][t]));
  const head = element("tr");
  head.appendChild(element("th", "model"));
  for (const task of tasks) {
    const th = element("th");
    const link = element("a", task);
    link.href = "#task-" + task;
    th.append(link, element("small", `${views[task].metric} ${views[task].arrow}`, "interval"));
    head.appendChild(th);
  }
  document.querySelector("#grid thead").replaceChildren(head);
  const best = {};
  for (const task of tasks) {
    const values = models.map(m => grid.cells[m][task]).filter(c => c && c.same_settings).map(c => c.value);
    if (values.length) best[task] = views[task].higher_is_better ? Math.max(...values) : Math.min(...values);
  }
  if (!models.length) {
    const note = element("td", showPartial.checked ? "No runs match the filters." :
      "No full runs to show; runs made with limit=N (partial) appear when the box above is ticked.");
    note.colSpan = tasks.length + 1;
    const tr = element("tr");
    tr.appendChild(note);
    document.querySelector("#grid tbody").replaceChildren(tr);
    return;
  }
  document.querySelector("#grid tbody").replaceChildren(...models.map(model => {
    const tr = element("tr");
    tr.appendChild(element("td", model));
    for (const task of tasks) tr.appendChild(gridCell(grid.cells[model][task], views[task], best[task]));
    return tr;
  }));
}
function runRow(row, view) {
  const tr = element("tr");
  tr.id = "run-" + row.id;
  for (const column of view.columns) {
    const td = element("td", show(row.cells[column.key]), column.numeric ? "number" : "");
    if (column.key === "label" && row.partial) td.appendChild(element("span", "partial", "badge"));
    tr.appendChild(td);
  }
  const td = element("td");
  for (const [text, href] of [["folder", row.folder], ["results.json", row.results]]) {
    const link = element("a", text);
    link.href = href;
    td.append(link, " ");
  }
  tr.appendChild(td);
  return tr;
}
function renderTables() {
  for (const section of document.querySelectorAll("section.task")) {
    const task = section.dataset.task, view = views[task];
    section.hidden = Boolean(taskFilter.value) && taskFilter.value !== task;
    let rows = data.rows.filter(r => r.task === task && modelShown(r.cells.label));
    const order = sorting[task];
    if (order) rows = rows.slice().sort((a, b) => (order.ascending ? 1 : -1) * compare(a.cells[order.key], b.cells[order.key]));
    section.querySelector("tbody").replaceChildren(...rows.map(r => runRow(r, view)));
  }
}
function render() { renderGrid(); renderTables(); }
for (const th of document.querySelectorAll("table.runs th[data-key]")) {
  th.addEventListener("click", () => {
    const task = th.closest("table").dataset.task, key = th.dataset.key;
    const ascending = sorting[task] && sorting[task].key === key ? !sorting[task].ascending : true;
    sorting[task] = {key, ascending};
    th.closest("tr").querySelectorAll("th").forEach(h => h.removeAttribute("data-order"));
    th.dataset.order = ascending ? "ascending" : "descending";
    renderTables();
  });
}
for (const control of [taskFilter, showPartial]) control.addEventListener("change", render);
modelFilter.addEventListener("input", render);
render();
"""


def page(rows: list[dict], views: list[dict], grids: dict, pictures: dict, summary: str, out: Path) -> str:
    """The page; `pictures`: task -> [(title, PNG path)] (its comparison chart first); links are relative to `out`,
    where the page will be."""
    data = {"views": views, "grid": grids, "rows": [page_row(index, row, out) for index, row in enumerate(rows)]}
    options = "".join(f'<option value="{html.escape(v["task"])}">{html.escape(v["task"])}</option>' for v in views)
    sections = "\n".join(task_section(view, pictures.get(view["task"], []), grids["full"]["compared"])
                         for view in views)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>evalkit leaderboard</title><style>{STYLE}</style></head>
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
<table id="grid"><thead></thead><tbody></tbody></table>
{sections}
<script id="board-data" type="application/json">{script_json(data)}</script>
<script>{SCRIPT}</script>
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
