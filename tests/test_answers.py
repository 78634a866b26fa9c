"""Answer filters and exact match against lm-evaluation-harness's own (its RegexFilter, TakeFirstFilter and
exact_match), on GSM8K-style responses with its gsm8k task's two filters and metric options."""

import pytest
from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.filters.extraction import RegexFilter, WhitespaceFilter
from lm_eval.filters.selection import TakeFirstFilter
from lm_eval.filters.transformation import LowercaseFilter

from evalkit.errors import EvalkitError
from evalkit.evaluators.generation.answers import exact_match, filter_pipeline

RESPONSES = [
    ["She sold 48 + 24 = 72 clips.\n#### 72"], ["The answer is $1,234.50."], ["#### -3.5"], ["no number here"],
    ["It costs 5 dollars, then 10, so 15"], ["#### 1,000\n#### 7"], [" 12 ", "13"], ["x"], [""],
]
STRICT = {"regex_pattern": r"#### (\-?[0-9\.\,]+)"}
FLEXIBLE = {"regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)", "group_select": -1}
GSM8K_METRIC = {"ignore_case": True, "ignore_punctuation": False,
                "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}


@pytest.mark.parametrize("options", [STRICT, FLEXIBLE, {"regex_pattern": r"(\d)(\d)?"}])
def test_regex_then_take_first_equals_lm_eval(options):
    ours = filter_pipeline([{"function": "regex", **options}, {"function": "take_first"}], "test")
    theirs = list(TakeFirstFilter().apply(RegexFilter(**options).apply(RESPONSES, None), None))
    assert [ours(list(responses))[0] for responses in RESPONSES] == theirs


def test_a_match_index_past_the_matches_is_the_fallback():
    """(lm-eval raises IndexError there and loses the whole run.)"""
    second = filter_pipeline([{"function": "regex", "regex_pattern": r"\d+", "group_select": 1}], "test")
    assert second(["1 and 2", "only 1"]) == ["2", "[invalid]"]


def test_case_and_whitespace_filters_equal_lm_eval():
    ours = filter_pipeline([{"function": "lowercase"}, {"function": "remove_whitespace"}], "test")
    theirs = WhitespaceFilter().apply(LowercaseFilter().apply([["  MiXed Case\n"]], None), None)
    assert [ours(["  MiXed Case\n"])] == theirs


@pytest.mark.parametrize("options", [GSM8K_METRIC, {}, {"ignore_punctuation": True, "ignore_numbers": True}])
def test_exact_match_equals_lm_eval(options):
    predictions = ["72", "$1,234.50", "The answer: #### 7.", "72.", "Seventy", "1234.5", "9"]
    references = ["Step one.\n#### 72", "1234.50", "#### 7", "72", "seventy", "1234.50", "9"]
    ours = [exact_match(p, r, **options) for p, r in zip(predictions, references)]
    theirs = [exact_match_hf_evaluate([p], [r], **options)["exact_match"] for p, r in zip(predictions, references)]
    assert ours == [bool(value) for value in theirs] and any(ours) and not all(ours)


def test_an_unknown_filter_is_one_error_naming_it():
    with pytest.raises(EvalkitError, match="filter function majority is not known; allowed: regex, take_first"):
        filter_pipeline([{"function": "majority"}], "task.filters.strict-match")
