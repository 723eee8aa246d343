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


@pytest.mark.parametrize("source,shape", [((), (4,)), ((1,), (3, 4)), ((3, 1), (2, 3, 5)),
                                          ((2, 3), (2, 3)), ((1, 1), (0, 1)),
                                          ("transposed", (4, 2, 3))])
def test_fast_expand_is_broadcast_to(source, shape):
    """expand's numpy kernel: the values, shape, strides and read-only shared memory of
    np.broadcast_to, on contiguous inputs (its own view) and others (broadcast_to itself)."""
    from ember.ops.shape import EXPAND

    xp = numpy_backend.backend.xp
    x = (np.arange(6.0).reshape(3, 2).T if source == "transposed"
         else np.arange(float(np.prod(source, dtype=int))).reshape(source))
    fast = EXPAND.kernels["numpy"](xp, x, shape=shape)
    ref = np.broadcast_to(x, shape)
    assert fast.shape == ref.shape and fast.strides == ref.strides
    np.testing.assert_array_equal(fast, ref)
    assert not fast.flags.writeable
    if x.size and fast.size:
        assert np.shares_memory(fast, x)


def test_quiet_kernels_warn_nothing_and_restore_numpy_state():
    """Note [Quiet kernels]: pow/div/log run without floating-point warnings, as PyTorch, and
    leave NumPy's error state as it was, also when the kernel raises."""
    import warnings

    import ember

    before = np.geterr()
    x = ember.tensor([0.0, 1e30, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = [x.log(), x ** 2, 1 / x, x.sqrt()]
    assert np.isneginf(values[0].numpy()[0]) and np.isinf(values[1].numpy()[1])
    assert np.geterr() == before

    def failing(a):
        raise ValueError("boom")

    with pytest.raises(ValueError):
        numpy_backend.quiet(failing)(1.0)
    assert np.geterr() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            np.array([1e30], np.float32) ** 2  # NumPy itself still warns outside
