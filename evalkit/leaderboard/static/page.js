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
