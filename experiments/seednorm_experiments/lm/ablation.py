"""``seednorm lm --ablation``: the fair comparison of the norms and the ablation of SeeDNorm's knobs
in phases that each reuse the finished runs of the one before:

1. ``sweep``: every main norm (``plan.norms``: by default RMSNorm, LayerNorm, DyT with its LM recipe,
   SeeDNorm; Derf with DyT's LM recipe when asked) at each learning
   rate of ``plan.lrs`` (seed 0, no evaluation); each norm's best rate is the one with the lowest final
   training loss (:func:`.sweep.best_lrs`);
2. ``base``: every main norm at its own best rate and every SeeDNorm knob variant (:mod:`.recipes`) at
   SeeDNorm's best rate, ``plan.seeds`` seeds each (seeds outer, so a cut-short phase stays paired),
   evaluated in-domain and zero-shot;
3. ``long<f>x``: RMSNorm, SeeDNorm and the ``plan.carry`` best knob variants of phase 2 for f × the
   steps (same rates), for the first factor f of ``plan.long_factors``;
4. ``wide``: the same configurations at width ``plan.wide_dim`` (same steps and rates);
5. ``long<f>x`` for the remaining factors, in order (the most expensive phases come last).

Layout of ``out``: ``<phase>/<variant>/lr<x>/seed<k>/`` (one harness run each). Finished runs
(``result.json``) are reused and interrupted ones resumed from their checkpoint, so a restart redoes
nothing -- provided they are runs of this plan: a run folder holding a run with other settings (e.g. other
``--steps`` or ``--dim`` into the same ``--out``) stops the command with :class:`~..runs.RunMismatch`
(:mod:`..runs`). Several processes may run the same command at once -- each run is claimed by one process
(:mod:`..claims`: a ``.claim`` file with its pid; claims of dead processes are taken over) and a process waits for
the others' runs before a phase that depends on them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import claims
from ..common import BASELINE
from ..harness import Task, TrainConfig
from ..progress import expect
from ..report import paired_diff
from ..runs import finished_result, is_finished, train_or_reuse
from .data import IN_DOMAIN, ZERO_SHOT, Corpus
from .presets import Preset
from .recipes import FORM_KNOBS, KNOBS, SITE_KNOBS, VARIANTS, get_variant
from .study import Evaluator, Run, make_task, study_corpus, train_config
from .sweep import best_lrs

__all__ = ["MAIN", "AblationPlan", "Job", "VariantJob", "VariantRuns", "best_knobs", "claim", "load_runs",
           "primary_metric", "run_ablation", "zero_shot_bpb", "zero_shot_cloze"]

MAIN = ("rmsnorm", "layernorm", "dyt", "seednorm")
"""The main norms the ablation compares by default, each swept and compared at its own best learning rate: the
paper's comparison, the studies' norms but Derf (the committed ablation results were made with these). The
ablation sweeps 8 rates and trains 6 seeds per norm, so Derf is opt-in: ``AblationPlan.norms`` may name any main
norm of :data:`.recipes.VARIANTS` (e.g. ``derf``)."""


@dataclass(frozen=True)
class AblationPlan:
    """The grid: ``preset`` (base width and steps), ``seeds`` per configuration, the swept ``lrs``, the
    SeeDNorm ``knobs`` (variant names of :mod:`.recipes`), ``long_factors`` (one long phase per
    factor, that many × the steps), ``wide_dim`` for the wide phase, and how many of the best knobs
    ``carry`` into the long and wide phases. ``norms``: the main norms (variant names of :mod:`.recipes` that
    are not knobs; RMSNorm and SeeDNorm among them)."""

    preset: Preset
    seeds: int
    lrs: tuple[float, ...]
    knobs: tuple[str, ...] = KNOBS
    long_factors: tuple[int, ...] = (4,)
    wide_dim: int | None = None
    carry: int = 1
    norms: tuple[str, ...] = MAIN

    def __post_init__(self) -> None:
        knobs = set(KNOBS + FORM_KNOBS + SITE_KNOBS)
        mains = [n for n in VARIANTS if n not in knobs]
        if any(n not in mains for n in self.norms) or not {BASELINE, "seednorm"} <= set(self.norms):
            raise ValueError(f"--norms {list(self.norms)}: the ablation compares main norms {mains}, "
                             f"{BASELINE} and seednorm among them")
        if self.seeds < 2:
            raise ValueError(f"the ablation needs >= 2 seeds for paired confidence intervals, got {self.seeds}")
        if len(self.lrs) < 2 or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"lrs must be >= 2 positive learning rates, got {self.lrs}")
        for k in self.knobs:
            if get_variant(k).norm != "seednorm":
                raise ValueError(f"knob {k!r} is not a SeeDNorm variant; choose from {list(KNOBS + FORM_KNOBS)}")
        if not self.long_factors or min(self.long_factors) < 2 or self.carry < 0:
            raise ValueError(f"need long factors >= 2 and carry >= 0, got {self.long_factors}, {self.carry}")
        for phase in self.phases:  # every phase's preset in range (a bad --wide-dim), before anything trains
            self.phase_preset(phase)

    @property
    def phases(self) -> list[str]:
        """Phase names in the order they run."""
        longs = [f"long{f}x" for f in dict.fromkeys(self.long_factors)]
        return ["sweep", "base", longs[0], "wide", *longs[1:]]

    def phase_preset(self, phase: str) -> Preset:
        """The preset a phase trains with (steps and width as above; the name records the phase)."""
        p = self.preset
        if phase.startswith("long"):
            return dataclasses.replace(p, name=f"{p.name}-{phase}", steps=p.steps * int(phase[4:-1]))
        if phase == "wide":
            return dataclasses.replace(p, name=f"{p.name}-wide", dim=self.wide_dim or 2 * p.dim)
        return p


@dataclass(frozen=True)
class Job:
    """One training run of the ablation."""

    phase: str
    variant: str
    seed: int
    lr: float
    out: Path

    @property
    def done(self) -> bool:
        return is_finished(self.out)


def primary_metric(run: Run) -> float:
    """Held-out in-domain bits per byte (mean over the in-domain evaluation sets)."""
    return statistics.fmean(run.result["final_eval"][f"bpb/{d}"] for d in IN_DOMAIN)


def zero_shot_bpb(run: Run) -> float:
    """Zero-shot bits per byte (mean over the never-seen evaluation domains)."""
    return statistics.fmean(run.result["final_eval"][f"bpb/{d}"] for d in ZERO_SHOT)


def zero_shot_cloze(run: Run) -> float:
    """Zero-shot cloze accuracy (mean over the never-seen evaluation domains)."""
    return statistics.fmean(run.result["final_eval"][f"cloze/{d}"] for d in ZERO_SHOT)


def best_knobs(base: Sequence[Run], knobs: Sequence[str], carry: int) -> list[str]:
    """The ``carry`` knob variants with the lowest mean paired difference to RMSNorm in
    :func:`primary_metric` over the seeds both finished (diverged runs excluded)."""
    ref = {r.seed: primary_metric(r) for r in base if r.norm == BASELINE and not r.diverged}
    score = {}
    for k in knobs:
        mine = {r.seed: primary_metric(r) for r in base if r.norm == k and not r.diverged}
        if set(mine) & set(ref):
            score[k] = paired_diff(mine, ref).mean
    return sorted(score, key=score.get)[:carry]


def _jobs(plan: AblationPlan, out: Path, phase: str, lrs: dict[str, float], carried: Sequence[str]) -> list[Job]:
    if phase == "sweep":
        return [Job(phase, v, 0, lr, out / phase / v / f"lr{lr:g}" / "seed0") for lr in plan.lrs for v in plan.norms]
    names = list(plan.norms) + list(plan.knobs) if phase == "base" else [BASELINE, "seednorm", *carried]
    lr_of = {v: lrs[get_variant(v).norm] for v in names}
    return [Job(phase, v, s, lr_of[v], out / phase / v / f"lr{lr_of[v]:g}" / f"seed{s}")
            for s in range(plan.seeds) for v in names]


def claim(job: Job) -> bool:
    """Atomically claim ``job`` for this process (:func:`..claims.claim` of its folder)."""
    return claims.claim(job.out)


def _work(jobs: Sequence[Job], run: Callable[[Job], None], poll_s: float) -> Iterator[Job]:
    """Run every unfinished job this process can claim; wait for those other processes hold (:func:`..claims.work`)."""
    return claims.work(jobs, lambda job: job.out, lambda job: job.done, run, poll_s)


class VariantJob(Protocol):
    """One planned run of a variant: :class:`Job`, :class:`.size_curve.SizeJob`."""

    @property
    def variant(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def out(self) -> Path: ...
    @property
    def done(self) -> bool: ...


class VariantRuns:
    """Runs of :mod:`.recipes` variants into their own folders, as the ablation and the size curve plan them: each
    job (``variant``, ``seed``, ``lr``, ``out``, ``done``) becomes a harness task and config (:meth:`variant_spec`,
    at the preset and with the evaluator a subclass's :meth:`spec` picks), and its result is used only if it is this
    job's run (:func:`..runs.finished_result`)."""

    def __init__(self, corpus: Corpus, progress: bool = False) -> None:
        self.corpus, self.progress = corpus, progress

    def spec(self, job: VariantJob) -> tuple[Task, TrainConfig]:
        raise NotImplementedError

    def variant_spec(self, job: VariantJob, preset: Preset, evaluator: Evaluator | None, desc: str,
                     nudge_init: bool = False, model: Mapping[str, Any] | None = None) -> tuple[Task, TrainConfig]:
        """``job``'s variant trained at ``preset`` (no TensorBoard, no evaluation before the end); ``nudge_init``:
        from the seed's init moved up by one ulp (:func:`.study.make_task`); ``model``: further :class:`.LMConfig`
        fields of every variant (the decoder ``arch``, the mixture of experts; set only when not the default, so
        that they are named in the fingerprint only then)."""
        variant = get_variant(job.variant)
        task = make_task(preset, self.corpus, variant.norm, job.seed, evaluator,
                         model_overrides=variant.model_overrides(preset.dim, preset.n_heads) | dict(model or {}),
                         signature={"variant": variant.signature()}, nudge_init=nudge_init)
        cfg = train_config(preset, job.out, job.seed, job.lr, preset.steps, True, self.progress, desc,
                           self.corpus.vocab_size)
        return task, dataclasses.replace(cfg, tensorboard=False, eval_every=0,
                                         **variant.train_overrides(job.lr, preset.weight_decay))

    def load(self, job: VariantJob) -> Run:
        result = finished_result(*self.spec(job))
        if result is None:
            raise FileNotFoundError(f"{job.out} has no finished run")
        return Run(job.variant, job.seed, job.lr, result)

    def loaded(self, jobs: Sequence[VariantJob]) -> list[Run]:
        """The finished runs among ``jobs`` (each verified)."""
        return [self.load(j) for j in jobs if j.done]


class _Runs(VariantRuns):
    """The ablation's jobs: each phase at its preset, one evaluator per phase (none for the sweep)."""

    def __init__(self, plan: AblationPlan, corpus: Corpus, progress: bool = False) -> None:
        super().__init__(corpus, progress)
        self.plan = plan
        self.evaluators: dict[str, Evaluator] = {}

    def spec(self, job: Job) -> tuple[Task, TrainConfig]:
        preset = self.plan.phase_preset(job.phase)
        evaluator = None
        if job.phase != "sweep":
            evaluator = self.evaluators.setdefault(job.phase, Evaluator(preset, self.corpus))
        return self.variant_spec(job, preset, evaluator, f"{job.phase} {job.variant} seed {job.seed}")


def load_runs(plan: AblationPlan, out: Path) -> dict[str, list[Run]]:
    """The finished runs of every phase that can be planned so far (for the report), each verified to be
    the plan's run (:class:`~..runs.RunMismatch` otherwise)."""
    return _load_runs(_Runs(plan, study_corpus(plan.preset)), out)


def _load_runs(r: _Runs, out: Path) -> dict[str, list[Run]]:
    plan = r.plan
    runs: dict[str, list[Run]] = {p: [] for p in plan.phases}
    sweep = _jobs(plan, out, "sweep", {}, [])
    runs["sweep"] = r.loaded(sweep)
    if not all(j.done for j in sweep):
        return runs
    lrs = best_lrs(runs["sweep"])
    base = _jobs(plan, out, "base", lrs, [])
    runs["base"] = r.loaded(base)
    carried = best_knobs(runs["base"], plan.knobs, plan.carry) if all(j.done for j in base) else []
    if carried or not plan.carry:
        for phase in plan.phases[2:]:
            runs[phase] = r.loaded(_jobs(plan, out, phase, lrs, carried))
    return runs


def _phase_size(plan: AblationPlan, phase: str) -> int:
    """How many runs ``phase`` trains (the long and wide phases: RMSNorm, SeeDNorm and the carried knobs)."""
    if phase == "sweep":
        return len(plan.lrs) * len(plan.norms)
    if phase == "base":
        return plan.seeds * (len(plan.norms) + len(plan.knobs))
    return plan.seeds * (2 + min(plan.carry, len(plan.knobs)))


def run_ablation(plan: AblationPlan, out: Path, *, progress: bool = False, poll_s: float = 10.0,
                 until: str | None = None, log: Callable[[str], None] = print) -> dict[str, list[Run]]:
    """Train every phase of ``plan`` (up to and including ``until``) into ``out``, reusing and resuming
    runs and sharing the work with any other process running the same plan; returns the finished runs
    of every phase (see :func:`load_runs`). Finished runs of a phase are verified before it trains."""
    r = _Runs(plan, study_corpus(plan.preset), progress)

    def run(job: Job) -> None:
        t0 = time.perf_counter()
        result = train_or_reuse(*r.spec(job))
        log(f"{job.phase} {job.variant} lr {job.lr:g} seed {job.seed}: loss "
            f"{Run(job.variant, job.seed, job.lr, result).final_loss:.4f} "
            f"{'DIVERGED ' if result['diverged'] else ''}in {time.perf_counter() - t0:.0f} s")

    phases = plan.phases[:plan.phases.index(until) + 1] if until else plan.phases
    expect(sum(_phase_size(plan, phase) for phase in phases))
    lrs: dict[str, float] = {}
    carried: list[str] = []
    for phase in plan.phases:
        jobs = _jobs(plan, out, phase, lrs, carried)
        r.loaded(jobs)  # a run of other settings stops the command before this phase trains
        for _ in _work(jobs, run, poll_s):
            pass
        if phase == "sweep":
            lrs = best_lrs(r.loaded(jobs))
            log(f"best learning rates: {lrs}")
        if phase == "base":
            carried = best_knobs(r.loaded(jobs), plan.knobs, plan.carry)
            log(f"knobs carried to the long and wide phases: {carried}")
        if phase == until:
            break
    return _load_runs(r, out)
