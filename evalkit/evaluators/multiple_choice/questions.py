"""Multiple-choice and LAMBADA data as lm-evaluation-harness builds it, so that its numbers are reproduced: each
record becomes a Question of (context, continuation) pairs, one per choice, and the gold choice. A task YAML names its
`format`; the formats below follow lm-eval's task definitions (doc_to_text, doc_to_choice, doc_to_target, and the
target delimiter " " before each choice). Pure: no torch, so the command line checks tasks before importing it."""

from __future__ import annotations

import json
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


def shown(value) -> str:
    """A data value as its file wrote it (JSON), on one line."""
    return json.dumps(value, ensure_ascii=False, default=str)


def text_of(record: Mapping, key: str) -> str:
    """A field that must be a text: null, a number or a list is refused (never turned into "None" or "1")."""
    value = record[key]
    if not isinstance(value, str):
        raise EvalkitError(f"field '{key}' is {shown(value)}, not a text")
    return value


def index_of(record: Mapping, key: str, count: int) -> int:
    """An index field as lm-eval's templates read it (`{{label}}`): an integer, or a string of digits; a bool, a
    fraction or an index past the choices is refused."""
    value = record[key]
    digits = isinstance(value, str) and value.isascii() and value.isdigit()
    if not digits and not (isinstance(value, int) and not isinstance(value, bool)):
        raise EvalkitError(f"field '{key}' is {shown(value)}; allowed: an integer index 0-{count - 1}")
    if not 0 <= int(value) < count:
        raise EvalkitError(f"field '{key}' is {shown(value)}, not an index of the {count} choices (0-{count - 1})")
    return int(value)


def answer_index(record: Mapping, key: str, choices: list[str], labels: tuple[str, ...] = ()) -> int:
    """The gold choice as lm-eval 0.4.13's doc_to_target and process_results read a field: an integer is an index; a
    text is the choice of that text, else (its template rule) a string of digits is an index; where the task
    declares labels for its choices (A, B, C, D), a label names its choice."""
    value = record[key]
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    try:
        return index_of(record, key, len(choices))
    except EvalkitError as error:
        named = f", or a label ({', '.join(labels)})" if labels else " (lettered answers: set task.choice_labels)"
        raise EvalkitError(f"{error}, or the text of one of the choices{named}") from None


def choices_of(record: Mapping, key: str) -> list[str]:
    """A list of texts, or one text split on '|' (a CSV cell); a mapping or a number is refused."""
    value = record[key]
    if isinstance(value, str):
        value = value.split("|")
    if not isinstance(value, list):
        raise EvalkitError(f"field '{key}' is {shown(value)}; allowed: a list of texts, or texts joined by '|'")
    for number, choice in enumerate(value):
        if not isinstance(choice, str):
            raise EvalkitError(f"field '{key}' has {shown(choice)} as choice {number}, not a text")
    return value


def arc(record: Mapping) -> Question:
    labels = list(record["choices"]["label"])
    return shared(f"Question: {text_of(record, 'question')}\nAnswer:", choices_of(record["choices"], "text"),
                  labels.index(record["answerKey"]))


def hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow artefacts removed, as lm-eval's hellaswag task does."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(record: Mapping) -> Question:
    context = text_of(record, "ctx_a") + " " + text_of(record, "ctx_b").capitalize()
    endings = choices_of(record, "endings")
    return shared(hellaswag_clean(text_of(record, "activity_label") + ": " + context),
                  [hellaswag_clean(ending) for ending in endings], index_of(record, "label", len(endings)))


def piqa(record: Mapping) -> Question:
    solutions = [text_of(record, "sol1"), text_of(record, "sol2")]
    return shared(f"Question: {text_of(record, 'goal')}\nAnswer:", solutions, index_of(record, "label", 2))


def winogrande(record: Mapping) -> Question:
    """Partial scoring: each option completes the sentence up to the blank (the contexts); the rest of the sentence
    is the one continuation scored."""
    sentence = text_of(record, "sentence")
    blank = sentence.index("_")
    contexts = [sentence[:blank] + text_of(record, option) for option in ("option1", "option2")]
    rest = " " + sentence[blank + 1 :].strip()
    answer = record["answer"]  # 1 or 2, as a number or a text
    if isinstance(answer, bool) or str(answer) not in ("1", "2"):
        raise EvalkitError(f"field 'answer' is {shown(answer)}; allowed: 1 or 2")
    return Question(contexts, [rest, rest], contexts, int(answer) - 1)


def copa(record: Mapping) -> Question:
    connector = {"cause": "because", "effect": "therefore"}[record["question"]]
    choices = [" " + choice[0].lower() + choice[1:] for choice in (text_of(record, "choice1"),
                                                                   text_of(record, "choice2"))]
    return shared(text_of(record, "premise").strip()[:-1] + f" {connector}", choices,
                  index_of(record, "label", 2))


def mmlu(record: Mapping) -> Question:
    """lm-eval's mmlu prompt: the question, the four lettered choices, "Answer:"; the choices scored are " A".." D".
    A hub record has `choices` and an index `answer`; a row of the original CSV files has columns A-D and a letter."""
    choices = choices_of(record, "choices") if "choices" in record else [text_of(record, x) for x in "ABCD"]
    gold = answer_index(record, "answer", list("ABCD")[: len(choices)])
    lines = [text_of(record, "question").strip(), *(f"{letter}. {choice}" for letter, choice in zip("ABCD", choices))]
    return shared("\n".join(lines) + "\nAnswer:", list("ABCD"), gold)


def lambada(record: Mapping) -> Question:
    """The last word of the text is the target, after a space; scored alone (acc: it is the greedy continuation)."""
    context, word = text_of(record, "text").rsplit(" ", 1)
    return Question([context], [" " + word], [word], 0)


def fields(task: Mapping) -> Callable[[Mapping], Question]:
    """A local file's own columns: task.context_field (a text), task.choices_field (a list of texts, or texts
    joined by '|'), task.gold_field (an index, the gold choice's text, or one of task.choice_labels)."""
    context_key, choices_key = task.get("context_field") or "context", task.get("choices_field") or "choices"
    gold_key, labels = task.get("gold_field") or "gold", tuple(map(str, task.get("choice_labels") or ()))

    def question(record: Mapping) -> Question:
        choices = choices_of(record, choices_key)
        if len(choices) < 2:  # acc would be 1 whatever the model; LAMBADA's meaning is the lambada format's
            raise EvalkitError(f"field '{choices_key}' has {len(choices)} choice; a question needs two or more (a "
                               "single target scored as the greedy continuation is task.questions=lambada)")
        return shared(text_of(record, context_key), choices, answer_index(record, gold_key, choices, labels))

    return question


# formats of one target scored as lm-eval's loglikelihood output type (lambada_openai): acc is whether the target is
# the greedy continuation, and the targets' perplexity is reported; every other format is a choice among two or more
GREEDY_FORMATS = ("lambada",)


def scored_as_greedy(task: Mapping) -> bool:
    """Whether the task declares LAMBADA's meaning of acc (its question format), never guessed from the data."""
    return (task.get("questions") or "fields") in GREEDY_FORMATS


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
    for number, record in enumerate(records, 1):
        where = f"{origin} record {number}"
        try:
            questions.append(build(record))
        except EvalkitError as error:
            raise EvalkitError(f"{where}: {error}") from None
        except KeyError as error:
            raise EvalkitError(f"{where} has no field {error} (columns: {', '.join(map(str, record))})") from None
        except (ValueError, TypeError, AttributeError) as error:
            raise EvalkitError(f"{where} is not a {task.get('questions') or 'fields'} question "
                               f"({type(error).__name__}: {error})") from None
    return questions


def with_examples(question: Question, examples: list[Question], fewshot: FewShot, description: str = "") -> Question:
    """The question with the task's description and solved examples ahead of every context: each example's gold
    context and continuation (lm-eval's question, target delimiter and answer), then the few-shot delimiter."""
    solved = [(example.contexts[example.gold], example.continuations[example.gold]) for example in examples]
    prefix = plain_text(messages(solved, "", replace(fewshot, target_delimiter=""), description))  # the
    # continuation holds the target delimiter already
    return replace(question, contexts=[prefix + context for context in question.contexts])
