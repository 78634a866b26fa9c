"""Faults in the files evalkit reads and the folders it writes, without a model: special and oversized files,
deep JSON, JSON Lines with raw line separators, run folders shared by two runs, the umask."""

import json
import os
import stat
import sys
import threading

import pytest

from evalkit import files
from evalkit.data import read_jsonl, read_text
from evalkit.errors import EvalkitError
from evalkit.files import write_atomic, write_json
from evalkit.hashing import sha256_bytes
from evalkit.job import run_folder
from evalkit.job.cache import Job, Progress, read_entry
from evalkit.job.results import write_run

pytestmark = pytest.mark.unit


def test_a_fifo_is_refused_at_once_and_never_opened_for_a_blocking_read(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(EvalkitError, read_jsonl, fifo)))
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader before failing: a writer end lets its open return
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert "is not a regular file (a FIFO)" in str(outcome[0].value)
    with pytest.raises(EvalkitError, match="not a regular file"):
        files.check_regular(fifo, "audio file")


def test_a_link_to_a_device_and_an_oversized_file_are_one_line(tmp_path):
    (tmp_path / "results.json").symlink_to("/dev/zero")
    with pytest.raises(EvalkitError, match=r"is not a regular file \(a character device\)"):
        files.read_bytes(tmp_path / "results.json", files.RECORD_LIMIT)
    (tmp_path / "big.txt").write_text("x" * 101)
    with pytest.raises(EvalkitError, match="is 101 bytes, more than the 100 evalkit reads"):
        read_text(tmp_path / "big.txt", limit=100)


def test_json_nested_too_deeply_is_one_line(tmp_path):
    (tmp_path / "deep.jsonl").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(EvalkitError, match=r"deep.jsonl:1 is nested too deeply"):
        read_jsonl(tmp_path / "deep.jsonl")


def test_a_progress_record_nested_too_deeply_is_set_aside_like_a_torn_one(tmp_path, capfd):
    good = json.dumps({"index": 0, "nll": 1.5})
    deep = '{"index": 1, "nll": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "progress.rank0.jsonl").write_text(f"{good}\n{deep}\n" + '{"index": 2, "nl')
    assert Progress(tmp_path, units=3).done == {0: {"nll": 1.5}}
    assert "2 progress records" in capfd.readouterr().err


def test_json_lines_hold_raw_line_separators_inside_strings(tmp_path):
    texts = ["one\u2028two", "three\x85four", "five\u2029six\x0bseven\x1cend"]
    raw = "".join(json.dumps({"text": text}, ensure_ascii=False) + "\r\n" for text in texts)
    (tmp_path / "data.jsonl").write_text(raw, encoding="utf-8", newline="")
    assert read_jsonl(tmp_path / "data.jsonl") == [(1, {"text": texts[0]}), (2, {"text": texts[1]}),
                                                    (3, {"text": texts[2]})]


def test_a_second_run_into_a_claimed_folder_is_refused_and_the_first_keeps_its_files(tmp_path):
    folder = tmp_path / "run"
    with run_folder.claimed(folder, lambda path: (path / ".hydra").mkdir()):
        (folder / "samples.jsonl").write_text("first\n")
        with pytest.raises(EvalkitError, match="is in use by another run"):
            with run_folder.claimed(folder, lambda path: (path / ".hydra" / "config.yaml").write_text("second")):
                pass
        assert (folder / "samples.jsonl").read_text() == "first\n" and not list((folder / ".hydra").iterdir())
        (folder / "results.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", "evalkit.log", "results.json", "samples.jsonl"]
    with pytest.raises(EvalkitError, match="already holds a finished result"):
        with run_folder.claimed(folder, lambda path: (path / ".hydra" / "config.yaml").write_text("second")):
            pass
    assert not list((folder / ".hydra").iterdir())  # the refused run wrote no config snapshot


def test_a_failed_run_removes_only_its_files_and_a_stopped_runs_folder_is_taken_over(tmp_path, capfd):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        with run_folder.claimed(folder, lambda path: (path / ".hydra").mkdir()):
            print("evalkit: a line the run shows", file=sys.stderr)
            assert "a line the run shows" in (folder / "evalkit.log").read_text()
            raise RuntimeError
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    (folder / run_folder.CLAIM).write_text("pid 1\n")  # left by a run killed with -9: no process holds it
    (folder / "samples.jsonl").write_text("partial\n")
    with run_folder.claimed(folder):
        (folder / "results.json").write_text("{}")
    assert "taking over" in capfd.readouterr().err and not (folder / run_folder.CLAIM).exists()


def test_a_folder_holding_a_runs_files_without_a_claim_or_a_file_as_the_folder_is_one_line(tmp_path):
    (tmp_path / "samples.jsonl").write_text("someone's\n")
    with pytest.raises(EvalkitError, match="already holds samples.jsonl, written by no run"):
        with run_folder.claimed(tmp_path):
            pass
    assert (tmp_path / "samples.jsonl").read_text() == "someone's\n"
    with pytest.raises(EvalkitError, match="is a file, not a folder"):
        with run_folder.claimed(tmp_path / "samples.jsonl"):
            pass


def test_results_and_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        write_json(tmp_path / "shared" / "results.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared" / "results.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o775


def test_files_are_hashed_as_written_and_a_finished_cache_entry_is_served(tmp_path):
    """write_run's digests are those of the bytes on disk (a cache entry's seal is checked against them), past one
    write buffer and beyond ASCII; a binary write's too; the seal Job.finish writes from them lets it be served."""
    record = {"metrics": {"perplexity": 1.5}, "run": {}, "model": "naïve 日本"}
    samples = [{"index": index, "text": "café \u2028 ünïcode\n" * 20} for index in range(500)]
    digests = write_run(tmp_path / "run", record, samples)
    assert digests == {name: sha256_bytes((tmp_path / "run" / name).read_bytes())
                       for name in ("results.json", "samples.jsonl")}
    assert (tmp_path / "run" / "samples.jsonl").stat().st_size > 1 << 16
    assert write_atomic(tmp_path / "a.png", lambda stream: stream.write(b"\x89PNG\n"), binary=True) == sha256_bytes(
        b"\x89PNG\n")
    job = Job(str(tmp_path / "cache"))
    job.entry = tmp_path / "cache" / "key"
    job.finish(record, samples)
    served = read_entry(job.entry)
    assert served.record == record and served.samples == samples

