"""The leaderboard against hostile folders and files, in-process on hand-written results.json files (no model): it
never writes over, into or above the runs or a folder it did not make, and a bad file is one skipped line, never a
crash or a hang."""

import copy
import json
import os
from pathlib import Path

import pytest

from evalkit.leaderboard import runs as runs_module
from evalkit.leaderboard.build import build
from evalkit.leaderboard.folder import MARKER
from evalkit.leaderboard.plots import value_limits

pytestmark = pytest.mark.unit

RECORD = {
    "schema_version": 2, "task": "text", "evaluator": "perplexity", "started_at": "2025-01-01T00:00:00.000",
    "metrics": {"perplexity": 48150.3, "perplexity_ci95": [47518.8, 48817.0], "tokens_scored": 400, "windows": 12},
    "settings": {"run": {"limit": None}, "loading": {"quantization": "none", "dtype": "auto"},
                 "perplexity": {"stride": 32, "max_length": 64}},
    "model": {"name": "tiny", "location": "/models/tiny"},
    "data": {"origin": "/data/a.txt", "sha256": "0" * 64},
    "timing": {"tokens_per_second": 1000.0, "eval_seconds": 0.4},
    "config": {"model": {"name": "tiny"}, "task": {"name": "text", "path": "/data/a.txt"}},
}


def record(**changes) -> dict:
    """RECORD with `changes` ("settings.perplexity.stride": 128) set; a model's name is its configured name too."""
    made = copy.deepcopy(RECORD)
    if "model.name" in changes:
        changes["config.model.name"] = changes["model.name"]
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        inner = made
        for key in parents:
            inner = inner[key]
        inner[last] = value
    return made


def write_run(root: Path, name: str, content) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def tree(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(capsys, source: Path, out: Path) -> str:
    with pytest.raises(SystemExit) as stop:
        build(source, out)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


def test_no_output_folder_over_into_or_above_the_runs_or_not_its_own(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "project" / "outputs"
    write_run(runs, "run", RECORD)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    assert "holds the runs" in refused(capsys, runs, runs)
    assert "holds the runs" in refused(capsys, runs, tmp_path / "project")
    assert "holds the runs" in refused(capsys, runs / "run" / "..", tmp_path)
    assert "lies inside the runs' folder" in refused(capsys, runs, runs / "run")
    assert "thesis.tex, which the leaderboard did not write" in refused(capsys, runs, mine)
    monkeypatch.chdir(mine)
    assert "thesis.tex" in refused(capsys, runs, Path("."))
    assert tree(tmp_path) == before  # nothing written, nothing removed

    board = build(runs, runs / "leaderboard")  # the default place, inside the runs: its own, skipped when reading
    assert (runs / "leaderboard" / MARKER).is_file() and len(board["rows"]) == 1
    assert len(build(runs, runs / "leaderboard")["rows"]) == 1  # rebuilt over its own folder
    empty = tmp_path / "empty"
    empty.mkdir()
    build(runs, empty)
    (empty / MARKER).unlink()  # a leaderboard from before the marker: known by its leaderboard.json
    build(runs, empty)
    (empty / "mine.txt").write_text("added by a person")
    assert "mine.txt" in refused(capsys, runs, empty)
    assert tree(runs / "run") == {"results.json": before["project/outputs/run/results.json"]}


def test_hostile_results_files_are_skipped_one_line_each(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    write_run(runs, "good", RECORD)
    write_run(runs, "deep", '{"a": ' * 10_000 + "1" + "}" * 10_000)
    write_run(runs, "deep-inside", json.dumps(RECORD)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}")
    write_run(runs, "huge-integer", json.dumps(record(**{"metrics.perplexity": 10**400})))
    write_run(runs, "not-utf8", "")
    (runs / "not-utf8" / "results.json").write_bytes(b'{"task": "\xff\xfe"}')
    (runs / "fifo").mkdir()
    os.mkfifo(runs / "fifo" / "results.json")
    (runs / "zero").mkdir()
    (runs / "zero" / "results.json").symlink_to("/dev/zero")
    write_run(runs, "too-large", record(**{"model.name": "x" * 200_000}))
    monkeypatch.setattr(runs_module, "MAX_BYTES", 100_000)
    kept = {  # odd but readable: built, each as what it says
        "outside": record(**{"metrics.perplexity_ci95": [1.0, 2.0], "model.name": "outside"}),
        "list-stride": record(**{"settings.perplexity.stride": [1, 2], "model.name": "list"}),
        "string-stride": record(**{"settings.perplexity.stride": "32", "model.name": "string"}),
        "huge-other-metric": record(**{"metrics.windows": 10**400, "timing.tokens_per_second": 10**400,
                                       "model.name": "huge"}),
    }
    for name, content in kept.items():
        write_run(runs, name, content)
    board = build(runs, tmp_path / "board")
    errors = capsys.readouterr().err.splitlines()
    skipped = {Path(s["path"]).parent.name: s["reason"] for s in board["skipped"]}
    assert sorted(skipped) == ["deep", "deep-inside", "fifo", "huge-integer", "not-utf8", "too-large", "zero"]
    assert "a FIFO" in skipped["fifo"] and "a character device" in skipped["zero"]
    assert str(runs) not in skipped["fifo"]  # the warning names the path once, before the reason
    assert "nested deeper" in skipped["deep"] and "more than the 100,000" in skipped["too-large"]
    for name in skipped:
        assert sum(f"/{name}/results.json" in line for line in errors) == 1
    rows = {row["model"]: row for row in board["rows"]}
    assert sorted(rows) == ["huge", "list", "outside", "string", "tiny"]
    assert rows["outside"]["interval"] is None and any("leaves out its perplexity" in line for line in errors)
    assert rows["huge"]["rate"] is None and "windows" not in rows["huge"]["metrics"]


def test_long_model_names_get_bounded_file_names(tmp_path):
    runs = tmp_path / "runs"
    long_name = "/scratch/" + "checkpoints-of-a-very-long-experiment/" * 6  # about 240 characters
    for stride in (16, 32):  # a sweep: its plot is named after the model too
        write_run(runs, f"s{stride}", record(**{"model.name": long_name, "settings.perplexity.stride": stride}))
    board = build(runs, tmp_path / "board")
    assert len(board["rows"]) == 2
    files = [path.name for path in (tmp_path / "board").rglob("*") if path.is_file()]
    assert len(files) == 8 and max(map(len, files)) < 200
    assert sum(name.endswith(".png") for name in files) == 2


def test_different_data_files_of_one_task_are_named_and_numbers_sort_as_numbers(tmp_path):
    runs = tmp_path / "runs"
    for stride in (1024, 128, 256):
        write_run(runs, f"a{stride}", record(**{"settings.perplexity.stride": stride}))
    write_run(runs, "b", record(**{"data.origin": "/data/b.txt", "config.task.path": "/data/b.txt"}))
    board = build(runs, tmp_path / "board")
    assert sorted({row["task"] for row in board["rows"]}) == ["text (a.txt)", "text (b.txt)"]
    assert board["grid"]["tasks"] == ["text (a.txt)", "text (b.txt)"]  # never one column of two data sets
    table = (tmp_path / "board" / "leaderboard.md").read_text().splitlines()[2:]
    strides = [line.split(" | ")[2] for line in table if "a.txt" in line]
    assert strides == ["stride=128", "stride=256", "stride=1024"]


def test_a_single_model_chart_is_scaled_to_its_value():
    low, high = value_limits([{"value": 48150.0, "interval": None}])
    assert low < 48150.0 < high and 1000 < high - low < 10_000
    low, high = value_limits([{"value": 0.5, "interval": [0.4, 0.7]}])
    assert 0.36 < low < 0.4 and 0.7 < high < 0.74
    assert value_limits([{"value": 0.0, "interval": None}]) == (-1.0, 1.0)
