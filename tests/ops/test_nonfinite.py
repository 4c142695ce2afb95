"""NaN and ±Inf are never masked, on any path: one non-finite element in x or a parameter gives every
implementation the float64 reference's NaN/±Inf positions (in y and in all gradients) and its finite values.

The Triton kernels run the same cases under the CPU interpreter (interpret_check.py, checked in test_triton.py).
"""

from __future__ import annotations

import pytest
from cases import NONFINITE_PLACES, NONFINITE_VALUES, check_nonfinite

from seednorm.ops.sigma import ACTIVATIONS


@pytest.mark.parametrize("value", NONFINITE_VALUES, ids=str)
@pytest.mark.parametrize("place", NONFINITE_PLACES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("impl", ["reference", "cpp", "compiled"])
def test_nonfinite_values_propagate_like_the_reference(impl, activation, place, value):
    assert check_nonfinite(activation, place, value, impl) == {}
