"""Few-shot examples drawn and joined exactly as lm-evaluation-harness 0.4.13 does, so that prompts are byte-identical
to lm-eval's: one random.Random(1234) draws every evaluated document's examples in document order (`rnd.sample(pool,
n)`), or n + 1 with the document itself left out when the pool is the evaluated split; `first_n` takes the pool's
first n (MMLU's dev examples). An example is its question, the target delimiter, its answer and the few-shot
delimiter; the document's own question follows. Pure and torch-free: contexts are built while the data is read, so
they enter the data fingerprint, the cache key and every rank's and resumed run's prompts."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evalkit.data import task_records
from evalkit.errors import EvalkitError

FEWSHOT_SEED = 1234  # lm-eval's fewshot_random_seed
SAMPLERS = ("default", "first_n")


@dataclass(frozen=True)
class FewShot:
    """How a task's few-shot examples are chosen and joined (lm-eval's fewshot_config and delimiters)."""

    num_fewshot: int = 0
    sampler: str = "default"
    seed: int = FEWSHOT_SEED
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"


def num_fewshot_of(setting: int | None, task: Mapping) -> int:
    """The examples per prompt: the num_fewshot setting, else the task's own (gsm8k: 5), else none."""
    value = setting if setting is not None else task.get("num_fewshot", 0)
    if value < 0:
        raise EvalkitError(f"task.num_fewshot={value} is not allowed; allowed: an integer >= 0")
    return value


def fewshot_of(task: Mapping, num_fewshot: int) -> FewShot:
    section = task.get("fewshot") or {}
    sampler = section.get("sampler", "default")
    if sampler not in SAMPLERS:
        raise EvalkitError(f"task.fewshot.sampler={sampler} is not allowed; allowed: {', '.join(SAMPLERS)}")
    return FewShot(num_fewshot, sampler, target_delimiter=str(task.get("target_delimiter", " ")),
                   fewshot_delimiter=str(task.get("fewshot_delimiter", "\n\n")))


def fewshot_pool(task: Mapping, data_dir: str | None, split: Sequence[Mapping], origin: str) -> tuple[list, bool]:
    """The few-shot pool, and whether a document is kept out of its own examples: when the pool is the evaluated
    split (the whole split, `limit` or not: no `fewshot` source, or one with the same origin), or when the task says
    `fewshot.exclude_document: true`. lm-eval then draws n + 1 and drops the document, also from another split
    where its task names neither split (hellaswag, winogrande): a different draw, hence the key."""
    section = task.get("fewshot") or {}
    exclude = section.get("exclude_document")
    if not any(section.get(key) for key in ("path", "data_file", "hub")):
        return list(split), True if exclude is None else bool(exclude)
    sources = {"path": None, "data_file": None, "hub": None}  # the evaluated split's own are not the pool's
    pool, pool_origin, _ = task_records({**task, **sources, "name": f"{task.get('name')}.fewshot", **section},
                                        data_dir, fallback="jsonl")
    return list(pool), pool_origin == origin if exclude is None else bool(exclude)


def draw(pool: Sequence[Mapping], docs: Sequence[Mapping], fewshot: FewShot, same_split: bool) -> list[list[int]]:
    """For each document in order, the indices into `pool` of its examples (`same_split`: the document itself, and
    any row equal to it, is never its own example; see fewshot_pool)."""
    count = fewshot.num_fewshot
    if count == 0:
        return [[] for _ in docs]
    if count > len(pool) - same_split:
        raise EvalkitError(f"num_fewshot={count} exceeds the {len(pool)} examples of the few-shot pool")
    if fewshot.sampler == "first_n":
        return [[i for i in range(len(pool)) if not (same_split and pool[i] == doc)][:count] for doc in docs]
    rnd = random.Random(fewshot.seed)
    drawn = []
    for doc in docs:
        if not same_split:
            drawn.append(rnd.sample(range(len(pool)), count))
            continue
        picked = [i for i in rnd.sample(range(len(pool)), count + 1) if pool[i] != doc][:count]
        if len(picked) < count:  # the pool held copies of the document: draw again without any of them
            others = [i for i in range(len(pool)) if pool[i] != doc]
            if len(others) < count:
                raise EvalkitError(f"num_fewshot={count} exceeds the {len(others)} examples of the few-shot pool that "
                                   "are not the document itself")
            picked = rnd.sample(others, count)
        drawn.append(picked)
    return drawn


@dataclass
class Message:
    """One turn of a prompt: its role, its text, and what follows it when the turns are joined as plain text."""

    role: str  # system | user | assistant
    content: str
    delimiter: str = ""


def messages(examples: Sequence[tuple[str, str]], question: str, fewshot: FewShot, description: str = "",
             system_instruction: str | None = None) -> list[Message]:
    """The prompt as lm-eval builds its turns: a system turn (the instruction, then the task's description), each
    (question, answer) example as a user and an assistant turn, then the document's question."""
    turns = []
    system = join_with(system_instruction, description, fewshot.fewshot_delimiter)
    if system:
        turns.append(Message("system", system))
    for q, a in examples:
        turns += [Message("user", q, fewshot.target_delimiter), Message("assistant", a, fewshot.fewshot_delimiter)]
    return [*turns, Message("user", question)]


def join_with(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """prefix + delimiter + suffix, without the delimiter when either side has whitespace at the join."""
    if not prefix or not suffix:
        return prefix or suffix or ""
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def plain_text(turns: Sequence[Message]) -> str:
    return "".join(turn.content + turn.delimiter for turn in turns)


def chat_turns(turns: Sequence[Message], multiturn: bool) -> list[dict]:
    """The turns a chat template renders: each turn as it is (`multiturn`, lm-eval's fewshot_as_multiturn), or the
    system turn and one user turn holding the rest as plain text."""
    if multiturn:
        return [{"role": turn.role, "content": turn.content} for turn in turns]
    system = [{"role": "system", "content": turns[0].content}] if turns[0].role == "system" else []
    rest = turns[len(system):]
    return [*system, {"role": "user", "content": plain_text([*rest[:-1], Message("user", rest[-1].content)])}]
