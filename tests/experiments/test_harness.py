"""The shared training harness: exact resume, DDP/FSDP equal to one process, safe checkpoints."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from ports import free_port
from torch import nn

import seednorm
from seednorm import SeeDNorm
from seednorm_experiments.harness import (
    CHECKPOINT_NAME,
    CheckpointError,
    Task,
    TrainConfig,
    benchmark,
    load_checkpoint,
    param_kinds,
    save_checkpoint,
    train,
)
from seednorm_experiments.harness.schedule import warmup_cosine
from seednorm_experiments.report import step_costs

GLOBAL_BATCH = 8


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(6, 16), nn.Linear(16, 16)])
        self.norm = SeeDNorm(16)
        self.drop = nn.Dropout(0.1)  # consumes RNG: resume must restore it
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(self.drop(self.norm(x)))


def toy_batches(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 6, generator=g)
    y = x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(GLOBAL_BATCH, 1, generator=g)
    n = GLOBAL_BATCH // world
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def toy_task(dropout: bool = True) -> Task:
    def build() -> nn.Module:
        model = Toy()
        if not dropout:
            model.drop = nn.Identity()
        return model

    return Task(name="toy", build_model=build, batches=toy_batches,
                loss=lambda model, b: F.mse_loss(model(b[0]), b[1]), tokens=lambda b: b[0].shape[0],
                evaluate=lambda model: {"mse": float(F.mse_loss(model(toy_batches(-1, 0, 1)[0]),
                                                                toy_batches(-1, 0, 1)[1]))})


def config(out: Path, **kw) -> TrainConfig:
    base = {"steps": 12, "lr": 3e-2, "warmup": 3, "grad_clip": 0.5, "progress": False, "tensorboard": False}
    return TrainConfig(out_dir=out, **{**base, **kw})


def test_trains_logs_and_writes_result(tmp_path: Path) -> None:
    res = train(toy_task(), config(tmp_path, tensorboard=True, eval_every=5))
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert {"gn/alpha", "gn/beta", "gn/gamma", "gn/matrix", "gn/other"} <= set(res.history[0])
    assert 0 < res.clip_fraction <= 1 and res.tokens_per_s > 0
    assert [e["step"] for e in res.evals] == [5, 10, 12] and "mse" in res.final_eval
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["history"] == res.history
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 13
    assert any((tmp_path / "tb").iterdir())


def test_benchmark_times_every_task_round_robin_and_writes_nothing(tmp_path: Path) -> None:
    speeds = benchmark({"a": toy_task(), "b": toy_task(dropout=False)}, config(tmp_path / "bench"), rounds=3,
                       steps=2, warmup=1)
    assert list(speeds) == ["a", "b"]
    assert all(len(v) == 3 and all(math.isfinite(s) and s > 0 for s in v) for v in speeds.values())
    assert not (tmp_path / "bench").exists()


def test_param_kinds() -> None:
    kinds = param_kinds(Toy())
    assert kinds["norm.alpha"] == "alpha" and kinds["norm.beta"] == "beta" and kinds["norm.weight"] == "gamma"
    assert kinds["head.weight"] == "matrix" and kinds["head.bias"] == "other"


def test_param_kinds_groups_the_gain_of_every_library_norm_as_gamma() -> None:
    model = nn.Sequential(*(seednorm.build_norm(name, 6) for name in seednorm.NORMS))
    kinds = param_kinds(model)
    gains = {f"{i}.weight": "gamma" for i in range(len(seednorm.NORMS))}
    assert {n: k for n, k in kinds.items() if n.endswith(".weight")} == gains  # Derf's γ too
    derf = str(list(seednorm.NORMS).index("derf"))
    assert kinds[f"{derf}.alpha"] == kinds[f"{derf}.shift"] == kinds[f"{derf}.bias"] == "other"


def test_param_kinds_asks_the_library_for_alpha_and_beta() -> None:
    class Renamed(SeeDNorm):  # stores β under another name, as the transformers integration does
        def __init__(self, dim: int) -> None:
            super().__init__(dim)
            self.renamed_beta = self._parameters.pop("beta")

        @property
        def beta(self) -> nn.Parameter:
            return self.renamed_beta

    kinds = param_kinds(nn.Sequential(Renamed(6)))
    assert kinds == {"0.alpha": "alpha", "0.renamed_beta": "beta", "0.weight": "gamma"}


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path: Path) -> None:
    full = train(toy_task(), config(tmp_path / "full", eval_every=4))
    part = train(toy_task(), config(tmp_path / "cut", eval_every=4, stop_at=7, ckpt_every=3))
    assert part.interrupted and len(part.history) == 7 and not (tmp_path / "cut" / "result.json").exists()
    resumed = train(toy_task(), config(tmp_path / "cut", eval_every=4, resume=True))
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.final_eval == full.final_eval and resumed.evals == full.evals
    csv_rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 13


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    train(toy_task(), config(tmp_path, stop_at=4))
    with pytest.raises(CheckpointError, match="different run.*lr"):
        train(toy_task(), config(tmp_path, lr=1e-3, resume=True))


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(toy_task(), config(tmp_path, resume=True))
    assert not (tmp_path / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_checkpoint_is_a_clear_error_and_is_kept(tmp_path: Path, damage: str) -> None:
    train(toy_task(), config(tmp_path, stop_at=4))
    path = tmp_path / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-100] ^= 0xFF
    else:
        data = bytearray(b"not a checkpoint")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted|not a seednorm checkpoint"):
        train(toy_task(), config(tmp_path, resume=True))
    assert path.read_bytes() == bytes(data)  # left untouched, nothing overwritten


def test_failed_save_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        config(tmp_path, precision="fp8")
    with pytest.raises(ValueError, match="warmup"):
        config(tmp_path, warmup=20)


def test_divergence_stops_the_run(tmp_path: Path) -> None:
    res = train(toy_task(), config(tmp_path, diverge_above=1e-9))
    assert res.diverged and len(res.history) == 1 and res.final_eval == {}


MODES = ("ddp", "fsdp")


def _worker(rank: int, world: int, port: int, out: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for mode in MODES:  # one launch (one group) for both modes: two process starts, not four
            run = Path(out) / mode
            train(toy_task(dropout=False), config(run, parallel=mode, stop_at=6))  # interrupted, then
            res = train(toy_task(dropout=False), config(run, parallel=mode, resume=True))  # resumed
            if rank == 0:
                queue.put((mode, [r["loss"] for r in res.history]))
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_run_matches_one_process_under_ddp_and_fsdp(tmp_path: Path) -> None:
    single = train(toy_task(dropout=False), config(tmp_path / "one"))
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_worker, args=(2, port, str(tmp_path), queue), nprocs=2, start_method="spawn")
    losses = dict(queue.get(timeout=5) for _ in MODES)
    assert set(losses) == set(MODES)
    for mode in MODES:
        torch.testing.assert_close(losses[mode], [r["loss"] for r in single.history], rtol=1e-5, atol=1e-6,
                                   msg=lambda m, mode=mode: f"{mode}: {m}")


def test_clip_groups(tmp_path: Path) -> None:
    every = ("alpha", "beta", "gamma", "matrix", "other")
    plain = train(toy_task(), config(tmp_path / "a", grad_clip=0.05))
    same = train(toy_task(), config(tmp_path / "b", grad_clip=0.05, clip_groups=every))
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in same.history]
    part = train(toy_task(), config(tmp_path / "c", grad_clip=0.05, clip_groups=("matrix",)))
    assert [r["clipped"] for r in part.history] == [float(r["gn/matrix"] > 0.05) for r in part.history]
    with pytest.raises(ValueError, match="name no parameter group"):
        train(toy_task(), config(tmp_path / "d", clip_groups=("embedding",)))


def test_step_costs_pair_rounds() -> None:
    speeds = {"base": [100.0, 50.0], "b": [50.0, 50.0]}
    assert step_costs(speeds, "base") == {"base": [1.0, 1.0], "b": [2.0, 1.0]}


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(steps=10, warmup=2, min_ratio=0.1)
    assert [f(0), f(1)] == [0.5, 1.0]  # linear warmup to the base lr
    assert f(2) == 1.0 and math.isclose(f(6), 0.55) and math.isclose(f(10), 0.1) and math.isclose(f(99), 0.1)
