"""Local data yields what the hub would: the WikiText-2 rows, joined as the HF docs join them."""

import json

import datasets
import pytest
from conftest import SHARED_DATA, WIKITEXT

from evalkit.data import load_examples, load_text
from evalkit.errors import EvalkitError
from evalkit.evaluators.perplexity.documents import load_documents

WIKITEXT_TASK = {"name": "wikitext", "data_file": "wikitext-2-raw/wiki.test.raw", "line_rows": True, "join": "\n\n",
                 "hub": {"path": "wikitext", "name": "wikitext-2-raw-v1", "split": "test"}}


def test_local_wikitext_equals_hub_rows_joined():
    # the hub's wikitext builder yields each line of wiki.test.raw (newline kept), a blank " \n" line as ""
    lines = datasets.load_dataset("text", data_files=str(WIKITEXT), keep_linebreaks=True, split="train")["text"]
    hub_rows = [line if line.strip() else "" for line in lines]
    assert len(hub_rows) == 4358 and sum(1 for row in hub_rows if row) == 2891
    source = load_text(WIKITEXT_TASK, str(WIKITEXT.parent.parent))
    assert source.text == "\n\n".join(hub_rows)
    assert source.origin == str(WIKITEXT.resolve())


def test_explicit_path_wins_over_data_dir(tmp_path):
    own = tmp_path / "own.txt"
    own.write_text("my text")
    assert load_text({**WIKITEXT_TASK, "path": str(own), "line_rows": False},
                     str(WIKITEXT.parent.parent)).text == "my text"


def test_offline_without_local_copy_says_how_to_point_at_a_file(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(EvalkitError, match="task.path=FILE"):
        load_text(WIKITEXT_TASK, data_dir=None)


def test_classification_falls_back_to_the_hub_split(monkeypatch):
    """No local copy: the hub's rows, with the hub's own column names and 0-based labels (the `hub` section)."""
    rows = {"sentence": ["a delight", "a dull mess"], "label": [1, 0]}
    asked = []

    def load_dataset(path, name=None, split=None):
        asked.append((path, name, split))
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)  # the hub cannot be reached here
    task = {"name": "sst2", "data_file": "classification/sst2/missing", "format": "label_first", "text_field": "text",
            "label_field": "label", "labels": ["negative", "positive"],
            "hub": {"path": "glue", "name": "sst2", "split": "validation", "text_field": "sentence"}}
    examples = load_examples(task, data_dir="/nonexistent")
    assert asked == [("glue", "sst2", "validation")]
    assert examples.texts == rows["sentence"] and examples.labels == [1, 0]
    assert examples.origin == "hub:glue/sst2:validation"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_a_data_file_that_is_not_text_is_one_clear_error(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(bytes(range(128, 256)) * 8)
    task = {"name": "any", "path": str(path), "labels": ["a", "b"]}
    with pytest.raises(EvalkitError, match="is not UTF-8 text"):
        load_examples(task, None)


def test_documents_are_records_of_a_file_or_articles_of_wikitext(tmp_path):
    """task.documents=records: each record's text_field is a document (blank ones dropped); wikitext_articles cuts
    WikiText at its top-level headings; limit counts documents."""
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": text}) for text in ["first document", "  ", "second document"]))
    task = {"name": "docs", "path": str(path), "documents": "records", "text_field": "body"}
    assert load_documents(task, None, None) == (["first document", "second document"], str(path.resolve()))
    wikitext = {"name": "w", "path": None, "data_file": "wikitext-2-raw/wiki.test.raw",
                "documents": "wikitext_articles"}
    articles, _ = load_documents(wikitext, str(SHARED_DATA), 2)
    assert len(articles) == 2 and all(article.startswith(" = ") for article in articles)
