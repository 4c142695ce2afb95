"""The OLMo2 study's answers in the size curve's report (``seednorm lm --size-curve --arch olmo2``,
:mod:`.olmo_curve`): does SeeDNorm help on the reordered-norm block, and does converting the QK-norm or the final
norm matter? Each comparison is two variants, each at its own best rate at a point, paired by seed, read the most
conservative way (:func:`reading`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..common import BASELINE
from ..report import Stat, paired_diff
from .ablation import primary_metric, zero_shot_bpb
from .size_curve import Point
from .study import Run

__all__ = ["BLOCKS", "QUESTIONS", "comparisons", "olmo2_section", "reading"]

BLOCKS = "seednorm-blocks"
"""The reference conversion: SeeDNorm at the block norms only (the Megatron and torchtitan anchors')."""
QUESTIONS: dict[str, tuple[str, str]] = {
    "seednorm-blocks-qk": ("the QK-norm converted too", BLOCKS),
    "seednorm-blocks-final": ("the final norm converted too", BLOCKS),
    "seednorm": ("every norm converted (blocks, QK-norm, final)", BLOCKS),
    "seednorm-blocks-dot-rsqrt": ("our 1/√D recipe at the block norms", BLOCKS),
}
"""Variant → (what it changes, the variant it is compared with): the site questions, each against the blocks-only
conversion."""
_METRICS: dict[str, Callable[[Run], float]] = {"in_domain_bpb": primary_metric, "zero_shot_bpb": zero_shot_bpb}


def _paired(runs: Sequence[Run], a: str, lr_a: float | None, b: str, lr_b: float | None,
            metric: Callable[[Run], float]) -> Stat | None:
    """``a`` at ``lr_a`` − ``b`` at ``lr_b``, paired by seed over the seeds neither lost (None under 2 such seeds)."""
    def at(norm: str, lr: float | None) -> dict[int, float]:
        return {r.seed: metric(r) for r in runs if r.norm == norm and r.lr == lr and not r.diverged}

    mine, ref = at(a, lr_a), at(b, lr_b)
    return paired_diff(mine, ref) if len(set(mine) & set(ref)) >= 2 else None


def reading(complete: bool, edge: bool, deltas: Mapping[str, Stat | None]) -> str:
    """The most conservative reading of one comparison: ``lower bpb`` / ``higher bpb`` only when every run is
    finished, neither chosen rate is on its grid's edge and both the in-domain and the zero-shot 95% intervals are on
    that side of 0; else why not."""
    if not complete:
        return "not finished"
    if edge:
        return "not resolved: a chosen rate is on its grid's edge"
    d = list(deltas.values())
    if any(x is None or math.isnan(x.ci95) for x in d):
        return "no interval"
    if all(x.mean + x.ci95 < 0 for x in d):
        return "lower bpb in-domain and zero-shot (both intervals below 0)"
    if all(x.mean - x.ci95 > 0 for x in d):
        return "higher bpb in-domain and zero-shot (both intervals above 0)"
    return "not resolved: an interval includes 0"


def comparisons(norms: Sequence[str], point: Point, runs: Sequence[Run], s: Mapping[str, Any]) -> list[dict]:
    """Every comparison the plan's ``norms`` allow at one point (``s``: its summary of the size curve's report):
    each SeeDNorm variant − RMSNorm, then each site question of :data:`QUESTIONS` − the blocks-only conversion."""
    pairs = [(n, BASELINE, "SeeDNorm helps?") for n in norms if n != BASELINE]
    pairs += [(n, ref, what) for n, (what, ref) in QUESTIONS.items() if n in norms and ref in norms]
    out = []
    for a, b, what in pairs:
        lr = s["best_lr"]
        deltas = {k: _paired(runs, a, lr.get(a), b, lr.get(b), m) for k, m in _METRICS.items()}
        edge = bool(s["at_edge"].get(a) or s["at_edge"].get(b))
        out.append({"point": point.key, "size": f"{point.dim} × {point.n_layers}", "norm": a, "versus": b,
                    "question": what, "lr": (lr.get(a), lr.get(b)), "edge": edge, "deltas": deltas,
                    "reading": reading(bool(s["complete"]), edge, deltas)})
    return out


def _fmt(x: Stat | None) -> str:
    return "–" if x is None else x.format(3, ci=True)


def _line(c: Mapping[str, Any]) -> str:
    lrs = " / ".join("diverged" if lr is None else f"{lr:g}" for lr in c["lr"])
    d = c["deltas"]
    return (f"- {c['size']}, {c['norm']} − {c['versus']}: **{c['reading']}**; Δ in-domain bpb "
            f"{_fmt(d['in_domain_bpb'])}, Δ zero-shot bpb {_fmt(d['zero_shot_bpb'])} (rates {lrs}"
            + (", one on its grid's edge" if c["edge"] else "") + ").")


def olmo2_section(rows: Sequence[Mapping[str, Any]], model: str = "OLMo2") -> list[str]:
    """The report's section answering the two questions from :func:`comparisons` of every point; ``model`` names the
    architecture in its heading ("OLMo2", or "OLMoE" for its MoE layout)."""
    helps = [c for c in rows if c["versus"] == BASELINE]
    sites = [c for c in rows if c["versus"] != BASELINE]
    return [f"\n## The {model} questions\n",
            "Each line: the first variant at its own best rate minus the second at its own, paired by seed, mean "
            "[95% CI] (negative = the first is better). The reading comes first and is the most conservative one: "
            "a difference counts only where both the in-domain and the zero-shot intervals are on the same side of "
            "0, every run of the point is finished and neither chosen rate is on its grid's edge; anything else is "
            "not a finding, and an interval that includes 0 bounds the difference rather than showing none.\n",
            "### Does SeeDNorm help on the reordered-norm block?\n",
            *([_line(c) for c in helps] or ["- no point finished yet."]),
            "\n### Does it matter whether the QK-norm and the final norm are converted?\n",
            "Each against SeeDNorm at the block norms only (the Megatron and torchtitan anchors' conversion).\n",
            *([_line(c) for c in sites] or [f"- not asked: --norms needs {BLOCKS} and one of "
                                            f"{', '.join(QUESTIONS)}."])]
