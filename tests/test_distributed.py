"""Data parallel perplexity: 2 processes under torchrun (gloo on CPU) give the single-process result."""

import json
import math
import os
import subprocess
import sys

from conftest import ROOT, WIKITEXT, run_cli


def test_two_processes_equal_one(tmp_path, tiny_llama_dir):
    overrides = [f"model.name_or_path={tiny_llama_dir}", "task=text", f"task.path={WIKITEXT}", "limit=3000",
                 "max_length=128", "stride=48", "batch_size=3", "device=cpu"]
    single = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr
    pair = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "evalkit", *overrides, f"hydra.run.dir={tmp_path / 'two'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert pair.returncode == 0, pair.stderr
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["timing"]["processes"] == 2 and one["timing"]["processes"] == 1
    assert two["metrics"]["tokens_scored"] == one["metrics"]["tokens_scored"] == 2999
    assert two["metrics"]["windows"] == one["metrics"]["windows"]
    assert math.isclose(two["metrics"]["nll_sum"], one["metrics"]["nll_sum"], rel_tol=1e-6)
    samples = (tmp_path / "two" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == one["metrics"]["windows"]  # every window, from both ranks, in one file
    assert pair.stdout.count("results in") == 1  # one summary, from rank 0
