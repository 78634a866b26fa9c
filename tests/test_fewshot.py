"""Few-shot prompts byte-identical to lm-evaluation-harness 0.4.13's (its ConfigurableTask, on local GSM8K data, is
the reference): the same examples for every document, in order, with the same delimiters."""

import json

import pytest
from conftest import SHARED_DATA
from lm_eval.api.task import ConfigurableTask

from evalkit.errors import EvalkitError
from evalkit.fewshot import FewShot, context, draw

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
    return [context([(gsm8k_text(pool[i]), pool[i]["answer"]) for i in picks], gsm8k_text(doc), fewshot)
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
