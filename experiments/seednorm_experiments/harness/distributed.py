"""The process group of a ``torchrun`` launch and what the trainer does with it: set it up (gloo on CPU, nccl on
GPU), wrap the model (DDP or FSDP2 ``fully_shard``), average a scalar over ranks, and read a DTensor whole."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "all_mean", "full_tensor", "local", "setup_distributed", "world_size", "wrap"]


@dataclass
class DistContext:
    """Where this process trains: its ``rank`` of ``world`` ranks, its ``device``, and how the model is
    parallelised (``mode``: "none" | "ddp" | "fsdp")."""

    rank: int
    world: int
    device: torch.device
    mode: str


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def setup_distributed(parallel: str) -> DistContext:
    """Join the launch's process group (once; ``WORLD_SIZE`` > 1 under ``torchrun``) and resolve ``parallel``:
    "auto" is DDP with several ranks, and any mode is "none" in a single process without a group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if parallel == "auto":
        parallel = "ddp" if world > 1 else "none"
    if parallel != "none" and world == 1 and not dist.is_initialized():
        parallel = "none"
    return DistContext(rank, world, _device(), parallel)


def local() -> DistContext:
    """This process alone: no collective is called, even when a process group exists (a ``torchrun`` launch
    whose other ranks may already have returned)."""
    return DistContext(0, 1, _device(), "none")


def world_size() -> int:
    """The number of ranks :func:`~seednorm_experiments.harness.train` runs on (set up or not yet)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def wrap(model: nn.Module, d: DistContext) -> nn.Module:
    """``model`` as ``d.mode`` trains it: DDP, FSDP2 (each block of every ``nn.ModuleList`` sharded, then the
    root), or unchanged."""
    if d.mode == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.index
                                                   is not None else None)
    if d.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block)
        fully_shard(model)
    return model


def all_mean(x: torch.Tensor, d: DistContext) -> float:
    """The mean of the scalar ``x`` over all ranks (``x`` itself in one process)."""
    if d.world > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= d.world
    return float(x.detach())


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 shard) as its full value; plain tensors unchanged."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x
