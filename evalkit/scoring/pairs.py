"""Log-likelihoods of a question's (context, continuation) pairs, as lm-evaluation-harness's HFLM defines them (its
split of a pair into tokens, its left truncation to max_length + 1, float32 log-probabilities, is_greedy), computed
with less work: when a question's choices share their context, the context runs once and its key/value cache serves
every choice (one forward for the context, one batched forward for all continuations; none for one-token choices);
otherwise the pairs run as one right-padded batch (causal attention never looks at the padding after a sequence)."""

from __future__ import annotations

import torch

from evalkit.job.batching import variable_shape_attention
from evalkit.scoring.logprobs import step_scores
from evalkit.scoring.probes import cache_argument, model_device


def encode_pair(tokenizer, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """lm-eval's tokens of a pair: trailing spaces of the context move to the continuation; the continuation's
    tokens are those of context + continuation past the context's (merges across the boundary count as the
    continuation's); an empty context is the prefix token."""
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if context == "":
        return [prefix_id], encode(continuation)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = encode(context)
    return context_ids, encode(context + continuation)[len(context_ids):]


def padded(rows: list[list[int]], width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows right-padded with 0 to `width`, and the mask of their real tokens."""
    tokens = torch.tensor([row + [0] * (width - len(row)) for row in rows], device=device)
    lengths = torch.tensor([len(row) for row in rows], device=device)
    return tokens, torch.arange(width, device=device)[None] < lengths[:, None]


def as_pairs(lls: torch.Tensor, greedy: torch.Tensor) -> list[tuple[float, bool]]:
    return list(zip(lls.tolist(), greedy.tolist()))


def shared_contexts(model, questions: list[tuple[list[int], list[list[int]]]], device) -> list[list[tuple]]:
    """Questions whose contexts have one length (the runner batches them so: no padding): the contexts once, each
    context's cache repeated for its continuations, all continuations of the batch in one right-padded forward."""
    out = model(input_ids=torch.tensor([context for context, _ in questions], device=device), use_cache=True)
    first = out.logits[:, -1]  # predicts each continuation's first token
    continuations = [c for _, choices in questions for c in choices]
    rows = torch.repeat_interleave(torch.arange(len(questions), device=device),
                                   torch.tensor([len(c) for _, c in questions], device=device))
    longest = max(len(c) for c in continuations)
    targets, mask = padded(continuations, longest, device)
    lls, greedy = step_scores(first[rows, None], targets[:, :1], mask[:, :1])
    if longest > 1:  # tokens 1.. of each continuation, predicted from its own earlier tokens
        name = cache_argument(type(model))
        cache = out[name]
        cache.batch_select_indices(rows)
        rest = model(input_ids=targets[:, :-1], use_cache=True, **{name: cache}).logits
        more, more_greedy = step_scores(rest, targets[:, 1:], mask[:, 1:])
        lls, greedy = lls + more, greedy & more_greedy
    return split(as_pairs(lls, greedy), [len(choices) for _, choices in questions])


def separate_contexts(model, pairs: list[tuple[list[int], list[int]]], max_length: int, device) -> list[tuple]:
    """Each pair as its own sequence, (context + continuation)[-(max_length + 1):][:-1], right-padded together; a
    position predicts the next token of its sequence, and a pair's continuation positions are its last ones."""
    sequences = [(context + continuation)[-(max_length + 1):] for context, continuation in pairs]
    width = max(len(sequence) for sequence in sequences) - 1
    inputs, _ = padded([sequence[:-1] for sequence in sequences], width, device)
    targets, _ = padded([sequence[1:] for sequence in sequences], width, device)
    steps = torch.arange(width, device=device)[None]
    ends = torch.tensor([len(sequence) - 1 for sequence in sequences], device=device)[:, None]
    starts = ends - torch.tensor([len(continuation) for _, continuation in pairs], device=device)[:, None]
    logits = model(input_ids=inputs, use_cache=False).logits
    return as_pairs(*step_scores(logits, targets, (steps >= starts) & (steps < ends)))


def split(items: list, counts: list[int]) -> list[list]:
    starts = [sum(counts[:k]) for k in range(len(counts))]
    return [items[start : start + count] for start, count in zip(starts, counts)]


def shares_context(pairs: list[tuple[list[int], list[int]]], max_length: int) -> bool:
    """Whether a question's choices share one context that, with each continuation, fits the model."""
    return (len(pairs) > 1 and len({tuple(context) for context, _ in pairs}) == 1
            and all(len(context) + len(continuation) <= max_length + 1 for context, continuation in pairs))


@torch.inference_mode()
@variable_shape_attention()
def batch_scores(model, questions: list[list[tuple[list[int], list[int]]]], max_length: int,
                 shared: bool) -> list[list[tuple[float, bool]]]:
    """(log-likelihood, is_greedy) of each (context tokens, continuation tokens) pair of each question: `shared`
    questions (shares_context, contexts of one length) through their shared context, others pair by pair."""
    device = model_device(model)
    if shared:
        return shared_contexts(model, [(pairs[0][0], [c for _, c in pairs]) for pairs in questions], device)
    scores = separate_contexts(model, [pair for pairs in questions for pair in pairs], max_length, device)
    return split(scores, [len(pairs) for pairs in questions])
