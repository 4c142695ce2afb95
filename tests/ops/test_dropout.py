"""Dynamic dropout generated inside the kernels (seednorm.ops.philox): the C++, Triton (under TRITON_INTERPRET=1) and
compiled kernels and the reference's explicit mask agree bit for bit for a (seed, offset); keep rates are binomial;
forward and backward use the same mask; torch.manual_seed reproduces it, successive calls and DTensor shards differ.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import RTOL, Case, check
from dropout_cases import MASK_CASES, one_row, revealed_grad_mask, revealed_mask
from gloo import run_ranks
from reference import seednorm_ref, seednorm_ref_grads

import seednorm
from seednorm import ops
from seednorm.ops import philox

HERE = Path(__file__).parent
FUSED = ["cpp", "compiled"]


def _expected(case: dict) -> torch.Tensor:
    rows = case.get("rows")
    rows = None if rows is None else torch.tensor(rows, dtype=torch.int64).view(case["shape"][:-1])
    return philox.keep_mask(torch.tensor(case["rng"]), case["shape"], case["p"], rows=rows)


def test_philox_is_the_standard_philox4x32_10():
    """Random123's known answer for counter 0, key 0 (kat_vectors: philox4x32_10), all four words."""
    words = philox.philox4x32(0, torch.zeros(1, dtype=torch.int64))
    assert [w.item() for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_reference_mask_takes_the_words_in_stream_order():
    """keep_mask: stream position e = offset + i takes word e mod 4 of Philox(e >> 2) (the words of
    ``tl.randint4x``, checked bit for bit under the interpreter in test_triton_masks_equal_cpp_and_reference); an
    element is kept when the word's top 31 bits reach the threshold, as 1/(1 − p)."""
    rng = torch.tensor([3, 10])
    position = rng[1] + torch.arange(2 * 7)
    quads = philox.philox4x32(rng[0], position >> 2)
    words = torch.stack(quads, -1).gather(-1, (position & 3).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(philox.random_words(rng[0], position), words)
    mask = philox.keep_mask(rng, (2, 7), 0.25)
    assert torch.equal(mask.flatten() != 0, (words >> 1) >= philox.threshold(0.25))
    assert set(mask.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75, dtype=torch.float32).item()}


# The compiled path runs keep_mask itself through Inductor (each probability compiles its own copy, ~20 s on 2
# cores): the largest seed and offset, and given rows.
KERNEL_MASK_CASES = [("cpp", key) for key in MASK_CASES] + [("compiled", "largest"), ("compiled", "rows")]


@pytest.mark.parametrize(("impl", "key"), KERNEL_MASK_CASES)
def test_kernel_masks_equal_the_reference_mask(impl, key):
    """Forward and backward: the mask the kernels generate is ``keep_mask``'s for the same (seed, offset, rows)."""
    case = MASK_CASES[key]
    assert torch.equal(revealed_mask(impl, **case), _expected(case))
    row = one_row(case)
    assert torch.equal(revealed_grad_mask(impl, **row), _expected(row)[0])


@pytest.fixture(scope="module")
def interpreted() -> dict[str, list]:
    pytest.importorskip("triton")
    src = Path(seednorm.__file__).resolve().parents[1]
    path = os.pathsep.join([str(src), str(HERE.parent), str(HERE)])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(HERE / "dropout_interpret_check.py")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["row", "chunked"])
@pytest.mark.parametrize("key", list(MASK_CASES))
def test_triton_masks_equal_cpp_and_reference(interpreted, layout, key):
    """Triton's generated masks (forward, and backward for one row) equal the C++ kernels' and the reference's."""
    case = MASK_CASES[key]
    want = _expected(case)
    assert torch.equal(torch.tensor(interpreted[f"{layout}-{key}"]), want)
    assert torch.equal(revealed_mask("cpp", **case), want)
    assert torch.equal(torch.tensor(interpreted[f"{layout}-grad-{key}"]), _expected(one_row(case))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("key", list(MASK_CASES))
def test_gpu_triton_masks_equal_the_reference_mask(key):
    """On a GPU: the Triton kernels' masks (forward; backward for one row) are keep_mask's bit for bit, and a layer
    call from a seed draws on the CUDA generator what dynamic_dropout_mask draws."""
    case = MASK_CASES[key]
    assert torch.equal(revealed_mask("triton", **case, device="cuda"), _expected(case))
    row = one_row(case)
    assert torch.equal(revealed_grad_mask("triton", **row, device="cuda"), _expected(row)[0])
    torch.manual_seed(4)
    got = revealed_mask("triton", (5, 77), 0.2, device="cuda")
    torch.manual_seed(4)
    want = seednorm.functional.dynamic_dropout_mask(torch.empty(5, 77, device="cuda"), 0.2).cpu()
    assert torch.equal(got, want)


def _binomial_bound(n: int, q: float) -> float:
    """|count − n·q| stays below this for Binomial(n, q) but with probability < 1e-9 (6.1 standard deviations)."""
    return 6.1 * math.sqrt(n * q * (1 - q)) + 1


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_keep_rate_is_binomial(p):
    """Over 601 × 1001 elements from the C++ kernels, with q = ⌊p·2³¹⌋/2³¹ the drop probability: the dropped count
    and the count per block of columns are within binomial bounds of q, pairs of neighbours both dropped
    (independence) within bounds of q²; kept elements are 1/(1 − p) in float32."""
    mask = revealed_mask("cpp", (601, 1001), p, rng=[2024, 17])
    q = philox.threshold(p) / 2**31
    assert abs(q - p) < 1e-9
    dropped = mask == 0
    n = dropped.numel()
    assert abs(dropped.sum().item() - n * q) < _binomial_bound(n, q)
    for block in dropped.split(143, dim=1):  # 7 blocks of columns: no column range favoured
        assert abs(block.sum().item() - block.numel() * q) < _binomial_bound(block.numel(), q)
    both = dropped[:, 1:] & dropped[:, :-1]  # dependent pairs: the bound on a sum of 1-dependent terms is wider
    assert abs(both.sum().item() - both.numel() * q * q) < 2 * _binomial_bound(both.numel(), q * q)
    kept = mask[~dropped]
    assert torch.equal(kept, torch.full_like(kept, torch.tensor(1 / (1 - p), dtype=torch.float32).item()))


@pytest.mark.parametrize("impl", ["reference", *FUSED])
def test_manual_seed_reproduces_and_calls_differ(impl):
    """The same seed gives the same mask; each call advances torch's generator by one (seed, offset) draw, so a
    second call gets another mask; and every path (reference too) draws the same mask from a seed."""
    shape = (9, 31)
    torch.manual_seed(5)
    first, second = revealed_mask(impl, shape, 0.3), revealed_mask(impl, shape, 0.3)
    after = torch.rand(3)
    torch.manual_seed(5)
    again = revealed_mask(impl, shape, 0.3)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    torch.manual_seed(5)
    rng = philox.draw("cpu")
    assert torch.equal(first, philox.keep_mask(rng, shape, 0.3))
    assert torch.equal(second, philox.keep_mask(philox.draw("cpu"), shape, 0.3))
    assert torch.equal(torch.rand(3), after)  # advanced by the two draws alone


@pytest.mark.parametrize(("impl", "dtype"), [("cpp", torch.float32), ("cpp", torch.bfloat16),
                                             ("compiled", torch.float32)], ids=str)
@pytest.mark.parametrize("center", [False, True], ids=["rms", "center"])
def test_gradients_equal_the_reference_given_the_kernels_mask(impl, dtype, center):
    """Odd shapes, heads, residual: y and every gradient of the fused op with in-kernel dropout against the float64
    closed forms given ``keep_mask`` of the same (seed, offset): the backward regenerates the forward's mask."""
    shape, heads, p = (3, 5, 63), 7, 0.37
    case = Case(shape, num_heads=heads, dtype=dtype, residual=True, bias=True, center=center)
    g = torch.Generator().manual_seed(1)
    x, res, dy = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))
    w, a, b, c = (0.5 * torch.randn(shape[-1], generator=g) + add for add in (1, 1, 0, 0))
    leaves = {k: v.clone().requires_grad_() for k, v in {"x": x, "weight": w, "alpha": a, "beta": b, "bias": c,
                                                          "residual": res}.items()}
    rng = torch.tensor([0xDEADBEEF12345, 999])
    kw = {"num_heads": heads, "eps": 1e-5, "activation": "tanh", "dot_scale": 0.3}
    y, _summed = ops.seednorm_fused(leaves["x"], leaves["weight"], leaves["alpha"], leaves["beta"],
                                    leaves["residual"], impl=impl, bias=leaves["bias"], center=center, rng=rng,
                                    dropout=p, **kw)
    (y.double() * dy.double()).sum().backward()
    summed = ops.residual_sum(x, res)
    keep = philox.keep_mask(rng, shape, p)
    ref_kw = {**kw, "keep": keep, "center": center, "bias": c}
    ref = seednorm_ref_grads(summed, w, a, b, dy, **ref_kw)
    ref["y"], ref["residual"] = seednorm_ref(summed, w, a, b, **ref_kw), ref["x"]
    for name, got in {"y": y, **{k: v.grad for k, v in leaves.items()}}.items():
        tol = RTOL[case.dtype] * (1 if name == "y" else 10)
        torch.testing.assert_close(got.double(), ref[name], rtol=0, atol=tol * (ref[name].abs().max().item() + 1),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("impl", FUSED)
def test_layer_equals_the_reference_with_a_seed(impl):
    """A training call from a seed on a fused path against the reference path from the same seed (cases.check: the
    reference gets ``dynamic_dropout_mask`` of that seed), an odd shape with every option."""
    case = Case((2, 3, 45), num_heads=5, activation="softsign", residual=True, center=True, bias=True, dropout=0.45)
    assert check(case, impl) == {}


def test_torch_compile_traces_the_draw_without_a_graph_break():
    """fullgraph=True traces the (seed, offset) draw and the op; with the eager backend the compiled call draws what
    the eager call draws from a seed, gradients included."""
    layer = seednorm.SeeDNorm(30, num_heads=3, dynamic_dropout=0.4, impl="cpp").train()
    with torch.no_grad():
        layer.beta.normal_(0, 0.5)
    x = torch.randn(4, 7, 30)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    outs = []
    for fn in (layer, compiled, compiled):
        layer.zero_grad()
        torch.manual_seed(11)
        y = fn(x)
        y.square().sum().backward()
        outs.append((y.detach(), layer.alpha.grad.clone()))
    for y, grad in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(grad, outs[0][1])


def test_dynamic_shapes_trace_the_generated_mask():
    """With a symbolic number of rows the traced op draws and applies the eager call's mask, for two numbers of
    rows."""
    layer = seednorm.SeeDNorm(24, num_heads=2, dynamic_dropout=0.3, impl="cpp").train()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    for rows in (5, 9):
        x = torch.randn(2, rows, 24)
        torch._dynamo.mark_dynamic(x, 1)
        outs = []
        for fn in (layer, compiled):
            torch.manual_seed(2)
            outs.append(fn(x))
        torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------
# DTensor: 2 CPU ranks over gloo


def _dtensor_masks(rank: int, world_size: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world_size,))
    shape, p = (4, 6, 24), 0.5
    d = shape[-1]
    gamma, alpha, beta = torch.zeros(d), torch.ones(d), torch.zeros(d)
    params = [distribute_tensor(t, mesh, [Replicate()]) for t in (gamma, alpha, beta)]
    kw = {"eps": 1e-30, "activation": "sigmoid", "dynamic_dropout": p, "training": True}
    for impl in ("cpp", "reference"):
        torch.manual_seed(0)
        plain = 2 * seednorm.seednorm(torch.ones(shape), gamma, alpha, beta, impl=impl, **kw)
        for placement in (Shard(0), Shard(1), Shard(2), Replicate()):
            what = f"{impl} {placement}"
            torch.manual_seed(0)  # every rank alike, as DTensor's random ops require
            x = distribute_tensor(torch.ones(shape), mesh, [placement])
            mask = 2 * seednorm.seednorm(x, *params, impl=impl, **kw)
            assert isinstance(mask, DTensor), what
            # each shard drew its own part of the one mask of the whole tensor
            assert torch.equal(mask.full_tensor(), plain), what
            local = mask.to_local().contiguous()
            gathered = [torch.empty_like(local) for _ in range(world_size)]
            torch.distributed.all_gather(gathered, local)
            # sharded: no two ranks' masks equal; replicated (a shard of D is redistributed to whole rows): all equal
            assert torch.equal(gathered[0], gathered[1]) != mask.placements[0].is_shard(), (what, mask.placements)

    # Gradients through a sharded input with dropout equal the plain tensor's.
    g = torch.Generator().manual_seed(3)
    x, dy = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    b = 0.3 * torch.randn(d, generator=g)
    grads = []
    for sharded in (False, True):
        leaves = [t.clone().requires_grad_() for t in (x, torch.ones(d), torch.ones(d), b)]
        inputs = [distribute_tensor(t.detach(), mesh, [Shard(1) if i == 0 else Replicate()]).requires_grad_()
                  for i, t in enumerate(leaves)] if sharded else leaves
        torch.manual_seed(0)
        y = seednorm.seednorm(inputs[0], *inputs[1:], num_heads=2, eps=1e-6, dynamic_dropout=0.3, training=True,
                              impl="cpp")
        target = distribute_tensor(dy, mesh, [Shard(1)]) if sharded else dy
        (y * target).sum().backward()
        grads.append([t.grad.full_tensor() if sharded else t.grad for t in inputs])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dtensor_shards_draw_their_own_part_of_one_mask():
    """Sharded on any dim, each rank generates its rows' part of the mask the unsharded tensor gets from the same
    seed (so no two ranks are equal), replicated ranks the same mask; gradients equal the plain tensor's."""
    run_ranks(_dtensor_masks)
