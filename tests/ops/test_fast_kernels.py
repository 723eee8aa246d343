"""Faster kernels against their reference forward (STYLE.md habit 4)."""

import numpy as np
import pytest

from ember.backend import numpy_backend
from ember.ops.elementwise import ERF


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_erf_matches_reference(dtype):
    pytest.importorskip("numba", reason="the fast erf kernel needs numba (the `fast` extra)")
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30,
                                                    -1e-8]]).astype(dtype)
    fast = ERF.kernels["numpy"](numpy_backend.backend.xp, x)
    ref = ERF.forward(numpy_backend.backend.xp, x)
    assert fast.dtype == ref.dtype == dtype
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    ok = ~np.isnan(ref)
    rel = np.abs(fast[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), np.finfo(dtype).tiny)
    print(dtype.__name__, "max relative error", rel.max())
    assert rel.max() <= (2 * np.finfo(dtype).eps)
    assert np.signbit(fast[x == 0]).tolist() == np.signbit(ref[x == 0]).tolist()
