"""Faster kernels against their reference forward (STYLE.md habit 4)."""

import numpy as np
import pytest

from ember.backend import numpy_backend
from ember.ops.elementwise import ERF


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_erf_matches_reference(dtype):
    pytest.importorskip("numba", reason="the fast erf kernel needs numba (the `fast` extra)")
    x = np.concatenate(
        [np.linspace(-7, 7, 20001), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-8]]
    ).astype(dtype)
    # once as it is (small: float32 takes the NumPy path) and once tiled past the size from
    # which the compiled kernel runs (Note [Fast erf])
    repeats = numpy_backend.ERF_COMPILED_MIN_SIZE // x.size + 1
    for fast in (
        ERF.kernels["numpy"](numpy_backend.backend.xp, x),
        ERF.kernels["numpy"](numpy_backend.backend.xp, np.tile(x, repeats))[: x.size],
    ):
        _check_erf(x, fast, dtype)


def _check_erf(x, fast, dtype):
    ref = ERF.forward(numpy_backend.backend.xp, x)
    assert fast.dtype == ref.dtype == dtype
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    ok = ~np.isnan(ref)
    rel = np.abs(fast[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), np.finfo(dtype).tiny)
    print(dtype.__name__, "max relative error", rel.max())
    assert rel.max() <= (2 * np.finfo(dtype).eps)
    assert np.signbit(fast[x == 0]).tolist() == np.signbit(ref[x == 0]).tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_where_matches_reference_bit_for_bit(dtype):
    from ember.ops.elementwise import WHERE

    xp = numpy_backend.backend.xp
    rng = np.random.default_rng(0)
    cases = [
        ((64, 16, 8, 8), (64, 16, 8, 8), ()),
        ((400, 50), (400, 50), (400, 50)),
        ((400, 50), (50,), (400, 1)),
        ((1, 50), (400, 50), ()),
        ((400, 50), (), (400, 50)),
    ]
    for cs, a_shape, b_shape in cases:
        c = rng.random(cs) > 0.5
        a = np.asarray(rng.standard_normal(a_shape)).astype(dtype)
        if a.ndim:  # NaN, -0.0 and inf pass through unchanged
            a.reshape(-1)[::7], a.reshape(-1)[::11], a.reshape(-1)[::13] = np.nan, -0.0, np.inf
        for b in (
            np.asarray(rng.standard_normal(b_shape)).astype(dtype),
            np.asarray(0.0, dtype),
            np.asarray(-0.0, dtype),
        ):
            ref = WHERE.forward(xp, c, a, b)
            fast = WHERE.kernels["numpy"](xp, c, a, b)
            assert fast.shape == ref.shape and fast.dtype == ref.dtype
            assert np.array_equal(
                np.ascontiguousarray(fast).view(np.uint8), np.ascontiguousarray(ref).view(np.uint8)
            ), (cs, a_shape, b_shape)


@pytest.mark.parametrize(
    "source,shape",
    [
        ((), (4,)),
        ((1,), (3, 4)),
        ((3, 1), (2, 3, 5)),
        ((2, 3), (2, 3)),
        ((1, 1), (0, 1)),
        ("transposed", (4, 2, 3)),
    ],
)
def test_fast_expand_is_broadcast_to(source, shape):
    """expand's numpy kernel: the values, shape, strides and read-only shared memory of
    np.broadcast_to, on contiguous inputs (its own view) and others (broadcast_to itself)."""
    from ember.ops.shape import EXPAND

    xp = numpy_backend.backend.xp
    x = (
        np.arange(6.0).reshape(3, 2).T
        if source == "transposed"
        else np.arange(float(np.prod(source, dtype=int))).reshape(source)
    )
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
        values = [x.log(), x**2, 1 / x, x.sqrt()]
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


def test_small_erf_path_matches_compiled_kernel():
    """Note [Fast erf]: the NumPy path for small float32 arrays and the compiled kernel are
    the same approximation: equal bit for bit here, within 1 ulp by construction."""
    from ember.backend import numba_kernels

    if not numba_kernels.available():
        pytest.skip("numba is not installed (the `fast` extra) or EMBER_FAST_KERNELS=0")
    size = numpy_backend.ERF_COMPILED_MIN_SIZE
    x = np.concatenate(
        [
            np.linspace(-7, 7, size),
            np.random.default_rng(0).standard_normal(size) * 3,
            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-8],
        ]
    ).astype(np.float32)
    compiled = numpy_backend.erf_fast(x)  # large: the compiled kernel
    small = np.concatenate(
        [numpy_backend.erf_fast(part) for part in np.array_split(x, 4)]  # each under the size
    )
    assert all(len(part) < size for part in np.array_split(x, 4))
    assert np.array_equal(np.isnan(compiled), np.isnan(small))
    ok = ~np.isnan(compiled)
    ulps = np.abs(compiled[ok].view(np.int32).astype(np.int64) - small[ok].view(np.int32))
    print("elements differing:", int((ulps > 0).sum()), "of", ok.sum())
    assert ulps.max() <= 1
    assert np.array_equal(compiled[ok], small[ok])
    assert np.signbit(small[x == 0]).tolist() == [False, True]


# (id, table shape, index, dtype): rows with repeats, negative indices, a 3-D table
ROW_SCATTER_CASES = [
    ("embedding", (500, 24), np.random.default_rng(0).integers(0, 500, (16, 8)), np.float32),
    ("repeats", (7, 5), np.tile(np.arange(7), 9), np.float64),
    ("negative", (40, 3), np.arange(-20, 20), np.float32),
    ("table_3d", (30, 4, 6), np.random.default_rng(1).integers(0, 30, 50), np.float32),
]


@pytest.mark.parametrize(
    "shape, index, dtype", [c[1:] for c in ROW_SCATTER_CASES], ids=[c[0] for c in ROW_SCATTER_CASES]
)
def test_row_scatter_add_gives_the_add_at_bits(shape, index, dtype):
    """Note [Row scatter-add]: the compiled loop against np.add.at, bit for bit."""
    pytest.importorskip("numba", reason="the compiled row loop needs numba (the `fast` extra)")
    rng = np.random.default_rng(2)
    base = rng.standard_normal(shape).astype(dtype)
    values = rng.standard_normal(index.shape + shape[1:]).astype(dtype)
    expected = base.copy()
    np.add.at(expected, index, values)
    fast = base.copy()
    assert numpy_backend._add_rows(fast, (index,), values)
    assert fast.tobytes() == expected.tobytes()
    assert numpy_backend.scatter_add(base.copy(), index, values).tobytes() == expected.tobytes()


def test_row_scatter_add_leaves_other_indices_to_add_at():
    table = np.zeros((10, 4), np.float32)
    rows = np.arange(20) % 10
    assert not numpy_backend._add_rows(table, (rows, rows % 4), np.ones(20, np.float32))
    assert not numpy_backend._add_rows(table, rows, np.ones((20, 1), np.float32))  # broadcast
    with pytest.raises(IndexError):
        numpy_backend.scatter_add(table, np.arange(20), np.ones((20, 4), np.float32))


@pytest.mark.parametrize(
    "name, value", [("EMBER_FAST_KERNELS", "0"), ("EMBER_NO_NUMBA", "1")], ids=["fast0", "nonumba"]
)
def test_kernel_switches_are_read_once_until_reread(name, value, monkeypatch):
    """numba_kernels.available() reads EMBER_FAST_KERNELS / EMBER_NO_NUMBA on its first call
    only (it runs on every op); reread_environment() reads them again."""
    from ember.backend import numba_kernels

    numba_kernels.reread_environment()
    monkeypatch.delenv("EMBER_FAST_KERNELS", raising=False)
    monkeypatch.delenv("EMBER_NO_NUMBA", raising=False)
    before = numba_kernels.available()
    monkeypatch.setenv(name, value)
    try:
        assert numba_kernels.available() == before  # the change is not seen yet
        numba_kernels.reread_environment()
        assert numba_kernels.available() is False
        monkeypatch.delenv(name)
        numba_kernels.reread_environment()
        assert numba_kernels.available() == before
    finally:
        monkeypatch.undo()
        numba_kernels.reread_environment()
