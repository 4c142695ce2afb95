"""Run a test body on several CPU processes joined by a gloo process group (no GPU needed).

    run_ranks(fn, *args, world_size=2)   calls fn(rank, world_size, *args) in each process; a failure in any rank
                                         fails the caller with that rank's traceback.

Several checks in one launch (process starts are the cost): each rank runs its named phases with
``run_phases(rank, phases, out_dir)``, the module's fixture collects them with ``phase_results(fn)``, and each test
reads its own phase with ``assert_phase(results, name)``, so one failing phase fails only its test.
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback
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


def run_phases(rank: int, phases: dict[str, Callable[[], None]], out_dir: str) -> None:
    """Run every phase on this rank (all ranks, in the same order, with a barrier after each), recording "ok" or the
    traceback per phase in ``out_dir/rank<k>.json``."""
    results = {}
    for name, phase in phases.items():
        try:
            phase()
            results[name] = "ok"
        except Exception:  # reported by the test that checks this phase
            results[name] = traceback.format_exc()
        dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def phase_results(fn: Callable, world_size: int = 2) -> list[dict[str, str]]:
    """Spawn ``fn(rank, world_size, out_dir)`` on ``world_size`` ranks (``fn`` calls :func:`run_phases`); each rank's
    phase results."""
    with tempfile.TemporaryDirectory() as tmp:
        run_ranks(fn, tmp, world_size=world_size)
        results = []
        for r in range(world_size):
            with open(os.path.join(tmp, f"rank{r}.json")) as f:
                results.append(json.load(f))
        return results


def assert_phase(results: list[dict[str, str]], name: str) -> None:
    """Every rank ran phase ``name`` without an error (else the failing rank's traceback)."""
    for rank, r in enumerate(results):
        assert r[name] == "ok", f"rank {rank}:\n{r[name]}"
