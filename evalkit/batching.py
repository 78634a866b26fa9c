"""Batch sizes and batches, the same for every evaluator."""

from __future__ import annotations

from collections.abc import Iterator

from evalkit.errors import EvalkitError


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
