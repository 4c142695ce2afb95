"""The GPU script's smoke stage (under a minute): seednorm imports, Triton compiles and runs a trivial kernel, and one
forward/backward of SeeDNorm with impl="triton" matches impl="reference" in float32.

    python benchmarks/gpu_smoke.py --device cuda
    TRITON_INTERPRET=1 python benchmarks/gpu_smoke.py --device cpu     # the dry run: Triton's interpreter

A file, not a heredoc: ``triton.jit`` reads its kernel's source. Exit 0 when every check passes, 1 (one line naming
the step that failed) otherwise.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    device = p.parse_args().device
    step = "import torch, triton and seednorm"
    try:
        import torch
        import triton
        import triton.language as tl

        import seednorm

        step = "a trivial Triton kernel (compile and run)"

        @triton.jit
        def _add_one(X, N: tl.constexpr):
            offs = tl.arange(0, N)
            tl.store(X + offs, tl.load(X + offs) + 1.0)

        ones = torch.zeros(128, device=device)
        _add_one[(1,)](ones, N=128)
        if device == "cuda":
            torch.cuda.synchronize()
        assert torch.equal(ones, torch.ones_like(ones)), "the kernel ran but wrote wrong values"

        step = "SeeDNorm impl='triton' vs impl='reference' (float32, forward and backward)"
        torch.manual_seed(0)
        x = torch.randn(64, 1024, device=device)
        dy = torch.randn_like(x)
        results = {}
        for impl in ("reference", "triton"):
            layer = seednorm.SeeDNorm(1024, num_heads=2, impl=impl, device=device)
            with torch.no_grad():  # the same β for both: σ away from 0, so α and β matter
                layer.beta.copy_(torch.linspace(-0.1, 0.1, 1024))
            xi = x.clone().requires_grad_()
            y = layer(xi)
            y.backward(dy)
            results[impl] = [y, xi.grad, layer.weight.grad, layer.alpha.grad, layer.beta.grad]
        for name, ref, out in zip(("y", "dx", "dγ", "dα", "dβ"), results["reference"], results["triton"],
                                  strict=True):
            err = (out - ref).abs().max().item() / (ref.abs().max().item() + 1)
            assert err <= 1e-4, f"{name}: relative error {err:.1e} > 1e-4"
    except Exception as err:
        print(f"smoke: {step} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"smoke: ok on {device} (torch {torch.__version__}, triton {triton.__version__}, seednorm from "
          f"{seednorm.__file__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
