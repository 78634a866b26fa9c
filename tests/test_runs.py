"""Sweeps, the result cache and resuming interrupted runs, through the real CLI (and Hydra's submitit launcher)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, SMOL, api_keys, read_samples, run_cli

import evalkit
from evalkit.hashing import canonical_json


def tiny_on_wikitext(path: Path) -> list[str]:
    return [f"model.name_or_path={path}", "model.name=tiny-gpt2", f"data_dir={SHARED_DATA}"]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_stride_sweep_reuses_the_model_and_perplexity_falls_with_stride(tmp_path):
    """The acceptance sweep: the packaged model, the first 1,024 WikiText-2 tokens, three strides, one process."""
    sweep = run_cli("-m", f"data_dir={SHARED_DATA}", "limit=1024", "max_length=256", "stride=64,128,256",
                    f"hydra.sweep.dir={tmp_path}")
    assert sweep.returncode == 0, sweep.stderr
    runs = [results(tmp_path / str(job)) for job in range(3)]
    assert [r["config"]["stride"] for r in runs] == [64, 128, 256]
    perplexities = [r["metrics"]["perplexity"] for r in runs]
    assert perplexities[0] < perplexities[1] < perplexities[2]  # more context per scored token, lower perplexity
    assert all(r["metrics"]["tokens_scored"] == 1023 for r in runs)
    assert sweep.stderr.count(f"reusing the loaded model {SMOL}") == 2  # loaded once for three jobs
    assert [r["run"]["models_reused"] for r in runs] == [[], [SMOL], [SMOL]]
    lines = sweep.stdout.splitlines()  # the sweep ends with its runs side by side, each by what sets it apart
    table = lines[max(i for i, line in enumerate(lines) if line.startswith("job  overrides")):]
    assert [line.split()[:4] for line in table[1:]] == [
        [str(job), f"stride={stride}", "perplexity", f"{r['metrics']['perplexity']:.4f}"]
        for job, (stride, r) in enumerate(zip((64, 128, 256), runs))]


def test_cache_hit_on_identical_rerun_and_miss_on_any_change(tmp_path, tiny_gpt2_dir, capfd):
    """Through the Python API (the same runner as the CLI; the CLI's cache use is exercised by the resume tests)."""
    cache = str(tmp_path / "cache")
    common = {"model": {"name": "tiny-gpt2", "name_or_path": str(tiny_gpt2_dir)}, "data_dir": str(SHARED_DATA),
              "limit": 600, "max_length": 64, "stride": 32, "cache_dir": cache}

    def run(name, **changes):
        evalkit.evaluate(**{**common, **changes}, out_dir=tmp_path / name)
        return results(tmp_path / name)

    first = run("first")
    capfd.readouterr()
    again = run("again")
    assert not first["run"]["cache_hit"] and again["run"]["cache_hit"]
    assert "cache hit" in capfd.readouterr().err and again["run"]["computed_in"] == str(tmp_path / "first")
    assert again["metrics"] == first["metrics"] and read_samples(tmp_path / "again") == read_samples(tmp_path / "first")
    for name, change in [("stride", {"stride": 16}), ("batch", {"batch_size": 2}), ("bos", {"bos": "stream"}),
                         ("seed", {"seed": 1})]:
        changed = run(name, **change)
        assert not changed["run"]["cache_hit"], change
        assert changed["run"]["cache_key"] != first["run"]["cache_key"], change
    forced = run("forced", force=True)
    assert not forced["run"]["cache_hit"] and "force=true" in forced["run"]["note"]
    assert forced["run"]["cache_key"] == first["run"]["cache_key"]
    assert forced["metrics"]["nll_sum"] == first["metrics"]["nll_sum"]
    off = run("off", cache_dir=None)
    assert not off["run"]["cache_hit"] and off["run"]["cache_key"] is None


def test_killed_run_resumes_and_recomputes_only_the_rest(tmp_path, tiny_gpt2_dir):
    """SIGKILL mid-run, rerun the same command: the records of finished batches are reused, the rest computed, and
    the NLL equals an uninterrupted run's."""
    cache = tmp_path / "cache"
    command = [*tiny_on_wikitext(tiny_gpt2_dir), "limit=700", "max_length=64", "stride=1", "batch_size=1"]
    env = {**os.environ, "EVALKIT_CACHE_DIR": str(cache)}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "evalkit", *command, f"hydra.run.dir={killed_dir}"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    logged = 0
    while logged < 200 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        logged = sum(len(log.read_bytes().splitlines()) for log in cache.glob("*/progress.rank*.jsonl"))
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "results.json").exists()  # nothing half-done looks like a result
    (log,) = cache.glob("*/progress.rank0.jsonl")
    finished = 0
    for line in log.read_text().splitlines():  # the last line may be torn by the kill
        try:
            json.loads(line)
            finished += 1
        except json.JSONDecodeError:
            pass
    assert finished >= 200

    # the reruns through the Python API: the same command's keys, the same runner, no second interpreter start-up
    same = api_keys(command)
    resumed = evalkit.evaluate(**same, cache_dir=str(cache), out_dir=tmp_path / "resumed")
    whole = evalkit.evaluate(**same, cache_dir=str(tmp_path / "fresh"), out_dir=tmp_path / "whole")  # start to end
    windows = whole["metrics"]["windows"]  # (700 - 64) / 1 + 1
    assert resumed["metrics"]["windows"] == windows == 637 and finished < windows
    assert resumed["run"]["resumed_units"] == finished
    assert resumed["timing"]["units_computed"] == windows - finished
    assert whole["timing"]["units_computed"] == windows and whole["run"]["resumed_units"] == 0
    assert resumed["metrics"]["nll_sum"] == pytest.approx(whole["metrics"]["nll_sum"], rel=1e-9)
    assert resumed["metrics"]["tokens_scored"] == whole["metrics"]["tokens_scored"]
    assert not list(cache.glob("*/progress.rank*.jsonl"))  # finished: the log made way for the cached result


def test_submitit_local_multirun_completes(tmp_path, tiny_gpt2_dir):
    sweep = run_cli("-m", "hydra/launcher=local", *tiny_on_wikitext(tiny_gpt2_dir), "limit=300", "max_length=64",
                    "stride=16,32", f"hydra.sweep.dir={tmp_path}")
    assert sweep.returncode == 0, sweep.stderr
    strides = sorted(results(tmp_path / str(job))["config"]["stride"] for job in range(2))
    assert strides == [16, 32]
    assert all(read_samples(tmp_path / str(job)) for job in range(2))


def test_identity_json_takes_mixed_keys_in_any_order():
    """max_memory={0: ..., cpu: ...} has int and str keys, which Python cannot sort."""
    assert canonical_json({"cpu": "4GiB", 0: "1GiB"}) == canonical_json({0: "1GiB", "cpu": "4GiB"}) \
        == '{"0": "1GiB", "cpu": "4GiB"}'
