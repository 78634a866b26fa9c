"""The user's own task folder: `task_dir=DIR` (DIR/NAME.yaml), Hydra's `hydra.searchpath=[file://DIR]` and
`--config-dir DIR` (DIR/task/NAME.yaml) make a task YAML of theirs a task like a packaged one: composed with its
evaluator's keys, checked before torch, listed by --help, run through the API and the CLI; a bad folder is one line."""

import json
import subprocess
import sys

import pytest
from conftest import run_cli

import evalkit
from evalkit.cli.manual import manual
from evalkit.config.compose import check_command_line, compose_config
from evalkit.errors import EvalkitError

pytestmark = pytest.mark.cli

QUESTIONS = [
    {"context": "The sky on a clear day is", "choices": ["blue", "green", "loud"], "gold": 0},
    {"context": "Two plus two is", "choices": ["three", "four"], "gold": 1},
    {"context": "Fish live in", "choices": ["trees", "water", "fire"], "gold": 1},
    {"context": "Ice is made of frozen", "choices": ["water", "sand"], "gold": 0},
]


def quiz_yaml(name: str, questions_path, evaluator: str = "multiple_choice", context_field: str = "context") -> str:
    """A multiple-choice task of the user's, in the packaged multiple_choice task's schema."""
    return f"""# A quiz of the user's: four questions.
defaults:
  - /evaluator@_global_: {evaluator}

name: {name}
evaluator: {evaluator}
questions: fields
path: {questions_path}
context_field: {context_field}
choices_field: choices
gold_field: gold
"""


@pytest.fixture
def quiz_dir(tmp_path):
    """task_dir's own layout: DIR/quiz.yaml, beside its JSON Lines."""
    questions = tmp_path / "quiz.jsonl"
    questions.write_text("".join(json.dumps(question) + "\n" for question in QUESTIONS), encoding="utf-8")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "quiz.yaml").write_text(quiz_yaml("quiz", questions), encoding="utf-8")
    return folder


def test_own_task_runs_through_the_api_and_its_yaml_is_recorded(quiz_dir, tiny_llama_dir):
    model = {"name": "tiny-llama", "name_or_path": str(tiny_llama_dir)}
    record = evalkit.evaluate(model=model, task="quiz", task_dir=quiz_dir, device="cpu", cache_dir=None)
    assert record["task"] == "quiz" and record["evaluator"] == "multiple_choice"
    assert record["metrics"]["questions"] == len(QUESTIONS) and 0 <= record["metrics"]["acc"] <= 1
    assert record["config"]["task_dir"] == str(quiz_dir)
    assert record["config"]["task"]["context_field"] == "context" and "defaults" not in record["config"]["task"]
    assert record["settings"]["multiple_choice"]["norm"]  # the evaluator's keys, pulled by the task's defaults
    # an edit of the user's YAML changes the composed task, which the cache key holds
    (quiz_dir / "quiz.yaml").write_text(quiz_yaml("quiz", quiz_dir.parent / "quiz.jsonl", context_field="question"))
    edited = compose_config(model, "quiz", task_dir=str(quiz_dir))
    assert edited.task.context_field == "question"


def test_own_task_through_the_cli_with_task_dir_and_hydra_searchpath(quiz_dir, tiny_llama_dir, tmp_path):
    hydra_layout = tmp_path / "conf"
    (hydra_layout / "task").mkdir(parents=True)
    (hydra_layout / "task" / "quiz2.yaml").write_text(quiz_yaml("quiz2", tmp_path / "quiz.jsonl"))
    common = [f"model.name_or_path={tiny_llama_dir}", "device=cpu", "norm=bytes"]
    for run, selection in (("a", [f"task_dir={quiz_dir}", "task=quiz"]),
                           ("b", [f"hydra.searchpath=[file://{hydra_layout}]", "task=quiz2"])):
        result = run_cli(*common, *selection, f"hydra.run.dir={tmp_path / run}")
        assert result.returncode == 0, result.stderr
        record = json.loads((tmp_path / run / "results.json").read_text())
        assert record["task"] == selection[1].removeprefix("task=") and record["metrics"]["questions"] == 4
        assert record["settings"]["multiple_choice"]["norm"] == "bytes"
    assert record["config"]["task"]["path"] == str(tmp_path / "quiz.jsonl")


def test_own_tasks_are_listed_and_checked_before_torch(quiz_dir, tmp_path):
    """--help marks them as the user's; a bad value of the evaluator's keys is one error before torch is imported;
    --config-dir reads Hydra's layout."""
    listed = f" quiz (multiple_choice, from {quiz_dir}): A quiz of the user's: four questions."
    assert listed in " ".join(manual([f"task_dir={quiz_dir}"]).split())  # as one line: a long folder wraps
    assert listed in " ".join(run_cli(f"task_dir={quiz_dir}", "--help").stdout.split())  # the manual reads argv
    check_command_line([f"task_dir={quiz_dir}", "task=quiz", "norm=tokens"])
    script = f"""
import sys
from evalkit.config.compose import check_command_line
try:
    check_command_line(["task_dir={quiz_dir}", "task=quiz", "norm=words"])
except Exception as error:
    print(error)
print(sorted({{"torch", "transformers"}} & set(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.splitlines()[0].startswith("norm=words is not allowed; allowed:"), done.stdout + done.stderr
    assert done.stdout.splitlines()[1:] == ["[]"]
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (quiz_dir / "quiz.yaml").rename(tmp_path / "conf" / "task" / "quiz.yaml")
    check_command_line(["--config-dir", str(tmp_path / "conf"), "task=quiz"])
    with pytest.raises(EvalkitError, match="key 'stride' is not read by the multiple_choice evaluator"):
        check_command_line(["--config-dir", str(tmp_path / "conf"), "task=quiz", "stride=3"])


def bad_folders(tmp_path) -> dict:
    """case -> (folder, the words its one-line error holds)."""
    cases = {"missing folder": (tmp_path / "nowhere", "no such folder; allowed: a folder of task YAMLs")}
    for case, text, words in (
            ("empty folder", None, "holds no task: no *.yaml in"),
            ("not a task", "just: some settings\n", "is not a task: evaluator: None is not an evaluator; allowed:"),
            ("not YAML", "a: [unclosed\n", "is not a task: it cannot be read as YAML"),
            ("packaged name", quiz_yaml("arc_easy", "q.jsonl"), "has the name of a packaged task (arc_easy)"),
            ("name not the file's", quiz_yaml("other", "q.jsonl"), "name: other is not allowed; allowed: name: "),
            ("no evaluator keys", quiz_yaml("quiz", "q.jsonl").replace("/evaluator@_global_: multiple_choice",
                                                                         "/evaluator@_global_: perplexity"),
             "its defaults do not pull its evaluator's keys; allowed: defaults: [/evaluator@_global_: multiple_c")):
        folder = tmp_path / case.replace(" ", "_").replace("'", "")
        folder.mkdir()
        if text is not None:
            name = "arc_easy" if case == "packaged name" else "quiz"
            (folder / f"{name}.yaml").write_text(text)
        cases[case] = (folder, words)
    return cases


def test_a_bad_task_folder_is_one_clear_error(tmp_path):
    cases = bad_folders(tmp_path)
    for case, (folder, words) in cases.items():
        with pytest.raises(EvalkitError) as raised:
            check_command_line([f"task_dir={folder}", "task=quiz"])
        assert words in str(raised.value) and "\n" not in str(raised.value), (case, str(raised.value))
    with pytest.raises(EvalkitError, match="no such folder"):  # the API checks the folder the same way
        compose_config("gpt2", "quiz", task_dir=cases["missing folder"][0])
    result = run_cli(f"task_dir={cases['not a task'][0]}", "task=quiz")
    errors = [line for line in result.stderr.splitlines() if line.startswith("evalkit: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "is not a task" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
