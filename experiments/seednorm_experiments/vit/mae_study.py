"""The MAE runs: per (norm, seed), MAE pre-training of the ViT, then a linear probe and fine-tuning on the labels,
each a harness run in its own folder named by its settings.

1. ``pretrain``: :class:`~.mae.MAE` on the training images (labels unused), masks drawn from (seed, step)
   (:class:`~.data.MaskedBatches`); evaluated by the reconstruction loss on the test split under one fixed mask
   per image (``recon``).
2. ``probe``: :class:`~.mae.LinearProbe` on the pre-trained encoder (only its Linear trains);
3. ``finetune``: the pre-trained ViT (encoder weights, a fresh head) trained whole;
   both with the supervised study's loss, batches and evaluation (clean, shifts, transfer set).

SeeDNorm follows the vision recipe (``study.vision_seednorm``: heads, dynamic dropout at the drop-path rate, dot
scale) in encoder and decoder. The probe and fine-tuning runs name their pre-training run's fingerprint digest in
their own fingerprint, so a changed pre-training never reuses their results; they read its weights from its
``checkpoint.pt``. A diverged pre-training leaves its probe and fine-tuning out (scored at chance in the report).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..common import is_main_process
from ..harness import CHECKPOINT_NAME, Task, TrainConfig, load_checkpoint
from ..progress import expect
from ..runs import train_or_reuse
from .data import Batches, MaskedBatches, StudyData
from .evals import Shift, shifted_accuracies
from .mae import MAE, LinearProbe, MAEConfig, encoder_state
from .model import ViT
from .presets import MAEPreset
from .study import classification_loss, vision_seednorm

__all__ = ["MAERun", "MAEResults", "STAGES", "mae_loss", "mae_plan", "reconstruction_loss", "run_mae_study",
           "stage_signature", "standardized_mae"]

STAGES = ("pretrain", "probe", "finetune")


@dataclass(frozen=True)
class MAERun:
    """One (norm, seed) of the MAE study: its MAE (the norm is ``model.encoder.norm``) and its seed."""

    model: MAEConfig
    seed: int

    @property
    def label(self) -> str:
        """Norm (and SeeDNorm head count) as shown in tables: ``seednorm/4h``."""
        heads = self.model.encoder.norm_kwargs.get("num_heads")
        return f"{self.model.encoder.norm}/{heads}h" if heads else self.model.encoder.norm


MAEResults = list[tuple[MAERun, dict[str, dict[str, Any] | None]]]
"""Every (norm, seed) of the study, in plan order, with each stage's ``result.json`` content (None: not run,
because its pre-training diverged)."""


def mae_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The masked reconstruction loss of ``model(images, noise)`` (labels unused)."""
    images, _, noise = batch
    device = next(model.parameters()).device
    return model(images.to(device), noise.to(device))


def _fixed_noise(n: int, patches: int) -> torch.Tensor:
    return torch.rand(n, patches, generator=torch.Generator().manual_seed(0))


def reconstruction_loss(model: MAE, images: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """``{"recon": loss}``: the masked reconstruction loss over ``images``, each under one fixed mask (seed 0),
    weighted by hidden patches (= the loss of the whole set at once)."""
    device = next(model.parameters()).device
    noise = _fixed_noise(len(images), model.config.encoder.num_patches)
    total, count = 0.0, 0.0
    for start in range(0, len(images), batch_size):
        loss, _, mask = model.reconstruct(images[start:start + batch_size].to(device),
                                          noise[start:start + batch_size].to(device))
        total += loss.item() * mask.sum().item()
        count += mask.sum().item()
    return {"recon": total / count}


def mae_plan(preset: MAEPreset) -> list[MAERun]:
    """Every norm of ``preset.norms`` × ``preset.seeds`` seeds; SeeDNorm in the vision recipe."""
    runs = []
    for norm in preset.norms:
        kwargs = (vision_seednorm(preset.seednorm_heads, preset.model.encoder.drop_path, preset.dot_scale)
                  if norm == "seednorm" else {})
        model = replace(preset.model, encoder=replace(preset.model.encoder, norm=norm, norm_kwargs=kwargs))
        runs += [MAERun(model, seed) for seed in range(preset.seeds)]
    return runs


def standardized_mae(preset: MAEPreset, data: StudyData) -> MAEPreset:
    """``preset`` whose encoder standardizes its inputs with the training split's pixel mean and std (4 digits)."""
    pixels = data.train.images
    encoder = replace(preset.model.encoder, pixel_mean=round(pixels.mean().item(), 4),
                      pixel_std=round(pixels.std().item(), 4))
    return replace(preset, model=replace(preset.model, encoder=encoder))


def stage_signature(run: MAERun, stage: str, preset: MAEPreset, shifts: tuple[Shift, ...],
                    pretrained: str | None) -> dict[str, Any]:
    """Every setting a stage's result depends on (JSON data): the MAE, the data and schedule settings of the
    study, and for ``probe``/``finetune`` the shifts and the pre-training run's fingerprint digest."""
    signature: dict[str, Any] = {"stage": stage, "mae": asdict(run.model), "seed": run.seed}
    signature |= {k: getattr(preset, k) for k in ("dataset", "batch_size", "warmup", "weight_decay", "max_shift",
                                                   "eval_every", "eval_limit")}
    if stage != "pretrain":
        signature |= {"pretrained": pretrained, "shifts": [s.name for s in shifts],
                      "head": "batchnorm (no affine) + linear, frozen encoder" if stage == "probe" else "linear"}
    return json.loads(json.dumps(signature, default=str))


def _stage_name(run: MAERun, stage: str, signature: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()
    return f"mae-{stage}-{run.label.replace('/', '-')}-d{run.model.encoder.dim}-s{run.seed}-{digest[:8]}"


def _pretrained_vit(run: MAERun, checkpoint: Path) -> ViT:
    vit = ViT(run.model.encoder)
    state = encoder_state(load_checkpoint(checkpoint)["model"])
    state |= {k: v for k, v in vit.state_dict().items() if k.startswith("head.")}  # a fresh head
    vit.load_state_dict(state)
    return vit


def _run_stage(run: MAERun, stage: str, preset: MAEPreset, data: StudyData, runs_dir: Path,
               shifts: tuple[Shift, ...], pretrain_dir: Path | None, pretrained: str | None, *, progress: bool,
               tensorboard: bool) -> tuple[dict[str, Any], Path]:
    signature = stage_signature(run, stage, preset, shifts, pretrained)
    out_dir = runs_dir / _stage_name(run, stage, signature)
    steps, lr = {"pretrain": (preset.pretrain_steps, preset.pretrain_lr), "probe": (preset.probe_steps,
                                                                                  preset.probe_lr),
                 "finetune": (preset.finetune_steps, preset.finetune_lr)}[stage]
    if stage == "pretrain":
        task = Task(name=out_dir.name, build_model=lambda: MAE(run.model),
                    batches=MaskedBatches(data.train, preset.batch_size, run.seed, preset.max_shift,
                                          run.model.encoder.num_patches),
                    loss=mae_loss, tokens=lambda batch: batch[0].shape[0],
                    evaluate=lambda model: reconstruction_loss(model, data.test.images), signature=signature)
    else:
        checkpoint = pretrain_dir / CHECKPOINT_NAME  # type: ignore[operator]
        classes = run.model.encoder.num_classes
        build: Callable[[], torch.nn.Module] = (
            (lambda: LinearProbe(_pretrained_vit(run, checkpoint), classes)) if stage == "probe"
            else (lambda: _pretrained_vit(run, checkpoint)))
        task = Task(name=out_dir.name, build_model=build,
                    batches=Batches(data.train, preset.batch_size, run.seed, preset.max_shift),
                    loss=classification_loss, tokens=lambda batch: batch[0].shape[0],
                    evaluate=lambda model: shifted_accuracies(model, data.test, shifts, data.transfer, seed=0),
                    signature=signature)
    config = TrainConfig(out_dir=out_dir, steps=steps, lr=lr, warmup=min(preset.warmup, steps),
                         weight_decay=0.0 if stage == "probe" else preset.weight_decay, grad_clip=None,
                         seed=run.seed, ckpt_every=preset.ckpt_every, eval_every=preset.eval_every,
                         progress=progress, tensorboard=tensorboard, desc=f"{stage} {run.label}")
    return train_or_reuse(task, config), out_dir


def run_mae_study(preset: MAEPreset, data: StudyData, runs_dir: Path, *, shifts: tuple[Shift, ...],
                  progress: bool = True, tensorboard: bool = True,
                  log: Callable[[str], None] | None = None) -> MAEResults:
    """Every (norm, seed) of :func:`mae_plan`: pre-training, probe, fine-tuning, each trained, reused or resumed
    into ``runs_dir``; the main process logs one line per (norm, seed) (``log``, default: print it)."""
    log = log or (lambda line: print(line, flush=True))
    plan = mae_plan(preset)
    expect(3 * len(plan))  # pre-training, probe, fine-tuning
    results: MAEResults = []
    for i, run in enumerate(plan, 1):
        t = time.perf_counter()
        pre, pre_dir = _run_stage(run, "pretrain", preset, data, runs_dir, shifts, None, None, progress=progress,
                                  tensorboard=tensorboard)
        stages: dict[str, dict[str, Any] | None] = {"pretrain": pre, "probe": None, "finetune": None}
        if not pre["diverged"]:
            for stage in ("probe", "finetune"):
                stages[stage] = _run_stage(run, stage, preset, data, runs_dir, shifts, pre_dir,
                                           pre["fingerprint_sha256"], progress=progress, tensorboard=tensorboard)[0]
        results.append((run, stages))
        if is_main_process():
            if pre["diverged"]:
                state = "pre-training diverged"
            else:
                probe, tuned = stages["probe"], stages["finetune"]
                state = (f"recon {pre['final_eval']['recon']:.3f}, probe acc "
                         f"{probe['final_eval'].get('clean', float('nan')):.3f}, fine-tuned acc "  # type: ignore[index]
                         f"{tuned['final_eval'].get('clean', float('nan')):.3f}")  # type: ignore[index]
            log(f"[{i}/{len(plan)}] mae {run.label:12s} seed {run.seed}: {state} ({time.perf_counter() - t:.0f} s)")
    return results

