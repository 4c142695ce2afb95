"""param_groups applies the paper's weight-decay policy (spec §4)."""

import pytest
import torch
from torch import nn

from seednorm import SeeDNorm, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.norm = SeeDNorm(8, center=True, bias=True)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: must appear once
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)


def _names(model, group):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id[id(p)] for p in group["params"])


def test_default_policy():
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, 0.1)}
    assert _names(model, groups["decay"]) == ["emb.weight", "proj.weight"]
    assert _names(model, groups["seednorm"]) == ["norm.alpha", "norm.beta"]
    assert _names(model, groups["no_decay"]) == ["norm.bias", "norm.weight", "proj.bias"]
    assert groups["decay"]["weight_decay"] == groups["seednorm"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0
    torch.optim.AdamW(list(groups.values()), lr=1e-3)  # accepted as is


def test_options():
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, 0.1, decay_gain=True, decay_dynamic=False,
                                                 lr=1e-3, dynamic_lr_scale=0.1)}
    assert "no_decay" not in groups
    assert "norm.weight" in _names(model, groups["decay"])
    assert groups["seednorm"]["weight_decay"] == 0.0
    assert groups["seednorm"]["lr"] == pytest.approx(1e-4) and groups["decay"]["lr"] == 1e-3


def test_lr_scale_needs_lr():
    with pytest.raises(ValueError, match="lr"):
        param_groups(Tiny(), 0.1, dynamic_lr_scale=2.0)


def test_model_without_seednorm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    assert [g["name"] for g in param_groups(model, 0.05)] == ["decay", "no_decay"]
