"""Float32 log-probabilities from a causal LM's logits, the one implementation behind rolling (perplexity) and
pair (multiple choice, classification) scoring: a log-softmax in float32 straight from the (bfloat16) logits, over
chunks of positions on a CPU; per-token NLLs summed in float64. When a batch's logits would be large (128k
vocabularies), the output layer and the NLL run over chunks of scored positions, so that the batch size is limited
by activations, not by logits."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch

from evalkit.scoring.probes import output_split

# scored rows x vocabulary above which the output layer runs in chunks: 1 GiB of float32 log-probabilities at once
LOGIT_BUDGET = 1 << 28
# float32 log-probabilities per log-softmax call on a CPU: 2 MiB, which stay in cache until the gather reads them
CPU_LOG_SOFTMAX_ELEMENTS = 1 << 19


def position_chunks(logits: torch.Tensor) -> list[slice]:
    """Slices of the positions of logits [batch, positions, vocab] to take a float32 log-softmax of at a time: all at
    once on an accelerator (one kernel); on a CPU, chunks of CPU_LOG_SOFTMAX_ELEMENTS, whose output the next op reads
    from cache (written whole it goes out to memory and back: benchmarks/perplexity.py's `whole_log_softmax`
    variants measure the difference), of two rows at least (log-softmax spreads rows over threads)."""
    batch, positions, vocab = logits.shape
    if logits.device.type != "cpu":
        return [slice(None)]
    step = max(1 if batch > 1 else 2, CPU_LOG_SOFTMAX_ELEMENTS // (batch * vocab))
    return [slice(start, start + step) for start in range(0, positions, step)]


def log_softmax_chunks(logits: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(positions, their float32 log-probabilities) over position_chunks: a float32 log-softmax straight from the
    (bfloat16) logits, one kernel with no float32 copy of the logits first."""
    for chunk in position_chunks(logits):
        yield chunk, logits[:, chunk].log_softmax(-1, dtype=torch.float32)


def target_nll(logits: torch.Tensor, targets: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Each target's negative log-likelihood ([batch, positions], float32) from logits [batch, positions, vocab] and
    targets [batch, positions, 1], over log_softmax_chunks; `compiled`: compiled_token_nll's one pass instead."""
    if compiled:
        return compiled_token_nll()(logits, targets)
    return torch.cat([-log_probs.gather(-1, targets[:, chunk]).squeeze(-1)
                      for chunk, log_probs in log_softmax_chunks(logits)], dim=1)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each target's negative log-likelihood in float32: the logits' logsumexp minus the target's logit (written for
    torch.compile, which makes it one pass over the logits)."""
    return logits.float().logsumexp(-1) - logits.gather(-1, targets).squeeze(-1).float()


@functools.cache
def compiled_token_nll() -> Callable:
    """token_nll compiled: one pass over the (bfloat16) logits with an online logsumexp, several times faster than a
    float32 log-softmax and a gather on a GPU (benchmarks/results/gpu_notes.md). Made on first use: torch.compile
    imports the compiler (seconds)."""
    return torch.compile(token_nll, options={"coordinate_descent_tuning": True})


def step_scores(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row: the summed float64 log-probability of the masked targets, and whether each is the argmax of its
    float32 log-probabilities, as lm-eval compares them (logits [rows, steps, vocab] predicts targets [rows, steps]);
    on the device, no synchronisation per row."""
    picked, best = [], []
    for chunk, log_probs in log_softmax_chunks(logits):
        picked.append(log_probs.gather(-1, targets[:, chunk, None]).squeeze(-1))
        best.append(log_probs.argmax(-1))
    greedy = ((torch.cat(best, 1) == targets) | ~mask).all(1)
    return torch.where(mask, torch.cat(picked, 1), 0.0).double().sum(1), greedy


def window_sums(token_nll: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each window's NLL: its tokens' float32 NLLs summed in float64 (a mask leaves out positions another window
    of the batch scores)."""
    return (token_nll if mask is None else torch.where(mask, token_nll, 0.0)).double().sum(1)


def chunked_token_nll(model, input_ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                      compile_nll: bool) -> torch.Tensor | None:
    """Each target's NLL ([batch, targets], float32) with the output layer run over chunks of scored positions, when
    the batch's logits exceed LOGIT_BUDGET and the model splits into body and output layer; else None."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)  # None: not a transformers model
    if vocab is None or input_ids.shape[0] * len(positions) * vocab <= LOGIT_BUDGET:
        return None
    if (split := output_split(model)) is None:
        return None
    body, head = split
    hidden = body(input_ids=input_ids, use_cache=False).last_hidden_state
    index = positions.to(hidden.device)
    step = max(1, LOGIT_BUDGET // (vocab * input_ids.shape[0]))
    chunks = []
    for start in range(0, len(index), step):
        chunk = slice(start, start + step)
        logits = head(hidden[:, index[chunk]])  # on the output layer's device: under a device map maybe not hidden's
        wanted = targets[:, chunk].to(logits.device)
        chunks.append(target_nll(logits, wanted, compile_nll))
    return torch.cat([nll.to(input_ids.device) for nll in chunks], dim=1)
