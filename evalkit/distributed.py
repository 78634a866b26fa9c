"""Data parallelism across processes started by torchrun / accelerate launch (RANK, WORLD_SIZE, LOCAL_RANK).

Each rank evaluates its share of the work items; per-item results are summed across ranks with one all-reduce, so
every rank ends with the full result and rank 0 writes it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the process group once (NCCL between GPUs, gloo on CPUs); a single process needs none. On GPUs the NCCL
    communicator is formed here (`device_id`), not lazily inside the first all-reduce, which falls in the timed
    evaluation."""
    if world_size() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")


def shard(count: int) -> list[int]:
    """This rank's item indices: a round-robin share, so every rank gets items of every shape."""
    return list(range(rank(), count, world_size()))


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (each rank filled only its own items, zeros elsewhere)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def merge_across_ranks(items: list) -> list:
    """Merge per-item Python objects that each rank filled for its own items (None elsewhere)."""
    if world_size() == 1:
        return items
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [next((part[i] for part in gathered if part[i] is not None), None) for i in range(len(items))]
