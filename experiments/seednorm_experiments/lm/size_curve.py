"""``seednorm lm --size-curve``: SeeDNorm − RMSNorm against model size, each norm at its own best learning rate
at each size, with paired 95% intervals.

    seednorm lm --size-curve --preset quick --steps 200 --out runs/lm_size_curve          # the committed curve
    seednorm lm --size-curve --preset smoke --points 16x1,32x1 --size-lrs 3e-3,6e-3 --seeds 2   # seconds
    seednorm lm --size-curve --preset quick --steps 200 --points 192x2 192x4 --token-factors 1 4 16 \\
        --clip-off-point none --out runs/lm_token_curve                # the same sizes trained 4 and 16 times longer
    seednorm lm --size-curve --preset quick --steps 200 --points 48x2 192x2 --clip-off-point none --sensitivity \
        --out runs/lm_sensitivity                    # every run again from an init one ulp away: how far it moves

For each point (width × layers, the rest of the preset unchanged), each token factor F of ``plan.token_factors``
(the point trained for F × the preset's steps; warmup as the preset's rule gives it for those steps) and each norm
of ``plan.norms``:

1. **grid**: train at every rate of ``plan.lrs`` with ``plan.seeds`` seeds (seeds outer), each run evaluated;
   the norm's rate at that point is the one with the lowest mean final training loss among the rates where no
   seed diverged (:func:`.sweep.best_lrs`);
2. **bracket**: while that rate is the smallest or the largest the norm has run at this point, the next rate out
   (half the smallest, twice the largest) is added with the same seeds, at most ``plan.extend`` times per side,
   so the chosen rate is an interior optimum of the grid unless the report says otherwise.

Each (point, factor) is its own grid, grown on its own. With ``plan.sensitivity``, every run of the grid is then
trained again from its init moved up by one ulp (:func:`.study.nudged`), same seed and data: how far a run's result
moves under a float-level change is the noise floor under which pairing by seed resolves nothing. Then the
**clip-off check** at ``plan.clip_off`` (a point of
the plan, at factor 1): each norm again at its best rate there with gradient clipping off, same seeds. Points run
cheapest first (width² × layers × factor), so a curve cut short still has its small end.

Seed k gives every norm and rate the same data order and init RNG stream, so SeeDNorm − RMSNorm at the two best
rates is paired by seed (:func:`..report.paired_diff`). The rate is chosen on training loss and the comparison is
on held-out bits per byte of the same seeds: each norm gets the same selection, and the report also gives the
difference at every shared rate, which needs no selection.

``plan.arch`` picks the decoder: ``llama`` (ours, pre-norm) or ``olmo2`` (OLMo-core's OLMo2, :mod:`.olmo`; its settings
and norm variants in :mod:`.olmo_curve`); a Llama run's fingerprint does not name the arch, so the Llama curve's
runs keep theirs.

Layout of ``out``: ``d<width>-l<layers>[-t<F>x][-noclip][-ulp]/<norm>/lr<x>/seed<k>/`` (one harness run each; factor 1
has no ``-t`` part, so a plan of factor 1 alone is the plain size curve, its runs and their fingerprints). Finished
runs are reused and interrupted ones resumed -- only runs of this plan (:mod:`..runs`): a run folder holding another
run stops the command. Several processes may run the same command at once and share the work (:mod:`..claims`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import claims
from ..common import BASELINE, grown_rate
from ..harness import Task, TrainConfig
from ..progress import expect
from ..runs import is_finished, train_or_reuse
from .ablation import VariantRuns
from .data import Corpus
from .model import ARCHS
from .presets import Preset
from .recipes import VARIANTS, get_variant
from .study import Evaluator, Run, model_config, model_fields
from .sweep import best_lrs

__all__ = ["CLIP_OFF", "EXTEND", "LRS", "NORMS", "POINTS", "SEEDS", "TOKEN_FACTORS", "Point", "SizeCurvePlan",
           "SizeJob", "best_rates", "load_size_curve", "parse_points", "run_size_curve"]

POINTS = ((48, 2), (96, 2), (192, 2), (192, 4), (384, 2))
"""(width, layers) of the curve: four widths at 2 layers and one 4-layer point, cheapest first."""
LRS = (2e-3, 4e-3, 8e-3)
"""The starting grid at every point (each norm's grid then grows outward until its best rate is inside)."""
NORMS = (BASELINE, "seednorm")
CLIP_OFF = (384, 2)
SEEDS = 4
EXTEND = 2
TOKEN_FACTORS = (1,)
"""Training length of every point, as multiples of the preset's steps (1: the size curve alone)."""


@dataclass(frozen=True, order=True)
class Point:
    """One model size: ``dim`` (width) × ``n_layers``; ``clip``: gradient clipping as in the preset (False: off);
    ``factor``: trained for ``factor`` × the preset's steps; ``nudged``: from the init moved up by one ulp."""

    dim: int
    n_layers: int
    clip: bool = True
    factor: int = 1
    nudged: bool = False

    @property
    def key(self) -> str:
        return (f"d{self.dim}-l{self.n_layers}" + ("" if self.factor == 1 else f"-t{self.factor}x")
                + ("" if self.clip else "-noclip") + ("-ulp" if self.nudged else ""))

    @property
    def size(self) -> tuple[int, int]:
        """(width, layers), as ``SizeCurvePlan.points`` names it."""
        return self.dim, self.n_layers

    def preset(self, base: Preset) -> Preset:
        """``base`` at this size and length (its name records the point; clipping off sets ``grad_clip=None``;
        warmup stays the preset's field, which :func:`.study.train_config` caps at a fifth of the steps)."""
        return dataclasses.replace(base, name=f"{base.name}-{self.key}", dim=self.dim, n_layers=self.n_layers,
                                   steps=base.steps * self.factor, grad_clip=base.grad_clip if self.clip else None)


def parse_points(items: Sequence[str], named: Mapping[str, tuple[int, ...]] | None = None
                 ) -> tuple[tuple[int, int], ...]:
    """``["48x2", "192x4"]`` → ((48, 2), (192, 4)); ``named``: sizes also accepted by name, as (width, layers, ...)
    (ValueError naming the item that does not parse)."""
    out = []
    for item in items:
        if named and item in named:
            out.append((named[item][0], named[item][1]))
            continue
        dim, sep, layers = item.lower().partition("x")
        if not (sep and dim.isdigit() and layers.isdigit() and int(dim) > 0 and int(layers) > 0):
            raise ValueError(f"--points {item!r}: expected WIDTHxLAYERS, e.g. 192x4"
                             + (f", or one of {', '.join(named)}" if named else ""))
        out.append((int(dim), int(layers)))
    return tuple(out)


@dataclass(frozen=True)
class SizeCurvePlan:
    """The curve: ``preset`` (everything but width and layers), ``points`` ((width, layers) pairs), the ``norms``
    (variant names of :mod:`.recipes`, RMSNorm first among them), the starting grid ``lrs``, ``seeds`` per rate,
    ``extend`` (how many rates each grid may grow per side), ``clip_off`` (the point of the clip-off check, at
    factor 1; None: no check), ``token_factors`` (each point trained at every factor × the steps), ``sensitivity``
    (every run of every grid trained again from an init one ulp away), ``arch``, the decoder
    (:data:`.model.ARCHS`), and ``moe_experts`` (> 0: each MLP a mixture of that many experts, each token to its
    ``moe_top_k`` best; with ``arch="olmo2"`` OLMoE's layout, :mod:`.olmo`)."""

    preset: Preset
    points: tuple[tuple[int, int], ...] = POINTS
    norms: tuple[str, ...] = NORMS
    lrs: tuple[float, ...] = LRS
    seeds: int = SEEDS
    extend: int = EXTEND
    clip_off: tuple[int, int] | None = CLIP_OFF
    token_factors: tuple[int, ...] = TOKEN_FACTORS
    sensitivity: bool = False
    arch: str = "llama"
    moe_experts: int = 0
    moe_top_k: int = 2

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {ARCHS}")
        if self.moe_experts < 0 or (self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts):
            raise ValueError(f"--moe-experts {self.moe_experts} must be >= 0 and --moe-top-k {self.moe_top_k} "
                             "between 1 and --moe-experts")
        if BASELINE not in self.norms or len(self.norms) < 2 or any(n not in VARIANTS for n in self.norms):
            raise ValueError(f"--norms {list(self.norms)}: the size curve compares {BASELINE} with one or more of "
                             f"the variants {[n for n in VARIANTS if n != BASELINE]}")
        if self.seeds < 2:
            raise ValueError(f"the size curve needs >= 2 seeds per rate for paired intervals, got {self.seeds}")
        if len(self.lrs) < 2 or any(not lr > 0 for lr in self.lrs) or len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"--size-lrs must be >= 2 distinct positive learning rates, got {list(self.lrs)}")
        if not self.points or len(set(self.points)) != len(self.points):
            raise ValueError(f"--points must be distinct (width, layers) pairs, got {list(self.points)}")
        for dim, layers in self.points:
            if dim % self.preset.n_heads:
                raise ValueError(f"--points: width {dim} is not a multiple of the preset's {self.preset.n_heads} "
                                 "attention heads")
            Point(dim, layers).preset(self.preset)  # every field of every size in range (ValueError naming it)
        if self.clip_off is not None and self.clip_off not in self.points:
            raise ValueError(f"the clip-off point {self.clip_off} is not one of the points {list(self.points)}")
        if self.extend < 0:
            raise ValueError(f"extend must be >= 0, got {self.extend}")
        factors = self.token_factors
        if not factors or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors) \
                or len(set(factors)) != len(factors):
            raise ValueError(f"--token-factors must be distinct integers >= 1, got {list(factors)}")
        if 1 not in factors:
            raise ValueError(f"--token-factors {' '.join(map(str, factors))} must include 1: the preset's own length, "
                             "which the size curve and the clip-off check run at and the longer runs are compared "
                             "with")
        for f in factors:  # every length in range (ValueError naming the field)
            Point(*self.points[0], factor=f).preset(self.preset)
        if self.arch == "olmo2":
            self._check_olmo2()

    def _check_olmo2(self) -> None:
        """Every variant at every point is a model OLMo2 can be (:func:`.olmo.check_olmo2`, ValueError naming the
        variant otherwise)."""
        from .olmo import check_olmo2

        for norm in self.norms:
            variant = get_variant(norm)
            for dim, layers in self.points:
                preset = Point(dim, layers).preset(self.preset)
                cfg = dataclasses.replace(model_config(preset, preset.vocab_size, variant.norm),
                                          **variant.model_overrides(dim, preset.n_heads), **self.model_fields)
                try:
                    check_olmo2(cfg)
                except ValueError as err:
                    raise ValueError(f"--norms {norm}: {err}") from None

    @property
    def model_fields(self) -> dict[str, Any]:
        """The :class:`.LMConfig` fields every run shares beyond the preset (none for the dense Llama decoder)."""
        return model_fields(self.moe_experts, self.moe_top_k, self.arch)

    def ordered_points(self) -> list[Point]:
        """The grid points at every token factor, cheapest first (width² × layers × factor), then the clip-off
        point."""
        grid = sorted((Point(d, n, factor=f) for d, n in self.points for f in self.token_factors),
                      key=lambda p: (p.dim ** 2 * p.n_layers * p.factor, p.dim, p.factor))
        return grid + ([Point(*self.clip_off, clip=False)] if self.clip_off else [])


@dataclass(frozen=True)
class SizeJob:
    """One training run of the curve."""

    point: Point
    variant: str
    seed: int
    lr: float
    out: Path

    @property
    def done(self) -> bool:
        return is_finished(self.out)


class _Runs(VariantRuns):
    """The curve's jobs: each at its point's preset, one evaluator for all (the evaluation does not depend on the
    size)."""

    def __init__(self, plan: SizeCurvePlan, corpus: Corpus, out: Path, progress: bool = False) -> None:
        super().__init__(corpus, progress)
        self.plan, self.out = plan, out
        self.evaluator = Evaluator(plan.preset, corpus)

    def job(self, point: Point, variant: str, seed: int, lr: float) -> SizeJob:
        return SizeJob(point, variant, seed, lr, self.out / point.key / variant / f"lr{lr:g}" / f"seed{seed}")

    def spec(self, job: SizeJob) -> tuple[Task, TrainConfig]:
        return self.variant_spec(job, job.point.preset(self.plan.preset), self.evaluator,
                                 f"{job.point.key} {job.variant} lr {job.lr:g} seed {job.seed}",
                                 nudge_init=job.point.nudged, model=self.plan.model_fields)


def best_rates(runs: Sequence[Run]) -> dict[str, float | None]:
    """Per norm among ``runs``, its best rate (:func:`.sweep.best_lrs`), None where it lost a seed at every rate."""
    out: dict[str, float | None] = {}
    for norm in dict.fromkeys(r.norm for r in runs):
        try:
            out[norm] = best_lrs([r for r in runs if r.norm == norm])[norm]
        except ValueError:
            out[norm] = None
    return out


def _grown(plan: SizeCurvePlan, rates: dict[str, list[float]], runs: Sequence[Run]) -> bool:
    """Add the next rate out to each norm whose best rate lies on the edge of ``rates`` (at most ``plan.extend``
    rates per side beyond ``plan.lrs``; a norm that lost a seed at every rate grows downward); True when any grid
    grew."""
    best = best_rates(runs)
    grew = False
    for norm, lrs in rates.items():
        lr = grown_rate(lrs, plan.lrs, best[norm], plan.extend, down=2, up=2)
        if lr is not None:
            lrs.append(lr)
            grew = True
    return grew


def _point_jobs(r: _Runs, point: Point, rates: dict[str, Sequence[float]]) -> list[SizeJob]:
    return [r.job(point, norm, seed, lr) for seed in range(r.plan.seeds) for norm in r.plan.norms
            for lr in sorted(rates[norm])]


def _curve(r: _Runs, run_jobs: Callable[[list[SizeJob]], bool]) -> dict[str, list[Run]]:
    """Walk the plan: for each point, its grid and the rates it grows (then, with ``plan.sensitivity``, the same
    grid from the nudged init), then the clip-off check. ``run_jobs(jobs)``
    trains them (returns True) or, for a report, returns whether they are all finished already; the walk stops at
    the first set of jobs that is not. Returns the finished runs per point key."""
    out: dict[str, list[Run]] = {}
    best: dict[str, float | None] = {}
    for point in r.plan.ordered_points():
        if not point.clip:  # the clip-off check: each norm at its best clipped rate at this size
            jobs = _point_jobs(r, point, {n: [lr] if lr else [] for n, lr in best.items()})
            done = run_jobs(jobs)
            out[point.key] = r.loaded(jobs)
            if not done:
                break
            continue
        rates = {n: list(r.plan.lrs) for n in r.plan.norms}
        while True:
            jobs = _point_jobs(r, point, rates)
            done = run_jobs(jobs)
            out[point.key] = r.loaded(jobs)
            if not done or not _grown(r.plan, rates, out[point.key]):
                break
        if not done:
            break
        if r.plan.sensitivity:
            twin = dataclasses.replace(point, nudged=True)
            jobs = _point_jobs(r, twin, rates)
            done = run_jobs(jobs)
            out[twin.key] = r.loaded(jobs)
            if not done:
                break
        if r.plan.clip_off == point.size and point.factor == 1:
            best = best_rates(out[point.key])
    return out


def load_size_curve(plan: SizeCurvePlan, corpus: Corpus, out: Path) -> dict[str, list[Run]]:
    """The finished runs of every point that can be planned so far (for the report), each verified to be the
    plan's run (:class:`~..runs.RunMismatch` otherwise). ``corpus``: the preset's (:func:`.study.study_corpus`)."""
    r = _Runs(plan, corpus, out)
    return _curve(r, lambda jobs: all(j.done for j in jobs))


def run_size_curve(plan: SizeCurvePlan, corpus: Corpus, out: Path, *, progress: bool = False, poll_s: float = 10.0,
                   log: Callable[[str], None] = print) -> dict[str, list[Run]]:
    """Train the whole curve on ``corpus`` (the preset's, :func:`.study.study_corpus`) into ``out`` (reusing and
    resuming runs, sharing the work with other processes running the same plan); returns the finished runs per
    point key. Finished runs are verified before a grid trains."""
    r = _Runs(plan, corpus, out, progress)

    def run(job: SizeJob) -> None:
        t0 = time.perf_counter()
        result = train_or_reuse(*r.spec(job))
        log(f"{job.point.key} {job.variant} lr {job.lr:g} seed {job.seed}: loss "
            f"{Run(job.variant, job.seed, job.lr, result).final_loss:.4f} "
            f"{'DIVERGED ' if result['diverged'] else ''}in {time.perf_counter() - t0:.0f} s")

    # "run k of N" (:mod:`..progress`): every point's starting grid and each clip-off run, plus the rates grids grow
    first = {j.out for p in plan.ordered_points() if p.clip for j in _point_jobs(r, p, dict.fromkeys(plan.norms,
                                                                                                    plan.lrs))}
    clip_off = sum(len(plan.norms) * plan.seeds for p in plan.ordered_points() if not p.clip)
    grown: set[Path] = set()
    expect(len(first) + clip_off)

    def run_jobs(jobs: list[SizeJob]) -> bool:
        if jobs and jobs[0].point.clip:
            grown.update(j.out for j in jobs if j.out not in first)
            expect(len(first) + clip_off + len(grown))
        r.loaded(jobs)  # a run of other settings stops the command before this grid trains
        for _ in claims.work(jobs, lambda job: job.out, lambda job: job.done, run, poll_s):
            pass
        return True

    return _curve(r, run_jobs)
