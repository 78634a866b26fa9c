"""Typed settings (config/settings.py): each kind's values and refusals, a list-of-strings default, keys read only
with another key's value, and the leaderboard's marks; every refusal one line naming the value and what is allowed."""

from dataclasses import dataclass
from typing import Literal

import pytest

from evalkit.config.compose import compose_config
from evalkit.config.settings import STRINGS, check_only_with, describe, keys_with, read_settings, setting
from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class Example:
    size: int | Literal["auto"] = setting("auto", "how many", minimum=1)
    stops: STRINGS = setting(("\n\n",), "where to stop")
    tags: STRINGS | None = setting(None, "labels, or none")
    mode: str = setting("a", "which mode", choices=("a", "b"))
    extra: bool = setting(False, "only in mode b", only_with={"mode": "b"})
    name: str = setting("x", "a name", pattern=r"[a-z]+", compared=False, plotted=True)


@pytest.mark.parametrize("values, expected", [
    ({}, Example()),
    ({"size": 3}, Example(size=3)),
    ({"stops": ["a", "b"]}, Example(stops=("a", "b"))),  # a config's list is read as a tuple
    ({"stops": []}, Example(stops=())),
    ({"tags": ["x"]}, Example(tags=("x",))),
])
def test_allowed_values_are_read(values, expected):
    assert read_settings(Example, values) == expected


@pytest.mark.parametrize("key, value, message", [
    ("size", 0, "size=0 is not allowed; allowed: an integer >= 1, or auto"),
    ("size", True, "size=true is not allowed; allowed: an integer >= 1, or auto"),
    ("size", "many", "size=many is not allowed; allowed: an integer >= 1, or auto"),
    ("size", 2.5, "size=2.5 is not allowed; allowed: an integer >= 1, or auto"),
    ("stops", "\n", "stops=\\n is not allowed; allowed: a list of strings"),  # one line
    ("stops", ["a", 1], "stops=[a, 1] is not allowed; allowed: a list of strings"),
    ("stops", None, "stops=null is not allowed; allowed: a list of strings"),
    ("tags", [None], "tags=[null] is not allowed; allowed: a list of strings, or null"),
    ("mode", "c", "mode=c is not allowed; allowed: a, b"),
    ("name", "X1", "name=X1 is not allowed; allowed: a string matching [a-z]+"),
])
def test_refused_values_are_one_line_naming_what_is_allowed(key, value, message):
    with pytest.raises(EvalkitError) as raised:
        read_settings(Example, {key: value})
    assert str(raised.value) == message


def test_a_key_read_only_with_another_value_is_refused_with_any_other():
    check_only_with(read_settings(Example, {"mode": "b", "extra": True}))
    check_only_with(read_settings(Example, {"mode": "a", "extra": False}))  # its default: not set, nothing to refuse
    with pytest.raises(EvalkitError, match=r"^extra=true applies only with mode=b, not mode=a; allowed with mode=a: "
                                           r"extra=false$"):
        check_only_with(read_settings(Example, {"extra": True}))


def test_help_rows_and_leaderboard_marks():
    rows = {key: (default, meaning, allowed) for key, default, meaning, allowed in describe(Example)}
    assert rows["size"] == ("auto", "how many", "an integer >= 1, or auto")
    assert rows["stops"] == (("\n\n",), "where to stop", "a list of strings")
    assert rows["extra"][1] == "only in mode b (read only with mode=b)"
    assert keys_with(Example, compared=False) == keys_with(Example, plotted=True) == ("name",)


def test_run_and_loading_defaults_come_from_their_dataclasses(monkeypatch):
    """config.yaml declares none of them; the folders' defaults follow their environment variables."""
    cfg = compose_config(task="wikitext")
    assert cfg.batch_size == "auto" and cfg.quantization == "none" and cfg.compile == "auto"
    monkeypatch.setenv("EVALKIT_CACHE_DIR", "/somewhere/cache")
    monkeypatch.setenv("EVALKIT_DATA_DIR", "/somewhere/data")
    cfg = compose_config(task="wikitext")
    assert (cfg.cache_dir, cfg.data_dir) == ("/somewhere/cache", "/somewhere/data")
    monkeypatch.delenv("EVALKIT_CACHE_DIR")
    monkeypatch.delenv("EVALKIT_DATA_DIR")
    cfg = compose_config(task="wikitext")
    assert (cfg.cache_dir, cfg.data_dir) == ("~/.cache/evalkit", None)


def test_classification_keys_are_tied_to_their_method():
    """calibrate is read only with method=loglikelihood, multi_label only with nli; the method may be the task's."""
    from evalkit.config.checks import check_config

    with pytest.raises(EvalkitError, match="^calibrate=true applies only with method=loglikelihood, not method=nli"):
        check_config(compose_config(task="sst2", method="nli", calibrate=True))
    with pytest.raises(EvalkitError, match="^multi_label=true applies only with method=nli, not method=loglikelihood"):
        check_config(compose_config(task="sst2", multi_label=True))  # sst2's own method: loglikelihood
    assert check_config(compose_config(task="sst2", calibrate=True)).settings.calibrate
