"""generate_until, as lm-evaluation-harness's HFLM defines it, for a causal LM.

A prompt is encoded as HFLM encodes it (the tokenizer's own special tokens, none when the prompt already starts with
the BOS text), cut from the left to max_length - max_gen_toks tokens, and continued for at most max_gen_toks tokens
with the model's key/value cache (decoding.py: what `generate` computes, with less work around it). The continuation
is decoded without special tokens and cut at the first occurrence of any stop string (the EOS text is always one).
A row stops generating once one of its stop strings appears, not only when every row of the batch has the same one
(HFLM's rule): what is kept, the text before the first stop string, is the same, with fewer wasted decode steps.

Padding is built in decoding.py, not by setting the tokenizer's padding_side: a sweep's jobs share one tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evalkit.errors import EvalkitError
from evalkit.scoring.decoding import decode
from evalkit.scoring.probes import model_device


@dataclass(frozen=True)
class Sampling:
    """How continuations are drawn: greedy unless do_sample (lm-eval's gen_kwargs: temperature, top_p)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 1234  # lm-eval's default seed; each batch draws from its own generator seeded with it

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


def cut_at_stop(text: str, strings: list[str]) -> str:
    """The text before the first occurrence of each stop string in turn (HFLM's postprocessing)."""
    for stop in strings:
        text = text.split(stop)[0]
    return text


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation, cut at the first stop string
    tokens: int  # tokens generated for it, up to where it was seen to stop


@torch.inference_mode()
def generate_batch(model, tokenizer, prompt_ids: list[list[int]], until: list[str], max_gen_toks: int,
                   sampling: Sampling = Sampling()) -> list[Generation]:
    """The continuation of each prompt (token ids), generated together (decoding.decode)."""
    strings = stop_strings(tokenizer, until)

    def is_stopped(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens)
        return any(stop in text for stop in strings)

    generator = None
    if sampling.do_sample:
        generator = torch.Generator(model_device(model)).manual_seed(sampling.seed)
    generated = decode(model, tokenizer, prompt_ids, max_gen_toks, sampling.generate_kwargs(), generator, is_stopped)
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [Generation(cut_at_stop(text, strings), len(tokens)) for text, tokens in zip(texts, generated)]


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
