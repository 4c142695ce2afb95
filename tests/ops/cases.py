"""Cases shared by the in-process tests of the fused op and the Triton interpreter run (``interpret_check.py``).

Each case runs forward and backward through ``seednorm.seednorm(impl=...)`` and compares y, x + residual and all
gradients (x, γ, α, β, bias, residual) with the float64 closed forms of ``tests/reference.py``. A case with
dynamic dropout runs in training from a fixed seed; the reference gets the mask that seed draws
(``seednorm.functional.dynamic_dropout_mask``), so the fused path must use the same draws and the same mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from reference import seednorm_ref, seednorm_ref_grads

import seednorm
from seednorm.functional import dynamic_dropout_mask

# Relative tolerance of a result computed in float32 and returned in each dtype (as in test_functional.py).
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
EPS = 1e-5


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    num_heads: int = 1
    activation: str = "tanh"
    dtype: torch.dtype = torch.float32
    param_dtype: torch.dtype = torch.float32
    weight: bool = True
    residual: bool = False
    dot_scale: float = 1.0
    layout: str = "contiguous"  # "rows": a row stride wider than D; "transposed": strided in every dim
    center: bool = False  # the centering form (spec §6)
    bias: bool = False
    dropout: float = 0.0  # dynamic dropout (spec §4), in training

    @property
    def id(self) -> str:
        parts = ["x".join(map(str, self.shape)), f"h{self.num_heads}", self.activation, str(self.dtype)[6:]]
        parts += [f"p{str(self.param_dtype)[6:]}"] if self.param_dtype != torch.float32 else []
        parts += [] if self.weight else ["noweight"]
        parts += ["residual"] if self.residual else []
        parts += [self.layout] if self.layout != "contiguous" else []
        parts += ["center"] if self.center else []
        parts += ["bias"] if self.bias else []
        parts += [f"drop{self.dropout}"] if self.dropout else []
        return "-".join(parts)


CASES = [
    Case((5, 123)),
    Case((3, 7, 256), num_heads=4, activation="sigmoid", residual=True),
    Case((2, 96), num_heads=3, activation="hardtanh", weight=False, layout="rows"),
    Case((4, 64), num_heads=2, activation="softsign", dtype=torch.bfloat16, residual=True),
    Case((6, 200), num_heads=8, dtype=torch.float16, dot_scale=0.04, layout="transposed"),
    Case((3, 48), param_dtype=torch.bfloat16),
    Case((1, 1)),
    # the vision recipe (dynamic dropout) and the centering/bias form of converted LayerNorms
    Case((5, 123), center=True, bias=True),
    Case((3, 7, 96), num_heads=4, activation="sigmoid", residual=True, dropout=0.25),
    Case((2, 96), num_heads=3, activation="hardtanh", weight=False, layout="rows", bias=True, dropout=0.3),
    Case((4, 64), num_heads=2, activation="softsign", dtype=torch.bfloat16, residual=True, center=True, bias=True,
         dropout=0.1),
    Case((6, 200), num_heads=8, dtype=torch.float16, dot_scale=0.04, layout="transposed", center=True, dropout=0.5),
    Case((3, 48), param_dtype=torch.bfloat16, center=True, bias=True, dropout=0.2),
    # no rows at all (an empty batch, an empty spatial dim): y and dx empty, parameter gradients zeros of shape (D,)
    Case((0, 16), num_heads=2, residual=True, center=True, bias=True, dropout=0.3),
    Case((2, 0, 48), num_heads=4, activation="sigmoid", center=True, bias=True, dropout=0.5),
]


def make_inputs(case: Case, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """x (with the case's layout), residual, γ, α, β, dy; β large enough that σ is far from linear."""
    g = torch.Generator().manual_seed(seed)
    d = case.shape[-1]
    if case.layout == "rows":
        x = (3 * torch.randn(*case.shape[:-1], 2 * d, generator=g)).to(device, case.dtype)[..., :d]
    elif case.layout == "transposed":
        x = (3 * torch.randn(*reversed(case.shape), generator=g)).to(device, case.dtype).t()
    else:
        x = (3 * torch.randn(case.shape, generator=g)).to(device, case.dtype)
    p = case.param_dtype
    inputs = {
        "x": x,
        "residual": torch.randn(case.shape, generator=g).to(case.dtype),
        "weight": (1 + 0.5 * torch.randn(d, generator=g)).to(p),
        "alpha": (1 + 0.5 * torch.randn(d, generator=g)).to(p),
        "beta": (2 * torch.randn(d, generator=g) / math.sqrt(d)).to(p),
        "dy": torch.randn(case.shape, generator=g).to(case.dtype),
        "dsummed": torch.randn(case.shape, generator=g).to(case.dtype),
        "bias": torch.randn(d, generator=g).to(p),
    }
    return {k: v if k == "x" else v.to(device) for k, v in inputs.items()}


def _error(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> str | None:
    """None, or a message when |actual − expected| > rtol · (max|expected| + 1) somewhere."""
    err = (actual.double() - expected).abs().max().item() if expected.numel() else 0.0
    bound = rtol * ((expected.abs().max().item() if expected.numel() else 0.0) + 1)
    return None if err <= bound else f"max error {err:.3g} > {bound:.3g}"


DROPOUT_SEED = 1234


def check(case: Case, impl: str, device: str = "cpu") -> dict[str, str]:
    """Run the case through ``impl`` on ``device``; returns {quantity: failure message} (empty when all agree)."""
    inp = make_inputs(case, device)
    names = ["x", "weight", "alpha", "beta"] + (["residual"] if case.residual else []) + (["bias"] if case.bias else [])
    leaves = {k: inp[k].detach().clone().requires_grad_() for k in names}
    weight = leaves["weight"] if case.weight else None
    kw = {"num_heads": case.num_heads, "eps": EPS, "activation": case.activation, "dot_scale": case.dot_scale}
    options = {"center": case.center, "bias": leaves.get("bias")}
    torch.manual_seed(DROPOUT_SEED)
    out = seednorm.seednorm(leaves["x"], weight, leaves["alpha"], leaves["beta"], impl=impl,
                            residual=leaves.get("residual"), dynamic_dropout=case.dropout, training=True,
                            **options, **kw)
    keep = None
    if case.dropout:  # the mask the same seed draws: what the reference applies
        torch.manual_seed(DROPOUT_SEED)
        keep = dynamic_dropout_mask(torch.empty(case.shape, dtype=case.dtype, device=device), case.dropout).cpu()
    y, summed = out if case.residual else (out, None)
    loss = (y.double() * inp["dy"].double()).sum()
    if case.residual:
        loss = loss + (summed.double() * inp["dsummed"].double()).sum()
    loss.backward()
    inp = {k: v.cpu() for k, v in inp.items()}

    x = seednorm.ops.residual_sum(inp["x"], inp["residual"]) if case.residual else inp["x"]
    gamma = inp["weight"] if case.weight else torch.ones(case.shape[-1])
    ref_kw = {**kw, "keep": keep, "center": case.center, "bias": inp["bias"] if case.bias else None}
    ref = {"y": seednorm_ref(x, gamma, inp["alpha"], inp["beta"], **ref_kw)}
    ref.update(seednorm_ref_grads(x, gamma, inp["alpha"], inp["beta"], inp["dy"], **ref_kw))
    if case.residual:
        ref["x"] = ref["residual"] = ref["x"] + inp["dsummed"].double()
        ref["summed"] = x.double()
    rx, rp = RTOL[case.dtype], max(RTOL[case.dtype], RTOL[case.param_dtype])
    got = {"y": (y, rx), "x": (leaves["x"].grad, 10 * rx), "alpha": (leaves["alpha"].grad, 10 * rp),
           "beta": (leaves["beta"].grad, 10 * rp)}
    if case.weight:
        got["weight"] = (leaves["weight"].grad, 10 * rp)
    if case.bias:
        got["bias"] = (leaves["bias"].grad, 10 * rp)
    if case.residual:
        got["summed"] = (summed, rx)
        got["residual"] = (leaves["residual"].grad, 10 * rx)
    failures = {}
    for name, (value, rtol) in got.items():
        value = None if value is None else value.cpu()
        expected_dtype = inp[name].dtype if name in inp else case.dtype
        if value is None or value.shape != ref[name].shape or value.dtype != expected_dtype:
            failures[name] = f"bad result {None if value is None else (tuple(value.shape), value.dtype)}"
        elif (msg := _error(value, ref[name], rtol)) is not None:
            failures[name] = msg
    if not case.weight and leaves["weight"].grad is not None:
        failures["weight"] = "unused weight got a gradient"
    return failures


# ------------------------------------------------------------------------------------------------------------
# Non-finite values: one NaN or ±Inf in x or in a parameter, every activation, every implementation.

NONFINITE_PLACES = ("x", "weight", "alpha", "beta")
NONFINITE_VALUES = (math.nan, math.inf, -math.inf)
BAD_ROW, BAD_COL = 1, 5


def nonfinite_id(activation: str, place: str, value: float) -> str:
    return f"{activation}-{place}-{value}"


def _pattern(t: torch.Tensor) -> torch.Tensor:
    """(3, ...) booleans: where t is NaN, +Inf, −Inf."""
    return torch.stack([t.isnan(), t == math.inf, t == -math.inf])


def _compare(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> dict[str, str]:
    """Same NaN/±Inf positions, and the finite elements within ``rtol``."""
    actual, expected = actual.detach().cpu().double(), expected.detach().double()
    if not torch.equal(_pattern(actual), _pattern(expected)):
        return {name: f"non-finite pattern {_pattern(actual).flatten(1).sum(1).tolist()} (NaN, +Inf, -Inf counts) "
                      f"differs from the reference's {_pattern(expected).flatten(1).sum(1).tolist()}"}
    finite = expected.isfinite()
    msg = _error(actual[finite], expected[finite], rtol)
    return {} if msg is None else {name: msg}


def check_nonfinite(activation: str, place: str, value: float, impl: str, device: str = "cpu") -> dict[str, str]:
    """One non-finite element in ``place`` (x at row BAD_ROW, or a parameter at channel BAD_COL): y (and, for the
    fused impls, all gradients) has the float64 reference's NaN/±Inf positions and its finite values. With the bad
    element in x, that means the bad row is non-finite and every other row of y is untouched.

    The reference impl's gradients are PyTorch autograd's, which has conventions of its own at non-finite points
    (hardtanh's backward passes or zeroes a NaN gradient by a comparison); only its y is checked.
    """
    case = Case((4, 12), num_heads=2, activation=activation)
    inp = make_inputs(case)
    inp["x"][BAD_ROW, BAD_COL] = value if place == "x" else inp["x"][BAD_ROW, BAD_COL]
    if place != "x":
        inp[place][BAD_COL] = value
    kw = {"num_heads": case.num_heads, "eps": EPS, "activation": activation}
    leaves = {k: inp[k].detach().clone().to(device).requires_grad_() for k in ("x", "weight", "alpha", "beta")}
    y = seednorm.seednorm(leaves["x"], leaves["weight"], leaves["alpha"], leaves["beta"], impl=impl, **kw)
    y.backward(inp["dy"].to(device))
    ref = {"y": seednorm_ref(inp["x"], inp["weight"], inp["alpha"], inp["beta"], **kw)}
    ref.update(seednorm_ref_grads(inp["x"], inp["weight"], inp["alpha"], inp["beta"], inp["dy"], **kw))
    rtol = RTOL[case.dtype]
    failures = _compare("y", y, ref["y"], rtol)
    for name, leaf in leaves.items() if impl != "reference" else ():
        failures.update(_compare(name, leaf.grad, ref[name], 10 * rtol))
    if place == "x":  # the promise itself, spelled out: the bad row is non-finite, the others are finite
        rows = y.detach().cpu().isfinite().all(-1)
        if rows[BAD_ROW] or not rows[torch.arange(4) != BAD_ROW].all():
            failures["rows"] = f"finite rows {rows.tolist()}: only row {BAD_ROW} may be non-finite"
    return failures
