"""task=lm_eval against lm-evaluation-harness's own simple_evaluate with its HFLM (the independent reference), on the
tiny random GPT-2 in float32 on the CPU: local-data lm-eval task YAMLs of each output type (multiple_choice,
loglikelihood, loglikelihood_rolling, generate_until with few-shot examples and filters) and a group of two with its
aggregate. lm-eval runs once for every test of the file; every figure, generation and per-sample record must equal."""

import json
import math
import os
import sys

import pytest
import transformers
from conftest import WIKITEXT

import evalkit
from evalkit.errors import EvalkitError

BATCH = 2  # both sides: generations batched alike pad alike
BOOTSTRAP_ITERS = 100
NAMES = ["evk_group", "evk_rolling", "evk_gen"]
GROUP = """group: evk_group
task: [evk_mc, evk_ll]
aggregate_metric_list:
  - {metric: acc, aggregation: mean, weight_by_size: true}
"""
COMMON = "dataset_path: json\ndataset_kwargs:\n  data_files: {{train: {train}, test: {test}}}\ntest_split: test\n"
TASKS = {
    "evk_mc": """output_type: multiple_choice
training_split: train
num_fewshot: 1
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list: [{metric: acc}, {metric: acc_norm}]
""",
    "evk_ll": """output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' ' + text.split(' ')[-1]}}"
metric_list:
  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}
  - {metric: acc, aggregation: mean, higher_is_better: true}
""",
    "evk_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]
""",
    "evk_gen": """output_type: generate_until
training_split: train
num_fewshot: 2
doc_to_text: "Question: {{context}}\\nAnswer:"
doc_to_target: "{{choices[0]}}"
generation_kwargs: {until: ["\\n\\n", "Question:"], max_gen_toks: 12, do_sample: false}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true}]
filter_list:
  - {name: first-word, filter: [{function: regex, regex_pattern: "(\\\\w+)"}, {function: take_first}]}
  - {name: whole, filter: [{function: take_first}]}
""",
}


def write_tasks(folder) -> None:
    """Each task's train and test JSON Lines, built from WikiText lines, and its YAML; the group's YAML."""
    lines = [line.split() for line in WIKITEXT.read_text(encoding="utf-8").splitlines()
             if len(line.split()) > 30 and not line.strip().startswith("=")]
    for number, (name, body) in enumerate(TASKS.items()):
        rows = {}
        for split, start in (("train", 40 * number), ("test", 40 * number + 20)):
            words = lines[start:start + (4 if split == "train" else 5)]
            rows[split] = [{"context": " ".join(w[:12]), "choices": [" ".join(w[12:15]), w[20], " ".join(w[4:9])],
                            "gold": k % 3, "text": " ".join(w[:24])}
                           for k, w in enumerate(words)]
            if name == "evk_rolling" and split == "test":  # one text longer than the model's 512 tokens: 2 windows
                rows[split][0]["text"] = " ".join(" ".join(w) for w in lines[200:240])
            (folder / f"{name}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
        sources = COMMON.format(train=folder / f"{name}.train.jsonl", test=folder / f"{name}.test.jsonl")
        (folder / f"{name}.yaml").write_text(f"task: {name}\n{sources}{body}", encoding="utf-8")
    (folder / "evk_group.yaml").write_text(GROUP, encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_gpt2_dir):
    """(lm-eval's simple_evaluate result, evalkit's results.json, evalkit's samples) on the same tasks and model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    write_tasks(folder)
    os.environ["DISABLE_MULTIPROC"] = "1"  # lm-eval's bootstrap in this process (both sides: the same standard errors)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    lm = HFLM(pretrained=model, tokenizer=transformers.AutoTokenizer.from_pretrained(tiny_gpt2_dir),
              batch_size=BATCH, device="cpu")
    theirs = simple_evaluate(model=lm, tasks=NAMES, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=True,
                             task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    ours = evalkit.evaluate(
        model={"name": "tiny_gpt2", "name_or_path": str(tiny_gpt2_dir)}, task="lm_eval", device="cpu",
        cache_dir=None, batch_size=BATCH, bootstrap_iters=BOOTSTRAP_ITERS, out_dir=folder / "run",
        **{"task.names": NAMES, "task.include_path": str(folder), "task.include_defaults": False})
    samples = [json.loads(line) for line in (folder / "run" / "samples.jsonl").read_text().splitlines()]
    return theirs, ours, samples


def assert_equal(ours, theirs, where: str) -> None:
    """Equal, numbers within float32 summation noise (evalkit scores a shared context once)."""
    if isinstance(theirs, float) or isinstance(ours, float):
        assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6), (where, ours, theirs)
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), (where, set(ours) ^ set(theirs))
        for key in theirs:
            assert_equal(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for k, (mine, other) in enumerate(zip(ours, theirs)):
            assert_equal(mine, other, f"{where}[{k}]")
    else:
        assert ours == theirs, (where, ours, theirs)


def as_json(value):
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(value, default=handle_non_serializable))


def test_every_figure_equals_lm_evals(runs):
    theirs, ours, _ = runs
    metrics = ours["metrics"]
    results = {name: {key: value for key, value in entry.items() if "_ci95," not in key}
               for name, entry in metrics["results"].items()}
    assert set(results) == {"evk_group", "evk_mc", "evk_ll", "evk_rolling", "evk_gen"}
    assert_equal(results, as_json(theirs["results"]), "results")
    assert_equal(metrics["groups"], as_json(theirs["groups"]), "groups")
    assert metrics["groups"]["evk_group"]["acc,none"] == pytest.approx(
        (theirs["results"]["evk_mc"]["acc,none"] * 5 + theirs["results"]["evk_ll"]["acc,none"] * 5) / 10)
    assert ours["data"]["n-shot"] == theirs["n-shot"] and ours["data"]["n-samples"] == theirs["n-samples"]
    assert metrics["score_metric"] == "evk_group: acc,none" and metrics["score"] == results["evk_group"]["acc,none"]
    assert metrics["requests"] == 5 * 3 + 5 + 5 + 5 and metrics["documents"] == 20
    low, high = metrics["results"]["evk_rolling"]["word_perplexity_ci95,none"]
    assert low < results["evk_rolling"]["word_perplexity,none"] < high


def test_every_sample_and_generation_equals_lm_evals(runs):
    theirs, _, samples = runs
    expected = [{"task": name, **sample} for name, logged in as_json(theirs["samples"]).items() for sample in logged]
    assert len(samples) == len(expected) == 5 * 3 + 5 * 2  # the generation task logs each document per filter
    for ours, other in zip(sorted(samples, key=sample_key), sorted(expected, key=sample_key)):
        assert_equal(ours, other, f"{other['task']}[{other['doc_id']}]")
    generations = [sample["resps"] for sample in samples if sample["task"] == "evk_gen"]
    assert any(text[0][0] for text in generations)  # the model did generate (no empty responses only)


def sample_key(sample: dict) -> tuple:
    return sample["task"], sample["filter"], sample["doc_id"]


def test_a_missing_lm_eval_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an environment without lm-eval gives import
    with pytest.raises(EvalkitError, match=r"pip install 'evalkit\[lm-eval\]'"):
        evalkit.evaluate(model="smollm2-135m", task="lm_eval", cache_dir=None, **{"task.names": ["arc_easy"]})


def test_unknown_task_and_offline_dataset_are_one_line(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    for module in (huggingface_hub.constants, datasets.config):  # HF_HUB_OFFLINE=1 as read at import (done here)
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    (tmp_path / "hub_task.yaml").write_text("task: hub_task\ndataset_path: some_org/not_here\noutput_type: "
                                           "loglikelihood\ntest_split: test\ndoc_to_text: a\ndoc_to_target: b\n")
    common = dict(model="smollm2-135m", task="lm_eval", cache_dir=None, **{"task.include_path": str(tmp_path),
                                                                            "task.include_defaults": False})
    with pytest.raises(EvalkitError, match="no_such_task.*allowed: lm-eval's task"):
        evalkit.evaluate(**common, **{"task.names": ["no_such_task"]})
    with pytest.raises(EvalkitError, match="a dataset is not available.*dataset_path: json"):
        evalkit.evaluate(**common, **{"task.names": ["hub_task"]})
