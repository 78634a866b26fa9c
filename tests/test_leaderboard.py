"""The leaderboard over real runs: tables, lm-evaluation-harness results, plots, and the page in a real browser."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import SHARED_DATA, WIKITEXT, api_keys

import evalkit

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """A tree of real runs: full runs of a tiny GPT-2 on a small text, a 2-stride sweep run twice (the second, forced,
    is newer) and a torchao-int8 variant against it as reference; a partial (limit=30) zero-shot classification run;
    a corrupt results.json and a foreign one; the result cache inside it too (not runs)."""
    root = tmp_path_factory.mktemp("outputs")
    text = root / "small.txt"
    text.write_text(WIKITEXT.read_text(encoding="utf-8")[:2500], encoding="utf-8")
    tiny = api_keys([f"model.name_or_path={tiny_gpt2_dir}", "model.name=tiny-gpt2", "task=text", f"task.path={text}",
                     "max_length=64"])
    cache = str(root / "cache")
    # in-process through the Python API (the CLI's runner; its sweeps are tested in test_runs.py)
    for sweep, extra in (("sweep-old", {}), ("sweep-new", {"force": True})):
        for job, stride in enumerate((16, 32)):
            evalkit.evaluate(**tiny, stride=stride, **extra, cache_dir=cache, out_dir=root / sweep / str(job))
    evalkit.evaluate(**tiny, stride=32, quantization="torchao-int8", reference_model=str(tiny_gpt2_dir),
                     cache_dir=cache, out_dir=root / "int8")
    evalkit.evaluate(model="minilm-l6-v2", task="sst2", method="embedding", data_dir=str(SHARED_DATA), limit=30,
                     cache_dir=None, out_dir=root / "sst2")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "results.json").write_text('{"schema_version": 1, "metrics": {')
    (root / "foreign").mkdir()
    (root / "foreign" / "results.json").write_text(json.dumps({"results": {"wikitext": {}}}))
    return root


@pytest.fixture(scope="module")
def board(outputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("board")
    done = subprocess.run([sys.executable, "-m", "evalkit.leaderboard", str(outputs), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "kept the newest" in done.stderr
    return out


def test_rows_dedup_and_skips(board, outputs):
    data = json.loads((board / "leaderboard.json").read_text())
    assert data["schema"] == "evalkit-leaderboard" and data["schema_version"] == 1
    rows = data["rows"]
    assert sorted((r["task"], r["label"], r["settings"].get("stride"), r["partial"]) for r in rows) == [
        ("sst2", "minilm-l6-v2", None, True), ("text", "tiny-gpt2", 16, False), ("text", "tiny-gpt2", 32, False),
        ("text", "tiny-gpt2 (torchao-int8)", 32, False)]
    assert sorted(Path(s["path"]).parent.name for s in data["skipped"]) == ["corrupt", "foreign"]
    assert len(data["superseded"]) == 2  # the older sweep's two runs; cache entries are no runs
    assert list((outputs / "cache").glob("*/results.json"))
    listed = [r["results_path"] for r in rows] + [s["path"] for s in data["superseded"]]
    assert not any("/cache/" in path for path in listed)
    assert all("sweep-old" in s["path"] and "sweep-new" in s["kept"] for s in data["superseded"])
    assert all("sweep-new" in r["run_dir"] for r in rows if r["label"] == "tiny-gpt2")
    accuracy = next(r for r in rows if r["task"] == "sst2")
    assert accuracy["metric"] == "accuracy" and accuracy["higher_is_better"]
    for row in rows:
        low, high = row["interval"]
        assert low <= row["value"] <= high
    assert accuracy["provenance"]["model"]["weights_sha256"] and accuracy["provenance"]["data"]["sha256"]
    perplexity = next(r for r in rows if r["task"] == "text")
    assert perplexity["metric"] == "perplexity" and perplexity["value"] == perplexity["metrics"]["perplexity"]
    assert perplexity["varying"]["stride"] == perplexity["settings"]["stride"]


def test_grid_compares_like_with_like_and_leaves_partial_runs_out(board):
    data = json.loads((board / "leaderboard.json").read_text())
    rows, grid = data["rows"], data["grid"]
    assert grid["tasks"] == ["text"] and grid["models"] == ["tiny-gpt2", "tiny-gpt2 (torchao-int8)"]
    assert grid["compared"]["text"]["stride"] == 32  # run by both models (reference_model adds figures only)
    for label, cell in ((label, grid["cells"][label]["text"]) for label in grid["models"]):
        row = rows[cell["row"]]
        assert row["label"] == label and row["settings"]["stride"] == 32 and cell["same_settings"]
        assert cell["value"] == row["value"] and cell["interval"] == row["interval"]
    from evalkit.leaderboard.grid import grid as make_grid

    everything = make_grid(rows, include_partial=True)
    assert everything["tasks"] == ["sst2", "text"] and everything["cells"]["minilm-l6-v2"]["sst2"]["partial"]


def test_tables(board):
    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    with open(board / "leaderboard.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [float(r["value"]) for r in table] == pytest.approx([r["value"] for r in rows])
    assert {(r["throughput_unit"], r["partial"]) for r in table} == {("tokens/s", "False"), ("examples/s", "True")}
    markdown = (board / "leaderboard.md").read_text().splitlines()
    assert markdown[0].startswith("| model | task |") and len(markdown) == 2 + len(rows)


def test_lm_eval_harness_layout(board):
    tiny = json.loads((board / "lm_eval" / "tiny-gpt2.json").read_text())
    assert {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"} <= set(tiny)
    assert sorted(tiny["results"]) == sorted(tiny["configs"])
    assert len(tiny["results"]) == 2
    for alias, result in tiny["results"].items():
        assert result["alias"] == alias and "word_perplexity,none" in result and "bits_per_byte,none" in result
        assert tiny["higher_is_better"][alias] == {"perplexity": False}
    (int8_file,) = (board / "lm_eval").glob("tiny-gpt2_torchao-int8*.json")  # a variant is its own model file
    assert json.loads(int8_file.read_text())["config"]["model_args"].endswith(",quantization=torchao-int8")
    sst2 = json.loads((board / "lm_eval" / "minilm-l6-v2.json").read_text())
    result = sst2["results"]["sst2"]
    assert 0 <= result["acc,none"] <= 1 and result["acc_stderr,none"] > 0
    assert sst2["n-samples"]["sst2"] == {"original": 30, "effective": 30}


def test_plots_and_self_contained_page(board):
    plots = sorted(plot.name for plot in (board / "plots").glob("*.png"))
    assert plots == ["compare__text.png", "tiny-gpt2__text.png"]  # the comparison chart; the one stride sweep
    assert all((board / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in plots)
    page = (board / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched


def test_console_script(outputs, tmp_path):
    script = shutil.which("evalkit-leaderboard", path=str(Path(sys.executable).parent))
    assert script, "the evalkit-leaderboard console script is not installed (pip install -e .)"
    done = subprocess.run([script, str(outputs), "-o", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "leaderboard.json").read_text())["rows"]) == 4


def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="LOUD SKIP: selenium is not installed")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("LOUD SKIP: headless Chromium is absent (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_page_in_headless_chromium(board, tmp_path):
    """The grid (partial runs out until asked for, best cell marked, values linking to their runs), the per-task
    tables (units and directions in the headers, the quantized run's KL columns, sorting both ways), the filters, and
    links that reach each run's folder and results.json. A screenshot is kept as leaderboard.png for a person."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    data = json.loads((board / "leaderboard.json").read_text())
    rows = data["rows"]
    driver = browser()
    try:
        driver.set_window_size(1400, 1800)
        driver.get((board / "index.html").as_uri())
        texts = lambda selector: [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]

        assert texts("#grid thead th")[0] == "model" and texts("#grid thead th a") == ["text"]
        assert texts("#grid tbody tr td:first-child") == ["tiny-gpt2", "tiny-gpt2 (torchao-int8)"]
        best = min(data["grid"]["cells"][m]["text"]["value"] for m in data["grid"]["models"])
        (marked,) = driver.find_elements(By.CSS_SELECTOR, "#grid td.best")
        assert marked.find_element(By.TAG_NAME, "a").text == f"{best:.4f}" and "[" in marked.text
        driver.find_element(By.ID, "show-partial").click()
        assert texts("#grid thead th a") == ["sst2", "text"] and "partial" in texts("#grid td.cell")[0]
        driver.find_element(By.ID, "show-partial").click()

        table = "section[data-task=text] table.runs"
        headers = texts(f"{table} th")
        assert headers[:3] == ["model", "quantization", "reference_model"] and "perplexity \u2193" in headers
        assert {"bits_per_byte (bits) \u2193", "kl_mean (nats) \u2193", "top1_agreement \u2191",
                "delta_ppl \u2193", "tokens/s"} <= set(headers)
        column = lambda header: [tr.find_elements(By.TAG_NAME, "td")[headers.index(header)].text
                                 for tr in driver.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")]
        perplexity = driver.find_element(By.CSS_SELECTOR, f'{table} th[data-key="value"]')
        perplexity.click()
        ascending = [float(v) for v in column("perplexity \u2193")]
        assert len(ascending) == 3 and ascending == sorted(ascending)
        perplexity.click()
        assert [float(v) for v in column("perplexity \u2193")] == sorted(ascending, reverse=True)

        driver.find_element(By.ID, "model-filter").send_keys("int8")
        assert column("model") == ["tiny-gpt2 (torchao-int8)"]
        assert texts("#grid tbody tr td:first-child") == ["tiny-gpt2 (torchao-int8)"]
        driver.find_element(By.ID, "model-filter").clear()
        driver.find_element(By.ID, "model-filter").send_keys("minilm")  # only a partial run: the grid says why
        assert texts("#grid tbody td")[0].startswith("No full runs to show")
        driver.find_element(By.ID, "model-filter").clear()
        Select(driver.find_element(By.ID, "task-filter")).select_by_value("sst2")
        assert not driver.find_element(By.CSS_SELECTOR, "section[data-task=text]").is_displayed()
        assert "partial" in texts("section[data-task=sst2] tbody td")[0]
        Select(driver.find_element(By.ID, "task-filter")).select_by_value("")

        for row_id, row in enumerate(rows):
            links = driver.find_elements(By.CSS_SELECTOR, f"#run-{row_id} a")
            targets = [Path(unquote(urlparse(a.get_attribute("href")).path)) for a in links]
            assert targets == [Path(row["run_dir"]), Path(row["results_path"])]
        cell_link = driver.find_element(By.CSS_SELECTOR, "#grid td.best a")
        cell_link.click()
        target = driver.execute_script("return document.querySelector(':target').id")
        assert rows[int(target.removeprefix("run-"))]["value"] == best
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(board / "leaderboard.png"))
        for width, height in ((1280, 900), (390, 844)):  # laptop: tables scroll in their boxes; phone: controls wrap
            driver.set_window_size(width, height)
            right_edges = driver.execute_script("return [document.documentElement.scrollWidth, ...[...document."
                                                "querySelectorAll('.controls *')].map(e => e.getBoundingClientRect()"
                                                ".right)]")
            assert max(right_edges) <= driver.execute_script("return window.innerWidth"), (width, right_edges)
    finally:
        driver.quit()


def test_runs_of_different_task_definitions_are_different_rows(outputs, tmp_path):
    """Two `task=text` runs on different files with the same settings are two rows, not one superseding the other."""
    from evalkit.leaderboard.build import collect

    record = json.loads((outputs / "sweep-new" / "0" / "results.json").read_text())
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        task = {**record["config"]["task"], "path": f"{name}.txt"}
        changed = {**record, "config": {**record["config"], "task": task}}
        (tmp_path / name / "results.json").write_text(json.dumps(changed))
    collected = collect(tmp_path)
    assert len(collected["rows"]) == 2 and not collected["superseded"]


def test_exports_follow_what_the_evaluator_declares(board, monkeypatch):
    """The lm-eval export's n-shot is an evaluator's num_fewshot setting where it has one, its n-samples the count
    of units from the catalogue; the grid leaves out of `compared` the settings marked compared=False."""
    from dataclasses import make_dataclass
    from types import SimpleNamespace

    from evalkit import evaluators
    from evalkit.config.settings import setting
    from evalkit.leaderboard.lm_eval_export import lm_eval_results

    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    row = next(r for r in rows if r["task"] == "sst2")
    assert json.loads((board / "lm_eval" / "minilm-l6-v2.json").read_text())["n-shot"]["sst2"] == 0
    text_rows = [r for r in rows if r["task"] == "text"]
    assert all("reference_model" not in r["compared"] and "stride" in r["compared"] for r in text_rows)
    real = evaluators.get(row["evaluator"])

    few_shot = SimpleNamespace(name=real.name, metrics=real.metrics, Settings=make_dataclass(
        "Settings", [("num_fewshot", int, setting(0, "examples in context", minimum=0))]))
    monkeypatch.setattr(evaluators, "get", lambda name: few_shot)
    exported = lm_eval_results([{**row, "settings": {**row["settings"], "num_fewshot": 5}}])
    assert exported["n-shot"]["sst2"] == exported["configs"]["sst2"]["num_fewshot"] == 5
    assert exported["n-samples"]["sst2"] == {"original": 30, "effective": 30}


def test_lm_eval_export_keys_filters_and_subtasks_as_lm_eval_does(board):
    """A generation run's figures per filter become lm-eval's `exact_match,strict-match` keys; a grouped task's
    subsets and categories become entries of their own (`mmlu_anatomy`), as lm-eval writes its groups."""
    from evalkit.leaderboard.lm_eval_export import lm_eval_results

    row = next(r for r in json.loads((board / "leaderboard.json").read_text())["rows"] if r["task"] == "sst2")
    gsm8k = {**row, "task": "gsm8k", "evaluator": "generation", "metric": "exact_match", "interval": [0.1, 0.5],
             "settings": {**row["settings"], "num_fewshot": 5},
             "metrics": {"exact_match": 0.3, "documents": 10, "filters": {"strict-match": {"exact_match": 0.3},
                                                                          "flexible-extract": {"exact_match": 0.4}}}}
    mmlu = {**row, "task": "mmlu", "evaluator": "multiple_choice", "metric": "acc", "interval": [0.2, 0.4],
            "metrics": {"acc": 0.3, "questions": 8, "subsets": {"anatomy": {"acc": 0.25, "questions": 4}},
                        "groups": {"stem": {"acc": 0.25, "questions": 4}}}}
    through_lm_eval = {**row, "task": "lm_eval", "evaluator": "lm_eval_tasks", "metric": "score", "interval": None,
                       "metrics": {"score": 0.5, "requests": 8, "results": {"arc_easy": {
                           "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_ci95,none": [0.3, 0.7], "alias": "arc_easy"}}}}
    exported = lm_eval_results([gsm8k, mmlu, through_lm_eval])["results"]
    assert exported["arc_easy"] == {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1}  # lm-eval's own
    assert exported["gsm8k"]["exact_match,strict-match"] == 0.3
    assert exported["gsm8k"]["exact_match,flexible-extract"] == 0.4
    assert exported["mmlu"]["acc,none"] == 0.3
    assert exported["mmlu_anatomy"] == {"alias": " - anatomy", "acc,none": 0.25}
    assert exported["mmlu_stem"] == {"alias": " - stem", "acc,none": 0.25}
