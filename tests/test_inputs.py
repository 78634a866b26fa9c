"""Silent wrong inputs are refused in one line, and what lm-eval accepts is read as lm-eval reads it: the API's model
argument, every value of a user's data file (multiple choice, classification, generation, ASR manifests), nested
keys, and the messages and extras around them. Pure: no weights, no evaluation."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import ROOT, SMOL

import evalkit
from evalkit.config.checks import check_config
from evalkit.config.compose import compose_config
from evalkit.data import load_examples, load_utterances, read_text
from evalkit.errors import EvalkitError
from evalkit.evaluators.generation.prompts import render
from evalkit.evaluators.multiple_choice.questions import load_questions, scored_as_greedy

pytestmark = pytest.mark.unit


def write_jsonl(path: pathlib.Path, records: list) -> pathlib.Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_api_model_is_a_path_object_or_one_line(tmp_path):
    spec = compose_config(pathlib.Path(tmp_path / "gpt2"), "text").model  # a folder named like a preset: a path
    assert spec.name_or_path == str(tmp_path / "gpt2") and "architecture" not in spec
    for wrong in (12345, False, [], "", 1.5):
        with pytest.raises(EvalkitError) as error:
            evalkit.evaluate(model=wrong, task="text")
        assert str(error.value).startswith(f"model={wrong!r} is not allowed; allowed: a preset name (")
        assert "\n" not in str(error.value)
    assert logging.getLogger("torchao").level == logging.ERROR  # the API hides the CLI's known noise too


QUIZ = {"name": "quiz", "evaluator": "multiple_choice", "questions": "fields"}
NUMBERS = ["1", "2", "3", "4"]


@pytest.mark.parametrize("gold, labels, expected", [
    (3, None, 3),  # an integer is an index
    ("3", None, 2),  # a text is looked up in the choices first (lm-eval's doc_to_target of a field)
    ("B", ["A", "B", "C", "D"], 1),  # a label where the task declares them
    ("4", ["A", "B", "C", "D"], 3),
])
def test_multiple_choice_answers_follow_lm_eval(tmp_path, gold, labels, expected):
    path = write_jsonl(tmp_path / "q.jsonl", [{"context": "Pick", "choices": NUMBERS, "gold": gold}])
    (question,), _ = load_questions({**QUIZ, "path": str(path), "choice_labels": labels}, None, None)
    assert question.gold == expected and question.choices == NUMBERS


def test_a_csv_gold_of_digits_is_an_index_unless_it_is_a_choice(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("\ufeffcontext,choices,gold\nPick,a|b|c,2\nPick,1|2|3,2\n")  # Excel's BOM: no part of a column
    questions, _ = load_questions({**QUIZ, "path": str(path)}, None, None)
    assert [q.gold for q in questions] == [2, 1]


@pytest.mark.parametrize("record, message", [
    ({"context": "Pick", "choices": NUMBERS, "gold": True}, "record 1: field 'gold' is true; allowed: an integer"),
    ({"context": "Pick", "choices": NUMBERS, "gold": 1.9}, "record 1: field 'gold' is 1.9; allowed: an integer"),
    ({"context": "Pick", "choices": NUMBERS, "gold": 4}, "field 'gold' is 4, not an index of the 4 choices (0-3)"),
    ({"context": "Pick", "choices": NUMBERS, "gold": "B"}, "lettered answers: set task.choice_labels"),
    ({"context": None, "choices": NUMBERS, "gold": 0}, "field 'context' is null, not a text"),
    ({"context": "Pick", "choices": {"a": 1, "b": 2}, "gold": 0}, "field 'choices' is {\"a\": 1, \"b\": 2}; allowed: "
     "a list of texts"),
    ({"context": "Pick", "choices": ["a", 2], "gold": 0}, "field 'choices' has 2 as choice 1, not a text"),
    ({"context": "Pick", "choices": ["a"], "gold": 0}, "has 1 choice; a question needs two or more"),
    ({"context": "Pick", "choices": NUMBERS}, "record 1 has no field 'gold' (columns: context, choices)"),
])
def test_bad_multiple_choice_records_are_one_line_naming_record_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "q.jsonl", [record])
    with pytest.raises(EvalkitError) as error:
        load_questions({**QUIZ, "path": str(path)}, None, None)
    assert message in str(error.value) and str(path.resolve()) in str(error.value) and "\n" not in str(error.value)


def test_hub_formats_refuse_what_int_would_round(tmp_path):
    piqa = {"goal": "g", "sol1": "a", "sol2": "b", "label": 1.9}
    with pytest.raises(EvalkitError, match="field 'label' is 1.9; allowed: an integer index 0-1"):
        load_questions({**QUIZ, "questions": "piqa", "path": str(write_jsonl(tmp_path / "p.jsonl", [piqa]))}, None,
                       None)


def test_lambada_meaning_of_acc_is_declared_by_the_task_not_guessed_from_the_data():
    assert scored_as_greedy({"questions": "lambada"})
    assert not scored_as_greedy({"questions": "fields"}) and not scored_as_greedy({})


@pytest.mark.parametrize("label", [True, 1.9, None, "1.0"])
def test_classification_labels_that_int_would_round_are_refused(tmp_path, label):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "fine", "label": 0}, {"text": "bad", "label": label}])
    task = {"name": "c", "labels": ["negative", "positive"], "path": str(path)}
    with pytest.raises(EvalkitError, match=f"label {label!r} in row 1 is not a candidate"):
        load_examples(task, None)


def test_a_bom_csv_names_its_columns_as_written(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("\ufefftext,label\nfine,positive\n", encoding="utf-8")
    examples = load_examples({"name": "c", "labels": ["negative", "positive"], "path": str(path)}, None)
    assert examples.texts == ["fine"] and examples.labels == [1]
    assert read_text(path).startswith("text,")


def test_a_generation_field_that_is_null_is_no_text():
    assert render("Q: {question}", {"question": 12}, "f row 0") == "Q: 12"
    with pytest.raises(EvalkitError, match=r"^f row 0 has 'question': null, not a text or number"):
        render("Q: {question}", {"question": None}, "f row 0")


@pytest.mark.parametrize("line, message", [
    ({"audio": 5, "text": "hi"}, "has 'audio': 5; allowed: a string"),
    ({"audio": "a.wav", "text": ["hi"]}, "has 'text': [\"hi\"]; allowed: a string"),
    ({"audio": "a.wav", "text": "hi", "id": True}, "has 'id': true; allowed: a string or an integer"),
])
def test_asr_manifest_values_are_type_checked(tmp_path, line, message):
    path = write_jsonl(tmp_path / "m.jsonl", [line])
    with pytest.raises(EvalkitError, match=f"m.jsonl:1 {message}".replace("[", r"\[")):
        load_utterances({"name": "asr", "path": str(path)}, None)


@pytest.mark.parametrize("settings, message", [
    ({"task.txt_field": "body"}, "task.txt_field is not a key of task; did you mean text_field? allowed: "),
    ({"model.name_or_pth": "foo"}, "model.name_or_pth is not a key of model; did you mean name_or_path? allowed: "),
    ({"model.tokenizer": {"name_or_pat": "x"}}, "model.tokenizer.name_or_pat is not a key of model.tokenizer; did "
     "you mean name_or_path?"),
    ({"strid": 256}, "key 'strid' is not read by the perplexity evaluator (task text); did you mean stride? allowed"),
])
def test_unknown_nested_keys_are_refused_with_the_nearest_key(settings, message):
    with pytest.raises(EvalkitError) as error:
        check_config(compose_config(None, "text", **settings))
    assert str(error.value).startswith(message)


def test_tensor_parallel_under_one_process_says_so(monkeypatch):
    from evalkit.loading.options import LoadOptions, check_combinations

    monkeypatch.setenv("WORLD_SIZE", "1")  # what torchrun --nproc_per_node 1 sets
    with pytest.raises(EvalkitError, match="torchrun started one process .WORLD_SIZE=1.; give it --nproc_per_node N "
                       "with N >= 2, or leave tp_plan out"):
        check_combinations(LoadOptions(tp_plan="auto"))


def test_int8_on_a_cpu_names_cuda_and_the_cpu_alternative(monkeypatch):
    import importlib.util

    import torch

    from evalkit.loading.options import LoadOptions, check_combinations, check_on_device

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    check_combinations(LoadOptions(quantization="int8"))  # device=auto: not yet known to be a CPU
    with pytest.raises(EvalkitError) as error:
        check_on_device(LoadOptions(quantization="int8"), torch.device("cpu"))
    assert str(error.value) == ("quantization=int8 (bitsandbytes) needs a CUDA device, not cpu; on CPU use "
                                "quantization=torchao-int8")


def test_a_missing_extra_is_one_line_with_its_pip_command(monkeypatch):
    from evalkit.evaluators.asr.audio import wer_metrics

    monkeypatch.setitem(sys.modules, "jiwer", None)  # as if evalkit were installed without [asr]
    with pytest.raises(EvalkitError, match=r"^jiwer is not installed; it comes with evalkit's asr extra: pip install "
                       r"'evalkit\[asr\]'$"):
        wer_metrics(["a b"], ["a b"])


def test_version_is_evalkits():
    done = subprocess.run([sys.executable, "-m", "evalkit", "--version"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout == f"evalkit {evalkit.__version__}\n", done.stderr


def test_a_sweep_ends_with_a_table_of_its_runs(tmp_path):
    from evalkit.cli.summary import sweep_table
    from evalkit.cli.sweeps import finished_runs

    for job, stride, ppl in (("1", 512, 20.5), ("0", 256, 19.25), ("10", 1024, 21.0)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- limit=64\n- stride={stride}\n")
        record = {"evaluator": "perplexity", "metrics": {"perplexity": ppl, "perplexity_ci95": [ppl - 1, ppl + 1]}}
        (tmp_path / job / "results.json").write_text(json.dumps(record))
    (tmp_path / "2").mkdir()  # a failed job: no result, no row
    lines = sweep_table(finished_runs(tmp_path)).splitlines()
    assert [line.split()[:4] for line in lines[1:]] == [["0", "stride=256", "perplexity", "19.2500"],
                                                      ["1", "stride=512", "perplexity", "20.5000"],
                                                      ["10", "stride=1024", "perplexity", "21.0000"]]
    assert lines[1].endswith("[18.2500, 20.2500]")


def test_under_torchrun_only_rank_0_reports_a_sweep_and_records_its_failures(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from evalkit.cli.sweeps import FAILED_JOBS, SweepReport, record_failure

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    monkeypatch.setenv("RANK", "1")
    record_failure(tmp_path, 3, ["stride=0"], "stride=0 is not allowed")
    SweepReport().on_multirun_end(config)
    assert not (tmp_path / FAILED_JOBS).exists() and capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    record_failure(tmp_path, 3, ["stride=0"], "stride=0 is not allowed")
    with pytest.raises(SystemExit) as stop:
        SweepReport().on_multirun_end(config)
    assert stop.value.code == 2 and "job 3 (stride=0): stride=0 is not allowed" in capsys.readouterr().err


def test_the_default_models_former_name_is_an_alias_of_its_preset():
    from evalkit.config.presets import model_spec

    assert compose_config(None, "text").model.name == SMOL  # the Instruct model in a Q4_1 GGUF, labelled so
    assert model_spec("smollm2-135m") == model_spec(SMOL) and model_spec(SMOL)["name"] == SMOL
    assert compose_config("smollm2-135m", "text").model == compose_config(SMOL, "text").model
