"""What the runner promises for every evaluator, tested once and parametrised over all of them: bad settings and
keys the evaluator does not read are rejected before any data or weights are read; an out-of-memory error halves the
batch and changes no number; an interrupted run resumes; two processes give one process's result, each computing
half; the cache key changes with every setting the evaluator reads."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARED_DATA, WIKITEXT, patch_jobs, read_samples, run_cli

import evalkit
from evalkit import evaluators
from evalkit.cli.summary import summary
from evalkit.config.compose import compose_config
from evalkit.evaluators.base import RunSettings
from evalkit.hashing import canonical_json
from evalkit.job import runner
from evalkit.loading.options import LoadOptions

EVALUATORS = evaluators.names()


@pytest.fixture(scope="module")
def jobs(tiny_gpt2_dir, tmp_path_factory) -> dict[str, dict]:
    """A small real job per evaluator, as keyword arguments of evalkit.evaluate."""
    common = {"data_dir": str(SHARED_DATA), "device": "cpu", "cache_dir": None}
    questions = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    lines = [line.split() for line in WIKITEXT.read_text(encoding="utf-8").splitlines() if len(line.split()) > 20]
    questions.write_text("".join(json.dumps({"context": " ".join(words[:10]), "choices": [words[10], words[15],
                                             " ".join(words[16:19])], "gold": k % 3}) + "\n"
                                 for k, words in enumerate(lines[:6])), encoding="utf-8")
    lm_eval_tasks = tmp_path_factory.mktemp("lm_eval_tasks")
    (lm_eval_tasks / "contract_mc.yaml").write_text(
        f"task: contract_mc\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {questions}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{gold}}'\nmetric_list: [{metric: acc}]\n", encoding="utf-8")
    return {
        "lm_eval_tasks": {"model": {"name": "tiny-gpt2", "name_or_path": str(tiny_gpt2_dir)}, "task": "lm_eval",
                          "task.names": "[contract_mc]", "task.include_path": str(lm_eval_tasks),
                          "task.include_defaults": False, **common},
        "multiple_choice": {"model": {"name": "tiny-gpt2", "name_or_path": str(tiny_gpt2_dir)},
                            "task": "multiple_choice", "task.path": str(questions), **common},
        "perplexity": {"model": {"name": "tiny-gpt2", "name_or_path": str(tiny_gpt2_dir)}, "task": "wikitext",
                       "limit": 400, "max_length": 64, "stride": 32, **common},
        "classification": {"model": "minilm-l6-v2", "task": "sst2", "method": "embedding", "limit": 24, **common},
        "asr": {"model": "whisper-tiny.en-packaged", "task": "asr_manifest", "limit": 4, **common},
        "generation": {"model": {"name": "tiny-gpt2", "name_or_path": str(tiny_gpt2_dir)}, "task": "generation",
                       "task.path": str(SHARED_DATA / "gsm8k" / "train.jsonl"), "limit": 5, "max_gen_toks": 4,
                       **common},
    }


def test_every_evaluator_has_a_contract_job(jobs):
    assert sorted(jobs) == EVALUATORS  # a new evaluator adds its small job above


@pytest.mark.parametrize("name", EVALUATORS)
def test_an_evaluators_keys_are_its_own(name):
    """Top-level keys share one namespace: an evaluator's setting named like a run or loading key (`seed`) would be
    two settings under one key."""
    shared = {spec.name for schema in (RunSettings, LoadOptions) for spec in fields(schema)}
    assert not shared & {spec.name for spec in fields(evaluators.get(name).Settings)}


@pytest.mark.parametrize("name", EVALUATORS)
def test_catalogue_names_one_count_of_units(name):
    """The leaderboard's lm-eval export takes n-samples from the one count metric marked units=True."""
    units = [metric for metric in evaluators.get(name).metrics if metric.units]
    assert len(units) == 1 and units[0].count


def cli_overrides(job: dict) -> list[str]:
    overrides = []
    for key, value in job.items():
        if key == "model" and isinstance(value, dict):
            overrides += [f"model.name_or_path={value['name_or_path']}", f"model.name={value['name']}"]
        else:
            overrides.append(f"{key}={'null' if value is None else value}")
    return overrides


def bad_values(schema: type) -> list[tuple[str, object]]:
    """(key, a value its type or allowed values refuse) for each field of a settings dataclass."""
    hints = typing.get_type_hints(schema)
    cases = []
    for spec in fields(schema):
        kind = hints[spec.name]
        if spec.metadata.get("choices"):
            cases.append((spec.name, "no-such-choice"))
        elif kind in (bool,):
            cases.append((spec.name, "yes"))
        elif spec.metadata.get("minimum") is not None:
            cases += [(spec.name, spec.metadata["minimum"] - 1), (spec.name, True), (spec.name, "abc")]
    return cases


def refuse_work(monkeypatch, evaluator):
    def forbidden(*args, **kwargs):
        raise AssertionError("data or weights were read before the settings were checked")

    monkeypatch.setattr(runner, "load_models", forbidden)
    monkeypatch.setattr(evaluator, "read_data", forbidden)


@pytest.mark.parametrize("name", EVALUATORS)
def test_bad_settings_are_rejected_before_data_or_weights(jobs, monkeypatch, name):
    evaluator = evaluators.get(name)
    refuse_work(monkeypatch, evaluator)
    cases = bad_values(evaluator.Settings) + bad_values(RunSettings) + [("batch_size", 0), ("batch_size", True)]
    assert len(cases) >= 4
    for key, value in cases:
        with pytest.raises(evalkit.EvalkitError, match=f"^{key}=.* is not allowed; allowed: "):
            evalkit.evaluate(**{**jobs[name], key: value})


@pytest.mark.parametrize("name", EVALUATORS)
def test_keys_the_evaluator_does_not_read_are_rejected(jobs, monkeypatch, name, tmp_path):
    evaluator = evaluators.get(name)
    other = next(f.name for other in EVALUATORS if other != name for f in fields(evaluators.get(other).Settings))
    refuse_work(monkeypatch, evaluator)
    for key in (other, "strid"):
        with pytest.raises(evalkit.EvalkitError, match=f"key '{key}' is not read by the {name} evaluator"):
            evalkit.evaluate(**{**jobs[name], key: 1})
    for override in (f"{other}=1", "+strid=256"):  # the command line, before Hydra composes anything
        done = run_cli(*cli_overrides(jobs[name]), override, f"hydra.run.dir={tmp_path}")
        errors = [line for line in done.stderr.splitlines() if line.startswith("evalkit: error:")]
        assert done.returncode == 2 and len(errors) == 1 and "is not read by" in errors[0], done.stderr
        assert "allowed:" in errors[0] and not (tmp_path / "results.json").exists()


ALTERNATIVES = {"reference_model": "smollm2-135m", "max_length": 48, "language": "en", "method": "nli",
                "limit": 7, "batch_size": 3, "num_fewshot": 1, "max_gen_toks": 3, "system_instruction": "Be brief."}


def another_value(spec, default):
    if spec.name in ALTERNATIVES:
        return ALTERNATIVES[spec.name]
    if spec.metadata.get("choices"):
        return next(choice for choice in spec.metadata["choices"] if choice != default)
    return (not default) if isinstance(default, bool) else default + 1


@pytest.mark.parametrize("name", EVALUATORS)
def test_cache_key_changes_with_every_setting_the_evaluator_reads(jobs, name):
    evaluator = evaluators.get(name)
    base = runner.plan(compose_config(**jobs[name]))
    keys = {canonical_json(base.scoped_settings())}
    changed = [spec for spec in fields(evaluator.Settings)] + [spec for spec in fields(RunSettings)
                                                              if spec.name in ("limit", "batch_size")]
    for spec in changed:
        value = another_value(spec, getattr(base.settings, spec.name, None) if spec in fields(evaluator.Settings)
                              else getattr(base.run, spec.name))
        try:
            plan = runner.plan(compose_config(**{**jobs[name], spec.name: value}))
        except evalkit.EvalkitError:  # e.g. method=nli, which this job's model cannot do: the settings alone
            plan = dataclasses.replace(base, settings=dataclasses.replace(base.settings, **{spec.name: value}))
        keys.add(canonical_json(plan.scoped_settings()))
    assert len(keys) == len(changed) + 1
    assert set(base.scoped_settings()) == {"run", "loading", name}  # nothing of the other evaluators


@pytest.fixture(scope="module")
def reference_runs(jobs, tmp_path_factory) -> dict:
    """Each evaluator's contract job, uninterrupted, one unit per batch: (results record, samples)."""
    runs = {}
    for name, job in jobs.items():
        out = tmp_path_factory.mktemp(f"reference-{name}")
        record = evalkit.evaluate(**job, batch_size=1, out_dir=out)
        runs[name] = record, read_samples(out)
    return runs


def same_figures(first: dict, second: dict) -> bool:
    timing_derived = {"rtfx"}
    return {k: v for k, v in first.items() if k not in timing_derived} == \
        {k: v for k, v in second.items() if k not in timing_derived}


@pytest.mark.parametrize("name", EVALUATORS)
def test_catalogue_names_every_metric_and_the_summary_shows_it(reference_runs, name):
    evaluator = evaluators.get(name)
    record = reference_runs[name][0]
    assert set(record["metrics"]) <= evaluator.metric_keys(), set(record["metrics"]) - evaluator.metric_keys()
    assert sum(metric.headline for metric in evaluator.metrics) == 1
    headline = evaluator.headline()
    low, high = record["metrics"][headline.interval]
    assert low <= record["metrics"][headline.name] <= high
    lines = summary(record, Path("/runs/x")).splitlines()
    (row,) = [line.split() for line in lines if line.split()[:1] == [headline.name]]
    better = "higher" if headline.higher_is_better else "lower"
    assert row[1:5] == [f"{record['metrics'][headline.name]:.4f}", f"[{low:.4f},", f"{high:.4f}]", better]
    assert lines[-2].startswith("model: ") and lines[-1].endswith("results in /runs/x/results.json")
    readme = (ROOT / "README.md").read_text()
    reading = readme[readme.index("## Reading the results"):readme.index("## Offline use")]
    assert f"`{headline.name}`" in reading  # the README explains every headline metric


@pytest.mark.parametrize("name", EVALUATORS)
def test_out_of_memory_halves_the_batch_and_changes_no_number(jobs, reference_runs, monkeypatch, name):
    evaluator = evaluators.get(name)
    sizes = []

    def score_or_run_out_of_memory(score, batch):
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        sizes.append(len(batch))
        return score(batch)

    patch_jobs(monkeypatch, evaluator, "auto_batch_size", lambda original, device: 4)
    patch_jobs(monkeypatch, evaluator, "score", score_or_run_out_of_memory)
    record = evalkit.evaluate(**jobs[name], batch_size="auto")
    assert record["timing"]["batch_size"] == 1 and set(sizes) == {1}  # 4 -> 2 -> 1
    assert same_figures(record["metrics"], reference_runs[name][0]["metrics"])
    with pytest.raises(torch.OutOfMemoryError):  # an explicit batch size is the user's: never halved
        evalkit.evaluate(**jobs[name], batch_size=2)


@pytest.mark.parametrize("name", EVALUATORS)
def test_interrupted_run_resumes_and_computes_only_the_rest(jobs, reference_runs, monkeypatch, tmp_path, name):
    evaluator = evaluators.get(name)
    batches = []

    def score_then_interrupt(score, batch):
        if len(batches) == 2:
            raise KeyboardInterrupt
        batches.append(batch)
        return score(batch)

    job = {**jobs[name], "batch_size": 1, "cache_dir": str(tmp_path / "cache")}
    with monkeypatch.context() as patch:
        patch_jobs(patch, evaluator, "score", score_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            evalkit.evaluate(**job)
    record = evalkit.evaluate(**job, out_dir=tmp_path / "resumed")
    reference, reference_samples = reference_runs[name]
    assert record["run"]["resumed_units"] == 2
    assert record["timing"]["units_computed"] == reference["timing"]["units_computed"] - 2
    assert same_figures(record["metrics"], reference["metrics"])
    assert read_samples(tmp_path / "resumed") == reference_samples


THROUGH_THE_COMMAND_LINE = EVALUATORS[len(EVALUATORS) // 2]  # jobs follow a command-line job and API jobs alike


@pytest.fixture(scope="module")
def two_process_runs(jobs, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, Path]]:
    """Every evaluator's contract job, one unit per batch, in ONE torchrun pair (2 processes, gloo on the CPU): one
    job after another in the same two processes, as a script calling evalkit.evaluate again or a sweep runs them;
    one of them through the command line (`python -m evalkit`), after which rank 0 starts late. (The pair, each
    evaluator's run folder.)"""
    root = tmp_path_factory.mktemp("two-processes")
    folders = {name: root / name for name in EVALUATORS}
    steps = []
    for name in EVALUATORS:
        job = {**jobs[name], "batch_size": 1, "cache_dir": str(root / "cache")}
        if name == THROUGH_THE_COMMAND_LINE:
            steps += [{"command_line": [*cli_overrides(job), f"hydra.run.dir={folders[name]}"]}, {"rank_0_waits": 2}]
        else:
            steps.append({"evaluate": {**job, "out_dir": str(folders[name])}})
    (root / "steps.json").write_text(json.dumps(steps), encoding="utf-8")
    pair = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "tests.torchrun_jobs", str(root / "steps.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert pair.returncode == 0, pair.stderr
    return pair, folders


@pytest.mark.parametrize("name", EVALUATORS)
def test_two_processes_give_one_process_result(two_process_runs, reference_runs, name):
    """torchrun with 2 processes (gloo on the CPU): the same metrics and per-unit samples, each rank about half."""
    pair, folders = two_process_runs
    two = json.loads((folders[name] / "results.json").read_text())
    reference, reference_samples = reference_runs[name]
    assert two["timing"]["processes"] == 2
    assert two["run"]["resumed_units"] == 0  # no rank takes another's units of this run for an earlier attempt's
    per_rank = two["timing"]["units_computed_per_rank"]
    assert sum(per_rank) == reference["timing"]["units_computed"] and max(per_rank) - min(per_rank) <= 1
    samples = read_samples(folders[name])
    assert len(samples) == len(reference_samples)
    for ours, theirs in zip(samples, reference_samples):
        for key, value in theirs.items():
            numbers = isinstance(value, float) or isinstance(value, list) and value and all(
                isinstance(item, float) for item in value)  # one process's threads sum in another order
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6) if numbers \
                else ours[key] == value or isinstance(value, dict), key
    headline = evaluators.get(name).headline().name
    assert math.isclose(two["metrics"][headline], reference["metrics"][headline], rel_tol=1e-6)
    assert pair.stdout.count("results in") == 1  # one summary, from rank 0 (evalkit.evaluate prints none)
    if name == THROUGH_THE_COMMAND_LINE:
        assert f"results in {folders[name] / 'results.json'}" in pair.stdout


def test_tensor_parallel_over_two_processes_gives_the_one_process_nll(tiny_llama_dir, tmp_path):
    """tp_plan=auto under torchrun (2 processes, gloo on the CPU): transformers shards every attention and MLP
    layer over both; each process runs every window, and the NLL is the one process's to float32 rounding."""
    job = [f"model.name_or_path={tiny_llama_dir}", "task=text", f"task.path={WIKITEXT}", "limit=2000",
           "max_length=256", "stride=128", "device=cpu", "batch_size=2"]
    one = evalkit.evaluate(model=str(tiny_llama_dir), task="text", **{"task.path": str(WIKITEXT)}, limit=2000,
                           max_length=256, stride=128, device="cpu", batch_size=2, cache_dir=None)
    pair = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29530",
         "-m", "evalkit", *job, "tp_plan=auto", f"hydra.run.dir={tmp_path / 'two'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EVALKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert pair.returncode == 0, pair.stderr
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["model"]["tensor_parallel"] == 2
    assert two["timing"]["units_computed_per_rank"] == [two["metrics"]["windows"]] * 2
    assert two["metrics"]["tokens_scored"] == one["metrics"]["tokens_scored"]
    assert math.isclose(two["metrics"]["nll_sum"], one["metrics"]["nll_sum"], rel_tol=1e-6)
