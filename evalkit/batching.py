"""Batch sizes and batches, the same for every evaluator."""

from __future__ import annotations

from collections.abc import Iterator

from torch.nn.attention import SDPBackend, sdpa_kernel

from evalkit.errors import EvalkitError

# Attention kernels for batches whose sequence length changes from batch to batch (padded text, token-by-token
# decoding). cuDNN's is left out: it plans anew for every new shape, which measured 4.8 ms of CPU per attention call
# on an H200 and made zero-shot NLI CPU-bound (2.8 s of 3.3 s); fixed-shape perplexity windows keep it.
VARIABLE_SHAPE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def resolve_batch_size(batch_size: int | str, auto: int) -> int:
    """A positive integer as given, or `auto`'s value for batch_size=auto; anything else is a clear error."""
    if batch_size == "auto":
        return auto
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise EvalkitError(f"batch_size={batch_size} is not allowed; allowed: a positive integer or auto")
    return batch_size


def batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def variable_shape_attention():
    """Context in which scaled-dot-product attention avoids kernels that re-plan for every new shape."""
    return sdpa_kernel(VARIABLE_SHAPE_ATTENTION)
