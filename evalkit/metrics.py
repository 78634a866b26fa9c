"""Metrics as pure functions of counts: no models, no tensors."""

from __future__ import annotations

import math
import re


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word_perplexity: pieces of a split on whitespace runs."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def perplexity_metrics(nll_sum: float, tokens: int, num_bytes: int, num_words: int) -> dict:
    """Corpus-level figures from a summed negative log-likelihood (nats), never from a mean of window means."""
    nll_per_token = nll_sum / tokens
    return {
        "perplexity": math.exp(nll_per_token),
        "nll_per_token": nll_per_token,
        "nll_sum": nll_sum,
        "bits_per_byte": nll_sum / (num_bytes * math.log(2)),
        "byte_perplexity": math.exp(nll_sum / num_bytes),
        "word_perplexity": math.exp(nll_sum / num_words),
        "tokens_scored": tokens,
        "bytes": num_bytes,
        "words": num_words,
    }
