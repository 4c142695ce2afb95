"""The fused op on DTensors (2 CPU processes over gloo): sharded on a leading dim it runs on each rank's rows and
gives the plain tensor path's output and gradients; sharded on the last dim it is redistributed, never wrong."""

from __future__ import annotations

import torch
from gloo import run_ranks
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from seednorm.functional import seednorm

SHAPE = (4, 6, 24)  # (batch, seq, D): both leading dims split over 2 ranks


def _inputs(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g).to(dtype)
    res = torch.randn(SHAPE, generator=g).to(dtype)
    dy = torch.randn(SHAPE, generator=g).to(dtype)
    w = 1 + 0.1 * torch.randn(SHAPE[-1], generator=g)
    a = 1 + 0.1 * torch.randn(SHAPE[-1], generator=g)
    b = 0.2 * torch.randn(SHAPE[-1], generator=g)
    c = 0.1 * torch.randn(SHAPE[-1], generator=g)
    return x, res, dy, w, a, b, c


def _run(x, res, dy, params, impl, num_heads, with_residual, center=False):
    x = x.detach().requires_grad_()
    res = res.detach().requires_grad_() if with_residual else None
    out = seednorm(x, *params, num_heads=num_heads, eps=1e-6, residual=res, impl=impl, center=center)
    y, summed = out if with_residual else (out, None)
    loss = (y.float() * dy.float()).sum() + (0 if summed is None else summed.float().square().sum())
    loss.backward()
    grads = [x.grad] + [p.grad for p in params] + ([res.grad] if with_residual else [])
    return y, summed, grads


def _sharded_vs_plain(rank: int, world_size: int) -> None:
    mesh = init_device_mesh("cpu", (world_size,))
    x, res, dy, w, a, b, c = _inputs(torch.float32)
    for impl, num_heads, with_residual, dim, center in [
        ("cpp", 1, False, 0, False), ("cpp", 2, True, 1, False), ("cpp", 1, True, 2, False), ("cpp", 2, True, 0, True),
    ]:
        what = f"impl={impl} heads={num_heads} residual={with_residual} Shard({dim}) center={center}"
        tensors = (w, a, b, c) if center else (w, a, b)  # the centering form with its bias
        plain = [p.clone().requires_grad_() for p in tensors]
        y_ref, s_ref, g_ref = _run(x, res, dy, plain, impl, num_heads, with_residual, center)

        params = [distribute_tensor(p.clone(), mesh, [Replicate()]).requires_grad_() for p in tensors]
        xd, rd, dyd = (distribute_tensor(t, mesh, [Shard(dim)]) for t in (x, res, dy))
        y, summed, grads = _run(xd, rd, dyd, params, impl, num_heads, with_residual, center)

        assert isinstance(y, DTensor), what
        if dim < len(SHAPE) - 1:  # a leading dim: the op ran on each rank's rows, nothing gathered
            assert y.placements == (Shard(dim),), (what, y.placements)
            assert grads[0].placements == (Shard(dim),), (what, grads[0].placements)
        torch.testing.assert_close(y.full_tensor(), y_ref, rtol=1e-6, atol=1e-6, msg=what)
        if with_residual:
            torch.testing.assert_close(summed.full_tensor(), s_ref, rtol=0, atol=0, msg=what)
        names = ["x", "weight", "alpha", "beta"] + (["bias"] if center else []) + ["residual"]
        for got, want, name in zip(grads, g_ref, names, strict=False):
            assert isinstance(got, DTensor), (what, name)
            torch.testing.assert_close(got.full_tensor(), want, rtol=1e-5, atol=1e-5, msg=f"{what}: d{name}")


    # Dynamic dropout: the mask is a DTensor placed like x, drawn by each rank from its generator, so one seed gives
    # the fused and the reference paths the same result.
    xd = distribute_tensor(3 * x, mesh, [Shard(0)])
    params = [distribute_tensor(p, mesh, [Replicate()]) for p in (w, a, b)]
    outs = []
    for impl in ("cpp", "reference"):
        torch.manual_seed(rank)
        outs.append(seednorm(xd, *params, num_heads=2, eps=1e-6, dynamic_dropout=0.5, training=True, impl=impl))
    assert outs[0].placements == (Shard(0),)
    torch.testing.assert_close(outs[0].full_tensor(), outs[1].full_tensor(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(outs[0].full_tensor(), seednorm(3 * x, w, a, b, num_heads=2, eps=1e-6))  # it dropped


def test_dtensor_through_fused_op_equals_plain_path():
    run_ranks(_sharded_vs_plain)


PLACEMENTS = [Replicate(), Shard(0), Shard(1), Shard(2)]  # every layout the rules cover; Shard(2) is redistributed
USES = ["both", "normalized only", "sum only"]  # which outputs the loss uses: the final norm of a pre-norm stack
# uses only y, and autograd hands the unused output a plain zero (or no) gradient


def _residual_loss(x, res, dy, params, use: str):
    x, res = x.detach().requires_grad_(), res.detach().requires_grad_()
    y, summed = seednorm(x, *params, num_heads=2, eps=1e-6, residual=res, impl="cpp")
    loss = (y * dy).sum() if use != "sum only" else 0
    loss = loss + (summed.square().sum() if use != "normalized only" else 0)
    loss.backward()
    return [x.grad, res.grad] + [p.grad for p in params]


def _unused_residual_output(rank: int, world_size: int) -> None:
    mesh = init_device_mesh("cpu", (world_size,))
    x, res, dy, w, a, b, _c = _inputs(torch.float32)
    names = ["x", "residual", "weight", "alpha", "beta"]
    for placement in PLACEMENTS:
        for use in USES:
            what = f"{placement} loss uses {use}"
            want = _residual_loss(x, res, dy, [p.clone().requires_grad_() for p in (w, a, b)], use)
            params = [distribute_tensor(p.clone(), mesh, [Replicate()]).requires_grad_() for p in (w, a, b)]
            xd, rd, dyd = (distribute_tensor(t, mesh, [placement]) for t in (x, res, dy))
            got = _residual_loss(xd, rd, dyd, params, use)
            for g, ref, name in zip(got, want, names, strict=True):
                assert isinstance(g, DTensor), (what, name)
                torch.testing.assert_close(g.full_tensor(), ref, rtol=1e-5, atol=1e-5, msg=f"{what}: d{name}")


def test_dtensor_residual_with_an_unused_output_has_the_plain_gradients():
    run_ranks(_unused_residual_output)


def test_sharding_rules_registered_with_partial_parameter_gradients():
    """The backward rule reduces dγ, dα, dβ (and db) over ranks (Partial), and accepts a Shard of every leading dim;
    the dropout mask and the row mean are sharded like the rows."""
    from torch.distributed.tensor._api import DTensor as _DT

    rules = _DT._op_dispatcher.sharding_propagator.op_strategy_funcs
    assert torch.ops.seednorm.forward.default in rules
    assert torch.ops.seednorm.backward.default in rules
    from seednorm.ops import sharding

    class Spec:  # what DTensor hands the rule: something with a shape
        def __init__(self, *shape):
            self.shape = torch.Size(shape)

    x, p = Spec(2, 3, 8), Spec(8)
    fwd = sharding._forward_sharding(x, p, p, p, None, None, None, 1, 1e-6, "tanh", 1.0, False, "cpp")
    assert [o for o, _ in fwd] == [[Replicate()] * 5, [Shard(0)] * 3 + [Replicate()] * 2,
                                   [Shard(1)] * 3 + [Replicate()] * 2]
    bwd = sharding._backward_sharding(x, x, p, p, p, None, None, Spec(2, 3), Spec(2, 3, 1), None, None, 1, "tanh",
                                      1.0, "cpp")
    assert bwd[1][0] == [Shard(0), Partial(), Partial(), Partial(), Replicate()]
    # the vision recipe and the centering form: mask in, mean out, both by rows; the bias's gradient summed
    fwd_c = sharding._forward_sharding(x, p, p, p, p, x, x, 1, 1e-6, "tanh", 1.0, True, "cpp")
    assert fwd_c[1][0] == [Shard(0)] * 5
    assert fwd_c[1][1] == [Shard(0), Replicate(), Replicate(), Replicate(), Replicate(), Shard(0), Shard(0), None,
                           None, None, None, None, None]
    bwd_c = sharding._backward_sharding(x, x, p, p, p, p, x, Spec(2, 3), Spec(2, 3, 1), Spec(2, 3), x, 1, "tanh",
                                        1.0, "cpp")
    assert bwd_c[1][0] == [Shard(0), Partial(), Partial(), Partial(), Partial()]
    assert [bwd_c[1][1][i] for i in (6, 9, 10)] == [Shard(0)] * 3
    assert all(Shard(2) not in outs for outs, _ in fwd + bwd + fwd_c + bwd_c)  # never split a row's D across ranks
