"""Run a test body on several CPU processes joined by a gloo process group (no GPU needed).

    run_ranks(fn, *args, world_size=2)   calls fn(rank, world_size, *args) in each process; a failure in any rank
                                         fails the caller with that rank's traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world_size: int, store: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # two processes on shared cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, *args, world_size: int = 2) -> None:
    """Spawn ``world_size`` processes running ``fn(rank, world_size, *args)`` (``fn`` defined at module level)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        mp.spawn(_worker, args=(world_size, store, fn, args), nprocs=world_size, join=True)
