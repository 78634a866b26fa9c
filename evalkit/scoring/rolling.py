"""loglikelihood_rolling's core: summed negative log-likelihood of a causal LM over windows of one token stream.

Windows of equal shape are batched with no padding (so batching never changes a number), the output layer runs only
at scored positions (probes.scored_logits), cross-entropy is computed in float32 and summed per window in float64
(logprobs.py), in chunks of the output layer when a batch's logits would be large. With a reference model, the same
batches also give KL(reference || model) per token, top-1 agreement and the reference's NLL.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F

from evalkit.evaluators.perplexity.windows import Window
from evalkit.job.batching import resolve_batch_size, score_in_batches
from evalkit.loading.facts import context_length
from evalkit.scoring.logprobs import chunked_token_nll, target_nll, window_sums
from evalkit.scoring.probes import model_device, scored_logits

CPU_AUTO_BATCH = 1  # on 2 CPU cores larger batches measured slower (cache); OOM there kills rather than raises
CUDA_AUTO_BATCH = 128  # first try on accelerators, halved on out-of-memory until a batch fits


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


def score_batch(model, input_ids, positions, mask=None, reference=None, clock=None, compile_nll=False,
                context: int | None = None) -> dict[str, torch.Tensor]:
    """Per-window figures for one batch: summed NLL; with a reference model also its NLL, the summed and largest
    per-token KL(reference || model), top-1 agreements, and each token's KL ("token_kl", [batch, targets]). `mask`
    ([batch, positions], from WindowInputs) marks each window's own scored positions when they differ (no reference
    model then). `context`: the model's positions; a window's last token is only a label, so a window one token
    longer than them is forwarded without it (lm-eval's windows of max_length + 1 tokens on a model of max_length
    positions, e.g. GPT-2's 1,024); a window that fits is forwarded whole, as it always was."""
    targets = input_ids[:, positions + 1, None]
    if context is not None and input_ids.shape[1] > context:
        input_ids = input_ids[:, :-1]  # no scored position reads it: the logits at `positions` are unchanged
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
    ref_device = model_device(reference)
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
    device = model_device(model)
    context = context_length(getattr(model, "config", None))
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
                            lambda batch: score_batch(model, *inputs(batch), reference, compile_nll=compile_nll,
                                                     context=context), keep,
                            groups=[inputs.shape(i) for i in range(len(windows))], device=device)
    scores = {name: values.cpu() for name, values in figures.items()}
    if reference is not None:
        scores["token_kl"] = token_kl
    return scores, size
