"""The Llama-style decoder: shapes, norm placement, QK-norm, tied embeddings, causality, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seednorm import DyT, RMSNorm, SeeDNorm
from seednorm_experiments.lm.model import Llama, LMConfig


def _norms(model: Llama) -> dict[str, type]:
    return {n: type(m) for n, m in model.named_modules() if n.endswith("norm") and not isinstance(m, nn.Identity)}


def test_forward_shape_and_tied_embeddings() -> None:
    model = Llama(LMConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, seq_len=8))
    assert model(torch.randint(0, 50, (3, 8))).shape == (3, 8, 50)
    assert model.head.weight is model.embed.weight
    untied = Llama(LMConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, seq_len=8, tie_embeddings=False))
    assert untied.head.weight is not untied.embed.weight


def test_placement_chooses_which_sites_get_the_norm() -> None:
    cfg = LMConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, seq_len=8, norm="seednorm",
                   placement=("mlp", "qk"), qk_norm=True)
    norms = _norms(Llama(cfg))
    assert norms["blocks.0.mlp_norm"] is SeeDNorm and norms["blocks.0.attn.q_norm"] is SeeDNorm
    assert norms["blocks.0.attn_norm"] is RMSNorm and norms["norm"] is RMSNorm
    assert set(_norms(Llama(LMConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, norm="dyt"))).values()) == {DyT}


def test_seednorm_at_init_equals_rmsnorm_model() -> None:
    """β = 0 makes SeeDNorm exactly RMSNorm (SPEC §2), so the two models agree at the same init."""
    x = torch.randint(0, 50, (2, 8))
    out = []
    for norm in ("rmsnorm", "seednorm"):
        torch.manual_seed(0)
        model = Llama(LMConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, seq_len=8, norm=norm)).double()
        out.append(model(x))
    torch.testing.assert_close(out[0], out[1])


def test_causal() -> None:
    model = Llama(LMConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, seq_len=8)).double()
    x = torch.randint(0, 50, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 50
    torch.testing.assert_close(model(x)[:, :5], model(y)[:, :5])


def test_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="placement"):
        LMConfig(vocab_size=50, placement=("pre",))
    with pytest.raises(ValueError, match="heads"):
        LMConfig(vocab_size=50, dim=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown norm"):
        Llama(LMConfig(vocab_size=50, dim=16, n_heads=2, norm="batchnorm"))
    with pytest.raises(ValueError, match="seq_len"):
        Llama(LMConfig(vocab_size=50, dim=16, n_heads=2, seq_len=4))(torch.zeros(1, 5, dtype=torch.long))
