"""Answer filters and exact match, as lm-evaluation-harness defines them (its `filter_list` and `exact_match`), so
that a task's figures are lm-eval's: a filter pipeline turns a document's responses (one per repeat) into the answer
that is scored. Pure functions of strings; a pipeline is declared in the task YAML:

    filters:
      strict-match: [{function: regex, regex_pattern: "#### (\\-?[0-9\\.\\,]+)"}, {function: take_first}]
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence

from evalkit.errors import EvalkitError

FALLBACK = "[invalid]"  # lm-eval's answer when a regex finds nothing


def regex(regex_pattern: str, group_select: int = 0, fallback: str = FALLBACK) -> Callable[[list[str]], list[str]]:
    """Each response's `group_select`-th match of `regex_pattern` (with groups: its first non-empty group), stripped
    (lm-eval's option names)."""
    compiled = re.compile(regex_pattern)

    def pick(response) -> str:
        found = compiled.findall(response if isinstance(response, str) else "")
        if not found:
            return fallback
        try:
            match = found[group_select]
        except IndexError:
            return fallback
        if isinstance(match, tuple):
            match = next((group for group in match if group), fallback)
        return match.strip()

    return lambda responses: [pick(response) for response in responses]


FILTERS: dict[str, Callable[..., Callable[[list[str]], list[str]]]] = {
    "regex": regex,
    "take_first": lambda: lambda responses: responses[:1],
    "lowercase": lambda: lambda responses: [response.lower() for response in responses],
    "uppercase": lambda: lambda responses: [response.upper() for response in responses],
    "remove_whitespace": lambda: lambda responses: [response.strip() for response in responses],
}


def filter_pipeline(steps: Sequence[Mapping], where: str) -> Callable[[list[str]], list[str]]:
    """One named filter of a task: its steps applied in order to a document's responses."""
    functions = []
    for step in steps:
        options = dict(step)
        name = options.pop("function", None)
        if name not in FILTERS:
            raise EvalkitError(f"{where}: filter function {name} is not known; allowed: {', '.join(FILTERS)}")
        try:
            functions.append(FILTERS[name](**options))
        except (TypeError, re.error) as error:
            raise EvalkitError(f"{where}: filter {name} with {options} is not valid ({error})") from None

    def apply(responses: list[str]) -> list[str]:
        for function in functions:
            responses = function(responses)
        return responses

    return apply


def normalized(text: str, regexes_to_ignore: Sequence[str] = (), ignore_case: bool = False,
               ignore_punctuation: bool = False, ignore_numbers: bool = False) -> str:
    """A string as lm-eval's exact_match compares it: regexes removed in order, then case, punctuation, digits."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    if ignore_numbers:
        text = text.translate(str.maketrans("", "", string.digits))
    return text


def exact_match(prediction: str, reference: str, **options) -> bool:
    return normalized(prediction, **options) == normalized(reference, **options)
