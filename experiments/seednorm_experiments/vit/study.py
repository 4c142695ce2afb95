"""The vision study: a compact ViT with LayerNorm, RMSNorm, DyT or multi-head SeeDNorm, trained with the shared
harness on offline data, scored in distribution and under distribution shifts; plus SeeDNorm's head-count ablation.

    seednorm vit --preset quick                         # main grid + head ablation, report in runs/vit_quick
    seednorm vit --preset smoke --out /tmp/vit          # seconds; what the tests run
    torchrun --nproc-per-node 2 -m seednorm_experiments.vit --preset quick   # DDP (the harness does it)

Two grids, each ``--seeds`` seeds (the seed sets the init, the data order and the augmentation; the train/test
split is fixed):

1. main: every norm of ``--norms`` at the preset's width. SeeDNorm uses the paper's vision recipe (SPEC §3–§4):
   ``--seednorm-heads`` heads, dropout on σ(s)·α at the drop-path rate, ``dot_scale`` (``"dim"`` = 1/(D/heads)).
2. heads: SeeDNorm with each head count of ``--heads`` at the preset's ablation width, depth, higher learning
   rate and ``--ablation-dot-scale`` (1: the variance of s_h grows with D/heads, where one head is expected to be
   unstable), with LayerNorm at that width as the reference.

Pixels are standardized with the training split's mean and std inside the model (shifts act on [0, 1] images).

Each run lives in ``RUNS/<name>`` (checkpoint, metrics.csv, TensorBoard, result.json), ``<name>`` ending in a hash
of every setting of the run; a finished run is reused and an interrupted one resumed (both only when their recorded
fingerprint is this run's: :mod:`seednorm_experiments.runs`), so re-running the command continues the study. ``OUT``
gets ``report.md``, the PNGs and ``summary.json``. Bad arguments, an unusable ``--out`` and corrupt run files exit
with 2 and one line on stderr (`seednorm_experiments.cli`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seednorm import NORMS
from seednorm_experiments.args import check_out_dir, out_dir, positive_float, positive_int, report_errors
from seednorm_experiments.harness import Task, TrainConfig
from seednorm_experiments.runs import EXPECTED_ERRORS, train_or_reuse

from .data import ImageSet, load_dataset, load_sklearn_digits, random_translate
from .evals import DEFAULT_SHIFTS, Shift, parse_shift, shifted_accuracies
from .model import ViTConfig, build_vit

__all__ = ["Preset", "PRESETS", "Batches", "RunSpec", "main"]


@dataclass(frozen=True)
class Preset:
    """Everything a study run needs besides the norms, head counts and seeds (which the CLI may override)."""

    dataset: str
    model: ViTConfig
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    grad_clip: float | None
    max_shift: int
    eval_every: int
    ckpt_every: int
    eval_limit: int | None
    seeds: int
    norms: tuple[str, ...]
    seednorm_heads: int
    dot_scale: float | str
    heads: tuple[int, ...]
    ablation_dim: int
    ablation_depth: int
    ablation_steps: int
    ablation_lr: float
    ablation_dot_scale: float | str


_NORMS = ("layernorm", "rmsnorm", "dyt", "seednorm")

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        dataset="mnist", model=ViTConfig(dim=16, depth=1, attn_heads=2, mlp_ratio=2.0, drop_path=0.1),
        steps=6, batch_size=32, lr=2e-3, warmup=2, weight_decay=0.05, grad_clip=None, max_shift=1,
        eval_every=3, ckpt_every=0, eval_limit=128, seeds=2, norms=_NORMS, seednorm_heads=2, dot_scale="dim",
        heads=(1, 2), ablation_dim=32, ablation_depth=1, ablation_steps=4, ablation_lr=1.6e-2,
        ablation_dot_scale=1.0,
    ),
    # measured on 2 shared CPU cores: see README "Vision study" (≤ 15 minutes)
    "quick": Preset(
        dataset="mnist", model=ViTConfig(dim=64, depth=4, attn_heads=4, mlp_ratio=2.0, drop_path=0.1),
        steps=300, batch_size=128, lr=2e-3, warmup=30, weight_decay=0.05, grad_clip=None, max_shift=0,
        eval_every=100, ckpt_every=100, eval_limit=None, seeds=3, norms=_NORMS, seednorm_heads=4, dot_scale="dim",
        heads=(1, 4, 16), ablation_dim=128, ablation_depth=2, ablation_steps=200, ablation_lr=1.6e-2,
        ablation_dot_scale=1.0,
    ),
    # not run here (hours on CPU); a GPU-sized setting in the same shape
    "full": Preset(
        dataset="mnist", model=ViTConfig(dim=192, depth=6, attn_heads=6, mlp_ratio=4.0, drop_path=0.1),
        steps=3000, batch_size=128, lr=1e-3, warmup=200, weight_decay=0.05, grad_clip=None, max_shift=2,
        eval_every=250, ckpt_every=250, eval_limit=None, seeds=5, norms=_NORMS, seednorm_heads=8, dot_scale="dim",
        heads=(1, 2, 4, 8, 16), ablation_dim=384, ablation_depth=6, ablation_steps=2000, ablation_lr=4e-3,
        ablation_dot_scale=1.0,
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run: the grid it belongs to, its ViT and its optimisation settings."""

    grid: str
    model: ViTConfig
    seed: int
    steps: int
    lr: float

    @property
    def label(self) -> str:
        """Norm (and SeeDNorm head count) as shown in tables: ``seednorm/4h``."""
        heads = self.model.norm_kwargs.get("num_heads")
        return f"{self.model.norm}/{heads}h" if heads else self.model.norm

    @property
    def stem(self) -> str:
        """Readable part of the run's directory name: ``main-seednorm-4h-d64-s0``."""
        return f"{self.grid}-{self.label.replace('/', '-')}-d{self.model.dim}-s{self.seed}"


@dataclass(frozen=True)
class StudyData:
    """Training images, the in-distribution test set and the zero-shot transfer sets."""

    train: ImageSet
    test: ImageSet
    transfer: dict[str, ImageSet]


def load_study_data(dataset: str, eval_limit: int | None) -> StudyData:
    """Fixed 80/20 stratified split (seed 0) of ``dataset``; MNIST adds the upscaled scikit-learn digits."""
    train_set, test_set = load_dataset(dataset).split(0.2, seed=0)
    transfer = {"sklearn_digits": load_sklearn_digits()} if dataset == "mnist" else {}
    if eval_limit is not None:
        keep = torch.arange(eval_limit)
        test_set = test_set.subset(keep[: len(test_set)], "head")
        transfer = {k: v.subset(keep[: len(v)], "head") for k, v in transfer.items()}
    return StudyData(train_set, test_set, transfer)


def _generator(*keys: int) -> torch.Generator:
    """A torch generator seeded by a tuple of integers (numpy's SeedSequence mixes them)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0] >> 1))


class Batches:
    """Global batch ``step``: items [step·B, (step+1)·B) of an endless stream of per-epoch permutations, each
    image shifted by up to ``max_shift`` pixels; rank r of w gets the r-th contiguous B/w of it. A pure function
    of (seed, step), as the harness requires for exact resume and DDP."""

    def __init__(self, data: ImageSet, batch_size: int, seed: int, max_shift: int) -> None:
        if batch_size < 1 or batch_size > len(data):
            raise ValueError(f"batch_size must be in [1, {len(data)}], got {batch_size}")
        self.data, self.batch_size, self.seed, self.max_shift = data, batch_size, seed, max_shift
        self._epochs: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            self._epochs[epoch] = torch.randperm(len(self.data), generator=_generator(self.seed, 0, epoch))
        return self._epochs[epoch]

    def __call__(self, step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the world size {world}")
        n = len(self.data)
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        index = torch.cat([self._permutation(int(e))[positions[positions // n == e] % n]
                           for e in torch.unique(positions // n)])
        images = random_translate(self.data.images[index], self.max_shift, _generator(self.seed, 1, step))
        shard = slice(rank * self.batch_size // world, (rank + 1) * self.batch_size // world)
        return images[shard], self.data.labels[index][shard]


def classification_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``model(images)`` against the labels."""
    images, labels = batch
    device = next(model.parameters()).device
    return F.cross_entropy(model(images.to(device)), labels.to(device))


def run_signature(spec: RunSpec, preset: Preset, backend: str, shifts: Sequence[Shift]) -> dict[str, Any]:
    """Every setting a run's result depends on (as JSON data): checked on resume, hashed into its name."""
    signature = {"spec": asdict(spec), "backend": backend, "shifts": [s.name for s in shifts]}
    signature |= {k: getattr(preset, k) for k in ("dataset", "batch_size", "warmup", "weight_decay", "grad_clip",
                                                   "max_shift", "eval_every", "eval_limit")}
    return json.loads(json.dumps(signature, default=str))


def run_name(spec: RunSpec, signature: dict[str, Any]) -> str:
    """``<stem>-<hash>``: readable, and a changed setting never reuses a finished run."""
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()
    return f"{spec.stem}-{digest[:8]}"


def run_one(spec: RunSpec, preset: Preset, data: StudyData, runs_dir: Path, *, backend: str,
            shifts: tuple[Shift, ...], progress: bool, tensorboard: bool) -> dict[str, Any]:
    """Train (or reuse / resume: :func:`seednorm_experiments.runs.train_or_reuse`) one run and return its
    ``result.json`` content."""
    signature = run_signature(spec, preset, backend, shifts)
    out_dir = runs_dir / run_name(spec, signature)
    task = Task(
        name=out_dir.name,
        build_model=lambda: build_vit(spec.model, backend),  # type: ignore[arg-type]
        batches=Batches(data.train, preset.batch_size, spec.seed, preset.max_shift),
        loss=classification_loss,
        tokens=lambda batch: batch[0].shape[0],
        evaluate=lambda model: shifted_accuracies(model, data.test, shifts, data.transfer, seed=0),
        signature=signature,
    )
    config = TrainConfig(
        out_dir=out_dir, steps=spec.steps, lr=spec.lr, warmup=min(preset.warmup, spec.steps),
        weight_decay=preset.weight_decay, grad_clip=preset.grad_clip, seed=spec.seed,
        ckpt_every=preset.ckpt_every, eval_every=preset.eval_every, progress=progress, tensorboard=tensorboard,
        desc=spec.label,
    )
    return train_or_reuse(task, config)


def seednorm_kwargs(preset: Preset, heads: int, dot_scale: float | str) -> dict[str, Any]:
    """The paper's vision SeeDNorm (SPEC §4): ``heads`` heads, dynamic dropout at the drop-path rate, dot scale."""
    return {"num_heads": heads, "dynamic_dropout": preset.model.drop_path, "dot_scale": dot_scale}


def plan(preset: Preset, seeds: int) -> list[RunSpec]:
    """The main grid (every norm) then the head grid (SeeDNorm per head count, LayerNorm reference)."""
    specs = []
    for norm in preset.norms:
        kwargs = seednorm_kwargs(preset, preset.seednorm_heads, preset.dot_scale) if norm == "seednorm" else {}
        model = replace(preset.model, norm=norm, norm_kwargs=kwargs)
        specs += [RunSpec("main", model, seed, preset.steps, preset.lr) for seed in range(seeds)]
    wide = replace(preset.model, dim=preset.ablation_dim, depth=preset.ablation_depth)
    variants = [replace(wide, norm="layernorm")] if preset.heads else []
    variants += [replace(wide, norm="seednorm", norm_kwargs=seednorm_kwargs(preset, h, preset.ablation_dot_scale))
                 for h in preset.heads]
    for model in variants:
        specs += [RunSpec("heads", model, seed, preset.ablation_steps, preset.ablation_lr) for seed in range(seeds)]
    return specs


def _csv(kind: type, text: str) -> tuple:
    return tuple(kind(v) for v in text.split(",") if v.strip() and v.strip() != "none")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seednorm vit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--norms", type=lambda s: _csv(str, s), help="comma list of layernorm,rmsnorm,dyt,seednorm")
    p.add_argument("--heads", type=lambda s: _csv(int, s), help="SeeDNorm head counts for the ablation "
                   "(comma list; 'none' skips it)")
    p.add_argument("--seednorm-heads", type=positive_int, help="SeeDNorm heads in the main comparison")
    p.add_argument("--dot-scale", type=_dot_scale, help="SeeDNorm dot scale in the main comparison: a number or "
                   "'dim' (= heads/D)")
    p.add_argument("--ablation-dot-scale", type=_dot_scale, help="SeeDNorm dot scale in the head ablation")
    p.add_argument("--ablation-dim", type=positive_int, help="ViT width of the head-count ablation")
    p.add_argument("--ablation-lr", type=positive_float, help="learning rate of the head-count ablation")
    p.add_argument("--seeds", type=positive_int, help="seeds per setting (mean ± std over them)")
    p.add_argument("--dataset", choices=["mnist", "animals"], help="training data (shifts follow)")
    p.add_argument("--steps", type=positive_int, help="override the main grid's steps")
    p.add_argument("--shifts", type=lambda s: tuple(map(_shift, s.split(","))),
                   help=f"comma list of KIND=VALUE, default {','.join(s.name for s in DEFAULT_SHIFTS)}")
    p.add_argument("--backend", choices=["seednorm", "timm"], default="seednorm",
                   help="this package's compact ViT or timm's VisionTransformer with the same norms")
    p.add_argument("--out", type=out_dir, help="report folder (default runs/vit_<preset>)")
    p.add_argument("--runs-dir", type=out_dir, help="per-run folders (default OUT/runs)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1: these models gain "
                   "nothing from more, and on shared cores extra OpenMP threads spin and slow everything down)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def _dot_scale(text: str) -> float | str:
    try:
        return text if text == "dim" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dot scale must be a number or 'dim', got {text!r}") from None


def _shift(text: str) -> Shift:
    try:
        return parse_shift(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset with the CLI's overrides applied; ValueError naming a bad one."""
    preset = PRESETS[args.preset]
    overrides = {k: v for k, v in {
        "norms": args.norms, "heads": args.heads, "seednorm_heads": args.seednorm_heads, "dataset": args.dataset,
        "steps": args.steps, "seeds": args.seeds, "ablation_dim": args.ablation_dim, "ablation_lr": args.ablation_lr,
        "dot_scale": args.dot_scale, "ablation_dot_scale": args.ablation_dot_scale,
    }.items() if v is not None}
    preset = replace(preset, **overrides)
    if preset.seeds < 1 or preset.steps < 1:
        raise ValueError("--seeds and --steps must be >= 1")
    unknown = [n for n in preset.norms if n not in NORMS]
    if unknown or not preset.norms:
        raise ValueError(f"--norms: unknown or empty {unknown or ''}; choose from {','.join(NORMS)}")
    for heads, dim, what in [(preset.seednorm_heads, preset.model.dim, "--seednorm-heads")] + [
            (h, preset.ablation_dim, "--heads") for h in preset.heads]:
        if heads < 1 or dim % heads or dim % preset.model.attn_heads:
            raise ValueError(f"{what}: {heads} heads must divide the width {dim} (so must the "
                             f"{preset.model.attn_heads} attention heads)")
    return preset


def main(argv: Sequence[str] | None = None) -> int:
    """``seednorm vit ...``: run the study (resuming finished or interrupted runs) and write the report; returns
    the exit code (`seednorm_experiments.cli`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        preset = resolve_preset(args)
        out = check_out_dir(args.out or Path("runs") / f"vit_{args.preset}")
        runs_dir = check_out_dir(args.runs_dir or out / "runs")
    except ValueError as e:
        parser.error(str(e))
    return report_errors(parser.prog, lambda: _run(args, argv, preset, out, runs_dir), EXPECTED_ERRORS)


def _run(args: argparse.Namespace, argv: Sequence[str] | None, preset: Preset, out: Path, runs_dir: Path) -> int:
    from .report import write_report

    torch.set_num_threads(args.threads)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    shifts = args.shifts or DEFAULT_SHIFTS
    data = load_study_data(preset.dataset, preset.eval_limit)
    pixels = data.train.images  # standardize inputs with the training split's statistics (4 digits)
    preset = replace(preset, model=replace(preset.model, pixel_mean=round(pixels.mean().item(), 4),
                                           pixel_std=round(pixels.std().item(), 4)))
    specs = plan(preset, preset.seeds)
    t0 = time.perf_counter()
    results = []
    for i, spec in enumerate(specs, 1):
        t = time.perf_counter()
        result = run_one(spec, preset, data, runs_dir, backend=args.backend, shifts=shifts,
                         progress=not args.no_progress, tensorboard=not args.no_tensorboard)
        results.append((spec, result))
        if rank0:
            acc = result["final_eval"].get("clean", float("nan"))
            state = "diverged" if result["diverged"] else f"clean acc {acc:.3f}"
            print(f"[{i}/{len(specs)}] {spec.grid:5s} {spec.label:12s} d={spec.model.dim} seed {spec.seed}: "
                  f"{state} ({time.perf_counter() - t:.0f} s)", flush=True)
    if rank0:
        command = "seednorm vit " + shlex.join(sys.argv[1:] if argv is None else list(argv))
        machine = (f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads" if not torch.cuda.is_available()
                   else torch.cuda.get_device_name())
        write_report(out, preset, results, shifts=shifts, transfer=sorted(data.transfer), command=command,
                     machine=machine, wall_s=time.perf_counter() - t0)
        print(f"report: {out / 'report.md'}", flush=True)
    return 0
