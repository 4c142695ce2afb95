"""Named sizes of the upcycling study: how much of SmolLM2-135M, data, schedule, sweep and evaluation budgets.

- ``smoke``: one decoder layer of a 96-wide model of SmolLM2-135M's architecture and tokenizer, randomly
  initialized (no GGUF read: :func:`.pretrained.load_base` with ``width``), 3 steps of 2 × 16 tokens, tiny
  evaluations; every code path of the study in seconds, what the tests run. It measures nothing.
- ``quick``: the whole model, 12 steps of 4 × 64 tokens (3k tokens), two learning rates per arm on seed 0, one
  more seed at each arm's best rate: 15 runs, ≈ 20 CPU-minutes (≈ 15 minutes on 2 quiet cores, about an hour when
  several other jobs share them). It shows whether the conversion costs anything and the direction of the first
  steps of adaptation, with CIs of 2 seeds (wide) and 8 cloze items per domain (coarse); not where longer training
  ends.
- ``standard``: 40 steps of 4 × 128 tokens (20k tokens); four rates per arm on seed 0 (× 0.3, 1, 3, 10 of its base
  rate), an arm whose best rate is on an edge grown by up to two rates on that side, then 3 seeds at the best rates;
  4,096 evaluation tokens per domain, 24 cloze items. At least 30 runs (its earlier two-rate form's 20 runs took
  ≈ 85 minutes on 2 quiet cores).
- ``full``: sized for one GPU: 2000 steps of 16 × 512 tokens (16M tokens), three learning rates, 3 seeds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..args import check_fields

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """One study size.

    Model: ``layers`` decoder layers of SmolLM2-135M kept (None: all 30); ``width``: None for the real weights, or
    the width (a multiple of 96) of a randomly initialized model of its architecture and tokenizer. Training:
    ``steps`` × ``batch_size`` windows of ``seq_len`` tokens of the adaptation domain, AdamW with ``warmup`` steps
    then cosine to 0.1 × the peak. Sweep: each arm at its base rate × every multiplier of ``lr_mults`` on seed 0;
    while an arm's best rate is the lowest (highest) of its rates, one more rate below (above) by the ratio of the
    two lowest (highest) multipliers, at most ``extend`` on each side; then ``seeds`` − 1 more seeds at the rate with
    the lowest final training loss. Evaluation per domain: bits per byte over ``eval_windows`` windows of
    ``eval_seq_len`` tokens, ``cloze_items`` 4-way cloze questions (``cloze_context`` + ``cloze_length`` tokens).
    ``max_chars`` caps each text split (None: all of it)."""

    name: str
    layers: int | None
    seq_len: int
    batch_size: int
    steps: int
    warmup: int
    seeds: int
    lr_mults: tuple[float, ...]
    eval_windows: int
    eval_seq_len: int
    cloze_items: int
    cloze_context: int = 48
    cloze_length: int = 16
    max_chars: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    ckpt_every: int = 10
    width: int | None = None
    extend: int = 0

    def __post_init__(self) -> None:
        """Every field in its range (ValueError naming the first that is not): presets and their overrides."""
        check_fields(self, _RANGES)
        if self.layers is not None and not 1 <= self.layers <= MODEL_LAYERS:
            raise ValueError(f"preset field layers must be none (all) or 1 to {MODEL_LAYERS}, got {self.layers!r}")
        if self.width is not None and (not isinstance(self.width, int) or self.width < 96 or self.width % 96):
            raise ValueError(f"preset field width must be none (the real weights) or a multiple of 96, got "
                             f"{self.width!r}")
        if self.warmup > self.steps:
            raise ValueError(f"--steps {self.steps} is below the preset's {self.warmup} warmup steps")

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.batch_size * self.seq_len


MODEL_LAYERS = 30
"""SmolLM2-135M's decoder layers."""

_RANGES = {
    "name": "name", "seq_len": "count", "batch_size": "count", "steps": "count", "warmup": "count0",
    "seeds": "count", "lr_mults": "rates", "eval_windows": "count", "eval_seq_len": "count", "cloze_items": "count",
    "cloze_context": "count", "cloze_length": "count", "max_chars": "count?", "weight_decay": "rate0",
    "grad_clip": "rate", "ckpt_every": "count0", "extend": "count0",
}
"""The range of every field but ``layers`` and ``width`` (see :func:`..args.check_fields`)."""

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smoke", layers=1, seq_len=16, batch_size=2, steps=3, warmup=1, seeds=2, lr_mults=(1.0, 3.0),
               eval_windows=2, eval_seq_len=16, cloze_items=4, cloze_context=8, cloze_length=4,
               max_chars=40_000, ckpt_every=3, width=96),
        Preset("quick", layers=None, seq_len=64, batch_size=4, steps=12, warmup=2, seeds=2, lr_mults=(1.0, 3.0),
               eval_windows=4, eval_seq_len=128, cloze_items=8, cloze_context=24, cloze_length=8,
               max_chars=1_000_000, ckpt_every=6),
        Preset("standard", layers=None, seq_len=128, batch_size=4, steps=40, warmup=4, seeds=3,
               lr_mults=(0.3, 1.0, 3.0, 10.0), eval_windows=32, eval_seq_len=128, cloze_items=24,
               max_chars=2_000_000, ckpt_every=10, extend=2),
        Preset("full", layers=None, seq_len=512, batch_size=16, steps=2000, warmup=100, seeds=3,
               lr_mults=(0.3, 1.0, 3.0), eval_windows=256, eval_seq_len=512, cloze_items=500,
               cloze_context=128, cloze_length=32, ckpt_every=200),
    )
}


def get_preset(name: str, /, **overrides) -> Preset:
    """The named preset with ``overrides`` applied (ValueError naming the choices if unknown)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
