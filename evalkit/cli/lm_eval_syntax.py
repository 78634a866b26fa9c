"""lm-evaluation-harness habits get evalkit answers: `--model hf --model_args pretrained=gpt2 --tasks arc_easy ...`,
or a bare task name, would reach Hydra as a grammar error or its usage text. Before torch is imported and before
Hydra reads the command line, such a command line is answered with the evalkit command line that does the same, in
one message; the user runs it (nothing is guessed and run on their behalf)."""

from __future__ import annotations

import shlex
from collections.abc import Collection
from dataclasses import dataclass, field

from evalkit.config import packaged

# lm-eval's flags (lm_eval/_cli/run.py, 0.4): canonical name -> how many values it takes (0, 1, "?": one unless the
# next argument is a flag, "+": every argument up to the next flag). Short forms that Hydra also has (-c, -h) are
# Hydra's, so they are not listed.
TAKES = {"--model": 1, "--model_args": "+", "--tasks": "+", "--num_fewshot": 1, "--limit": 1, "--batch_size": 1,
         "--max_batch_size": 1, "--device": 1, "--output_path": 1, "--include_path": 1, "--log_samples": 0,
         "--trust_remote_code": 0, "--config": 1, "--use_cache": 1, "--apply_chat_template": "?", "--gen_kwargs": "+",
         "--samples": 1, "--cache_requests": "?", "--check_integrity": 0, "--system_instruction": 1,
         "--fewshot_as_multiturn": "?", "--verbosity": 1, "--write_out": 0, "--show_config": 0, "--wandb_args": "+",
         "--wandb_config_args": "+", "--trackio_args": "+", "--hf_hub_log_args": "+", "--predict_only": 0,
         "--seed": 1, "--confirm_run_unsafe_code": 0, "--metadata": "+"}
SHORT = {"-M": "--model", "-a": "--model_args", "-t": "--tasks", "-f": "--num_fewshot", "-L": "--limit",
         "-b": "--batch_size", "-o": "--output_path", "-s": "--log_samples", "-C": "--config", "-E": "--samples",
         "-v": "--verbosity", "-w": "--write_out", "-x": "--predict_only"}
HF_MODELS = {"hf", "hf-auto", "huggingface"}  # lm-eval's transformers backend: what evalkit always uses
SAME_KEYS = {"--num_fewshot": "num_fewshot", "--device": "device", "--system_instruction": "system_instruction",
             "--apply_chat_template": "apply_chat_template", "--fewshot_as_multiturn": "fewshot_as_multiturn"}
MODEL_ARGS = {"pretrained": "model.name_or_path", "revision": "model.revision", "dtype": "dtype",
              "torch_dtype": "dtype", "trust_remote_code": "trust_remote_code"}
DTYPES = {"half": "float16", "float": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16",
          "torch.float32": "float32"}


@dataclass
class Translation:
    keys: list[str] = field(default_factory=list)  # evalkit's KEY=VALUE, in the command line's order
    tasks: list[str] = field(default_factory=list)
    through_lm_eval: bool = False  # some task is lm-eval's alone: every task goes to task=lm_eval
    untranslated: list[str] = field(default_factory=list)
    output: str | None = None


def split_flags(argv: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(lm-eval flag, its values) in order, and the other arguments (evalkit's own, bare words)."""
    flags, others, position = [], [], 0
    while position < len(argv):
        argument = argv[position]
        name, equals, attached = argument.partition("=")
        flag = SHORT.get(name, name)
        position += 1
        if flag not in TAKES or not argument.startswith("-"):
            others.append(argument)
            continue
        values = [attached] if equals else []
        wanted = TAKES[flag]
        while not equals and position < len(argv) and not argv[position].startswith("-") and (
                wanted == "+" or len(values) < (wanted if wanted != "?" else 1)):
            values.append(argv[position])
            position += 1
        flags.append((flag, values))
    return flags, others


def model_args(text: str, into: Translation) -> None:
    """`pretrained=gpt2,dtype=bfloat16,trust_remote_code=True`: the arguments evalkit has a key for."""
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in MODEL_ARGS:
            into.untranslated.append(f"--model_args {item}")
        elif name == "trust_remote_code":
            into.keys.append(f"trust_remote_code={str(value.lower() in ('true', '1', 'yes')).lower()}")
        else:
            into.keys.append(f"{MODEL_ARGS[name]}={DTYPES.get(value, value) if 'dtype' in name else value}")


def one_flag(flag: str, values: list[str], into: Translation) -> None:
    value = ",".join(values)
    if flag == "--model":
        if value not in HF_MODELS:
            into.untranslated.append(f"--model {value} (evalkit loads models with transformers)")
    elif flag == "--model_args":
        model_args(value, into)
    elif flag == "--tasks":
        into.tasks += [task for task in value.split(",") if task]
    elif flag in SAME_KEYS:  # a switch given without its value ("?") is on
        into.keys.append(f"{SAME_KEYS[flag]}={value or 'true'}")
    elif flag == "--limit":
        whole = value.removesuffix(".0")
        if whole.isdigit():
            into.keys.append(f"limit={whole}")
        else:
            into.untranslated.append(f"--limit {value} (a fraction; evalkit's limit counts examples)")
    elif flag == "--batch_size":
        into.keys.append(f"batch_size={'auto' if value.startswith('auto') else value}")
    elif flag == "--include_path":
        into.keys.append(f"task_dir={value}")
    elif flag == "--output_path":
        into.output = value
    elif flag == "--trust_remote_code":
        into.keys.append("trust_remote_code=true")
    elif flag != "--log_samples":  # evalkit always writes samples.jsonl
        into.untranslated.append(" ".join([flag, *values]))


def evalkit_command(translation: Translation, others: list[str]) -> str:
    """The model first, then the task, then every other key, as the README writes them."""
    sweep = "-m" in others or "--multirun" in others or (len(translation.tasks) > 1 and not translation.through_lm_eval)
    keys = [argument for argument in others if argument not in ("-m", "--multirun")] + translation.keys
    if translation.through_lm_eval:  # one job: lm-eval builds them all, groups and aggregates included
        keys += ["task=lm_eval", f"task.names=[{','.join(translation.tasks)}]"]
    elif translation.tasks:
        keys.append(f"task={','.join(translation.tasks)}")
    order = ("model=", "model.", "task_dir=", "task=", "task.")
    keys.sort(key=lambda key: next((rank for rank, start in enumerate(order) if key.startswith(start)), len(order)))
    words = ["python", "-m", "evalkit", *(["-m"] if sweep else []), *keys]
    if translation.output is not None:
        words.append(f"hydra.{'sweep' if sweep else 'run'}.dir={translation.output}")
    return " ".join(map(shlex.quote, words))


def bare_words(others: list[str], value_flags: Collection[str]) -> list[str]:
    """Arguments that are neither KEY=VALUE nor a flag nor a flag's value."""
    bare, previous = [], ""
    for argument in others:
        if "=" not in argument and not argument.startswith("-") and previous not in value_flags:
            bare.append(argument)
        previous = argument
    return bare


def translation(argv: list[str], value_flags: Collection[str]) -> str | None:
    """The message answering a command line in lm-eval's syntax, or of bare task / model names; None for evalkit's
    own (`value_flags`: Hydra's flags that take the next argument)."""
    flags, others = split_flags(argv)
    if flags and others[:1] == ["run"]:  # lm-eval's `lm-eval run --model ...`
        others = others[1:]
    bare = bare_words(others, value_flags)
    tasks, models = set(packaged("task")), set(packaged("model"))
    if not flags and (not bare or not set(bare) <= tasks | models):
        return None
    translated = Translation()
    for flag, values in flags:
        one_flag(flag, values, translated)
    for word in bare:
        others.remove(word)
        if word in tasks:
            translated.tasks.append(word)
        elif word in models:
            translated.keys.append(f"model={word}")
        else:
            translated.untranslated.append(word)
    unknown = [task for task in translated.tasks if task not in tasks]
    if unknown and not any(key.startswith("task_dir=") for key in translated.keys):
        translated.through_lm_eval = True
        translated.untranslated.append(f"{', '.join(unknown)}: lm-eval's own definitions, through task=lm_eval "
                                       "(pip install 'evalkit[lm-eval]')")
    lead = "this is lm-evaluation-harness's syntax" if flags else "a task or model is chosen as task=NAME / model=NAME"
    left = f"; not translated: {'; '.join(translated.untranslated)}" if translated.untranslated else ""
    return f"evalkit: {lead}; in evalkit: {evalkit_command(translated, others)}{left}"
