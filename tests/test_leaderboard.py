"""The leaderboard over real runs: tables, lm-evaluation-harness results, plots, and the page in a real browser."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, run_cli

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """A tree of real runs: a 2-stride sweep of a tiny GPT-2 run twice (the second, forced, is newer), a zero-shot
    classification run, a corrupt results.json and a foreign one; the result cache inside it too (not runs)."""
    root = tmp_path_factory.mktemp("outputs")
    tiny = [f"model.name_or_path={tiny_gpt2_dir}", "model.name=tiny-gpt2", f"data_dir={SHARED_DATA}", "limit=300",
            "max_length=64"]
    env = {"EVALKIT_CACHE_DIR": str(root / "cache")}
    for sweep, extra in (("sweep-old", []), ("sweep-new", ["force=true"])):
        done = run_cli("-m", *tiny, "stride=16,32", *extra, f"hydra.sweep.dir={root / sweep}", env=env)
        assert done.returncode == 0, done.stderr
    done = run_cli("task=sst2", "method=embedding", "model=minilm-l6-v2", f"data_dir={SHARED_DATA}", "limit=30",
                   f"hydra.run.dir={root / 'sst2'}")
    assert done.returncode == 0, done.stderr
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
    assert sorted((r["task"], r["model"], r["settings"].get("stride")) for r in rows) == [
        ("sst2", "minilm-l6-v2", None), ("wikitext", "tiny-gpt2", 16), ("wikitext", "tiny-gpt2", 32)]
    assert sorted(Path(s["path"]).parent.name for s in data["skipped"]) == ["corrupt", "foreign"]
    assert len(data["superseded"]) == 2  # the older sweep's two runs; cache entries are no runs
    assert list((outputs / "cache").glob("*/results.json"))
    listed = [r["results_path"] for r in rows] + [s["path"] for s in data["superseded"]]
    assert not any("/cache/" in path for path in listed)
    assert all("sweep-old" in s["path"] and "sweep-new" in s["kept"] for s in data["superseded"])
    assert all("sweep-new" in r["run_dir"] for r in rows if r["model"] == "tiny-gpt2")
    accuracy = next(r for r in rows if r["task"] == "sst2")
    assert accuracy["metric"] == "accuracy" and accuracy["higher_is_better"]
    low, high = accuracy["interval"]
    assert low <= accuracy["value"] <= high
    assert accuracy["provenance"]["model"]["weights_sha256"] and accuracy["provenance"]["data"]["sha256"]
    perplexity = next(r for r in rows if r["task"] == "wikitext")
    assert perplexity["metric"] == "perplexity" and perplexity["value"] == perplexity["metrics"]["perplexity"]
    assert perplexity["varying"]["stride"] == perplexity["settings"]["stride"]


def test_tables(board):
    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    with open(board / "leaderboard.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [float(r["value"]) for r in table] == pytest.approx([r["value"] for r in rows])
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
    sst2 = json.loads((board / "lm_eval" / "minilm-l6-v2.json").read_text())
    result = sst2["results"]["sst2"]
    assert 0 <= result["acc,none"] <= 1 and result["acc_stderr,none"] > 0
    assert sst2["n-samples"]["sst2"] == {"original": 30, "effective": 30}


def test_stride_plot_and_self_contained_page(board):
    (plot,) = (board / "plots").glob("*.png")
    assert plot.name == "tiny-gpt2__wikitext.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (board / "index.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched


def test_console_script(outputs, tmp_path):
    script = shutil.which("evalkit-leaderboard", path=str(Path(sys.executable).parent))
    assert script, "the evalkit-leaderboard console script is not installed (pip install -e .)"
    done = subprocess.run([script, str(outputs), "-o", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "leaderboard.json").read_text())["rows"]) == 3


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


def test_page_in_headless_chromium_sorts_and_filters(board):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    driver = browser()
    try:
        driver.get((board / "index.html").as_uri())

        def column(name):
            headers = [th.get_attribute("data-column") for th in driver.find_elements(By.CSS_SELECTOR, "#board th")]
            index = headers.index(name)
            return [tr.find_elements(By.TAG_NAME, "td")[index].text
                    for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")]

        assert len(column("model")) == len(rows)
        header = driver.find_element(By.CSS_SELECTOR, 'th[data-column="value"]')
        header.click()
        ascending = [float(v) for v in column("value")]
        assert ascending == sorted(ascending) and len(ascending) == len(rows)
        header.click()
        assert [float(v) for v in column("value")] == sorted(ascending, reverse=True)
        driver.find_element(By.CSS_SELECTOR, 'th[data-column="model"]').click()
        assert column("model") == sorted(column("model"))
        Select(driver.find_element(By.ID, "task-filter")).select_by_value("wikitext")
        assert column("task") == ["wikitext", "wikitext"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "img")) == 1
    finally:
        driver.quit()


def test_runs_of_different_task_definitions_are_different_rows(outputs, tmp_path):
    """Two `task=text` runs on different files with the same settings are two rows, not one superseding the other."""
    from evalkit.leaderboard import collect

    record = json.loads((outputs / "sweep-new" / "0" / "results.json").read_text())
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        changed = {**record, "config": {**record["config"], "task": {**record["config"]["task"], "path": f"{name}.txt"}}}
        (tmp_path / name / "results.json").write_text(json.dumps(changed))
    collected = collect(tmp_path)
    assert len(collected["rows"]) == 2 and not collected["superseded"]
