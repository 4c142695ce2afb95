"""The OLMo2 study's settings (``seednorm lm --size-curve --arch olmo2``): the size curve's plan (:mod:`.size_curve`)
on OLMo-core's OLMo2 (:mod:`.olmo`), with the norm variants that ask whether SeeDNorm helps on the reordered-norm
block and whether converting the QK-norm and the final norm matters.

    seednorm lm --size-curve --arch olmo2 --preset smoke                  # seconds (tested)
    seednorm lm --size-curve --arch olmo2 --preset quick --out runs/lm_olmo2_quick        # a 2-block olmo2_14M
    seednorm lm --size-curve --arch olmo2 --preset standard --out runs/lm_olmo2_standard  # olmo2_14M, olmo2_30M
    seednorm lm --size-curve --arch olmo2 --preset gpu --out runs/lm_olmo2_gpu            # olmo2_60M, one GPU

Points are width × layers of the OLMo2 family, or OLMo-core's named sizes (:data:`OLMO2_SIZES`: their width and
depth; their head count must be the preset's). What differs from OLMo-core's named configs: the vocabulary (the
preset's byte-level BPE, not OLMo's 100k tokenizer), the MLP width (the Llama rule, 8/3·width rounded up to a
multiple of 32, where olmo2_14M has 4·width and olmo2_30M 3·width) and RoPE base 10 000; the block (reordered norm,
QK-norm over the full width, ε 1e-6) is OLMo2's. Every other choice of :data:`CURVES` is one place: a preset's
fields it changes, its points, starting rates, seeds and how far each grid may grow; options given on the command
line win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .presets import Preset, get_preset

__all__ = ["CURVES", "NORMS", "OLMO2_SIZES", "Olmo2Curve", "curve_preset"]

OLMO2_SIZES: dict[str, tuple[int, int, int]] = {
    "olmo2_14M": (128, 4, 8), "olmo2_30M": (256, 4, 8), "olmo2_60M": (384, 8, 8), "olmo2_190M": (768, 12, 12)}
"""(width, layers, heads) of OLMo-core 3.0.0's ``TransformerConfig.<name>`` (a test compares them with OLMo-core).
``olmo2_1M`` (width 12, 4 heads of width 3) is not one: RoPE needs heads of even width."""

NORMS = ("rmsnorm", "seednorm-blocks", "seednorm-blocks-qk", "seednorm-blocks-final", "seednorm-blocks-dot-rsqrt")
"""RMSNorm (OLMo2 as built), SeeDNorm at the block norms only (the Megatron and torchtitan anchors' conversion),
with the QK-norm or the final norm converted too, and the blocks-only conversion with our 1/√D recipe (variants of
:mod:`.recipes`; ``seednorm``, every site converted, is selectable with ``--norms``)."""


@dataclass(frozen=True)
class Olmo2Curve:
    """One preset's OLMo2 curve: ``overrides`` (fields of the lm preset of the same name), ``points`` (WxL or named
    sizes), the starting ``lrs``, ``seeds`` per rate and ``extend`` (rates each grid may grow per side)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    points: tuple[str, ...] = ()
    lrs: tuple[float, ...] = (2e-3, 4e-3, 8e-3)
    seeds: int = 4
    extend: int = 2


CURVES: dict[str, Olmo2Curve] = {
    # 5 norms × 2 rates × 2 seeds of 12 steps at width 32: seconds per run.
    "smoke": Olmo2Curve(points=("32x1",), lrs=(3e-3, 6e-3), seeds=2, extend=0),
    # olmo2_14M cut to 2 blocks, 150 steps × 8 × 64 tokens; 60-100 runs (5 norms × 3-5 rates × 4 seeds).
    "quick": Olmo2Curve({"n_heads": 8, "steps": 150, "warmup": 15}, ("128x2",)),
    # olmo2_14M and olmo2_30M, 200 steps × 8 × 128 tokens; 45-75 runs per size (5 norms × 3-5 rates × 3 seeds): the
    # most steps that fit about 2 h on two processes at the measured step and evaluation times (docs/olmo.md). Grids
    # may grow 5 rates per side: RMSNorm's best at olmo2_14M is 0.128, six doublings above the grid's 0.002.
    "standard": Olmo2Curve({"n_heads": 8, "steps": 200, "warmup": 20}, ("olmo2_14M", "olmo2_30M"), seeds=3,
                           extend=5),
    # olmo2_60M on one GPU at the gpu preset's data (one pass of the corpus pack, 550 × 128 × 512 tokens), its two
    # rates, 2 seeds, no growth (a best rate on the grid's edge is flagged): 20 runs; compiled as that preset is.
    "gpu": Olmo2Curve({"lr_grid": ()}, ("olmo2_60M",), lrs=(1e-3, 2e-3), seeds=2, extend=0),
}


def curve_preset(name: str, **overrides: Any) -> Preset:
    """The lm preset ``name`` with the OLMo2 curve's changes, then ``overrides`` (the command line's); its name
    ``olmo2-<name>`` (ValueError naming the choices when ``name`` has no OLMo2 curve)."""
    if name not in CURVES:
        raise ValueError(f"--arch olmo2 --size-curve has the presets {list(CURVES)}, not {name!r}")
    base = get_preset(name, **{**CURVES[name].overrides, **overrides})
    return dataclasses.replace(base, name=f"olmo2-{base.name}")
