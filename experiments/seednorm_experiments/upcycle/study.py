"""The upcycling study on the harness: the base model's evaluation, each arm's learning-rate sweep on seed 0, more
seeds at each arm's best rate, every run evaluated on the adaptation domain and the forgetting domains.

Layout of ``out``: ``base.json`` (the model before training: evaluation, conversion gaps, trainable parameters,
step memory of each arm; reused when its fingerprint matches), ``runs/<arm>/lr<x>/seed<k>/`` (one harness run each:
metrics.csv, result.json; the checkpoint while it trains) and the report files (:mod:`.report`).

Every run of a seed sees the same batches in the same order (:func:`.data.train_batch`), and every arm starts
from the same weights (a SeeDNorm arm from their exact conversion), so arms compare seed by seed. Finished runs are
reused and interrupted ones resumed (:func:`..runs.train_or_reuse`); a folder holding a run of other settings
stops the study before it trains (:class:`..runs.RunMismatch`). Several processes may run the same command at once
and share the grid (:mod:`..claims`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import claims
from ..common import final_loss, grown_rate
from ..harness import CHECKPOINT_NAME, RESULT_NAME, Task, TrainConfig, fingerprint_digest
from ..progress import expect, step
from ..records import measure
from ..runs import check_reusable, is_finished, train_or_reuse
from ..text_evals import bits_per_byte, cloze_accuracy, cloze_items
from .arms import Arm, build_arm, convert_checked, get_arm, trainable_params
from .cost import step_memory
from .data import Corpus, eval_domains, load_corpus, train_batch
from .presets import Preset
from .pretrained import GGUF_FILE, CausalLM, load_base, load_tokenizer, weights_sha256

__all__ = ["BASE_NAME", "Evaluator", "Run", "Study", "best_lr", "lr_tag"]

BASE_NAME = "base.json"


@dataclass
class Run:
    """One finished training run: its arm, seed, learning rate and the harness's result.json."""

    arm: str
    seed: int
    lr: float
    result: dict[str, Any]

    @property
    def diverged(self) -> bool:
        return bool(self.result["diverged"])

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of steps (:func:`..common.final_loss`); inf when diverged."""
        return math.inf if self.diverged else final_loss(self.result["history"])


def lr_tag(lr: float) -> str:
    """A learning rate's folder name: ``lr0.0001``."""
    return f"lr{lr:g}"


def best_lr(runs: Sequence[Run]) -> float:
    """The learning rate whose seed-0 run has the lowest final training loss (diverged runs never win; the smaller
    rate on a tie)."""
    sweep = sorted((r for r in runs if r.seed == 0), key=lambda r: (r.final_loss, r.lr))
    if not sweep:
        raise ValueError("best_lr needs seed-0 runs")
    return sweep[0].lr


class Evaluator:
    """Bits per byte and 4-way cloze accuracy on each evaluation domain (the adaptation domain's held-out text,
    then the forgetting domains); cloze items built once, on first use."""

    def __init__(self, preset: Preset, corpus: Corpus) -> None:
        self.preset, self.corpus = preset, corpus
        self.domains = eval_domains(corpus.domain)
        self.items: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """What the evaluation depends on besides the model and the corpus."""
        p = self.preset
        return {"domains": list(self.domains), "windows": p.eval_windows, "seq_len": p.eval_seq_len,
                "cloze_items": p.cloze_items, "cloze_context": p.cloze_context, "cloze_length": p.cloze_length}

    def __call__(self, model: nn.Module) -> dict[str, float]:
        p = self.preset
        if self.items is None:
            self.items = {d: cloze_items(self.corpus.tokens[d], items=p.cloze_items, context=p.cloze_context,
                                         length=p.cloze_length, seed=i) for i, d in enumerate(self.domains)}
        out = {}
        for d in self.domains:
            out[f"bpb/{d}"] = bits_per_byte(model, self.corpus.tokens[d], self.corpus.token_bytes,
                                            seq_len=p.eval_seq_len, windows=p.eval_windows, batch_size=4)
            out[f"cloze/{d}"] = cloze_accuracy(model, *self.items[d], batch_size=16)
        return out


def _lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy."""
    x, y = batch
    device = next(model.parameters()).device
    return F.cross_entropy(model(x.to(device)).flatten(0, 1).float(), y.to(device).flatten())


class Study:
    """The study of ``preset`` on ``arms`` adapting to ``domain``, written to ``out``: its runs' tasks and configs,
    the base model's record and the grid (:meth:`run`)."""

    def __init__(self, preset: Preset, arms: Sequence[str], seeds: int, out: Path, *, domain: str = "bible",
                 progress: bool = True) -> None:
        self.preset, self.arms, self.seeds, self.out = preset, [get_arm(a) for a in arms], seeds, Path(out)
        self.progress = progress
        self.corpus = load_corpus(load_tokenizer(), domain, preset.max_chars)
        self.evaluator = Evaluator(preset, self.corpus)
        self.model_signature = {"gguf": GGUF_FILE, "layers": preset.layers,
                                "weights_sha256": weights_sha256(preset.layers, preset.width)}
        if preset.width is not None:  # the generated stand-in (the real model's signature stays as it was)
            self.model_signature |= {"gguf": None, "generated_width": preset.width}

    def task(self, arm: Arm, seed: int) -> Task:
        """The harness task of one (arm, seed) run."""
        p = self.preset
        return Task(
            name=f"upcycle-{p.name}-{arm.name}",
            build_model=lambda: build_arm(self.base_model(), arm),
            batches=lambda step, rank, world: train_batch(self.corpus.tokens["train"], step, rank, world,
                                                          batch_size=p.batch_size, seq_len=p.seq_len, seed=seed),
            loss=_lm_loss,
            tokens=lambda batch: batch[0].numel(),
            evaluate=self.evaluator,
            signature={"model": self.model_signature, **arm.signature(), "batch_size": p.batch_size,
                       "seq_len": p.seq_len, "corpus": self.corpus.key, "max_chars": p.max_chars,
                       "eval": self.evaluator.settings},
        )

    def base_model(self) -> torch.nn.Module:
        """A fresh copy of the preset's model before any arm (:func:`.pretrained.load_base`)."""
        return load_base(self.preset.layers, self.preset.width)

    def config(self, arm: Arm, seed: int, lr: float) -> TrainConfig:
        """The harness settings of one run; it diverges when its loss exceeds 2 (ln(vocab) + 1), twice the loss
        of guessing uniformly (a model cut to a few layers starts above ln(vocab)). An arm with a rate scale for
        α, β brings its optimizer groups (:meth:`.arms.Arm.param_groups`; its signature says so)."""
        p = self.preset
        return TrainConfig(out_dir=self.out / "runs" / arm.name / lr_tag(lr) / f"seed{seed}", steps=p.steps, lr=lr,
                           warmup=p.warmup, weight_decay=p.weight_decay, grad_clip=p.grad_clip, seed=seed,
                           ckpt_every=p.ckpt_every, diverge_above=2 * (math.log(len(self.corpus.token_bytes)) + 1),
                           param_groups=arm.param_groups(p.weight_decay, lr),
                           progress=self.progress, desc=f"{arm.name} lr {lr:g} seed {seed}")

    def sweep_lrs(self, arm: Arm) -> list[float]:
        """The learning rates of ``arm``'s sweep: its base rate × each of the preset's multipliers, to 6 significant
        digits (3e-3 × 3 is 0.009, as its folder ``lr0.009`` says, not 0.009000000000000001)."""
        return [float(f"{arm.lr * m:.6g}") for m in self.preset.lr_mults]

    def _train(self, arm: Arm, seed: int, lr: float) -> Run:
        """The run's result (trained, resumed or reused); the checkpoint of a finished run is deleted (a full
        model's is ~1.6 GB, and ``result.json`` is all a finished run is reused by)."""
        config = self.config(arm, seed, lr)
        result = train_or_reuse(self.task(arm, seed), config)
        if (config.out_dir / RESULT_NAME).is_file():
            (config.out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
        return Run(arm.name, seed, lr, result)

    def run(self, poll_s: float = 10.0) -> tuple[dict[str, Any], list[Run]]:
        """The base record (:meth:`base`) and every run: the sweep (seed 0, each arm at each rate, rates outer; an
        arm whose best rate is on its grid's edge grown there, :meth:`grown_lrs`), then seeds 1.. at each arm's
        best rate (seeds outer, so a cut-short study stays paired). Several processes may run the same study at
        once: each run is trained by the one that claims it (:mod:`..claims`), and each process waits for the
        whole sweep before choosing the rates (checking every ``poll_s`` seconds)."""
        rates = {a.name: self.sweep_lrs(a) for a in self.arms}
        sweep = [(a, 0, lr) for m in range(len(self.preset.lr_mults)) for a in self.arms
                 for lr in [rates[a.name][m]]]
        check_reusable((self.task(a, s), self.config(a, s, lr)) for a, s, lr in sweep)
        more_seeds = len(self.arms) * (self.seeds - 1)
        expect(len(sweep) + more_seeds)
        base = measure("base", self.base)
        runs = self._share(sweep, poll_s)
        while grown := [(a, 0, lr) for a in self.arms for lr in self.grown_lrs(a, rates[a.name], runs)]:
            for a, _, lr in grown:
                rates[a.name].append(lr)
            check_reusable((self.task(a, s), self.config(a, s, lr)) for a, s, lr in grown)
            sweep += grown
            expect(len(sweep) + more_seeds)
            runs += self._share(grown, poll_s)
        best = {a.name: best_lr([r for r in runs if r.arm == a.name]) for a in self.arms}
        more = [(a, s, best[a.name]) for s in range(1, self.seeds) for a in self.arms]
        check_reusable((self.task(a, s), self.config(a, s, lr)) for a, s, lr in more)
        return base, runs + self._share(more, poll_s)

    def grown_lrs(self, arm: Arm, rates: list[float], runs: Sequence[Run]) -> list[float]:
        """The rate to add to ``arm``'s sweep (``rates``, its ``runs``' seed 0): one below when its best rate is the
        lowest, one above when the highest, by the ratio of the two outermost multipliers on that side, while
        fewer than ``preset.extend`` were added on that side; none otherwise."""
        mults = sorted(self.preset.lr_mults)
        if len(mults) < 2:
            return []
        best = best_lr([r for r in runs if r.arm == arm.name])
        lr = grown_rate(rates, self.sweep_lrs(arm), best, self.preset.extend, down=mults[1] / mults[0],
                        up=mults[-1] / mults[-2])
        return [] if lr is None else [float(f"{lr:.6g}")]

    def _share(self, jobs: list[tuple[Arm, int, float]], poll_s: float) -> list[Run]:
        """Train the ``(arm, seed, lr)`` runs this process claims, wait for the others', then return every one's
        verified result in the order of ``jobs``."""
        folder = lambda job: self.config(*job).out_dir  # noqa: E731
        for _ in claims.work(jobs, folder, lambda job: is_finished(folder(job)),
                             lambda job: self._train(*job), poll_s):
            pass
        return [self._train(*job) for job in jobs]  # each reused: finished and verified

    def base_fingerprint(self) -> dict[str, Any]:
        """What the base record depends on."""
        p = self.preset
        return json.loads(json.dumps({"model": self.model_signature, "corpus": self.corpus.key,
                                      "eval": self.evaluator.settings, "arms": [a.signature() for a in self.arms],
                                      "batch_size": p.batch_size, "seq_len": p.seq_len}, sort_keys=True))

    def base(self) -> dict[str, Any]:
        """``out/base.json``, computed when missing or of other settings: the base model's evaluation (``eval``),
        each SeeDNorm arm's conversion gap (max |Δ logits| on the probe batch, ``gap``), each arm's trainable
        parameters (``trainable``) and training-step memory (``memory``, :func:`.cost.step_memory`)."""
        fingerprint = self.base_fingerprint()
        if (record := self._saved_base(fingerprint)) is not None:
            return record
        with claims.hold(self.out, wait=True):  # one process measures (minutes, GBs); the others wait and read it
            return self._saved_base(fingerprint) or self._measure_base(fingerprint)

    def _saved_base(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """``out/base.json`` when it holds a record of ``fingerprint``'s settings, else None."""
        try:
            record = json.loads((self.out / BASE_NAME).read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("fingerprint_sha256") == fingerprint_digest(fingerprint) else None

    def _measure_base(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        """Measure the base record (:meth:`base`) and write it to ``out/base.json``."""
        path = self.out / BASE_NAME
        with step("evaluating the base model, and each arm's conversion gap, trainable parameters and step memory"):
            with torch.no_grad():
                base_eval = self.evaluator(CausalLM(self.base_model()).eval())
            arms: dict[str, Any] = {}
            for arm in self.arms:
                gap = convert_checked(self.base_model(), arm) if arm.norm == "seednorm" else 0.0
                task = self.task(arm, 0)
                memory = step_memory(task, self.config(arm, 0, arm.lr))
                arms[arm.name] = {"gap": gap, "trainable": trainable_params(task.build_model()), "memory": memory}
        record = {"eval": base_eval, "arms": arms, "fingerprint": fingerprint,
                  "fingerprint_sha256": fingerprint_digest(fingerprint)}
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{BASE_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        return record
