"""A search on several processes: ``torchrun --nproc-per-node N -m archc search model.py ...``.

- Each process trains a :class:`DistributedDataParallel` copy of the gated model (gloo on the
  CPU, NCCL on GPUs) on its share of every global batch: ``--batch-size`` is the global batch,
  and the order of the samples depends on the seed and the epoch only, so N processes see the
  same batches as one.
- Gradients are averaged, so the gates stay identical on every process and every shrink removes
  the same channels everywhere (checked: the processes compare what they keep); the DDP wrapper
  is rebuilt after each shrink, as the parameters change.
- Process 0 alone writes the log and the checkpoints. A checkpoint holds no per-process state,
  so ``--resume`` works with another number of processes.

Example:
    >>> rank, world = process_group()      # (0, 1) without torchrun
    >>> batches = DataLoader(train_set, batch_sampler=GlobalBatchSampler(len(train_set), 128, seed=0))
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from .errors import ArchcError, ConfigError
from .search_guard import SearchError

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def process_group(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun set up (once); returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        # gloo carries the small CPU tensors archc itself exchanges (lockstep checks, averages)
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return rank(), world_size()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK) when searching on CUDA with several processes."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class GlobalBatchSampler:
    """Index batches of this process's share of each global batch of ``batch_size`` samples,
    in an order drawn from ``seed`` and the epoch (:meth:`set_epoch`) alone."""

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.batch_size, self.seed, self.shuffle, self.epoch = size, batch_size, seed, shuffle, 0
        self.rank, self.world = rank(), world_size()
        if batch_size < self.world:
            raise ConfigError(f"--batch-size {batch_size} is the global batch: it must give each of the "
                              f"{self.world} processes a sample\n  fix: pass --batch-size {self.world} or more")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.size + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        for start in range(0, self.size, self.batch_size):
            batch = order[start:start + self.batch_size]
            share = -(-len(batch) // self.world)  # ceil: the last batch may leave a process fewer
            mine = batch[self.rank * share:(self.rank + 1) * share]
            yield mine or batch[-1:]  # a process never gets an empty batch (DDP needs every rank)


def average(value: float) -> float:
    """The mean of ``value`` over the processes (itself with one)."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total) / world_size()


def agreed(work: Callable[[], T]) -> T:
    """``work()``, after which every process learns whether any of them failed: one whose check
    or user code raised re-raises; the others stop too, instead of waiting for it in the next
    collective. One process alone just runs ``work()``."""
    if world_size() == 1:
        return work()
    try:
        result = work()
    except ArchcError:
        _failures(1)
        raise
    if _failures(0):
        raise SearchError(f"another process of this distributed search stopped it (process {rank()} stops too); "
                          "its message is above\n  fix: see that message")
    return result


def _failures(mine: int) -> int:
    flag = torch.tensor([mine], dtype=torch.int64)
    dist.all_reduce(flag)
    return int(flag)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several processes search, else itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)  # buffers (BatchNorm statistics) follow process 0


def check_lockstep(kept: dict) -> None:
    """Every process must keep the same channels; a difference is a bug, never averaged away."""
    if world_size() == 1:
        return
    digest = hashlib.sha256(repr(sorted((k, v.tolist()) for k, v in kept.items())).encode()).digest()[:8]
    mine = torch.tensor([int.from_bytes(digest, "little", signed=True)], dtype=torch.int64)
    everyone = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    if any(int(t) != int(mine) for t in everyone):
        raise RuntimeError("the processes of a distributed search shrank to different channels")
