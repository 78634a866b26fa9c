"""What the command line does before torch and transformers are imported (they take seconds): the first line on
screen, saying what will be evaluated and from where, and the one check whether the Hugging Face Hub can be reached.
Nothing here may import torch, transformers or huggingface_hub."""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from evalkit.config import CONF_DIR
from evalkit.config.presets import preset_config

# flags of Hydra's command line that take the next argument as their value
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun", "--info", "-i"}
# commands that print a config or a manual instead of running a job
NO_JOB_FLAGS = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc"}
# environment variables with which the user already decided about the network (a proxy: a direct probe would lie)
NETWORK_DECIDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                   "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 2.0


def command_line_overrides(argv: list[str]) -> list[str]:
    overrides, previous = [], ""
    for argument in argv:
        if "=" in argument and not argument.startswith("-") and previous not in VALUE_FLAGS:
            overrides.append(argument)
        previous = argument
    return overrides


@functools.cache
def config_defaults():
    """config.yaml's defaults list, read once per process (the announcement and the key check both ask)."""
    return OmegaConf.load(CONF_DIR / "config.yaml").defaults


def default_choice(group: str) -> str:
    defaults = config_defaults()
    return next(entry[group] for entry in defaults if isinstance(entry, Mapping) and group in entry)


def answer_lm_eval_syntax(argv: list[str]) -> None:
    """A command line in lm-eval's syntax, or a bare task name, ends here with its evalkit form (status 2): Hydra
    would answer it with a grammar error or its usage text."""
    from evalkit.cli.lm_eval_syntax import translation

    answer = translation(argv, VALUE_FLAGS)
    if answer is not None:
        print(answer, file=sys.stderr)
        sys.exit(2)


def announcement(argv: list[str]) -> str | None:
    """'evalkit: MODEL (where its weights are) on TASK' from the command line and the presets' files alone; None for a
    command that runs no job. The first line on screen: lm-eval's syntax is answered before it."""
    answer_lm_eval_syntax(argv)
    if NO_JOB_FLAGS & set(argv):
        return None
    values = {}
    for override in command_line_overrides(argv):
        key, value = override.split("=", 1)
        values[key.lstrip("+")] = value
    model, task = values.get("model", default_choice("model")), values.get("task", default_choice("task"))
    preset = CONF_DIR / "model" / f"{model}.yaml"
    where = values.get("model.name_or_path")
    if where is None and "," not in model and preset.is_file():
        where = preset_config(model).get("name_or_path")
    shown = where if "model.name_or_path" in values and "model.name" not in values else model
    origin = f" ({where})" if where and where != shown else ""
    sweep = "a sweep: " if {"-m", "--multirun"} & set(argv) else ""
    return f"evalkit: {sweep}{shown}{origin} on {task}; starting"


def go_offline_if_unreachable() -> str | None:
    """Set HF_HUB_OFFLINE=1 when the Hub's host does not answer one quick connection (libraries would otherwise
    retry every file for half a minute) and return the line that says so; None when it answers or the user has
    decided (HF_HUB_OFFLINE=0 forces online). Must run before huggingface_hub is imported: it reads the variable
    once, at import."""
    if any(os.environ.get(name) for name in NETWORK_DECIDED):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    finished, reached = threading.Event(), []

    def probe() -> None:  # in a thread: a name lookup can hang beyond any socket timeout
        try:
            socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
            reached.append(True)
        except OSError:
            pass
        finished.set()

    threading.Thread(target=probe, daemon=True).start()
    if finished.wait(PROBE_TIMEOUT_S) and reached:
        return None
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    return (f"evalkit: offline ({url.hostname} cannot be reached): models and data come from local files and the "
            "Hugging Face cache only; HF_HUB_OFFLINE=0 makes evalkit try the Hub anyway")
