"""Hostile inputs and faults, with real runs: no lost result, no silent wrong number, no traceback. Each test names
the class of fault it covers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import ROOT, SHARED_DATA, WIKITEXT, api_keys, patch_jobs, read_samples, run_cli

import evalkit
from evalkit import evaluators
from evalkit.cli.summary import summary
from evalkit.evaluators import asr as asr_evaluator

REMOTE_CONFIG = '''from transformers import GPT2Config


class TinyRemoteConfig(GPT2Config):
    model_type = "tiny-remote"
'''
REMOTE_MODEL = '''from transformers import GPT2LMHeadModel

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteForCausalLM(GPT2LMHeadModel):
    config_class = TinyRemoteConfig
'''


def tiny_job(path: Path, **settings) -> dict:
    return {"model": {"name": "tiny", "name_or_path": str(path)}, "task": "wikitext", "data_dir": str(SHARED_DATA),
            "limit": 400, "max_length": 64, "stride": 32, "device": "cpu", "cache_dir": None, **settings}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def copy_model(source: Path, target: Path, change=None) -> Path:
    shutil.copytree(source, target)
    if change:
        model = transformers.AutoModelForCausalLM.from_pretrained(target)
        with torch.no_grad():
            change(model)
        model.save_pretrained(target)
    return target


# --- lost results -------------------------------------------------------------------------------------------------

def test_runs_started_together_get_their_own_folders(tmp_path, tiny_gpt2_dir):
    command = [sys.executable, "-m", "evalkit", f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}",
               "limit=300", "max_length=64", "stride=32", "cache_dir=null"]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    assert len(list((tmp_path / "outputs").glob("*/*/results.json"))) == 2


def test_runs_given_one_folder_never_mix_and_a_refused_run_writes_nothing(tmp_path, tiny_gpt2_dir):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "evalkit", f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}",
               "limit=300", "max_length=64", "stride=32", "cache_dir=null", f"hydra.run.dir={folder}"]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: os.umask(0o002)) for _ in range(2)]
    done = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in done) == [0, 2], done
    (refused,) = [stderr for code, stderr in done if code == 2]
    assert "is in use by another run" in refused or "already holds a finished result" in refused, refused
    record = json.loads((folder / "results.json").read_text())
    assert record["metrics"]["windows"] == len(read_samples(folder))
    snapshot = (folder / ".hydra" / "config.yaml").read_bytes()
    assert "evalkit: loading" in (folder / "evalkit.log").read_text()  # the run's lines, not an empty log
    assert oct((folder / "results.json").stat().st_mode & 0o777) == oct(0o664)  # the umask, not mkstemp's 0600
    again = subprocess.run(command[:-1] + [f"hydra.run.dir={folder}", "stride=16"], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a finished result" in one_error_line(again)
    assert (folder / ".hydra" / "config.yaml").read_bytes() == snapshot


def test_a_finished_result_is_never_overwritten(tmp_path, tiny_gpt2_dir):
    evalkit.evaluate(**tiny_job(tiny_gpt2_dir), out_dir=tmp_path)
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(evalkit.EvalkitError, match="already holds a finished result"):
        evalkit.evaluate(**tiny_job(tiny_gpt2_dir, stride=16), out_dir=tmp_path)
    assert (tmp_path / "results.json").read_bytes() == before


# --- silent wrong numbers -----------------------------------------------------------------------------------------

def test_non_finite_scores_stop_the_run_naming_the_unit(tmp_path, tiny_gpt2_dir):
    def poison_a_late_position(model):  # NaN from position 60 on: the short probe input passes, a window does not
        model.transformer.wpe.weight[60] = float("nan")

    poisoned = copy_model(tiny_gpt2_dir, tmp_path / "poisoned", poison_a_late_position)
    cache = tmp_path / "cache"
    with pytest.raises(evalkit.EvalkitError, match=r"^window \d+ scored a non-finite nll"):
        evalkit.evaluate(**tiny_job(poisoned, cache_dir=str(cache)), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists() and not list(cache.glob("*/results.json"))
    all_nan = copy_model(tiny_gpt2_dir, tmp_path / "all-nan", lambda m: m.lm_head.weight.fill_(float("nan")))
    with pytest.raises(evalkit.EvalkitError, match="gives non-finite outputs"):
        evalkit.evaluate(**tiny_job(all_nan))


def interrupted_log(job: dict, monkeypatch, batches: int = 3) -> Path:
    """Run `job` until `batches` batches are done, then Ctrl-C; return its progress log."""
    evaluator = evaluators.get("perplexity")
    done = []

    def score_then_interrupt(score, batch):
        if len(done) == batches:
            raise KeyboardInterrupt
        done.append(batch)
        return score(batch)

    with monkeypatch.context() as patch:
        patch_jobs(patch, evaluator, "score", score_then_interrupt)
        with pytest.raises(KeyboardInterrupt, match="3 finished units are saved"):
            evalkit.evaluate(**job)
    (log,) = Path(job["cache_dir"]).glob("*/progress.rank0.jsonl")
    return log


def test_bad_or_conflicting_progress_records_are_set_aside(tmp_path, tiny_gpt2_dir, monkeypatch, capfd):
    expected = evalkit.evaluate(**tiny_job(tiny_gpt2_dir, batch_size=1))["metrics"]
    job = tiny_job(tiny_gpt2_dir, batch_size=1, cache_dir=str(tmp_path / "cache"))
    log = interrupted_log(job, monkeypatch)
    first = json.loads(log.read_text().splitlines()[0])
    hostile = [{**first, "nll": first["nll"] + 1.0},  # the same unit, another value: neither is trusted
               {"index": 1, "loss": 2.0}, {"index": 10**6, "nll": 1.0}, {"index": "2", "nll": 1.0},
               {"index": 3, "nll": "abc"}, [1, 2], {"index": True, "nll": 1.0}]
    with open(log, "a") as stream:
        stream.write("".join(json.dumps(line) + "\n" for line in hostile) + '{"index": 4, "nl')
    record = evalkit.evaluate(**job)
    assert record["metrics"] == expected  # to the last bit: nothing wrong was trusted
    # unit 2 only: units 0 and 1 conflicted, and unit 3's record ("abc") is set aside, so not counted as reused
    assert record["run"]["resumed_units"] == 1
    assert "set aside" in capfd.readouterr().err


def test_text_field_that_is_not_text_is_an_error(tmp_path, tiny_gpt2_dir):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "fine words here"}) + "\n" + json.dumps({"text": None}) + "\n")
    done = run_cli(f"model.name_or_path={tiny_gpt2_dir}", "task=text", f"task.path={data}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and f"{data}:2 has 'text': null, not a text" in one_error_line(done)


def test_a_limit_beyond_the_data_leaves_the_run_whole(tmp_path, tiny_gpt2_dir):
    """limit=10**6 tokens of a 300-character text cuts nothing: the leaderboard must not call the run partial."""
    from evalkit.leaderboard.build import limit_cut

    text = tmp_path / "small.txt"
    text.write_text(WIKITEXT.read_text(encoding="utf-8")[:300], encoding="utf-8")
    whole = evalkit.evaluate(**tiny_job(tiny_gpt2_dir, task="text", limit=10**6, **{"task.path": str(text)}))
    cut = evalkit.evaluate(**tiny_job(tiny_gpt2_dir, task="text", limit=20, **{"task.path": str(text)}))
    assert whole["data"]["limit"]["cut"] is False and not limit_cut(whole)
    phases = ("startup_seconds", "setup_seconds", "load_seconds", "prepare_seconds", "eval_seconds")
    assert all(whole["timing"][phase] >= 0 for phase in phases[1:]) and "startup_seconds" not in cut["timing"]
    assert cut["data"]["limit"]["cut"] is True and limit_cut(cut)
    assert limit_cut({**whole, "data": {}})  # a result from before `cut` was recorded counts as cut


# --- stale cache hits ----------------------------------------------------------------------------------------------

def test_edited_model_files_miss_the_cache_and_an_edited_cached_result_is_recomputed(tmp_path, tiny_gpt2_dir, capfd):
    model = copy_model(tiny_gpt2_dir, tmp_path / "model")
    job = tiny_job(model, cache_dir=str(tmp_path / "cache"))
    first = evalkit.evaluate(**job)
    assert first["data"]["limit"] == {"first": 400, "of": "tokens", "cut": True}  # limit counts tokens: said so
    assert "limit: the first 400 tokens" in summary(first, None).splitlines()[0]
    config = (model / "config.json").read_text()
    (model / "config.json").write_text(json.dumps({**json.loads(config), "layer_norm_epsilon": 0.5}))
    edited = evalkit.evaluate(**job)  # the same weights: only the config says the numbers differ
    assert not edited["run"]["cache_hit"] and edited["metrics"]["perplexity"] != first["metrics"]["perplexity"]
    (model / "config.json").write_text(config)
    assert evalkit.evaluate(**job)["run"]["cache_hit"]
    (model / "tokenizer.json").write_text((model / "tokenizer.json").read_text() + "\n")
    assert not evalkit.evaluate(**job)["run"]["cache_hit"]
    entry = tmp_path / "cache" / first["run"]["cache_key"] / "results.json"
    entry.write_text(entry.read_text().replace(str(first["metrics"]["perplexity"]), "1.0"))
    capfd.readouterr()
    (model / "tokenizer.json").write_text((model / "tokenizer.json").read_text()[:-1])
    recomputed = evalkit.evaluate(**job)
    assert not recomputed["run"]["cache_hit"] and recomputed["metrics"] == first["metrics"]
    assert "changed after it was cached" in capfd.readouterr().err


# --- crashes: every fault is one line -----------------------------------------------------------------------------

def test_a_corrupt_cache_entry_is_recomputed_and_an_unwritable_cache_only_warns(tmp_path, tiny_gpt2_dir, capfd):
    job = tiny_job(tiny_gpt2_dir, cache_dir=str(tmp_path / "cache"))
    first = evalkit.evaluate(**job, out_dir=tmp_path / "first")
    (entry,) = (tmp_path / "cache").glob("*/results.json")
    entry.write_text(entry.read_text()[:100])  # cut
    again = evalkit.evaluate(**job, out_dir=tmp_path / "again")
    assert not again["run"]["cache_hit"] and again["metrics"] == first["metrics"]
    (entry.parent / "samples.jsonl").unlink()
    assert not evalkit.evaluate(**job)["run"]["cache_hit"]
    assert "incomplete or corrupt" in capfd.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    record = evalkit.evaluate(**{**job, "cache_dir": str(blocked / "cache")}, out_dir=tmp_path / "uncached")
    assert record["metrics"] == first["metrics"] and (tmp_path / "uncached" / "results.json").is_file()
    assert "is not writable" in record["run"]["note"] and "warning" in capfd.readouterr().err


@pytest.mark.parametrize("damage", ["truncated safetensors", "garbage gguf", "no tokenizer", "remote code"])
def test_broken_model_folders_give_one_accurate_line(tmp_path, tiny_gpt2_dir, damage):
    model = copy_model(tiny_gpt2_dir, tmp_path / "model")
    expected = {"truncated safetensors": "could not load the weights", "garbage gguf": "could not read the config",
                "no tokenizer": "holds no tokenizer", "remote code": "trust_remote_code=true runs it"}[damage]
    name = model
    if damage == "truncated safetensors":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage gguf":
        name = model / "model.gguf"
        name.write_bytes(os.urandom(4096))
    elif damage == "no tokenizer":
        for file in ("tokenizer.json", "tokenizer_config.json"):
            (model / file).unlink()
    else:
        make_remote_code(model)
    done = run_cli(f"model.name_or_path={name}", f"data_dir={SHARED_DATA}", "limit=300", "max_length=64",
                   "stride=32", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and expected in one_error_line(done)
    assert not (tmp_path / "run").exists()  # a failed run leaves no folder that looks like a run


def make_remote_code(model: Path) -> None:
    (model / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG)
    (model / "modeling_tiny_remote.py").write_text(REMOTE_MODEL)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="tiny-remote", architectures=["TinyRemoteForCausalLM"], auto_map={
        "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM"})
    (model / "config.json").write_text(json.dumps(config))


def test_remote_code_model_evaluates_with_trust_remote_code(tmp_path, tiny_gpt2_dir):
    plain = evalkit.evaluate(**tiny_job(tiny_gpt2_dir))
    model = copy_model(tiny_gpt2_dir, tmp_path / "remote")
    make_remote_code(model)
    remote = evalkit.evaluate(**tiny_job(model, trust_remote_code=True))
    assert remote["model"]["class"] == "TinyRemoteForCausalLM"
    assert remote["metrics"]["nll_sum"] == plain["metrics"]["nll_sum"]


def deliverable_sigint() -> None:
    """In the child: Ctrl-C handled as in a user's shell. A child inherits an ignored or blocked SIGINT, and after
    earlier tests' libraries (worker pools, resource trackers) the test process may have one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_prints_one_line_and_a_rerun_resumes(tmp_path, tiny_gpt2_dir):
    cache = tmp_path / "cache"
    command = [f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}", "limit=500", "max_length=64",
               "stride=1", "batch_size=1", f"hydra.run.dir={tmp_path / 'run'}"]
    process = subprocess.Popen([sys.executable, "-m", "evalkit", *command], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "EVALKIT_CACHE_DIR": str(cache)},
                               preexec_fn=deliverable_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and \
            sum(len(log.read_bytes().splitlines()) for log in cache.glob("*/progress.rank*.jsonl")) < 50:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("evalkit: interrupted:")]
    assert "finished units are saved; rerunning the same command resumes" in line
    assert not (tmp_path / "run").exists()
    same = api_keys(command[:-1])  # the rerun through the Python API: the CLI's config, so its cache key
    resumed = evalkit.evaluate(**same, cache_dir=str(cache), out_dir=tmp_path / "run")
    assert resumed["run"]["resumed_units"] >= 50


def test_unwritable_output_folders_are_one_line(tmp_path, tiny_gpt2_dir):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    done = run_cli(f"model.name_or_path={tiny_gpt2_dir}", f"hydra.run.dir={blocked / 'run'}")
    assert done.returncode == 2 and "cannot be written" in one_error_line(done)
    board = subprocess.run([sys.executable, "-m", "evalkit.leaderboard", str(tmp_path), "-o", str(blocked)],
                           capture_output=True, text=True)
    assert board.returncode == 2 and "is a file" in board.stderr and "Traceback" not in board.stderr


def test_full_disk_at_the_final_write_is_one_line(tmp_path, tiny_gpt2_dir):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("this machine does not let the test mount a small tmpfs")
    try:
        done = run_cli(f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}", "limit=2000",
                       "max_length=64", "stride=4", f"hydra.run.dir={small / 'run'}", "hydra.output_subdir=null",
                       "hydra/job_logging=disabled")
        assert done.returncode == 2 and "could not write the results" in one_error_line(done)
        assert not (small / "run" / "results.json").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_non_text_reference_is_one_line_naming_the_record(tmp_path):
    """A manifest field of the wrong type is a malformed file, refused even under on_error=skip (which skips audio
    that cannot be read, not records that cannot be understood)."""
    clip = SHARED_DATA / "speech" / "jfk" / "jfk.flac"
    lines = [{"id": "good", "audio": str(clip), "text": "and so my fellow americans"},
             {"id": "number", "audio": str(clip), "text": 42}]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, lines)))
    done = run_cli("model=whisper-tiny.en-packaged", "task=asr_manifest", f"task.path={tmp_path / 'm.jsonl'}",
                   "on_error=skip", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and "m.jsonl" in one_error_line(done) and "'text': 42" in one_error_line(done)
    assert not (tmp_path / "run" / "results.json").exists()


def test_long_audio_is_read_a_segment_at_a_time(tmp_path, monkeypatch):
    """Audio longer than SEGMENT_S is read and transcribed a segment at a time (memory independent of its length)."""
    reads = []
    read_audio = asr_evaluator.read_audio

    def spy(audio, rate, start_s=0.0, stop_s=None):
        samples = read_audio(audio, rate, start_s, stop_s)
        reads.append(len(samples) / rate)
        return samples

    monkeypatch.setattr(asr_evaluator, "SEGMENT_S", 4.0)
    monkeypatch.setattr(asr_evaluator, "read_audio", spy)
    clip = SHARED_DATA / "speech" / "jfk" / "jfk.flac"  # 11 s: three segments
    manifest = tmp_path / "speech" / "asr_manifest.jsonl"  # where task asr_manifest looks under data_dir
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"id": "jfk", "audio": str(clip), "text": "and so my fellow americans ask not "
                                    "what your country can do for you ask what you can do for your country"}))
    out = tmp_path / "run"
    record = evalkit.evaluate(model="whisper-tiny.en-packaged", task="asr_manifest", data_dir=str(tmp_path),
                              device="cpu", cache_dir=None, out_dir=out)
    assert max(reads) <= 4.0 + 1e-6 and len(reads) >= 3
    assert record["metrics"]["wer"] < 0.5 and read_samples(out)[0]["hypothesis"]


# --- the leaderboard ----------------------------------------------------------------------------------------------

def test_leaderboard_skips_bad_rows_and_its_page_survives_hostile_names(tmp_path, tiny_gpt2_dir):
    good = evalkit.evaluate(**tiny_job(tiny_gpt2_dir), out_dir=tmp_path / "runs" / "good")
    hostile = {
        "model-not-a-string": {**good, "model": {**good["model"], "name": 7, "location": None}},
        "metrics-a-list": {**good, "metrics": [1, 2]},
        "value-a-string": {**good, "metrics": {**good["metrics"], "perplexity": "low"}},
        "nan-metric": {**good, "metrics": {**good["metrics"], "perplexity": float("nan")}},
    }
    names = ["org/model", "org_model", "org model", "<!-- </script><script>alert(1)</script>"]
    for index, name in enumerate(names):
        hostile[f"name-{index}"] = {**good, "model": {**good["model"], "name": name},
                                    "config": {**good["config"], "model": {**good["config"]["model"], "name": name}}}
    for folder, record in hostile.items():
        (tmp_path / "runs" / folder).mkdir(parents=True)
        (tmp_path / "runs" / folder / "results.json").write_text(json.dumps(record))
    board = tmp_path / "board"
    done = subprocess.run([sys.executable, "-m", "evalkit.leaderboard", str(tmp_path / "runs"), "-o", str(board)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads((board / "leaderboard.json").read_text())
    assert sorted(Path(s["path"]).parent.name for s in data["skipped"]) == sorted(
        ["model-not-a-string", "metrics-a-list", "value-a-string", "nan-metric"])
    assert len(data["rows"]) == 5 and len(list((board / "lm_eval").glob("*.json"))) == 5
    page = (board / "index.html").read_text()
    script = page.split('<script id="board-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in script and len(json.loads(script)["rows"]) == 5  # nothing in the data can end or comment it out
    assert "<script>alert(1)" not in page


# --- sweeps -------------------------------------------------------------------------------------------------------

def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path, tiny_gpt2_dir):
    done = run_cli("-m", f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}", "limit=300",
                   "max_length=64", "stride=16,0,32", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (tmp_path / "0" / "results.json").is_file() and (tmp_path / "2" / "results.json").is_file()
    assert not (tmp_path / "1").exists()  # the failed job leaves no folder that looks like a run
    assert ("1 sweep job(s) failed" in done.stderr and "job 1 (" in done.stderr
            and "stride=0 is not allowed" in done.stderr)
