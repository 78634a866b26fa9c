"""The leaderboard's stride plots and its one self-contained page (no server, no network fetches): the table, sortable by any column and
filterable by task, with the plots embedded."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path

from evalkit.lm_eval_format import slug
from evalkit.results import canonical_json, write_atomic

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
        rows_json=script_json(flat),
        columns_json=script_json(columns),
    )


def script_json(value) -> str:
    """JSON to embed in a <script>: no character that could end or comment out the script (<, >, & escaped), and
    no bare NaN (which JSON.parse refuses)."""
    text = json.dumps(value, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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
