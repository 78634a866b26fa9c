"""A generation task's documents as prompts and references, as lm-evaluation-harness builds them: each record's
question from the task's `prompt` template and its answer from `target` (Python format fields naming the record's
columns: "Question: {question}\nAnswer:"), few-shot examples from the task's `fewshot` pool (evalkit/fewshot.py)
ahead of the question. Pure and torch-free: prompts are built while the data is read."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass

from evalkit.data import task_records
from evalkit.errors import EvalkitError
from evalkit.fewshot import Message, draw, fewshot_of, fewshot_pool, messages, plain_text


@dataclass(frozen=True)
class Document:
    turns: list[Message]  # the system turn, few-shot examples, then the question
    reference: str  # the target text the answers are compared with

    @property
    def prompt(self) -> str:
        """The prompt as plain text (no chat template)."""
        return plain_text(self.turns)


def render(template: str, record: Mapping, where: str) -> str:
    """The template with the record's fields filled in; a field the record lacks, or one that is no text or number
    (null would be the text "None"), is one error line."""
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            value = record[name] if name and name in record else ""
            if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise EvalkitError(f"{where} has {name!r}: {json.dumps(value, default=str)}, not a text or number "
                                   f"(task template: {template!r})")
        return template.format_map(record)
    except KeyError as error:
        raise EvalkitError(f"{where} has no field {error.args[0]!r} (task template: {template!r}); fields: "
                           f"{', '.join(map(str, record))}") from None
    except (ValueError, IndexError, AttributeError) as error:
        raise EvalkitError(f"task template {template!r} is not a format string ({error})") from None


def read_documents(task: Mapping, num_fewshot: int, data_dir: str | None, limit: int | None,
                   system_instruction: str | None = None) -> tuple[list[Document], str]:
    """The task's documents (the first `limit`), each with its prompt's turns and its reference, and their
    origin."""
    split, origin, fields = task_records(task, data_dir, fallback="jsonl")
    split = list(split)
    records = split[:limit]
    if not records:
        raise EvalkitError(f"{origin} holds no documents")
    prompt, target = str(fields.get("prompt", "{question}")), str(fields.get("target", "{answer}"))
    fewshot = fewshot_of(task, num_fewshot)
    pool, same_split = fewshot_pool(task, data_dir, split, origin) if num_fewshot else ([], False)

    def example(i: int) -> tuple[str, str]:  # only drawn rows are rendered (GSM8K's pool holds 7,473)
        return render(prompt, pool[i], f"{origin} few-shot row {i}"), render(target, pool[i], f"few-shot row {i}")

    description = str(task.get("description") or "")
    documents = []
    for row, (record, picks) in enumerate(zip(records, draw(pool, records, fewshot, same_split))):
        question = render(prompt, record, f"{origin} row {row}")
        turns = messages([example(i) for i in picks], question, fewshot, description, system_instruction)
        documents.append(Document(turns, render(target, record, f"{origin} row {row}")))
    return documents, origin
