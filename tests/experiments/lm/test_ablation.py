"""The ablation knobs do what they claim (clipping, α/β learning rate and weight decay, dot
scale, heads, DyT's LM recipe), the sweep picks each norm's best rate, and ``seednorm lm --ablation``
runs a micro grid end to end, reusing finished runs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seednorm import Derf, DyT, SeeDNorm
from seednorm_experiments.harness import CHECKPOINT_NAME, Task, TrainConfig, load_checkpoint, param_kinds, train
from seednorm_experiments.lm import main
from seednorm_experiments.lm.ablation import AblationPlan, Job, best_knobs, claim
from seednorm_experiments.lm.model import Llama, LMConfig
from seednorm_experiments.lm.presets import get_preset
from seednorm_experiments.lm.recipes import (
    FORM_KNOBS,
    KNOBS,
    SITE_KNOBS,
    VARIANTS,
    Variant,
    dyt_lm_recipe,
    get_variant,
    seednorm_lm_recipe,
)
from seednorm_experiments.lm.study import Run
from seednorm_experiments.lm.sweep import best_lrs

LR = 1e-2


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(6, 16), SeeDNorm(16), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.inp(x)))


def _batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 6, generator=g)
    return x, x[:, :1] - 2 * x[:, 1:2]


def _one_step(out: Path, **kw) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One AdamW step (no warmup, full lr) on the toy: its history row and the trained weights."""
    task = Task(name="toy", build_model=Toy, batches=_batch, loss=lambda m, b: F.mse_loss(m(b[0]), b[1]),
                tokens=lambda b: b[0].shape[0])
    cfg = TrainConfig(out_dir=out, steps=1, lr=LR, progress=False, tensorboard=False, **kw)
    res = train(task, cfg)
    return res.history[0], load_checkpoint(out / CHECKPOINT_NAME)["model"]


def _moved(state: dict[str, torch.Tensor], name: str) -> float:
    init = torch.zeros(16) if name == "norm.beta" else None
    return float((state[name] - init).abs().max())


def test_group_clip_clips_only_its_groups_with_their_own_max_norm(tmp_path: Path) -> None:
    free_row, free = _one_step(tmp_path / "a", grad_clip=None)
    row, clipped = _one_step(tmp_path / "b", grad_clip=None, group_clip={"beta": 1e-12})
    assert row["clipped/beta"] == 1.0 and row["clipped"] == 0.0
    # Adam's first step moves each β entry by ≈ lr; a gradient clipped to 1e-12 ≪ eps barely moves it
    assert _moved(free, "norm.beta") == pytest.approx(LR, rel=1e-3)
    assert _moved(clipped, "norm.beta") < 1e-3 * LR
    for name in ("inp.weight", "out.weight", "norm.weight"):  # the other groups are untouched
        torch.testing.assert_close(clipped[name], free[name], rtol=0, atol=0)


def test_clip_groups_without_alpha_beta_leaves_them_unclipped(tmp_path: Path) -> None:
    _, free = _one_step(tmp_path / "a", grad_clip=None)
    row, part = _one_step(tmp_path / "b", grad_clip=1e-12,
                          **get_variant("seednorm-noclip").train_overrides(LR, 0.1))
    assert row["clipped"] == 1.0
    torch.testing.assert_close(part["norm.beta"], free["norm.beta"], rtol=0, atol=0)
    assert float((part["inp.weight"] - free["inp.weight"]).abs().max()) > 0.5 * LR


def test_group_clip_is_validated() -> None:
    with pytest.raises(ValueError, match="both clip_groups and group_clip"):
        TrainConfig(out_dir=Path("x"), steps=1, lr=1.0, clip_groups=("beta",), group_clip={"beta": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        TrainConfig(out_dir=Path("x"), steps=1, lr=1.0, group_clip={"beta": 0.0})


def test_dynamic_lr_scale_and_weight_decay_knobs(tmp_path: Path) -> None:
    over = Variant("v", "seednorm", "test", dynamic_lr_scale=0.1, decay_dynamic=False).train_overrides(LR, 0.1)
    groups = {g["name"]: g for g in over["param_groups"](Toy())}
    assert groups["seednorm"]["lr"] == pytest.approx(0.1 * LR) and groups["seednorm"]["weight_decay"] == 0.0
    assert groups["decay"]["lr"] == LR and groups["decay"]["weight_decay"] == 0.1
    _, state = _one_step(tmp_path, grad_clip=None, **over)
    assert _moved(state, "norm.beta") == pytest.approx(0.1 * LR, rel=1e-3)
    assert get_variant("seednorm-nowd").train_overrides(LR, 0.1)["param_groups"](Toy())[1]["weight_decay"] == 0.0
    assert get_variant("seednorm-clip0.1").train_overrides(LR, 0.1) == {"group_clip": {"alpha": 0.1, "beta": 0.1}}
    assert get_variant("rmsnorm").train_overrides(LR, 0.1) == {}


@pytest.mark.parametrize("name, dot, heads", [("seednorm", 1.0, 1), ("seednorm-dot-rsqrt", 1 / math.sqrt(48), 1),
                                              ("seednorm-dot-inv", 1 / 48, 1), ("seednorm-heads", 1.0, 4)])
def test_dot_scale_and_heads_reach_every_seednorm(name: str, dot: float, heads: int) -> None:
    cfg = LMConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, seq_len=8, norm="seednorm",
                   **get_variant(name).model_overrides(48, 4))
    norms = [m for m in Llama(cfg).modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 5
    for m in norms:
        scale = m.dot_scale if not isinstance(m.dot_scale, str) else m.num_heads / 48
        assert scale == pytest.approx(dot) and m.num_heads == heads


def test_seednorm_lm_recipe_is_the_dot_rsqrt_variant() -> None:
    assert seednorm_lm_recipe(48) == {"dot_scale": pytest.approx(1 / math.sqrt(48)), "num_heads": 1}
    kw = get_variant("seednorm-dot-rsqrt").model_overrides(48, 4)["norm_kwargs"]
    assert kw["dot_scale"] == pytest.approx(seednorm_lm_recipe(48)["dot_scale"])
    assert seednorm_lm_recipe(64, 4)["dot_scale"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        seednorm_lm_recipe(10, 4)


def test_dyt_recipe_embedding_scale_and_alpha_inits() -> None:
    dim = 48
    cfg = LMConfig(vocab_size=64, dim=dim, n_layers=2, n_heads=4, seq_len=8, norm="dyt",
                   **get_variant("dyt").model_overrides(dim, 4))
    model = Llama(cfg)
    assert isinstance(model.embed_scale, nn.Parameter) and model.embed_scale.item() == pytest.approx(math.sqrt(dim))
    assert param_kinds(model)["embed_scale"] == "other"
    for block in model.blocks:
        assert isinstance(block.attn_norm, DyT) and block.attn_norm.alpha.item() == pytest.approx(0.8)
        assert block.mlp_norm.alpha.item() == pytest.approx(0.2)
    assert model.norm.alpha.item() == pytest.approx(0.2)
    idx = torch.randint(0, 64, (2, 8))
    plain = Llama(LMConfig(vocab_size=64, dim=dim, n_layers=0, n_heads=4, seq_len=8, norm="rmsnorm",
                           placement=()))
    scaled = Llama(LMConfig(vocab_size=64, dim=dim, n_layers=0, n_heads=4, seq_len=8, norm="rmsnorm",
                            placement=(), embed_scale=3.0))
    scaled.load_state_dict({**plain.state_dict(), "embed_scale": torch.tensor(3.0)})
    torch.testing.assert_close(scaled.embed(idx), plain.embed(idx))
    h = plain.embed(idx)  # RMSNorm is scale-invariant, so compare before the final norm via a hook
    seen = {}
    scaled.norm.register_forward_hook(lambda m, a, o: seen.setdefault("x", a[0]))
    scaled(idx)
    torch.testing.assert_close(seen["x"], 3.0 * h)
    assert dyt_lm_recipe(64, 1.0, 0.5)["site_norm_kwargs"]["attn"] == {"alpha_init": 1.0}
    with pytest.raises(ValueError, match="unknown site"):
        LMConfig(vocab_size=64, site_norm_kwargs={"pre": {}})
    with pytest.raises(ValueError, match="dyt_recipe"):
        Variant("x", "seednorm", "bad", dyt_recipe=True)


def _run(norm: str, lr: float, loss: float, seed: int = 0, diverged: bool = False, bpb: float = 0.0) -> Run:
    ev = {f"bpb/{d}": bpb for d in ("plays", "code")}
    return Run(norm, seed, lr, {"diverged": diverged, "history": [{"loss": loss}] * 10, "final_eval": ev})


def test_sweep_picks_each_norms_best_rate() -> None:
    runs = [_run("rmsnorm", 1e-3, 3.0), _run("rmsnorm", 4e-3, 2.5), _run("rmsnorm", 1.6e-2, 2.7),
            _run("seednorm", 1e-3, 2.9), _run("seednorm", 4e-3, 2.8), _run("seednorm", 1.6e-2, 1.0, diverged=True)]
    assert best_lrs(runs) == {"rmsnorm": 4e-3, "seednorm": 4e-3}
    assert best_lrs(runs + [_run("seednorm", 8e-3, 2.6)])["seednorm"] == 8e-3
    with pytest.raises(ValueError, match="'dyt' diverged at every swept rate"):
        best_lrs(runs + [_run("dyt", 1e-3, 9.0, diverged=True)])


def test_sweep_never_picks_a_rate_that_lost_a_seed() -> None:
    """Seed 1 diverged at 8e-3; the survivor's low loss must not make 8e-3 the recommended rate."""
    runs = [_run("rmsnorm", lr, loss, seed) for seed in (0, 1) for lr, loss in ((2e-3, 3.0), (4e-3, 2.8))]
    runs += [_run("rmsnorm", 8e-3, 2.0, 0), _run("rmsnorm", 8e-3, 9.0, 1, diverged=True)]
    assert best_lrs(runs) == {"rmsnorm": 4e-3}
    with pytest.raises(ValueError, match="diverged at every swept rate"):
        best_lrs([_run("rmsnorm", 1e-3, 2.0, 0), _run("rmsnorm", 1e-3, 9.0, 1, diverged=True)])


def test_best_knobs_by_paired_difference() -> None:
    base = [_run("rmsnorm", 1e-2, 0, s, bpb=2.0 + s) for s in range(3)]
    base += [_run("seednorm-a", 1e-2, 0, s, bpb=2.1 + s) for s in range(3)]
    base += [_run("seednorm-b", 1e-2, 0, s, bpb=1.95 + s) for s in range(3)]
    assert best_knobs(base, ["seednorm-a", "seednorm-b"], 1) == ["seednorm-b"]
    assert best_knobs(base, ["seednorm-a", "seednorm-b"], 2) == ["seednorm-b", "seednorm-a"]


def test_claims_are_exclusive_and_dead_claims_are_taken_over(tmp_path: Path) -> None:
    job = Job("base", "rmsnorm", 0, 1e-2, tmp_path / "run")
    assert claim(job) and claim(job)  # our own claim
    (job.out / ".claim").write_text(str(os.getppid()))  # a live process holds it
    assert not claim(job)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (job.out / ".claim").write_text(dead.stdout.strip())
    assert claim(job) and (job.out / ".claim").read_text() == str(os.getpid())


def test_plan_is_validated() -> None:
    p = get_preset("smoke")
    with pytest.raises(ValueError, match=">= 2 seeds"):
        AblationPlan(p, seeds=1, lrs=(1e-3, 1e-2))
    with pytest.raises(ValueError, match="not a SeeDNorm variant"):
        AblationPlan(p, seeds=2, lrs=(1e-3, 1e-2), knobs=("dyt",))
    with pytest.raises(ValueError, match="unknown variant"):
        AblationPlan(p, seeds=2, lrs=(1e-3, 1e-2), knobs=("seednorm-magic",))
    plan = AblationPlan(p, seeds=2, lrs=(1e-3, 1e-2), long_factors=(4, 16))
    assert plan.phases == ["sweep", "base", "long4x", "wide", "long16x"]
    assert plan.phase_preset("long16x").steps == 16 * p.steps


@pytest.mark.slow
def test_ablation_cli_micro_grid_end_to_end(tmp_path: Path) -> None:
    argv = ["--ablation", "--preset", "smoke", "--seeds", "2", "--ablation-lrs", "1e-3", "1e-2", "--knobs",
            "seednorm-lr0.1", "--long-factors", "2", "3", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("## Protocol", "Learning-rate sweep", "each at its own best learning rate", "SeeDNorm knobs",
                   "seednorm-lr0.1", "Does the gap close", "gradient norm of each parameter group", "α0 = 0.8"):
        assert needle in report
    for png in ("sweep.png", "gap_vs_tokens.png", "gap_curve.png", "gradnorm_seednorm.png", "gn_beta.png",
                "clipped.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [len(summary[p]) for p in ("sweep", "base", "long2x", "wide", "long3x")] == [8, 10, 6, 6, 6]
    assert {r["variant"] for r in summary["long3x"]} == {"rmsnorm", "seednorm", "seednorm-lr0.1"}
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")}
    assert main(argv) == 0  # everything reused
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")} == stamps
    assert main(argv + ["--report-only"]) == 0
    wide = tmp_path / "w64"
    assert main(argv[:-3] + ["--dim", "64", "--until", "sweep", "--out", str(wide), "--no-progress"]) == 0
    assert json.loads((wide / "summary.json").read_text())["base"] == []
    assert json.loads((wide / "sweep" / "seednorm" / "lr0.01" / "seed0" / "result.json").read_text())["num_params"] \
        > summary["sweep"][0]["num_params"]


@pytest.mark.parametrize("argv, message", [
    (["--ablation", "--knobs", "dyt"], "not a SeeDNorm variant"),
    (["--ablation", "--seeds", "1"], ">= 2 seeds"),
    (["--ablation", "--ablation-lrs", "1e-3"], ">= 2 positive"),
    (["--ablation", "--until", "long2x"], "not a phase"),
])
def test_ablation_bad_arguments_are_clear_errors(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, alpha, beta, gamma", [
    ("seednorm-alpha-scalar", "scalar", "dot", "vector"),
    ("seednorm-beta-elementwise", "vector", "elementwise", "vector"),
    ("seednorm-no-alpha", "none", "dot", "vector"), ("seednorm-no-beta", "vector", "none", "vector"),
    ("seednorm-no-gamma", "vector", "dot", "none")])
def test_form_knobs_build_seednorms_of_that_form(name: str, alpha: str, beta: str, gamma: str) -> None:
    variant = get_variant(name)
    assert name in FORM_KNOBS and name not in KNOBS and variant.norm == "seednorm"
    cfg = LMConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, seq_len=8, norm="seednorm",
                   **variant.model_overrides(48, 4))
    norms = [m for m in Llama(cfg).modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 5
    for m in norms:
        assert (m.alpha_mode, m.beta_mode, m.gamma_mode) == (alpha, beta, gamma)
        assert (m.alpha is None) == (alpha == "none") and (m.beta is None) == (beta == "none")
        assert (m.weight is None) == (gamma == "none")
    forms = {k: v for k, v in (("alpha_mode", alpha), ("beta_mode", beta), ("gamma_mode", gamma))
             if v not in ("vector", "dot")}
    assert len(forms) == 1 and variant.forms() == forms and forms.items() <= variant.signature().items()


def test_other_variants_keep_their_fingerprints() -> None:
    """The ablation forms and the converted sites enter a variant's signature only when set, so the runs of the
    other variants stay reusable."""
    for name, variant in VARIANTS.items():
        if name not in FORM_KNOBS:
            full = dataclasses.asdict(variant)
            unset = ("alpha_mode", "beta_mode", "gamma_mode") + (() if name in SITE_KNOBS else ("sites",))
            assert variant.signature() == {k: v for k, v in full.items() if k not in unset}
    with pytest.raises(ValueError, match="apply to norm='seednorm'"):
        Variant("x", "rmsnorm", "", alpha_mode="none")


def test_derf_variant_takes_dyt_lm_recipe() -> None:
    model = Llama(LMConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, seq_len=8, norm="derf",
                           **get_variant("derf").model_overrides(48, 4)))
    assert model.embed_scale.item() == pytest.approx(math.sqrt(48))
    for block in model.blocks:
        assert isinstance(block.attn_norm, Derf) and block.attn_norm.alpha.item() == pytest.approx(0.8)
        assert block.mlp_norm.alpha.item() == pytest.approx(0.2) and block.mlp_norm.shift.item() == 0
    assert "derf" not in AblationPlan(get_preset("smoke"), seeds=2, lrs=(1e-3, 1e-2)).norms  # the default stays
    for norms in (("rmsnorm", "derf"), ("rmsnorm", "seednorm", "seednorm-nowd"), ("rmsnorm", "seednorm", "x")):
        with pytest.raises(ValueError, match="main norms"):
            AblationPlan(get_preset("smoke"), seeds=2, lrs=(1e-3, 1e-2), norms=norms)


@pytest.mark.slow
def test_ablation_cli_accepts_derf_and_the_form_knobs(tmp_path: Path) -> None:
    argv = ["--ablation", "--preset", "smoke", "--seeds", "2", "--ablation-lrs", "1e-3", "1e-2", "--norms",
            "rmsnorm", "derf", "seednorm", "--knobs", ",".join(FORM_KNOBS), "--until", "base", "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    report = (tmp_path / "report.md").read_text()
    for name in FORM_KNOBS:
        assert f"| {name} | {get_variant(name).note} |" in report
    assert "| derf (2/2), lr " in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {r["variant"] for r in summary["sweep"]} == {"rmsnorm", "derf", "seednorm"}
    assert {r["variant"] for r in summary["base"]} == {"rmsnorm", "derf", "seednorm", *FORM_KNOBS}
