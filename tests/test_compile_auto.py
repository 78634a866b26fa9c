"""compile=auto: the store of measured rates beside the compiled graphs, and the choice it makes per job."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
import transformers
from conftest import ROOT, VOCAB, WIKITEXT

import evalkit
from evalkit.config.compose import compose_config
from evalkit.errors import EvalkitError
from evalkit.job import compile_choice, runner
from evalkit.loading import LoadedModel, compile_policy


def test_compile_auto_compiles_only_when_measured_saving_exceeds_measured_cost(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path))
    key = "0" * 64  # compile_choice.rate_key's digest
    assert not compile_policy.decide(key, 1e6, "tokens").compile  # nothing measured: eager
    compile_policy.record(key, False, 300_000, 15.0)  # eager: 20,000 tokens/s
    assert not compile_policy.decide(key, 1e6, "tokens").compile  # no compiled run measured yet
    compile_policy.record(key, True, 300_000, 20.0, compile_seconds=8.0)  # 25,000 tokens/s once compiled
    short, long = compile_policy.decide(key, 300_000, "tokens"), compile_policy.decide(key, 1e6, "tokens")
    assert not short.compile and "expected saving 3.0 s on 300,000 tokens does not exceed the 8.0 s" in short.reason
    assert long.compile and "expected saving 10.0 s" in long.reason
    (tmp_path / f"{key}.json").write_text("[not a store")  # unreadable: nothing measured, and said
    unreadable = compile_policy.decide(key, 1e9, "tokens")
    assert not unreadable.compile and f"measurements {tmp_path / key}.json are not JSON" in unreadable.reason

def test_the_compiled_graphs_and_the_rates_share_one_folder_and_one_error(tmp_path, monkeypatch):
    """EVALKIT_COMPILE_CACHE is read in one place: compile=true (Inductor's cache) and compile=auto (its store) get
    the same folder, or the same line naming the value that cannot be one."""
    from evalkit.loading.compiling import keep_compiled_artifacts

    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path / "compiled"))
    assert compile_policy.compile_cache() == tmp_path / "compiled" and (tmp_path / "compiled").is_dir()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path / "file" / "compiled"))
    with pytest.raises(EvalkitError, match=f"EVALKIT_COMPILE_CACHE={tmp_path / 'file' / 'compiled'} cannot be") as one:
        compile_policy.compile_cache()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with pytest.raises(EvalkitError) as other:
        keep_compiled_artifacts()
    assert str(one.value) == str(other.value) and "\n" not in str(one.value)
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", "")
    assert compile_policy.compile_cache() is None


RECORD_KEYS = """
import sys, time
from evalkit.loading import compile_policy
process, start = int(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # every process records at once
for i in range(30):
    compile_policy.record(f"{process:02d}{i:062d}", False, 1000.0, 1.0 + i)
"""


def test_processes_recording_at_once_keep_every_entry(tmp_path, monkeypatch):
    """4 processes recording 30 keys each into one store (a sweep's ranks, an array's jobs on a shared filesystem):
    every entry is kept, and no temporary file is left behind."""
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path))
    start = time.time() + 3
    writers = [subprocess.Popen([sys.executable, "-c", RECORD_KEYS, str(process), str(start)], cwd=ROOT)
               for process in range(4)]
    assert [writer.wait(timeout=60) for writer in writers] == [0] * 4
    rates = [compile_policy.read_entry(compile_policy.entry_path(f"{process:02d}{i:062d}")).get("eager_rate")
             for process in range(4) for i in range(30)]
    assert rates == [1000.0 / (1.0 + i) for _ in range(4) for i in range(30)]
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".json"] * 120


def test_a_hostile_or_unwritable_store_never_blocks_and_never_passes_for_a_measurement(tmp_path, monkeypatch):
    """A FIFO where an entry goes is refused at once (a plain read blocks until a writer comes) and replaced by the
    next measurement; Infinity or NaN (which JSON reads) is no measurement; a store that cannot be written is named
    in the reason, not a request for runs that could never be recorded."""
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path))
    key = "1" * 64
    os.mkfifo(tmp_path / f"{key}.json")
    decisions = []
    reader = threading.Thread(target=lambda: decisions.append(compile_policy.decide(key, 1e6, "tokens")), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert decisions and not decisions[0].compile and "is not a regular file (a FIFO)" in decisions[0].reason
    compile_policy.record(key, False, 1000.0, 1.0)
    assert compile_policy.read_entry(tmp_path / f"{key}.json") == {"eager_rate": 1000.0}
    for infinite in ('"compiled_rate": Infinity, "compile_seconds": 0', '"compiled_rate": 2e3, "compile_seconds": NaN',
                     f'"compiled_rate": {10 ** 400}, "compile_seconds": 0'):  # no float holds that integer
        (tmp_path / f"{key}.json").write_text(f'{{"eager_rate": 1e3, {infinite}}}')
        decision = compile_policy.decide(key, 1e9, "tokens")
        assert not decision.compile and decision.reason.startswith("nothing measured here yet"), decision
        compile_policy.record(key, False, 1000.0, 1.0)  # kept again without the number strict JSON refuses
        kept = (tmp_path / f"{key}.json").read_text()
        assert "Infinity" not in kept and "NaN" not in kept and json.loads(kept)["eager_rate"] == 1000.0
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(tmp_path / "file" / "compiled"))
    unwritable = compile_policy.decide(key, 1e9, "tokens")
    assert not unwritable.compile and "cannot be the compiled-graph cache" in unwritable.reason
    assert "so it cannot measure and stays eager" in unwritable.reason
    compile_policy.record(key, False, 1000.0, 1.0)  # nothing to keep it in: no error
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", "")
    assert compile_policy.decide(key, 1e9, "tokens").reason.startswith("EVALKIT_COMPILE_CACHE is empty")


def test_the_rate_key_holds_what_sets_the_rate_and_not_the_job_size_or_the_device_index(tiny_gpt2_dir, tmp_path,
                                                                                        monkeypatch):
    """A real tiny model, as on a GPU (the device's name given): every process count, tensor-parallel size, task,
    fused-kernel state and transformers version has rates of its own; a limit or another GPU index of the same kind
    does not."""
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64)
    provenance = {"dtype": "bfloat16", "devices": ["cuda:0"], "attn_implementation": "sdpa"}
    model = LoadedModel(transformers.GPT2LMHeadModel(config), None, torch.device("cpu"), "causal-lm",
                        provenance=provenance)
    other_text = tmp_path / "other.txt"
    other_text.write_text("another task's text")

    def key(loaded=model, **settings) -> str:
        cfg = compose_config(str(tiny_gpt2_dir), "text", **{"task.path": str(WIKITEXT), "device": "cpu", **settings})
        return compile_choice.rate_key(runner.plan(cfg), loaded, "NVIDIA H200")

    def with_provenance(**entries) -> LoadedModel:
        return dataclasses.replace(model, provenance={**provenance, **entries})

    same = key()
    assert key(limit=100) == key(limit=5000) == same
    assert key(with_provenance(devices=["cuda:1"])) == same
    differ = [key(**{"task.path": str(other_text)}), key(batch_size=8), key(stride=256),
              key(with_provenance(fused_kernels="RMSNorm, RoPE, SwiGLU (Liger)")),
              key(with_provenance(tensor_parallel=2))]
    monkeypatch.setenv("WORLD_SIZE", "2")
    differ.append(key())
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(transformers, "__version__", "99.0")
    differ.append(key())
    assert len({same, *differ}) == len(differ) + 1


def test_a_sweep_compiles_its_shared_model_once_and_runs_an_eager_job_eagerly(tiny_gpt2_dir, tmp_path, monkeypatch):
    """One process, jobs sharing the pooled model, a device named as a GPU: a job auto compiles leaves the model
    compiled; a later job auto keeps eager runs it eagerly (no graph compiled, the eager figures), records an eager
    rate and leaves the measured compile cost alone; a later compiled job that compiles nothing new keeps that cost
    too; no job changes the record an earlier one returned."""
    from evalkit.loading.compiling import compile_statistics

    store = tmp_path / "compiled"
    monkeypatch.setenv("EVALKIT_COMPILE_CACHE", str(store))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(store))  # as evalkit sets it; put back after the test
    monkeypatch.setattr(compile_choice, "device_name", lambda device: "a GPU")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97}" for i in range(600)))
    job = dict(model=str(tiny_gpt2_dir), task="text", **{"task.path": str(text)}, max_length=64, stride=32,
               batch_size=4, device="cpu", cpu_linear="native", cache_dir=None)

    def measured(**entry) -> dict:
        [path] = store.glob("*.json")  # the one key of these jobs: not the limit
        if entry:
            path.write_text(json.dumps(entry))
        return json.loads(path.read_text())

    first = evalkit.evaluate(**job, limit=200)  # nothing measured: eager, and its rate kept
    assert "compile" not in first["model"] and first["model"]["compile_auto"].startswith("nothing measured")
    measured(eager_rate=100.0, compiled_rate=1000.0, compile_seconds=2.0)  # 399 tokens save 3.6 s
    compiled = evalkit.evaluate(**job, limit=400)
    reason = compiled["model"]["compile_auto"]
    assert "blocks" in compiled["model"]["compile"] and "exceeds the 2.0 s" in reason
    assert compiled["timing"]["graphs_compiled"] > 0 and measured()["compile_seconds"] > 0
    measured(eager_rate=100.0, compiled_rate=1000.0, compile_seconds=100.0)
    before = compile_statistics()
    eager = evalkit.evaluate(**job, limit=400)
    assert compile_statistics()["graphs_compiled"] == before["graphs_compiled"]  # ran eagerly: no new graph
    assert "compile" not in eager["model"] and "graphs_compiled" not in eager["timing"]
    assert eager["model"]["compile_auto"].endswith("compiled by an earlier job of this process, runs eagerly")
    assert measured()["compile_seconds"] == 100.0 and measured()["eager_rate"] != 100.0
    assert compiled["model"]["compile_auto"] == reason  # the earlier record is its own
    measured(eager_rate=100.0, compiled_rate=1000.0, compile_seconds=2.0)
    again = evalkit.evaluate(**job, limit=400)  # compiled, its graphs compiled by the job before
    assert again["model"]["compile"] and again["timing"]["graphs_compiled"] == 0
    assert measured()["compile_seconds"] == 2.0 and measured()["compiled_rate"] != 1000.0
    plain = evalkit.evaluate(**job, limit=400, compile=False)
    assert eager["metrics"]["nll_sum"] == plain["metrics"]["nll_sum"]  # bit for bit: eager kernels alone


def test_under_torchrun_rank_0_chooses_for_every_rank_and_alone_records(tiny_gpt2_dir, tmp_path):
    """Two processes (gloo on the CPU, a device named as a GPU), each its own compile-cost store: rank 1's says
    compiling pays, rank 0's has measured nothing compiled. Every rank runs eagerly, as rank 0 chose (rank 1 compiles
    no graph), and only rank 0 records."""
    stores = [tmp_path / "rank0", tmp_path / "rank1"]
    for store in stores:
        store.mkdir()
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97}" for i in range(600)))
    job = dict(model=str(tiny_gpt2_dir), task="text", **{"task.path": str(text)}, max_length=64, stride=32,
               batch_size=4, device="cpu", cpu_linear="native", cache_dir=None)
    measured = {"eager_rate": 100.0, "compiled_rate": 1000.0, "compile_seconds": 2.0}
    steps = [{"environment_by_rank": {"EVALKIT_COMPILE_CACHE": [str(store) for store in stores]}},
             {"device_name": "a GPU"}, {"evaluate": {**job, "limit": 200}},  # nothing measured: eager
             {"measured": measured, "into": str(stores[1])},
             {"evaluate": {**job, "limit": 400, "out_dir": str(tmp_path / "second")}}]
    (tmp_path / "steps.json").write_text(json.dumps(steps), encoding="utf-8")
    pair = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
         "-m", "tests.torchrun_jobs", str(tmp_path / "steps.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert pair.returncode == 0, pair.stderr
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert "compile" not in second["model"] and second["model"]["compile_auto"].startswith("nothing measured")
    [entry] = stores[0].glob("*.json")
    assert "compiled_rate" not in json.loads(entry.read_text())  # rank 0 kept its eager rate
    assert [path.suffix for path in stores[1].iterdir()] == [".json"]  # rank 1 compiled no graph,
    assert json.loads(next(stores[1].iterdir()).read_text()) == measured  # and recorded no rate
    assert pair.stderr.count("evalkit: compile=auto: eager") == 2 and "compile=auto: compiling" not in pair.stderr
