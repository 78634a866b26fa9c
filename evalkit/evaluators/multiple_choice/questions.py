"""Multiple-choice and LAMBADA data as lm-evaluation-harness builds it, so that its numbers are reproduced: each
record becomes a Question of (context, continuation) pairs, one per choice, and the gold choice. A task YAML names its
`format`; the formats below follow lm-eval's task definitions (doc_to_text, doc_to_choice, doc_to_target, and the
target delimiter " " before each choice). Pure: no torch, so the command line checks tasks before importing it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from evalkit.data import task_records
from evalkit.errors import EvalkitError
from evalkit.fewshot import FewShot, draw, fewshot_of, fewshot_pool, messages, plain_text


@dataclass(frozen=True)
class Question:
    contexts: list[str]  # one per choice: the same text (shared, encoded once), or one each (partial scoring)
    continuations: list[str]  # what is scored after each context
    choices: list[str]  # the choice texts (their lengths normalise acc_norm, as lm-eval's)
    gold: int
    subset: str | None = None  # a grouped task's subset (MMLU's subject)


def shared(context: str, choices: list[str], gold: int, delimiter: str = " ") -> Question:
    return Question([context] * len(choices), [delimiter + choice for choice in choices], list(choices), gold)


def arc(record: Mapping) -> Question:
    labels = list(record["choices"]["label"])
    return shared(f"Question: {record['question']}\nAnswer:", list(record["choices"]["text"]),
                  labels.index(record["answerKey"]))


def hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow artefacts removed, as lm-eval's hellaswag task does."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(record: Mapping) -> Question:
    context = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    return shared(hellaswag_clean(record["activity_label"] + ": " + context),
                  [hellaswag_clean(ending) for ending in record["endings"]], int(record["label"]))


def piqa(record: Mapping) -> Question:
    return shared(f"Question: {record['goal']}\nAnswer:", [record["sol1"], record["sol2"]], int(record["label"]))


def winogrande(record: Mapping) -> Question:
    """Partial scoring: each option completes the sentence up to the blank (the contexts); the rest of the sentence
    is the one continuation scored."""
    sentence = record["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (record["option1"], record["option2"])]
    rest = " " + sentence[blank + 1 :].strip()
    return Question(contexts, [rest, rest], contexts, {"1": 0, "2": 1}[str(record["answer"])])


def copa(record: Mapping) -> Question:
    connector = {"cause": "because", "effect": "therefore"}[record["question"]]
    choices = [" " + choice[0].lower() + choice[1:] for choice in (record["choice1"], record["choice2"])]
    return shared(record["premise"].strip()[:-1] + f" {connector}", choices, int(record["label"]))


def mmlu(record: Mapping) -> Question:
    """lm-eval's mmlu prompt: the question, the four lettered choices, "Answer:"; the choices scored are " A".." D".
    A hub record has `choices` and an index `answer`; a row of the original CSV files has columns A-D and a letter."""
    choices = list(record["choices"]) if "choices" in record else [record[letter] for letter in "ABCD"]
    answer = record["answer"]
    gold = "ABCD".index(answer) if answer in ("A", "B", "C", "D") else int(answer)
    if not 0 <= gold < len(choices):
        raise EvalkitError(f"answer {answer!r} is not one of A, B, C, D or 0-3")
    lines = [str(record["question"]).strip(), *(f"{letter}. {choice}" for letter, choice in zip("ABCD", choices))]
    return shared("\n".join(lines) + "\nAnswer:", list("ABCD"), gold)


def lambada(record: Mapping) -> Question:
    """The last word of the text is the target, after a space; scored alone (acc: it is the greedy continuation)."""
    context, word = record["text"].rsplit(" ", 1)
    return Question([context], [" " + word], [word], 0)


def fields(task: Mapping) -> Callable[[Mapping], Question]:
    """A local file's own columns: task.context_field, task.choices_field (a list, or a string split on '|'),
    task.gold_field (an index, or the gold choice's text)."""
    context_key, choices_key = task.get("context_field") or "context", task.get("choices_field") or "choices"
    gold_key = task.get("gold_field") or "gold"

    def question(record: Mapping) -> Question:
        choices = record[choices_key]
        choices = choices.split("|") if isinstance(choices, str) else list(choices)
        gold = record[gold_key]
        index = choices.index(gold) if gold in choices else int(gold)
        if not 0 <= index < len(choices):
            raise EvalkitError(f"gold {gold!r} is not one of {len(choices)} choices")
        return shared(str(record[context_key]), [str(choice) for choice in choices], index)

    return question


FORMATS: dict[str, Callable[[Mapping], Question]] = {
    "arc": arc, "hellaswag": hellaswag, "piqa": piqa, "winogrande": winogrande, "copa": copa, "lambada": lambada,
    "mmlu": mmlu,
}


def question_format(task: Mapping) -> Callable[[Mapping], Question]:
    name = task.get("questions") or "fields"
    if name == "fields":
        return fields(task)
    if name not in FORMATS:
        raise EvalkitError(f"task.questions={name} is not allowed; allowed: fields, {', '.join(FORMATS)}")
    return FORMATS[name]


def load_questions(task: Mapping, data_dir: str | None, limit: int | None,
                   num_fewshot: int = 0) -> tuple[list[Question], str]:
    """The task's questions from task.path, data_dir/task.data_file (JSON Lines or CSV), or the hub; with
    `num_fewshot`, each context follows that many solved examples from the task's few-shot pool."""
    split, origin, fields_of = task_records(task, data_dir, fallback="jsonl")
    split = list(split)
    records = split[:limit]
    questions = build_questions(records, fields_of, origin)
    if not questions:
        raise EvalkitError(f"{origin} holds no questions")
    fewshot, description = fewshot_of(task, num_fewshot), str(task.get("description") or "")
    pool, same_split = fewshot_pool(task, data_dir, split, origin) if num_fewshot else ([], False)
    solved = build_questions(pool, fields_of, f"{origin} few-shot pool")
    if num_fewshot or description:
        questions = [with_examples(question, [solved[i] for i in picks], fewshot, description)
                     for question, picks in zip(questions, draw(pool, records, fewshot, same_split))]
    return questions, origin


def build_questions(records: list[Mapping], task: Mapping, origin: str) -> list[Question]:
    build = question_format(task)
    questions = []
    for row, record in enumerate(records):
        try:
            questions.append(build(record))
        except (KeyError, ValueError, TypeError, AttributeError, EvalkitError) as error:
            raise EvalkitError(f"{origin} row {row} is not a {task.get('questions') or 'fields'} question "
                               f"({type(error).__name__}: {error})") from None
    return questions


def with_examples(question: Question, examples: list[Question], fewshot: FewShot, description: str = "") -> Question:
    """The question with the task's description and solved examples ahead of every context: each example's gold
    context and continuation (lm-eval's question, target delimiter and answer), then the few-shot delimiter."""
    solved = [(example.contexts[example.gold], example.continuations[example.gold]) for example in examples]
    prefix = plain_text(messages(solved, "", replace(fewshot, target_delimiter=""), description))  # the
    # continuation holds the target delimiter already
    return replace(question, contexts=[prefix + context for context in question.contexts])
