"""Batch sizes and batches, the same for every evaluator: ONE out-of-memory policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from evalkit.config.settings import check_setting
from evalkit.evaluators.base import RunSettings

# Attention kernels for batches whose sequence length changes from batch to batch (padded text, token-by-token
# decoding). cuDNN's is left out: it plans anew for every new shape, on the CPU, which made zero-shot NLI CPU-bound
# (benchmarks/results/gpu_notes.md); fixed-shape perplexity windows keep it.
VARIABLE_SHAPE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def resolve_batch_size(batch_size: int | str, auto: int) -> int:
    """A positive integer as given, or `auto`'s value for batch_size=auto; anything else is a clear error."""
    check_setting(RunSettings, "batch_size", batch_size)
    return auto if batch_size == "auto" else batch_size


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error)


def score_in_batches(todo: list[int], size: int, auto: bool, score: Callable[[list[int]], object],
                     on_batch: Callable[[list[int], object], None], groups: list[Hashable] | None = None,
                     device: torch.device | None = None, smaller: Callable[[], AbstractContextManager] | None = None
                     ) -> int:
    """Score the units `todo` in batches of at most `size`, in order, a batch never mixing two groups (groups are
    taken in the order their first unit appears). With `auto`, a batch that runs out of memory is halved and retried;
    finished batches are kept (`on_batch(indices, result)` has heard of them). A batch smaller than the batch size is
    scored inside `smaller()` when given. Returns the batch size that ran last."""
    grouped: dict[Hashable, list[int]] = defaultdict(list)
    for unit in todo:
        grouped[None if groups is None else groups[unit]].append(unit)
    for indices in grouped.values():
        done = 0
        while done < len(indices):
            batch = indices[done : done + size]
            try:
                with smaller() if smaller is not None and len(batch) < size else nullcontext():
                    result = score(batch)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not auto or size == 1 or not is_out_of_memory(error):
                    raise
                del error  # its traceback holds the failed batch's tensors
                size //= 2
                if device is not None and device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            on_batch(batch, result)
            done += len(batch)
    return size


def batches(order: list[int], size: int):
    for start in range(0, len(order), size):
        yield order[start : start + size]


def variable_shape_attention():
    """Context in which scaled-dot-product attention avoids kernels that re-plan for every new shape."""
    return sdpa_kernel(VARIABLE_SHAPE_ATTENTION)
