"""Few-shot prompts byte-identical to lm-evaluation-harness 0.4.13's (its ConfigurableTask, on local GSM8K data, is
the reference): the same examples for every document, in order, with the same delimiters."""

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from lm_eval.api.task import ConfigurableTask

from evalkit.errors import EvalkitError
from evalkit.evaluators.multiple_choice.questions import load_questions
from evalkit.fewshot import FewShot, draw, messages, plain_text

GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
DOCS = 30


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gsm8k_text(doc) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def lm_eval_contexts(test_file, fewshot_split: str, num_fewshot: int, sampler: str = "default") -> list[str]:
    config = {
        "task": "gsm8k_local", "dataset_path": "json", "output_type": "generate_until",
        "dataset_kwargs": {"data_files": {"train": str(GSM8K_TRAIN), "test": str(test_file)}},
        "training_split": "train", "fewshot_split": fewshot_split, "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}", "num_fewshot": num_fewshot,
        "fewshot_config": {"sampler": sampler}, "generation_kwargs": {"until": ["Question:"], "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=DOCS, rank=0, world_size=1)
    return [instance.args[0] for instance in sorted(task.instances, key=lambda instance: instance.doc_id)]


def evalkit_contexts(pool, docs, fewshot: FewShot, same_split: bool) -> list[str]:
    drawn = draw(pool, docs, fewshot, same_split)
    return [plain_text(messages([(gsm8k_text(pool[i]), pool[i]["answer"]) for i in picks], gsm8k_text(doc), fewshot))
            for picks, doc in zip(drawn, docs)]


@pytest.fixture(scope="module")
def train():
    return read_jsonl(GSM8K_TRAIN)


@pytest.mark.parametrize("num_fewshot", [0, 5])
def test_contexts_equal_lm_eval_with_a_separate_pool(train, tmp_path, num_fewshot):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("\n".join(json.dumps(doc) for doc in train[-DOCS:]), encoding="utf-8")
    ours = evalkit_contexts(train, train[-DOCS:], FewShot(num_fewshot), same_split=False)
    assert ours == lm_eval_contexts(test_file, "train", num_fewshot)
    assert all(text.count("Question:") == num_fewshot + 1 for text in ours)


@pytest.mark.parametrize("sampler", ["default", "first_n"])
def test_a_document_is_never_its_own_example_when_the_pool_is_its_split(train, tmp_path, sampler):
    docs = train[:DOCS]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("\n".join(json.dumps(doc) for doc in docs), encoding="utf-8")
    ours = evalkit_contexts(docs, docs, FewShot(3, sampler=sampler), same_split=True)
    assert ours == lm_eval_contexts(test_file, "test", 3, sampler)
    assert all(text.count(doc["question"]) == 1 for text, doc in zip(ours, docs))


def test_more_examples_than_the_pool_holds_is_one_error(train):
    with pytest.raises(EvalkitError, match="num_fewshot=5 exceeds the 5 examples"):
        draw(train[:5], train[:2], FewShot(5), same_split=True)


def arc_record(i: int) -> dict:
    labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3"]
    return {"id": f"q{i}", "question": f"Which of these is item {i} of the list?",
            "choices": {"text": [f"answer {i}-{k}" for k in range(len(labels))], "label": labels},
            "answerKey": labels[i % len(labels)]}


def hellaswag_record(i: int) -> dict:
    return {"ind": i, "activity_label": f"Activity {i % 4}", "ctx_a": f"A person does step {i} [title] carefully.",
            "ctx_b": "then they", "ctx": "", "endings": [f"ending {k} of {i} [step]" for k in range(4)],
            "source_id": "s", "split": "train", "split_type": "indomain", "label": str(i % 4)}


def winogrande_record(i: int) -> dict:
    return {"sentence": f"Sam gave Alex the book {i} because _ was done reading it.", "option1": "Sam",
            "option2": "Alex", "answer": str(1 + i % 2)}


MC_TASKS = {  # lm-eval task yaml -> (evalkit's questions format, record maker, lm-eval's evaluated split, whether it
    # leaves the document out of the pool: it names no test split, so lm-eval takes the pool for the evaluated split)
    "arc/arc_easy.yaml": ("arc", arc_record, "test", False),
    "hellaswag/hellaswag.yaml": ("hellaswag", hellaswag_record, "validation", True),
    "winogrande/default.yaml": ("winogrande", winogrande_record, "validation", True),
}


def lm_eval_pairs(yaml_name: str, files: dict, num_fewshot: int) -> list[list[tuple[str, str]]]:
    """Each document's (context, continuation) requests, built by lm-eval's own task definition on local files."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(lm_eval.tasks.__file__).parent / yaml_name)
    config.update(dataset_path="json", dataset_name=None, num_fewshot=num_fewshot,
                  dataset_kwargs={"data_files": {split: str(path) for split, path in files.items()}})
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=DOCS, rank=0, world_size=1)
    pairs: dict[int, list] = {}
    for instance in sorted(task.instances, key=lambda instance: (instance.doc_id, instance.idx)):
        pairs.setdefault(instance.doc_id, []).append(tuple(instance.args))
    return [pairs[doc] for doc in sorted(pairs)]


@pytest.mark.parametrize("yaml_name", sorted(MC_TASKS))
@pytest.mark.parametrize("num_fewshot", [0, 5])
def test_multiple_choice_requests_equal_lm_eval(tmp_path, yaml_name, num_fewshot):
    """arc_easy-, hellaswag- and winogrande-format questions with 5 examples drawn from a train split: every
    (context, continuation) pair byte-identical to lm-eval's requests."""
    questions_format, record, evaluated, exclude = MC_TASKS[yaml_name]
    files = {"train": tmp_path / "train.jsonl", evaluated: tmp_path / "eval.jsonl"}
    files["train"].write_text("\n".join(json.dumps(record(i)) for i in range(100, 160)), encoding="utf-8")
    files[evaluated].write_text("\n".join(json.dumps(record(i)) for i in range(DOCS)), encoding="utf-8")
    task = {"name": "mc", "questions": questions_format, "path": str(files[evaluated]),
            "fewshot": {"path": str(files["train"]), "exclude_document": exclude}}
    questions, _ = load_questions(task, None, DOCS, num_fewshot)
    ours = [list(zip(question.contexts, question.continuations)) for question in questions]
    assert ours == lm_eval_pairs(yaml_name, files, num_fewshot)
    assert all(pair[0].count("\n\n") >= num_fewshot for question in ours for pair in question)
