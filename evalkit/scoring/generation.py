"""generate_until, as lm-evaluation-harness's HFLM defines it, for a causal LM.

A prompt is encoded as HFLM encodes it (the tokenizer's own special tokens, none when the prompt already starts with
the BOS text), cut from the left to max_length - max_gen_toks tokens, left-padded into a batch, and continued with
transformers' `generate` (KV cache) for at most max_gen_toks tokens. The continuation is decoded without special
tokens and cut at the first occurrence of any stop string (the EOS text is always one). A row stops generating once
one of its stop strings appears in its last tokens, not only when every row of the batch has the same one (HFLM's
rule): what is kept, the text before the first stop string, is the same, with fewer wasted decode steps.

Padding is built here, not by setting the tokenizer's padding_side: a sweep's jobs share one loaded tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

from evalkit.errors import EvalkitError
from evalkit.scoring.probes import model_device

LOOKBACK_SLACK = 2  # tokens beyond a stop string's own: a string may be generated as other, shorter tokens


@dataclass(frozen=True)
class Sampling:
    """How continuations are drawn: greedy unless do_sample (lm-eval's gen_kwargs: temperature, top_p)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 1234  # lm-eval's default seed; sampled batches draw from a generator seeded per batch

    def generate_kwargs(self) -> dict:
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}


def stop_strings(tokenizer, until: list[str] | tuple[str, ...]) -> list[str]:
    """The stop strings of a request: its own, then the EOS text (as HFLM adds it), empty strings left out."""
    strings = [text for text in until if text]
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
    if eos and eos not in strings:
        strings.append(eos)
    return strings


def encode_prompt(tokenizer, prompt: str, max_context: int) -> list[int]:
    """HFLM's tokens of a prompt: special tokens as the tokenizer adds them, unless the prompt starts with the BOS
    text; the last max_context of them (at least one: a prompt needs room)."""
    if max_context < 1:
        raise EvalkitError(f"max_gen_toks leaves no room for a prompt ({max_context} tokens of context); allowed: "
                           "max_gen_toks below the model's context length")
    starts_with_bos = tokenizer.bos_token is not None and prompt.startswith(tokenizer.bos_token)
    ids = tokenizer(prompt, add_special_tokens=not starts_with_bos)["input_ids"]
    return ids[-max_context:]


class StopWhenSeen(transformers.StoppingCriteria):
    """Per row: done once a stop string appears in the text of its last generated tokens."""

    def __init__(self, tokenizer, strings: list[str], prompt_width: int):
        self.tokenizer, self.strings, self.prompt_width = tokenizer, strings, prompt_width
        longest = max((len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in strings), default=0)
        self.lookback = longest + LOOKBACK_SLACK

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tails = input_ids[:, self.prompt_width:][:, -self.lookback:]
        texts = self.tokenizer.batch_decode(tails.tolist())
        return torch.tensor([any(s in text for s in self.strings) for text in texts], device=input_ids.device)


def cut_at_stop(text: str, strings: list[str]) -> str:
    """The text before the first occurrence of each stop string in turn (HFLM's postprocessing)."""
    for stop in strings:
        text = text.split(stop)[0]
    return text


def left_padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], device=device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=device)
    return ids, mask


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation, cut at the first stop string
    tokens: int  # tokens generated for it (the padding after a row stopped left out)


@torch.inference_mode()
def generate_batch(model, tokenizer, prompt_ids: list[list[int]], until: list[str], max_gen_toks: int,
                   sampling: Sampling = Sampling()) -> list[Generation]:
    """The continuation of each prompt (token ids), generated together."""
    strings = stop_strings(tokenizer, until)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = left_padded(prompt_ids, pad_id or 0, model_device(model))
    if sampling.do_sample:
        torch.manual_seed(sampling.seed)
    output = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_gen_toks, pad_token_id=pad_id,
        stopping_criteria=transformers.StoppingCriteriaList([StopWhenSeen(tokenizer, strings, input_ids.shape[1])]),
        use_cache=True, **sampling.generate_kwargs(),
    )
    tails = output[:, input_ids.shape[1]:]
    texts = tokenizer.batch_decode(tails.tolist(), skip_special_tokens=True)
    return [Generation(cut_at_stop(text, strings), generated_length(tail, pad_id)) for text, tail in zip(texts, tails)]


def generated_length(tail: torch.Tensor, pad_id: int | None) -> int:
    """Tokens a row generated: its tail up to the run of padding `generate` writes once the row has stopped."""
    if pad_id is None:
        return len(tail)
    real = (tail != pad_id).nonzero()
    return int(real[-1]) + 1 if len(real) else 0


def longest_first(prompts: list[str], encoded: list[list[int]]) -> list[int]:
    """The prompts' indices in HFLM's order: most tokens first, then by text (a batch pads little, and an
    out-of-memory error comes with the first batch)."""
    return sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), prompts[i]))


def generate_until(model, tokenizer, prompts: list[str], until: list[str] | tuple[str, ...], max_gen_toks: int,
                   max_length: int, batch_size: int = 1, sampling: Sampling = Sampling()) -> list[str]:
    """Each prompt's continuation, in the prompts' order; prompts run longest first in batches of `batch_size`
    (as HFLM orders them, so that a batch pads little)."""
    encoded = [encode_prompt(tokenizer, prompt, max_length - max_gen_toks) for prompt in prompts]
    order = longest_first(prompts, encoded)
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        generations = generate_batch(model, tokenizer, [encoded[i] for i in batch], list(until), max_gen_toks, sampling)
        for index, generation in zip(batch, generations):
            out[index] = generation.text
    return out
