"""``seednorm lm --arch olmo2``: OLMo-core's OLMo2 (reordered-norm blocks, QK-norm) in the language-model study, its
SeeDNorm sites, the argument checks, and a smoke study end to end with its run records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("olmo_core")

import seednorm  # noqa: E402
from seednorm_experiments.lm import main  # noqa: E402
from seednorm_experiments.lm.data import load_corpus  # noqa: E402
from seednorm_experiments.lm.model import LMConfig  # noqa: E402
from seednorm_experiments.lm.olmo import build_olmo2  # noqa: E402
from seednorm_experiments.lm.presets import get_preset  # noqa: E402
from seednorm_experiments.lm.study import make_task  # noqa: E402


def _cfg(**kw) -> LMConfig:
    return LMConfig(vocab_size=50, dim=24, n_layers=2, n_heads=2, seq_len=8, arch="olmo2", **kw)


def _seeded(cfg: LMConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_olmo2(cfg)


def test_olmo2_models_seednorm_sites_follow_the_placement_and_equal_rmsnorm_at_init() -> None:
    plain = _seeded(_cfg())
    assert type(plain.blocks["0"]).__name__ == "ReorderedNormTransformerBlock"
    assert plain.blocks["0"].feed_forward.w1.out_features == 64  # the Llama rule: 8/3 · 24 → 64
    everywhere = _seeded(_cfg(norm="seednorm"))
    names = {n for n, m in everywhere.named_modules() if isinstance(m, seednorm.SeeDNorm)}
    assert names == {f"blocks.{i}.{n}" for i in range(2) for n in ("attention_norm", "feed_forward_norm",
                                                                     "attention.q_norm", "attention.k_norm")} \
        | {"lm_head.norm"}
    blocks_only = _seeded(_cfg(norm="seednorm", placement=("attn", "mlp"), norm_kwargs={"dot_scale": "dim"}))
    names = {n for n, m in blocks_only.named_modules() if isinstance(m, seednorm.SeeDNorm)}
    assert names == {f"blocks.{i}.{n}" for i in range(2) for n in ("attention_norm", "feed_forward_norm")}
    assert blocks_only.blocks["1"].attention_norm.dot_scale == "dim"
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    for model in (everywhere, blocks_only):  # the same seed, the same init: RMSNorm's logits at β = 0
        torch.testing.assert_close(model(tokens), plain(tokens), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_seeded(_cfg(), seed=1).embeddings.weight, plain.embeddings.weight)  # init follows seed


def test_olmoe_layout_with_experts() -> None:
    """With experts: OLMo-core's MoE transformer of reordered-norm MoE blocks (OLMoE's layout), the study's experts,
    top-k and expert width; the router's weight a decayed matrix; SeeDNorm where the placement says, equal to RMSNorm
    at init; a training step on CPU reaches every parameter, the router through OLMo-core's attached losses."""
    cfg = _cfg(moe_experts=4, moe_top_k=2)
    plain, converted = _seeded(cfg), _seeded(dataclasses.replace(cfg, norm="seednorm"))
    assert type(plain).__name__ == "MoETransformer"
    assert {type(b).__name__ for b in plain.blocks.values()} == {"MoEReorderedNormTransformerBlock"}
    moe = plain.blocks["1"].feed_forward_moe
    assert (moe.num_experts, moe.top_k, moe.experts.mlp.hidden_size) == (4, 2, 64)
    assert moe.router.weight.shape == (4, 24)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in seednorm.param_groups(plain, 0.1)}
    assert id(moe.router.weight) in groups["decay"]
    assert sum(isinstance(m, seednorm.SeeDNorm) for m in converted.modules()) == 9  # 2 × (2 block + q, k) + final
    x = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(converted(x), plain(x), rtol=1e-5, atol=1e-5)
    converted.train()
    converted(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in converted.parameters())
    assert moe.router.weight.grad is None and converted.blocks["1"].feed_forward_moe.router.weight.grad.abs().sum() > 0


def test_olmoe_fingerprint_names_its_losses() -> None:
    preset = get_preset("smoke")
    corpus = load_corpus(preset.vocab_size, preset.max_chars)
    model = make_task(preset, corpus, "rmsnorm", 0, None,
                      model_overrides={"arch": "olmo2", "moe_experts": 4}).signature["model"]
    assert model["moe_experts"] == 4 and model["moe_z_loss"] == 0.001
    assert model["moe_router_weight"] == "matrix, decayed" and model["moe_aux_over_blocks"] == "mean"
    dense = make_task(preset, corpus, "rmsnorm", 0, None, model_overrides={"arch": "olmo2"}).signature["model"]
    assert not {k for k in dense if k.startswith("moe")}


def test_olmo2_configs_that_cannot_be_are_refused() -> None:
    with pytest.raises(ValueError, match="rmsnorm and seednorm"):
        build_olmo2(_cfg(norm="dyt"))
    with pytest.raises(ValueError, match="attn and mlp together"):
        build_olmo2(_cfg(norm="seednorm", placement=("attn", "final")))
    with pytest.raises(ValueError, match=r"not options of the converter"):
        build_olmo2(_cfg(norm="seednorm", norm_kwargs={"dynamic_dropout": 0.1}))


def test_the_llama_fingerprint_does_not_name_the_arch() -> None:
    """Runs of the default model keep their fingerprints (committed records stay reusable); OLMo2's name it."""
    preset = get_preset("smoke")
    corpus = load_corpus(preset.vocab_size, preset.max_chars)
    assert "arch" not in make_task(preset, corpus, "rmsnorm", 0, None).signature["model"]
    olmo = make_task(preset, corpus, "rmsnorm", 0, None, model_overrides={"arch": "olmo2"})
    assert olmo.signature["model"]["arch"] == "olmo2"


@pytest.mark.parametrize(("args", "needle"), [
    (["--norms", "rmsnorm", "dyt"], "trains rmsnorm and seednorm"),
    (["--qk-norm"], "has its QK-norm always"),
    (["--placement", "attn", "final"], "attn and mlp together"),
    (["--ablation"], "--arch applies to the study"),
    (["--size-curve", "--norms", "rmsnorm", "dyt"], "--norms dyt"),
])
def test_arch_arguments_are_checked(args: list[str], needle: str, capsys) -> None:
    assert main(["--arch", "olmo2", "--preset", "smoke", *args]) == 2
    assert needle in capsys.readouterr().err


def test_without_olmo_core_the_study_and_the_builder_say_how_to_install_it(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "olmo_core.nn.transformer", None)  # importing it raises ImportError
    assert main(["--arch", "olmo2", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "--arch olmo2 needs OLMo-core" in err and "requirements-torchtitan.txt" in err and "Traceback" not in err
    with pytest.raises(ImportError, match="requirements-torchtitan.txt"):
        build_olmo2(_cfg())


def test_olmo2_smoke_study_end_to_end(tmp_path: Path) -> None:
    assert main(["--arch", "olmo2", "--preset", "smoke", "--steps", "4", "--out", str(tmp_path), "--no-progress",
                 "--no-throughput"]) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in ("OLMo-core's OLMo2 decoder", "reordered-norm", "Difference to RMSNorm", "--arch olmo2"):
        assert needle in report
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["study"] == "lm" and len(lines) == 3  # the header, then rmsnorm and seednorm
    result = json.loads((tmp_path / "runs" / "seednorm" / "seed0" / "result.json").read_text())
    assert not result["diverged"] and result["fingerprint"]["signature"]["model"]["arch"] == "olmo2"
    assert all(v == v for v in result["final_eval"].values())  # finite numbers, no NaN
    # the same command rebuilds the report from the records, training nothing
    assert main(["--arch", "olmo2", "--preset", "smoke", "--steps", "4", "--out", str(tmp_path), "--no-progress",
                 "--no-throughput", "--report-only"]) == 0


def test_olmoe_smoke_study_reports_its_routing(tmp_path: Path) -> None:
    """The study with experts: OLMoE's layout named in the report, and the routing table from OLMo-core's routers
    (the balance and the busiest expert's load, within their bounds: max load between 1 and E/K)."""
    argv = ["--arch", "olmo2", "--moe-experts", "3", "--moe-top-k", "1", "--preset", "smoke", "--steps", "3",
            "--out", str(tmp_path), "--no-progress", "--no-throughput"]
    assert main(argv) == 0
    report = (tmp_path / "report.md").read_text()
    assert "OLMo-core's OLMoE layout" in report and "dropless mixture of 3 experts, top 1" in report
    assert "### Expert routing at the end of training" in report
    for norm in ("rmsnorm", "seednorm"):
        final = json.loads((tmp_path / "runs" / norm / "seed0" / "result.json").read_text())["final_eval"]
        assert 1.0 <= final["moe/max_load"] <= 3.0 and 0 < final["moe/balance"] < 3.0
    assert main([*argv, "--report-only"]) == 0


def test_importing_olmo_core_for_a_study_prints_none_of_its_cpu_warnings() -> None:
    import subprocess
    import sys

    code = "from seednorm_experiments.lm.olmo import import_olmo_core; import_olmo_core(); import logging; " \
           "assert logging.getLogger('olmo_core.nn.attention').level == logging.NOTSET"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "No CUDA runtime" not in done.stderr and "transformer_engine" not in done.stderr, done.stderr
