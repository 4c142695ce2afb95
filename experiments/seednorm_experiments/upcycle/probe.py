"""``seednorm upcycle --probe``: the first optimizer steps of each arm on one fixed batch, and why they go where
they go.

Each arm's model is built as the study builds it (:func:`.arms.build_arm`: the preset's cut of SmolLM2-135M,
converted and checked exact for a SeeDNorm arm) and takes ``steps`` AdamW steps on batch 0 of seed 0 of the
adaptation domain, as the harness takes them (betas 0.9, 0.95; the preset's weight decay and clipping; the arm's
optimizer groups), at the arm's base rate held constant (no warmup). Recorded:

- the loss on that batch before the first step and after each step;
- per norm layer, at the first step: its input's mean and max |x| (the residual stream where the norm reads it: the
  same for every arm, as every arm starts from the same function), the median |γ|, the ratio median |α| / median |γ|,
  the change of β (max and mean |Δβ|), and the largest |s| = dot_scale·|⟨x, β⟩| on the batch after the step (tanh
  saturates above ~3, where the gain becomes γ ± α);
- the gradient norm of all β at the first step (before clipping).

Nothing is trained on disk: the table is printed, and with ``--out DIR`` written as ``DIR/probe.md`` and
``DIR/probe.json``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seednorm import SeeDNorm
from seednorm import param_groups as seednorm_param_groups
from seednorm.functional import resolve_dot_scale

from ..report import markdown_table
from .arms import Arm, build_arm, get_arm, is_norm_layer
from .data import load_corpus, train_batch
from .presets import MODEL_LAYERS, Preset
from .pretrained import load_base, load_tokenizer

__all__ = ["PROBE_ARMS", "PROBE_FILES", "format_probe", "probe", "write_probe"]

PROBE_ARMS = ("rmsnorm", "seednorm", "seednorm-upcycle", "seednorm-upcycle-gain", "seednorm-alpha", "seednorm-dim",
              "seednorm-lrscale")
"""The arms the probe compares unless ``--arms`` names others: RMSNorm, the paper's defaults, the upcycle recipe and
each of its parts."""

PROBE_FILES = ("probe.md", "probe.json")

MAX_LAYER_ROWS = 12
"""Above this many norm layers the per-layer table shows min, median and max over the layers (the JSON has all)."""


def probe(preset: Preset, arms: Sequence[str], steps: int = 1, *, domain: str = "bible") -> dict[str, Any]:
    """The probe of ``arms`` (names) at ``preset``'s model cut and batch size: JSON data (see the module docstring),
    which :func:`format_probe` renders."""
    corpus = load_corpus(load_tokenizer(), domain, preset.max_chars)
    batch = train_batch(corpus.tokens["train"], 0, 0, 1, batch_size=preset.batch_size, seq_len=preset.seq_len,
                        seed=0)
    out: dict[str, Any] = {
        "layers": preset.layers or MODEL_LAYERS, "preset": preset.name, "domain": domain, "steps": steps,
        "batch": list(batch[0].shape), "weight_decay": preset.weight_decay, "grad_clip": preset.grad_clip,
        "arms": {},
    }
    if preset.width is not None:
        out["width"] = preset.width
    for name in arms:
        out["arms"][name] = _probe_arm(get_arm(name), preset, batch, steps)
    return out


def _short(name: str) -> str:
    return name.removeprefix("lm.").removeprefix("model.")


def _probe_arm(arm: Arm, preset: Preset, batch: tuple[torch.Tensor, torch.Tensor], steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_arm(load_base(preset.layers, preset.width), arm)
    norms = {_short(n): m for n, m in model.named_modules() if is_norm_layer(m)}
    converted: dict[str, dict[str, float]] = {}  # γ and α as converted, before any step
    for n, m in norms.items():
        gain = m.weight.detach().abs().median()
        converted[n] = {"median_abs_gamma": float(gain)}
        if isinstance(m, SeeDNorm) and m.alpha is not None:
            converted[n]["alpha_over_gamma"] = float(m.alpha.detach().abs().median() / gain)
    seen: dict[str, dict[str, float]] = {}

    def hook(name: str, module: nn.Module):
        def record(_: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            row = {"mean_abs_x": float(x.abs().mean()), "max_abs_x": float(x.abs().max())}
            if isinstance(module, SeeDNorm) and module.beta is not None:
                heads, d = module.num_heads, x.shape[-1]
                dot = resolve_dot_scale(module.dot_scale, d, heads)
                s = (x.view(*x.shape[:-1], heads, d // heads) * module.beta.detach().float().view(heads, -1)).sum(-1)
                row["max_abs_s"] = float((s * dot).abs().max())
            seen[name] = row
        return record

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in norms.items()]
    groups_of = arm.param_groups(preset.weight_decay, arm.lr)
    groups = groups_of(model) if groups_of is not None else seednorm_param_groups(model, preset.weight_decay)
    opt = torch.optim.AdamW(groups, lr=arm.lr, betas=(0.9, 0.95), eps=1e-8)
    params = [p for p in model.parameters() if p.requires_grad]
    betas = {n: m.beta for n, m in norms.items() if isinstance(m, SeeDNorm) and m.beta is not None}
    x, y = batch
    losses: list[float] = []
    layers: dict[str, dict[str, float]] = {}
    beta_grad = None
    try:
        for step in range(steps + 1):
            loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
            losses.append(float(loss.detach()))
            if step == 0:
                layers = {n: {**seen[n], **converted[n]} for n in norms}
            elif step == 1:
                for n in betas:
                    layers[n]["max_abs_s_after"] = seen[n]["max_abs_s"]
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0 and betas:
                beta_grad = float(torch.linalg.vector_norm(torch.stack([b.grad.norm() for b in betas.values()])))
            torch.nn.utils.clip_grad_norm_(params, preset.grad_clip)
            before = {n: b.detach().clone() for n, b in betas.items()}
            opt.step()
            if step == 0:
                for n, b in betas.items():
                    delta = (b.detach() - before[n]).abs()
                    layers[n]["max_abs_dbeta"], layers[n]["mean_abs_dbeta"] = float(delta.max()), float(delta.mean())
    finally:
        for h in handles:
            h.remove()
    seed_lr = next((g["lr"] for g in opt.param_groups if g.get("name") == "seednorm"), None)
    return {"label": arm.label, "lr": arm.lr, "lr_alpha_beta": seed_lr, "losses": losses,
            "beta_grad_norm": beta_grad, "layers": layers}


def _g(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def format_probe(result: dict[str, Any]) -> str:
    """``result`` of :func:`probe` as markdown: the arms' losses and first-step numbers, then per norm layer its
    input, its gains and, for each SeeDNorm arm, the largest |s| after the first step (|Δβ| is ≈ the rate of α, β
    in every layer: Adam's first step)."""
    arms = result["arms"]
    steps = result["steps"]
    b, t = result["batch"]
    lines = [
        f"Upcycle probe ({result['preset']} preset): "
        + (f"SmolLM2-135M, {result['layers']} of {MODEL_LAYERS} layers; " if "width" not in result else
           f"a {result['width']}-wide random model of SmolLM2-135M's architecture, {result['layers']} "
           f"layer{'s' * (result['layers'] > 1)}; ")
        + f"batch {b} × {t} tokens of {result['domain']} (train, step 0, seed 0); AdamW (betas 0.9, 0.95, weight "
        f"decay {result['weight_decay']:g}, clipping {result['grad_clip']:g}) at each arm's base rate, constant; "
        f"{steps} step{'s' * (steps > 1)}.\n",
    ]
    if "command" in result:
        lines += [f"Command: `{result['command']}`  ", f"Machine: {result['machine']}\n"]
    header = ["arm", "lr (α, β)", "loss before", *[f"after {k}" for k in range(1, steps + 1)], "‖∇β‖ step 1",
              "max abs Δβ", "mean abs Δβ", "max abs s after 1", "α / median abs γ"]
    rows = []
    for name, a in arms.items():
        seed_layers = [v for v in a["layers"].values() if "max_abs_dbeta" in v]
        if seed_layers:
            ratios = sorted(v["alpha_over_gamma"] for v in seed_layers)
            dbeta = [_g(max(v["max_abs_dbeta"] for v in seed_layers)),
                     _g(statistics.fmean(v["mean_abs_dbeta"] for v in seed_layers)),
                     _g(max(v["max_abs_s_after"] for v in seed_layers) if steps else None),
                     f"{_g(statistics.median(ratios))} [{_g(ratios[0])}, {_g(ratios[-1])}]"]
        else:
            dbeta = ["–"] * 4
        lr = f"{a['lr']:g} ({_g(a['lr_alpha_beta'])})" if a["lr_alpha_beta"] is not None else f"{a['lr']:g}"
        rows.append([name, lr, *[f"{v:.3f}" for v in a["losses"]], _g(a["beta_grad_norm"]), *dbeta])
    lines += [markdown_table(header, rows), ""]

    first = next(iter(arms.values()))
    names = list(first["layers"])
    seed_arms = [n for n, a in arms.items() if any("max_abs_dbeta" in v for v in a["layers"].values())]
    columns = [("mean abs x", lambda n: first["layers"][n]["mean_abs_x"]),
               ("max abs x", lambda n: first["layers"][n]["max_abs_x"]),
               ("median abs γ", lambda n: first["layers"][n]["median_abs_gamma"]),
               *[(f"{a}: max abs s after 1", lambda n, a=a: arms[a]["layers"][n].get("max_abs_s_after"))
                 for a in seed_arms]]
    header = ["norm layer (input at step 0)", *[c for c, _ in columns]]
    if len(names) <= MAX_LAYER_ROWS:
        rows = [[n, *[_g(f(n)) for _, f in columns]] for n in names]
    else:
        rows = []
        for what, pick in (("min", min), ("median", statistics.median), ("max", max)):
            rows.append([f"{what} over {len(names)} layers",
                         *[_g(pick([v for v in map(f, names) if v is not None]) if any(
                             f(n) is not None for n in names) else None) for _, f in columns]])
    lines += [markdown_table(header, rows)]
    return "\n".join(lines) + "\n"


def write_probe(out: Path, result: dict[str, Any]) -> list[Path]:
    """``out/probe.md`` and ``out/probe.json``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in zip(PROBE_FILES, (format_probe(result), json.dumps(result, indent=1)), strict=True):
        path = out / name
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written
