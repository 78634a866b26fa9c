"""The leaderboard's one self-contained page (no server, no network fetches): the table, sortable by any column and
filterable by task, with the plots embedded."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evalkit leaderboard</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ cursor: pointer; background: #f4f4f4; user-select: none; }}
th[data-order=ascending]::after {{ content: " \\25B2"; }}
th[data-order=descending]::after {{ content: " \\25BC"; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head>
<body>
<h1>evalkit leaderboard</h1>
<p>{summary}</p>
<label>Task: <select id="task-filter"><option value="">all tasks</option>{task_options}</select></label>
<table id="board"><thead><tr>{headers}</tr></thead><tbody></tbody></table>
{plots}
<script id="rows" type="application/json">{rows_json}</script>
<script>
const columns = {columns_json};
const rows = JSON.parse(document.getElementById("rows").textContent);
const body = document.querySelector("#board tbody");
const filter = document.getElementById("task-filter");
let sortColumn = null, ascending = true;
function show(value) {{
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Math.abs(value) < 1e5 ? value.toFixed(4) : value.toPrecision(4);
  return String(value);
}}
function compare(a, b) {{
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, {{numeric: true}});
}}
function render() {{
  let shown = rows.filter(r => !filter.value || r.task === filter.value);
  if (sortColumn !== null) {{
    shown = shown.slice().sort((a, b) => (ascending ? 1 : -1) * compare(a[sortColumn], b[sortColumn]));
  }}
  body.replaceChildren(...shown.map(r => {{
    const tr = document.createElement("tr");
    for (const c of columns) {{
      const td = document.createElement("td");
      td.textContent = show(r[c]);
      if (typeof r[c] === "number") td.className = "number";
      tr.appendChild(td);
    }}
    return tr;
  }}));
}}
document.querySelectorAll("#board th").forEach(th => th.addEventListener("click", () => {{
  const column = th.dataset.column;
  ascending = sortColumn === column ? !ascending : true;
  sortColumn = column;
  document.querySelectorAll("#board th").forEach(h => h.removeAttribute("data-order"));
  th.dataset.order = ascending ? "ascending" : "descending";
  render();
}}));
filter.addEventListener("change", render);
render();
</script>
</body></html>
"""


def page(flat: list[dict], plots: dict[str, Path], summary: str) -> str:
    columns = list(flat[0]) if flat else ["model", "task", "metric", "value"]
    tasks = sorted({r["task"] for r in flat})
    images = "\n".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        for title, path in plots.items()
    )
    return PAGE.format(
        summary=html.escape(summary),
        task_options="".join(f'<option value="{html.escape(t)}">{html.escape(t)}</option>' for t in tasks),
        headers="".join(f'<th data-column="{html.escape(c)}">{html.escape(c)}</th>' for c in columns),
        plots=images,
        rows_json=json.dumps(flat, default=str).replace("</", "<\\/"),
        columns_json=json.dumps(columns),
    )
