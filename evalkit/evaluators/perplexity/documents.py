"""Documents of a per-document perplexity task (`task.documents`): each document gets its own windows and the figures
are summed over documents, as lm-evaluation-harness's rolling-perplexity tasks do. Rules: `records` (each record or
row of the task's data is a document) and `wikitext_articles` (WikiText's text cut at its top-level headings: one
article per document, as lm-eval's wikitext task reads EleutherAI/wikitext_document_level). `task.detokenize:
wikitext` undoes WikiText's tokenisation (" @-@ ", " , ", ...) before scoring, with lm-eval's rules; words and bytes
are still counted on the original text, as lm-eval counts them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from evalkit.data import local_file, read_text, text_rows
from evalkit.errors import EvalkitError

RULES = ("records", "wikitext_articles")
ARTICLE_HEADING = re.compile(r" = [^=].* = \s*")  # " = Title = ": a level-1 heading (lower levels are "= = ...")

# lm-eval's wikitext detokenizer, in order: (regular expression or None for a plain replacement, old, new)
WIKITEXT_RULES = [
    (None, "s '", "s'"), ("re", r"/' [0-9]/", r"/'[0-9]/"),
    (None, " @-@ ", "-"), (None, " @,@ ", ","), (None, " @.@ ", "."),
    *((None, f" {mark} ", f"{mark} ") for mark in ": ; . ! ? ,".split()),
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"), ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"), ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'), ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    (None, "= = = =", "===="), (None, "= = =", "==="), (None, "= =", "=="),
    (None, " \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"), (None, " \n", "\n"), (None, "\n ", "\n"), (None, " N ", " 1 "),
    (None, " 's", "'s"),
]


def wikitext_detokenize(text: str) -> str:
    for kind, old, new in WIKITEXT_RULES:
        text = re.sub(old, new, text) if kind else text.replace(old, new)
    return text


DETOKENIZERS: dict[str, Callable[[str], str]] = {"wikitext": wikitext_detokenize}


def detokenizer(task: Mapping) -> Callable[[str], str]:
    name = task.get("detokenize")
    if name is None:
        return lambda text: text
    if name not in DETOKENIZERS:
        raise EvalkitError(f"task.detokenize={name} is not allowed; allowed: {', '.join(DETOKENIZERS)}, or null")
    return DETOKENIZERS[name]


def check_documents(task: Mapping) -> None:
    if task.get("documents") not in (None, *RULES):
        raise EvalkitError(f"task.documents={task['documents']} is not allowed; allowed: {', '.join(RULES)}, or null")
    detokenizer(task)


def articles(lines: list[str]) -> list[str]:
    """Lines (newlines kept) cut before each top-level heading; text before the first heading is its own document."""
    found: list[list[str]] = []
    for line in lines:
        if ARTICLE_HEADING.fullmatch(line) or not found:
            found.append([])
        found[-1].append(line)
    return ["".join(article) for article in found]


def load_documents(task: Mapping, data_dir: str | None, limit: int | None) -> tuple[list[str], str]:
    """The task's documents (the first `limit` of them), from task.path, data_dir/task.data_file or the hub."""
    path, _ = local_file(task, data_dir)
    if path and task["documents"] == "wikitext_articles" and path.suffix not in (".jsonl", ".json"):
        rows, origin = read_text(path).splitlines(keepends=True), str(path.resolve())  # each line as written
    else:
        if path is None and task.get("hub"):
            task = {**task, **task["hub"]}  # the hub copy may name its column differently, and be cut already
        rows, origin, _ = text_rows(task, data_dir)
    documents = [doc for doc in (articles(rows) if task["documents"] == "wikitext_articles" else rows) if doc.strip()]
    if not documents:
        raise EvalkitError(f"{origin} holds no documents")
    return documents[:limit], origin
