"""The batched core of perplexity: summed negative log-likelihood of a causal LM over windows of one token stream.

Windows of equal shape are batched with no padding (so batching never changes a number), the output layer runs only
at scored positions, cross-entropy is computed in float32 and summed per window in float64. When a batch's logits
would be large (128k vocabularies), the output layer and the NLL run over chunks of scored positions, so that the
batch size is limited by activations, not by logits. With a reference model,
the same batches also give KL(reference || model) per token, top-1 agreement and the reference's NLL.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from evalkit.evaluators.perplexity.windows import Window
from evalkit.job.batching import resolve_batch_size, score_in_batches

CPU_AUTO_BATCH = 1  # on 2 CPU cores larger batches measured slower (cache); OOM there kills rather than raises
CUDA_AUTO_BATCH = 128  # first try on accelerators, halved on out-of-memory until a batch fits
# scored rows x vocabulary above which the output layer runs in chunks: 1 GiB of float32 log-probabilities at once
LOGIT_BUDGET = 1 << 28
# float32 log-probabilities per log-softmax call on a CPU: 2 MiB, which stay in cache until the gather reads them
CPU_LOG_SOFTMAX_ELEMENTS = 1 << 19
OUTPUT_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (body, output layer) or None


@functools.cache
def keeps_logits(model_class: type) -> bool:
    """Whether the model's forward takes `logits_to_keep` (asked once per class, not once per batch)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def is_spread(model) -> bool:
    """Whether a device map spread the model over more than one device."""
    placement = getattr(model, "hf_device_map", None)
    return bool(placement) and len(set(placement.values())) > 1


def scored_logits(model, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at `positions` only: the output layer never runs on context positions when the model supports it.
    A model spread over several devices runs as body, then output layer at the positions, indexed on the body's
    last device: accelerate moves every tensor argument of the whole model's forward (`logits_to_keep` too) to its
    first device, where it cannot index states on the last ("indices should be either on cpu or on the same
    device"). Those logits stay on the output layer's device."""
    spread = is_spread(model)
    if spread and (split := output_split(model)) is not None:
        body, head = split
        hidden = body(input_ids=input_ids, use_cache=False).last_hidden_state
        return head(hidden[:, positions.to(hidden.device)])
    if keeps_logits(type(model)) and not spread:
        return model(input_ids=input_ids, logits_to_keep=positions, use_cache=False).logits
    logits = model(input_ids=input_ids, use_cache=False).logits
    return logits[:, positions.to(logits.device)]


def output_split(model) -> tuple | None:
    """(body, output layer) when the model's logits are exactly its output layer applied to its body's last hidden
    states, checked once per model on a probe (a model that scales or caps its logits is not split), else None."""
    if model not in OUTPUT_SPLITS:
        body = getattr(model, "base_model", model)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        split = None
        if body is not model and head is not None:
            device = next(model.parameters()).device
            probe = torch.arange(8, device=device)[None] % model.config.vocab_size
            whole = model(input_ids=probe, use_cache=False).logits.float()
            parts = head(body(input_ids=probe, use_cache=False).last_hidden_state).float()
            split = (body, head) if whole.shape == parts.shape and torch.allclose(whole, parts, 1e-4, 1e-4) else None
        OUTPUT_SPLITS[model] = split
    return OUTPUT_SPLITS[model]


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


def timed(clock: dict | None, key: str, device: torch.device, work: Callable):
    """work(), adding its duration to clock[key] when a clock is given (synchronising the device around it)."""
    if clock is None:
        return work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock[key] += time.perf_counter() - started
    return result


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


def window_sums(token_nll: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each window's NLL: its tokens' float32 NLLs summed in float64 (a mask leaves out positions another window
    of the batch scores)."""
    return (token_nll if mask is None else torch.where(mask, token_nll, 0.0)).double().sum(1)


def score_batch(model, input_ids, positions, mask=None, reference=None, clock=None,
                compile_nll=False) -> dict[str, torch.Tensor]:
    """Per-window figures for one batch: summed NLL; with a reference model also its NLL, the summed and largest
    per-token KL(reference || model), top-1 agreements, and each token's KL ("token_kl", [batch, targets]). `mask`
    ([batch, positions], from WindowInputs) marks each window's own scored positions when they differ (no reference
    model then)."""
    targets = input_ids[:, positions + 1, None]
    chunked = None if reference is not None else chunked_token_nll(model, input_ids, positions, targets, compile_nll)
    if chunked is not None:
        return {"nll": window_sums(chunked, mask)}
    if reference is None:
        logits = scored_logits(model, input_ids, positions)
        # a spread model's output layer may be on another device than its inputs
        nll = target_nll(logits, targets.to(logits.device), compile_nll)
        return {"nll": window_sums(nll.to(input_ids.device), mask)}
    log_probs = timed(clock, "model_seconds", input_ids.device,
                      lambda: scored_logits(model, input_ids, positions).log_softmax(-1, dtype=torch.float32))
    targets = targets.to(log_probs.device)
    nll = -log_probs.gather(-1, targets).squeeze(-1)
    ref_device = next(reference.parameters()).device
    ref_log_probs = timed(clock, "reference_seconds", ref_device, lambda: scored_logits(
        reference, input_ids.to(ref_device), positions.to(ref_device)).log_softmax(-1, dtype=torch.float32))
    ref_log_probs = ref_log_probs.to(log_probs.device)
    token_kl = F.kl_div(log_probs, ref_log_probs, log_target=True, reduction="none").sum(-1)
    figures = dict(
        nll=window_sums(nll, mask),
        reference_nll=-ref_log_probs.gather(-1, targets).squeeze(-1).double().sum(1),
        kl_sum=token_kl.double().sum(1),
        kl_max=token_kl.amax(1).double(),
        top1_agree=(log_probs.argmax(-1) == ref_log_probs.argmax(-1)).sum(1).double(),
        token_kl=token_kl,
    )
    return {name: value.to(input_ids.device) for name, value in figures.items()}


class WindowInputs:
    """Input ids, scored positions and their mask for a batch of windows of one shape (optionally each prefixed by a
    BOS). With `merge_contexts`, windows of one length but different contexts share a batch (the final windows of
    many documents, each reaching back to a full context): the positions are their union, and a mask marks each
    window's own."""

    def __init__(self, tokens: torch.Tensor, windows: list[Window], bos_token_id: int | None, device: torch.device,
                 merge_contexts: bool = False):
        self.tokens, self.windows, self.bos_token_id, self.device = tokens.to(device), windows, bos_token_id, device
        self.prefix = 0 if bos_token_id is None else 1
        self.merge_contexts = merge_contexts
        self.ranges: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def shape(self, index: int) -> tuple[int, int | None]:
        window = self.windows[index]
        return window.length, None if self.merge_contexts else window.target_begin - window.begin

    def __call__(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        length = self.windows[batch[0]].length
        offsets = [self.windows[i].target_begin - self.windows[i].begin for i in batch]
        offset = min(offsets)
        if (length, offset) not in self.ranges:  # input p predicts input p + 1: targets are [prefix + offset, ...)
            self.ranges[length, offset] = (
                torch.arange(self.prefix + offset - 1, self.prefix + length - 1, device=self.device),
                torch.arange(length, device=self.device))
        positions, steps = self.ranges[length, offset]
        begins = torch.tensor([self.windows[i].begin for i in batch], device=self.device)
        input_ids = self.tokens[begins[:, None] + steps]
        if self.prefix:
            input_ids = torch.cat([input_ids.new_full((len(batch), 1), self.bos_token_id), input_ids], dim=1)
        mask = None
        if max(offsets) != offset:  # a window scores from its own first target on (input p predicts p + 1)
            first = torch.tensor([self.prefix + o - 1 for o in offsets], device=self.device)
            mask = positions[None, :] >= first[:, None]
        return input_ids, positions, mask


@torch.inference_mode()
def score_windows(model: torch.nn.Module, tokens: torch.Tensor, windows: list[Window], batch_size: int | str = "auto",
                  bos_token_id: int | None = None, reference: torch.nn.Module | None = None,
                  compile_nll: bool = False) -> tuple[dict, int]:
    """Per-window figures (see score_batch; float64 on CPU, "token_kl" a list of per-window tensors) and the batch
    size that ran last: the library form of what the perplexity evaluator runs through the runner."""
    device = next(model.parameters()).device
    inputs = WindowInputs(tokens, windows, bos_token_id, device)
    auto = CPU_AUTO_BATCH if device.type == "cpu" else CUDA_AUTO_BATCH
    size = min(resolve_batch_size(batch_size, auto), len(windows)) if batch_size == "auto" else batch_size
    figures: dict = defaultdict(lambda: torch.zeros(len(windows), dtype=torch.float64, device=device))
    token_kl: list = [None] * len(windows)

    def keep(batch: list[int], result: dict) -> None:
        if "token_kl" in result:
            for index, row in zip(batch, result.pop("token_kl").cpu()):
                token_kl[index] = row
        for name, values in result.items():
            figures[name][torch.tensor(batch, device=device)] = values

    size = score_in_batches(list(range(len(windows))), size, batch_size == "auto",
                            lambda batch: score_batch(model, *inputs(batch), reference, compile_nll=compile_nll), keep,
                            groups=[inputs.shape(i) for i in range(len(windows))], device=device)
    scores = {name: values.cpu() for name, values in figures.items()}
    if reference is not None:
        scores["token_kl"] = token_kl
    return scores, size
