"""The vision study's supervised runs: the grid of (norm, seed) ViTs or ConvNeXts on the shared harness, each in its
own folder named by its settings, and the loop that trains (or reuses, or resumes) them all.

Two grids, every run seeded by its seed alone (the init, the data order and the augmentation; the train/test split
is fixed):

1. main: every norm of ``preset.norms`` at the preset's width. SeeDNorm uses the paper's vision recipe (spec §3–§4):
   ``preset.seednorm_heads`` heads, dropout on σ(s)·α at the drop-path rate, ``dot_scale`` (``"dim"`` =
   1/(D/heads)).
2. heads: SeeDNorm with each head count of ``preset.heads`` at the ablation's width, depth, higher learning rate and
   ``ablation_dot_scale`` (1: the variance of s_h grows with D/heads, where one head is expected to be unstable),
   with the vision baseline (LayerNorm, ``common.VISION_BASELINE``) at that width as the reference. ViT only: a
   ConvNeXt preset has no head counts.

Pixels are standardized with the training split's mean and std inside the model (shifts act on [0, 1] images).
Each run lives in ``RUNS/<name>`` (checkpoint, metrics.csv, TensorBoard, result.json), ``<name>`` ending in a hash of
every setting of the run; a finished run is reused and an interrupted one resumed, both only when their recorded
fingerprint is this run's (``seednorm_experiments.runs``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..common import VISION_BASELINE, check_norms, is_main_process
from ..harness import Task, TrainConfig, benchmark
from ..progress import expect
from ..runs import train_or_reuse
from .convnext import ConvNeXt, ConvNeXtConfig
from .data import Batches, StudyData
from .evals import Shift, shifted_accuracies
from .model import ViTConfig, build_vit
from .presets import Preset

__all__ = ["Results", "RunSpec", "build_model", "classification_loss", "main_model", "make_task",
           "measure_throughput", "plan", "run_name", "run_one", "run_signature", "run_study", "seednorm_kwargs",
           "standardized", "train_config", "vision_seednorm"]


@dataclass(frozen=True)
class RunSpec:
    """One training run: the grid it belongs to, its model and its optimisation settings."""

    grid: str
    model: ViTConfig | ConvNeXtConfig
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


Results = list[tuple[RunSpec, dict[str, Any]]]
"""Every run of a study: its spec and its ``result.json`` content, in plan order."""


def build_model(config: ViTConfig | ConvNeXtConfig, backend: str) -> torch.nn.Module:
    """The model of ``config``: a ViT (this package's or timm's, :func:`~.model.build_vit`) or this package's
    ConvNeXt (``backend`` must be "seednorm")."""
    if isinstance(config, ConvNeXtConfig):
        if backend != "seednorm":
            raise ValueError(f"the ConvNeXt is this package's only: --backend seednorm, got {backend!r}")
        return ConvNeXt(config)
    return build_vit(config, backend)  # type: ignore[arg-type]


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


def make_task(spec: RunSpec, preset: Preset, data: StudyData, *, backend: str, shifts: tuple[Shift, ...], name: str,
              signature: dict[str, Any]) -> Task:
    """The harness task of one run: its ViT, its seeded batches, the classification loss, the shifted evaluation."""
    return Task(
        name=name,
        build_model=lambda: build_model(spec.model, backend),
        batches=Batches(data.train, preset.batch_size, spec.seed, preset.max_shift),
        loss=classification_loss,
        tokens=lambda batch: batch[0].shape[0],
        evaluate=lambda model: shifted_accuracies(model, data.test, shifts, data.transfer, seed=0),
        signature=signature,
    )


def train_config(spec: RunSpec, preset: Preset, out_dir: Path, *, progress: bool, tensorboard: bool) -> TrainConfig:
    """How one run trains: its steps, learning rate and seed, the preset's warmup, weight decay, clipping and
    checkpoint/eval cadence."""
    return TrainConfig(
        out_dir=out_dir, steps=spec.steps, lr=spec.lr, warmup=min(preset.warmup, spec.steps),
        weight_decay=preset.weight_decay, grad_clip=preset.grad_clip, seed=spec.seed,
        ckpt_every=preset.ckpt_every, eval_every=preset.eval_every, progress=progress, tensorboard=tensorboard,
        desc=spec.label,
    )


def run_one(spec: RunSpec, preset: Preset, data: StudyData, runs_dir: Path, *, backend: str,
            shifts: tuple[Shift, ...], progress: bool, tensorboard: bool) -> dict[str, Any]:
    """Train (or reuse / resume: :func:`seednorm_experiments.runs.train_or_reuse`) one run and return its
    ``result.json`` content."""
    signature = run_signature(spec, preset, backend, shifts)
    out_dir = runs_dir / run_name(spec, signature)
    task = make_task(spec, preset, data, backend=backend, shifts=shifts, name=out_dir.name, signature=signature)
    return train_or_reuse(task, train_config(spec, preset, out_dir, progress=progress, tensorboard=tensorboard))


def measure_throughput(preset: Preset, data: StudyData, norms: Sequence[str], *, backend: str = "seednorm",
                       rounds: int = 40, steps: int = 2,
                       dynamic_dropout: float | None = None) -> dict[str, list[float]]:
    """Training images/s of each norm's main-grid ViT (:func:`main_model`: SeeDNorm with the vision recipe, its
    dynamic dropout on, at ``dynamic_dropout`` when given), by the study's own training step
    (:func:`harness.benchmark`: same optimizer groups, clipping and schedule as :func:`run_one`), seed 0, timed
    round-robin, ``rounds`` × ``steps`` steps per norm. Returns the per-round images/s of each norm (round i of
    every norm ran back to back)."""
    specs = {}
    for norm in check_norms(norms):
        model = main_model(preset, norm)
        if dynamic_dropout is not None and "dynamic_dropout" in model.norm_kwargs:
            model = replace(model, norm_kwargs={**model.norm_kwargs, "dynamic_dropout": dynamic_dropout})
        specs[norm] = RunSpec("main", model, 0, preset.steps, preset.lr)
    tasks = {norm: make_task(spec, preset, data, backend=backend, shifts=(), name=norm, signature={})
             for norm, spec in specs.items()}
    config = train_config(next(iter(specs.values())), preset, Path("."), progress=False, tensorboard=False)
    return benchmark(tasks, config, rounds=rounds, steps=steps)


def vision_seednorm(heads: int, drop_path: float, dot_scale: float | str) -> dict[str, Any]:
    """The paper's vision SeeDNorm (spec §4): ``heads`` heads, dynamic dropout at the drop-path rate, dot scale."""
    return {"num_heads": heads, "dynamic_dropout": drop_path, "dot_scale": dot_scale}


def seednorm_kwargs(preset: Preset, heads: int, dot_scale: float | str) -> dict[str, Any]:
    """:func:`vision_seednorm` at ``preset``'s drop-path rate."""
    return vision_seednorm(heads, preset.model.drop_path, dot_scale)


def main_model(preset: Preset, norm: str) -> ViTConfig | ConvNeXtConfig:
    """The main grid's ViT with ``norm``: SeeDNorm with the preset's heads, dot scale and dynamic dropout."""
    kwargs = seednorm_kwargs(preset, preset.seednorm_heads, preset.dot_scale) if norm == "seednorm" else {}
    return replace(preset.model, norm=norm, norm_kwargs=kwargs)


def plan(preset: Preset, seeds: int) -> list[RunSpec]:
    """The main grid (every norm) then the head grid (SeeDNorm per head count, the vision baseline as the
    reference)."""
    specs = []
    for norm in preset.norms:
        model = main_model(preset, norm)
        specs += [RunSpec("main", model, seed, preset.steps, preset.lr) for seed in range(seeds)]
    variants = []
    if preset.heads:
        wide = replace(preset.model, dim=preset.ablation_dim, depth=preset.ablation_depth)
        variants = [replace(wide, norm=VISION_BASELINE)]
        variants += [replace(wide, norm="seednorm", norm_kwargs=seednorm_kwargs(preset, h, preset.ablation_dot_scale))
                     for h in preset.heads]
    for model in variants:
        specs += [RunSpec("heads", model, seed, preset.ablation_steps, preset.ablation_lr) for seed in range(seeds)]
    return specs


def standardized(preset: Preset, data: StudyData) -> Preset:
    """``preset`` whose model standardizes its inputs with the training split's pixel mean and std (4 digits)."""
    pixels = data.train.images
    return replace(preset, model=replace(preset.model, pixel_mean=round(pixels.mean().item(), 4),
                                         pixel_std=round(pixels.std().item(), 4)))


def run_study(preset: Preset, data: StudyData, runs_dir: Path, *, backend: str, shifts: tuple[Shift, ...],
              progress: bool = True, tensorboard: bool = True, log: Callable[[str], None] | None = None) -> Results:
    """Every run of :func:`plan` (``preset.seeds`` seeds) in order, trained, reused or resumed into ``runs_dir``; the
    main process logs one line per run (``log``, default: print it)."""
    log = log or (lambda line: print(line, flush=True))
    specs = plan(preset, preset.seeds)
    expect(len(specs))
    results = []
    for i, spec in enumerate(specs, 1):
        t = time.perf_counter()
        result = run_one(spec, preset, data, runs_dir, backend=backend, shifts=shifts, progress=progress,
                         tensorboard=tensorboard)
        results.append((spec, result))
        if is_main_process():
            acc = result["final_eval"].get("clean", float("nan"))
            state = "diverged" if result["diverged"] else f"clean acc {acc:.3f}"
            log(f"[{i}/{len(specs)}] {spec.grid:5s} {spec.label:12s} d={spec.model.dim} seed {spec.seed}: "
                f"{state} ({time.perf_counter() - t:.0f} s)")
    return results
