"""The modules: init = RMSNorm, β learns at once, compile, state_dict, copies, dtypes, factory, bad arguments."""

from __future__ import annotations

import copy
import functools
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seednorm
from seednorm import AdaSeeDNorm, Derf, DyT, LayerNorm, RMSNorm, SeeDNorm, build_norm


@pytest.mark.parametrize("num_heads", [1, 4])
@pytest.mark.parametrize("activation", ["tanh", "hardtanh", "softsign"])
def test_init_equals_rmsnorm_exactly(num_heads, activation):
    """Bit for bit on the reference path; to float32 rounding on the fused path the module picks (its row sums run
    in another order than PyTorch's RMSNorm kernel)."""
    torch.manual_seed(0)
    norm, rms = SeeDNorm(64, num_heads=num_heads, activation=activation), nn.RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
        rms.weight.copy_(norm.weight)
    x = 4 * torch.randn(5, 3, 64)
    kw = {"num_heads": num_heads, "activation": activation, "impl": "reference"}
    assert torch.equal(seednorm.seednorm(x, norm.weight, norm.alpha, norm.beta, **kw), rms(x))
    torch.testing.assert_close(norm(x), rms(x), rtol=2e-6, atol=2e-6)


def test_parameters_names_shapes_and_init():
    norm = SeeDNorm(12, alpha_init=0.5)
    assert dict((n, tuple(p.shape)) for n, p in norm.named_parameters()) == {
        "alpha": (12,), "beta": (12,), "weight": (12,)
    }
    assert torch.equal(norm.weight, torch.ones(12)) and torch.equal(norm.beta, torch.zeros(12))
    assert torch.equal(norm.alpha, torch.full((12,), 0.5))
    names = [n for n, _ in SeeDNorm(12, center=True, bias=True).named_parameters()]
    assert names == ["alpha", "beta", "weight", "bias"]


def test_beta_gets_nonzero_gradient_on_first_backward():
    norm = SeeDNorm(32)
    x = torch.randn(8, 32)
    (norm(x) * torch.randn(8, 32)).sum().backward()
    assert norm.beta.grad.abs().sum() > 0
    assert norm.alpha.grad.abs().sum() == 0  # tanh(0) = 0: α learns once β has moved (spec §2)


def test_reset_parameters_restores_init():
    norm = SeeDNorm(8, alpha_init=2.0, bias=True)
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_()
    norm.reset_parameters()
    assert torch.equal(norm.alpha, torch.full((8,), 2.0)) and torch.equal(norm.beta, torch.zeros(8))
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))


def test_extra_repr_states_the_options():
    text = repr(SeeDNorm(16, num_heads=4, dot_scale="dim", dynamic_dropout=0.1))
    assert "16, num_heads=4" in text and "dot_scale='dim'" in text and "dynamic_dropout=0.1" in text


def _trained(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return norm


def test_state_dict_round_trip_and_deepcopy():
    norm = _trained(SeeDNorm(24, num_heads=2))
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    fresh = SeeDNorm(24, num_heads=2)
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(3, 24)
    assert torch.equal(fresh(x), norm(x))
    clone = copy.deepcopy(norm)
    assert torch.equal(clone(x), norm(x)) and clone.alpha is not norm.alpha


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_to_dtype_and_factory_kwargs(dtype):
    norm = _trained(SeeDNorm(16)).to(dtype)
    assert all(p.dtype == dtype for p in norm.parameters())
    x = torch.randn(2, 16, dtype=dtype)
    assert norm(x).dtype == dtype
    made = SeeDNorm(16, dtype=dtype, device="cpu")
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in made.parameters())


def test_inside_sequential_trains():
    model = nn.Sequential(nn.Linear(10, 32), SeeDNorm(32, num_heads=4), nn.Linear(32, 1))
    opt = torch.optim.AdamW(seednorm.param_groups(model, 0.1), lr=1e-2)
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model[1].beta.abs().sum() > 0


def test_compile_fullgraph_matches_eager():
    model = nn.Sequential(nn.Linear(16, 64), _trained(SeeDNorm(64, num_heads=2)), nn.GELU(), nn.Linear(64, 8))
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    x = torch.randn(4, 5, 16)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_dynamic_dropout_follows_train_and_eval():
    norm = _trained(SeeDNorm(32, dynamic_dropout=0.5))
    x = torch.randn(16, 32)
    norm.eval()
    assert torch.equal(norm(x), norm(x))
    norm.train()
    torch.manual_seed(1)
    a = norm(x)
    torch.manual_seed(2)
    assert not torch.equal(a, norm(x))


def test_ada_seednorm():
    norm = AdaSeeDNorm(16, num_heads=2)
    x = torch.randn(2, 5, 16)
    scale, shift = torch.randn(2, 1, 16), torch.randn(2, 1, 16)
    expected = F.rms_norm(x, (16,), None, torch.finfo(torch.float32).eps) * (1 + scale) + shift
    torch.testing.assert_close(norm(x, scale, shift), expected)
    norm(x, scale, shift).square().sum().backward()
    assert norm.beta.grad.abs().sum() > 0


def test_baselines():
    x = torch.randn(3, 20)
    torch.testing.assert_close(RMSNorm(20)(x), nn.RMSNorm(20)(x))
    torch.testing.assert_close(LayerNorm(20)(x), nn.LayerNorm(20)(x))
    dyt = DyT(20)
    assert [n for n, _ in dyt.named_parameters()] == ["alpha", "weight", "bias"]
    torch.testing.assert_close(dyt(x), torch.tanh(0.5 * x))
    assert DyT(20, bias=False).bias is None and LayerNorm(20, bias=False).bias is None


def test_build_norm_by_name_type_and_callable():
    assert isinstance(build_norm("seednorm", 8, num_heads=2), SeeDNorm)
    assert build_norm("SeeDNorm", 8, num_heads=2).num_heads == 2
    for name, cls in [("rmsnorm", RMSNorm), ("layernorm", LayerNorm), ("dyt", DyT), ("derf", Derf),
                      ("layer_norm", LayerNorm)]:
        assert type(build_norm(name, 8)) is cls
    assert isinstance(build_norm(nn.LayerNorm, 8), nn.LayerNorm)
    assert build_norm(functools.partial(SeeDNorm, num_heads=4), 8).num_heads == 4


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: SeeDNorm(10, num_heads=3), ValueError, "does not divide"),
        (lambda: SeeDNorm(10, eps=0), ValueError, "eps"),
        (lambda: SeeDNorm(10, eps=-1.0), ValueError, "eps"),
        (lambda: SeeDNorm(10, activation="relu"), ValueError, "activation"),
        (lambda: SeeDNorm(10, dynamic_dropout=-0.5), ValueError, "dynamic_dropout"),
        (lambda: SeeDNorm(10, dot_scale="rows"), ValueError, "dot_scale"),
        (lambda: SeeDNorm(10, alpha_init=0.0), ValueError, "alpha_init=0"),
        (lambda: SeeDNorm((4, 10)), ValueError, "last dimension"),
        (lambda: SeeDNorm(0), ValueError, ">= 1"),
        (lambda: RMSNorm(10, eps=0.0), ValueError, "eps"),
        (lambda: build_norm("batchnorm", 10), ValueError, "unknown norm 'batchnorm'"),
        (lambda: build_norm(3, 10), TypeError, "build_norm expects"),
        (lambda: SeeDNorm(10)(torch.randn(2, 11)), ValueError, "last dimension must be 10"),
        (lambda: SeeDNorm(10)(torch.ones(2, 10, dtype=torch.int64)), TypeError, "floating"),
        (lambda: RMSNorm(10)(torch.randn(2, 11)), ValueError, "last dimension must be 10"),
        (lambda: SeeDNorm([8.7]), ValueError, "normalized_shape must be an integer"),
        (lambda: SeeDNorm(8.0), ValueError, "normalized_shape must be an integer"),
        (lambda: SeeDNorm(True), ValueError, "normalized_shape must be an integer"),
        (lambda: SeeDNorm(8, alpha_init=float("nan")), ValueError, "alpha_init must be a finite number"),
        (lambda: SeeDNorm(8, alpha_init="1"), ValueError, "alpha_init must be a finite number"),
        (lambda: DyT(8, alpha_init=float("inf")), ValueError, "alpha_init must be a finite number"),
        (lambda: SeeDNorm(8, eps=True), ValueError, "eps"),
        (lambda: RMSNorm(8, eps=True), ValueError, "eps"),
        (lambda: SeeDNorm(8, num_heads=True), ValueError, "num_heads"),
        (lambda: SeeDNorm(8, dynamic_dropout=True), ValueError, "dynamic_dropout"),
        (lambda: SeeDNorm(8, dot_scale=float("nan")), ValueError, "dot_scale"),
        (lambda: SeeDNorm(8, eps=1e-50)(torch.randn(2, 8)), ValueError, "normal torch.float32"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()



def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    np = pytest.importorskip("numpy")
    norm = SeeDNorm(np.int64(8), num_heads=np.int32(2), eps=np.float32(1e-5), alpha_init=np.float64(0.5),
                    dot_scale=np.float32(0.25), dynamic_dropout=np.float64(0.1))
    assert norm.normalized_shape == (8,) and norm.num_heads == 2 and type(norm.num_heads) is int
    assert type(norm.eps) is float and type(norm.alpha_init) is float and type(norm.dot_scale) is float
    assert torch.equal(norm.alpha, torch.full((8,), 0.5))
    norm.eval()
    x = torch.randn(3, 8)
    assert norm(x).shape == x.shape


def test_plain_fx_symbolic_trace_keeps_the_layer_as_one_call():
    model = nn.Sequential(nn.Linear(12, 12), SeeDNorm(12, num_heads=3), nn.Linear(12, 5)).eval()
    with torch.no_grad():
        model[1].beta.normal_()
    traced = torch.fx.symbolic_trace(model)
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and "seednorm" in str(n.target)]
    assert len(calls) == 1
    x = torch.randn(4, 7, 12)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


def test_dynamic_parameters_is_the_one_registry_of_alpha_and_beta():
    shared = SeeDNorm(8)
    model = nn.ModuleDict({"a": shared, "b": shared, "ada": AdaSeeDNorm(8), "rms": RMSNorm(8), "lin": nn.Linear(8, 8)})
    assert seednorm.dynamic_parameters(model) == {"a.alpha": "alpha", "a.beta": "beta", "ada.alpha": "alpha",
                                                  "ada.beta": "beta"}


def test_dynamic_parameters_follows_a_subclass_that_renames_beta():
    class Renamed(SeeDNorm):  # as the transformers integration stores β under another name
        def __init__(self, dim):
            super().__init__(dim)
            self.renamed_beta = self._parameters.pop("beta")

        @property
        def beta(self):
            return self.renamed_beta

    model = nn.Sequential(Renamed(6))
    assert seednorm.dynamic_parameters(model) == {"0.alpha": "alpha", "0.renamed_beta": "beta"}
    groups = {g["name"]: g["params"] for g in seednorm.param_groups(model, 0.1)}
    assert {id(p) for p in groups["seednorm"]} == {id(model[0].alpha), id(model[0].renamed_beta)}
