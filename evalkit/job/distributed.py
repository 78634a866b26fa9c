"""Data parallelism across processes started by torchrun / accelerate launch (RANK, WORLD_SIZE, LOCAL_RANK).

Each rank evaluates its share of the units; their records are gathered across ranks, so every rank ends with the
full result and rank 0 writes it.
"""

from __future__ import annotations

import atexit
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
    """Join the process group once per process (NCCL between GPUs, gloo on CPUs); a single process needs none. On GPUs
    the NCCL communicator is formed here (`device_id`), not lazily inside the first all-reduce, which falls in the timed
    evaluation. The group stays for the process's later jobs (a sweep, a script calling evaluate again) and is left at
    exit: under torchrun a rank that forms the group again before the others are done with the last one reads the last
    group's addresses from torchrun's store and waits on them for ever."""
    if world_size() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # collectives of Python objects stage them on the current device
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(leave)  # only a group evalkit formed: a caller's own group is the caller's to leave


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Return once every rank has got here."""
    if world_size() > 1:
        dist.barrier()


def shard(order: list[int], tensor_parallel: bool = False) -> list[int]:
    """This rank's units: a round-robin share of the scoring order, so every rank gets units of every shape and
    length; under tensor parallelism the ranks are one model, and each runs every unit."""
    return order if tensor_parallel else order[rank()::world_size()]


def gather(value) -> list:
    """Every rank's `value`, in rank order."""
    if world_size() == 1:
        return [value]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def from_main(value):
    """Rank 0's `value` on every rank (each passes its own, which only rank 0's replaces): one choice that every rank
    makes alike."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_records(records: dict[int, dict], tensor_parallel: bool = False) -> dict[int, dict]:
    """Every rank's per-unit records (index -> record), merged: each rank holds the records of its own units (under
    tensor parallelism, of every unit already)."""
    if tensor_parallel:
        return records
    return {index: record for part in gather(records) for index, record in part.items()}
