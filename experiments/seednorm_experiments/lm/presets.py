"""Named sizes of the language-model study: model, data, schedule and evaluation budgets.

``smoke`` is for tests (seconds), ``quick`` for a first look on 2 CPU cores (≤ 20 minutes, every
norm × 2 seeds), ``standard`` makes the README's results (≤ 90 minutes on 2 CPU cores shared with other
jobs, 3 seeds; both are tiny so that they fit),
``full`` is sized for one GPU (a 4096-vocab, 512-wide, 8-layer model on ~200M tokens per run); ``gpu`` is the
short study of ``benchmarks/gpu.sh`` (four runs of ≤ 55 s of training each on one H100/H200: see :mod:`.gpu`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..args import check_fields

__all__ = ["PRESETS", "Preset", "get_preset", "parse_overrides"]


@dataclass(frozen=True)
class Preset:
    """One study size. Training: ``steps`` × ``batch_size`` sequences of ``seq_len`` tokens, AdamW at
    ``lr`` with ``warmup`` steps then cosine. Evaluation: bits per byte over ``eval_windows`` windows per
    domain, ``cloze_items`` 4-way cloze questions (``cloze_context`` + ``cloze_length`` tokens) per
    domain. ``max_chars`` caps each corpus split (None: all of it); ``grad_clip`` None: no clipping.
    ``lr_sweep``: multipliers of ``lr`` for ``--lr-sweep`` (run for ``sweep_steps`` steps each). ``compile``:
    ``torch.compile`` the model.
    ``corpus``: ``"base"`` (plays + this interpreter's standard library) or ``"pack"`` (a verified corpus pack that
    adds the installed packages' code, :mod:`.corpus_pack`). ``one_pass``: batches of disjoint windows, never more
    than one pass over the training text (:class:`.data.OnePassBatches`). ``lr_grid``: multipliers of ``lr``; when
    set, the study is the learning-rate grid of :mod:`.gpu` (RMSNorm and SeeDNorm at each rate, optionally the 1/√D
    dot-scale recipe at SeeDNorm's best) instead of every norm at ``lr``."""

    name: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    seeds: int
    eval_windows: int
    cloze_items: int
    cloze_context: int = 48
    cloze_length: int = 16
    max_chars: int | None = None
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int = 0
    ckpt_every: int = 100
    lr_sweep: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    sweep_steps: int = 0
    compile: bool = False
    corpus: str = "base"
    one_pass: bool = False
    lr_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """Every field in its range (ValueError naming the first that is not): a preset and every override of it
        are checked here, before anything is loaded or trained."""
        check_fields(self, _RANGES)
        if self.corpus not in ("base", "pack"):
            raise ValueError(f"preset field corpus must be 'base' or 'pack', got {self.corpus!r}")
        if self.vocab_size < 257:
            raise ValueError(f"preset field vocab_size must exceed the 256 byte symbols, got {self.vocab_size}")
        if self.dim % self.n_heads or self.dim // self.n_heads % 2:
            raise ValueError(f"preset fields dim={self.dim} and n_heads={self.n_heads}: the width must split into "
                             "heads of even width")
        if self.cloze_context + self.cloze_length > self.seq_len:
            raise ValueError(f"preset fields cloze_context={self.cloze_context} + cloze_length={self.cloze_length} "
                             f"must fit in seq_len={self.seq_len}")

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.batch_size * self.seq_len


_RANGES = {
    "name": "name", "vocab_size": "count", "dim": "count", "n_layers": "count", "n_heads": "count",
    "seq_len": "count", "batch_size": "count", "steps": "count", "lr": "rate", "warmup": "count0", "seeds": "count",
    "eval_windows": "count", "cloze_items": "count", "cloze_context": "count", "cloze_length": "count",
    "max_chars": "count?", "weight_decay": "rate0", "grad_clip": "rate?", "eval_every": "count0",
    "ckpt_every": "count0", "lr_sweep": "rates", "sweep_steps": "count0", "compile": "bool", "one_pass": "bool",
    "lr_grid": "rates0",
}
"""The range of every field but ``corpus`` (see :func:`..args.check_fields`)."""

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smoke", vocab_size=384, dim=32, n_layers=1, n_heads=2, seq_len=32, batch_size=8, steps=12,
               lr=3e-3, warmup=2, seeds=1, eval_windows=8, cloze_items=16, cloze_context=16, cloze_length=8,
               max_chars=40_000, ckpt_every=5, lr_sweep=(1.0, 300.0), sweep_steps=6),
        Preset("quick", vocab_size=2048, dim=48, n_layers=2, n_heads=4, seq_len=64, batch_size=8, steps=250,
               lr=3e-3, warmup=25, seeds=2, eval_windows=32, cloze_items=60, lr_sweep=(1.0, 3.0, 10.0, 30.0, 100.0),
               sweep_steps=80),
        Preset("standard", vocab_size=2048, dim=64, n_layers=2, n_heads=4, seq_len=128, batch_size=8,
               steps=500, lr=3e-3, warmup=50, seeds=3, eval_windows=64, cloze_items=100, sweep_steps=150),
        Preset("full", vocab_size=4096, dim=512, n_layers=8, n_heads=8, seq_len=512, batch_size=64,
               steps=6000, lr=1e-3, warmup=500, seeds=3, eval_windows=512, cloze_items=1000,
               cloze_context=128, cloze_length=32, eval_every=1000, ckpt_every=500, sweep_steps=1500),
        # 25.3M non-embedding parameters (8 × (4·512² + 3·512·1376)), 550 × 128 × 512 = 36.0M tokens per run, one
        # pass at most; ≈ 7.3e15 FLOP per run, ≈ 36 s at 200 TFLOP/s (docs/lm.md, "GPU preset"): four runs and
        # the smoke test in about 8 minutes of one GPU.
        # Rates 1e-3 and 2e-3 from the CPU size curve (results/lm_size_curve): each norm's best rate halved from
        # 0.008 at 0.22M parameters to 0.004-0.002 at 0.89M and 0.002 at 1.8M, then stayed at 0.002 at 3.5M with
        # 0.001 close behind, and 0.004 there was far worse for both norms (SeeDNorm lost a seed at 0.008). So 2e-3, the
        # best at the largest CPU sizes, and 1e-3, one more halving for 7× the parameters (a power-law fit of
        # the 0.22M-3.5M points says ~6e-4, but that extrapolates a trend that had flattened, and this batch is 128×
        # the curve's 512 tokens, which tolerates a larger rate).
        Preset("gpu", vocab_size=8192, dim=512, n_layers=8, n_heads=8, seq_len=512, batch_size=128, steps=550,
               lr=1e-3, warmup=55, seeds=1, eval_windows=256, cloze_items=400, cloze_context=128,
               cloze_length=32, ckpt_every=200, compile=True, corpus="pack", one_pass=True, lr_grid=(1.0, 2.0)),
    )
}


def get_preset(name: str, /, **overrides) -> Preset:
    """The named preset with ``overrides`` applied (ValueError naming the choices if unknown)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["dim=32", "compile=false", "lr_grid=1,2"]`` → preset fields of the right types (ValueError naming the
    fields when one is unknown or its value does not parse). ``name``, ``max_chars=none`` and ``grad_clip=none`` (no
    clipping) are allowed; the values' ranges are checked where the preset is made (:meth:`Preset.__post_init__`)."""
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--override {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        default = getattr(PRESETS["smoke"], key)
        try:
            if key in ("max_chars", "grad_clip"):
                value: object = None if text.lower() == "none" else type(default)(text)
            elif isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif isinstance(default, tuple):
                value = tuple(float(v) for v in text.split(",") if v)
            else:
                value = type(default)(text)
        except ValueError:
            raise ValueError(f"--override {item!r}: {text!r} is not a valid {key}") from None
        out[key] = value
    return out
