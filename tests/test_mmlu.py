"""MMLU as lm-evaluation-harness's mmlu group scores it, on local files in the original layout (test/ and dev/
CSVs without a header): contexts byte-identical to lm-eval's own subject tasks at 0 and 5 shots, and acc per
subject equal to lm-eval's on a tiny random model, with the group's figures the mean over its questions."""

import csv
import json
from pathlib import Path

import lm_eval.tasks
import pytest
import transformers
from lm_eval.api.task import ConfigurableTask
from lm_eval.evaluator import evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks._yaml_loader import load_yaml
from omegaconf import OmegaConf

import evalkit
from evalkit.config import CONF_DIR
from evalkit.evaluators.multiple_choice.questions import load_questions
from evalkit.evaluators.multiple_choice.subsets import load_grouped

SUBJECTS = {"stem": ["anatomy", "college_physics"], "other": ["virology"]}
QUESTIONS = 4


def rows(subject: str, split: str, count: int) -> list[dict]:
    return [{"question": f" What is fact {k} of {subject} ({split})? ", "subject": subject,
             "choices": [f"{subject} option {k}-{c}" for c in range(4)], "answer": (k * 7 + len(subject)) % 4}
            for k in range(count)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The original layout (test/SUBJECT_test.csv, dev/SUBJECT_dev.csv: question, A-D, answer letter) and, for
    lm-eval, the same records as the hub's JSON (question, subject, choices, answer index)."""
    root = tmp_path_factory.mktemp("mmlu")
    for subject in [name for names in SUBJECTS.values() for name in names]:
        for split, count in (("test", QUESTIONS), ("dev", 5)):
            (root / split).mkdir(exist_ok=True)
            with open(root / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([r["question"], *r["choices"], "ABCD"[r["answer"]]]
                                             for r in rows(subject, split, count))
            (root / f"{subject}_{split}.jsonl").write_text("\n".join(map(json.dumps, rows(subject, split, count))))
    return root


def evalkit_task(folder: Path) -> dict:
    task = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "mmlu.yaml"))
    task.pop("defaults")
    return {**task, "subsets": SUBJECTS, "path": str(folder / "test" / "{subset}_test.csv"),
            "fewshot": {**task["fewshot"], "path": str(folder / "dev" / "{subset}_dev.csv")}}


def lm_eval_task(folder: Path, subject: str, num_fewshot: int) -> ConfigurableTask:
    config = load_yaml(Path(lm_eval.tasks.__file__).parent / "mmlu" / "default" / f"mmlu_{subject}.yaml")
    config.update(dataset_path="json", dataset_name=None, num_fewshot=num_fewshot, dataset_kwargs={"data_files": {
        "test": str(folder / f"{subject}_test.jsonl"), "dev": str(folder / f"{subject}_dev.jsonl")}})
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    return task


@pytest.mark.parametrize("num_fewshot", [0, 5])
def test_contexts_equal_lm_eval(folder, num_fewshot):
    questions, _ = load_grouped(evalkit_task(folder), lambda part: load_questions(part, None, None, num_fewshot))
    for subject in [name for names in SUBJECTS.values() for name in names]:
        task = lm_eval_task(folder, subject, num_fewshot)
        task.build_all_requests(rank=0, world_size=1)
        theirs: dict[int, list] = {}
        for instance in sorted(task.instances, key=lambda instance: (instance.doc_id, instance.idx)):
            theirs.setdefault(instance.doc_id, []).append(tuple(instance.args))
        ours = [list(zip(q.contexts, q.continuations)) for q in questions if q.subset == subject]
        assert ours == [theirs[doc] for doc in sorted(theirs)]
    assert all(q.contexts[0].count("\nAnswer:") == num_fewshot + 1 for q in questions)


def test_accuracy_per_subject_and_group_equals_lm_eval(folder, tiny_llama_dir, tmp_path):
    task = evalkit_task(folder)
    record = evalkit.evaluate(model={"name": "tiny-llama", "name_or_path": str(tiny_llama_dir)}, task="mmlu",
                              device="cpu", cache_dir=None, num_fewshot=5,
                              **{"task.subsets": SUBJECTS, "task.path": task["path"],
                                 "task.fewshot.path": task["fewshot"]["path"]})
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    lm = HFLM(pretrained=model, tokenizer=transformers.AutoTokenizer.from_pretrained(tiny_llama_dir), batch_size=4,
              device="cpu")
    subjects = [name for names in SUBJECTS.values() for name in names]
    theirs = evaluate(lm, {s: lm_eval_task(folder, s, 5) for s in subjects}, bootstrap_iters=0)["results"]
    metrics = record["metrics"]
    for subject in subjects:
        assert metrics["subsets"][subject] == {"acc": theirs[subject]["acc,none"], "questions": QUESTIONS}
    for group, names in SUBJECTS.items():
        expected = sum(theirs[name]["acc,none"] for name in names) / len(names)  # equal sizes: the plain mean
        assert metrics["groups"][group]["acc"] == pytest.approx(expected)
    assert metrics["acc"] == pytest.approx(sum(theirs[s]["acc,none"] for s in subjects) / len(subjects))
    assert metrics["questions"] == QUESTIONS * len(subjects)
