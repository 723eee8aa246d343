"""The CPU matmul dispatch (ember/backend/blas.py, Note [Small GEMMs]): few-row products on
MKL when it is installed, NumPy otherwise, equal to the float64 product within the bound of
a length-K dot product in float rounding, for every operand layout the dispatch accepts; MKL's
results independent of alignment and of the thread count's column split; the thread setter
finds NumPy's OpenBLAS (Note [Which OpenBLAS])."""

import os

import numpy as np
import pytest

from ember.backend import blas, threads
from ember.backend.numpy_backend import backend

NO_MKL = "MKL not installed (the `mkl` extra) or turned off (EMBER_BLAS=openblas)"

# (rows, inner, cols, layout of a, layout of b): "c" C-contiguous, "f" Fortran (a transposed
# view, as linear's weight.T is), "s" a column slice of a wider matrix (leading dim > cols)
CASES = [
    (16, 384, 1536, "c", "f"),  # MiniLM latency: x @ weight.T
    (16, 1536, 384, "c", "f"),
    (2, 3, 4, "c", "c"),
    (7, 33, 65, "f", "f"),
    (32, 64, 48, "s", "c"),
    (24, 128, 256, "f", "f"),
    (32, 64, 160, "s", "c"),
    (128, 64, 784, "f", "c"),  # an MLP weight's gradient: g.mT @ x
    (256, 17, 9, "c", "s"),
    (5, 1, 1, "c", "c"),
]


# products above FEW_ROWS rows, split by rows at 2 and 3 threads: a training step's x @ W.T,
# a weight gradient g.mT @ x, a strided operand
ROW_SPLITS = [
    (1024, 384, 384, "c", "f"),
    (640, 1024, 384, "f", "c"),
    (600, 64, 200, "s", "c"),
]


def _operand(rng, shape, layout, dtype):
    if layout == "c":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "f":
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dtype)).T
    wide = rng.standard_normal((shape[0], shape[1] + 5)).astype(dtype)
    return wide[:, 2 : 2 + shape[1]]


def _check(result, a, b):
    """|result - a@b| <= 2 K eps (|a| @ |b|) elementwise, against a float64 product."""
    exact = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(a.dtype).eps
    bound = 2 * a.shape[1] * eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert result.dtype == a.dtype and result.shape == exact.shape
    assert result.flags.c_contiguous
    assert np.all(np.abs(result - exact) <= bound + np.finfo(a.dtype).tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,la,lb", CASES)
def test_matmul_matches_float64_product(m, k, n, la, lb, dtype):
    rng = np.random.default_rng(m * 1000 + k)
    a, b = _operand(rng, (m, k), la, dtype), _operand(rng, (k, n), lb, dtype)
    _check(blas.matmul(a, b), a, b)
    out = np.full((m, n), np.nan, dtype)
    assert blas.matmul(a, b, out=out) is out
    _check(out, a, b)


@pytest.mark.skipif(not blas.mkl_available(), reason=NO_MKL)
def test_mkl_takes_few_row_products(monkeypatch):
    calls = []
    table = blas._load()
    monkeypatch.setattr(blas, "_threads", 1)  # one call a product (no split over threads)
    monkeypatch.setattr(
        blas,
        "_mkl",
        {d: (lambda *args, f=f: calls.append(1) or f(*args)) for d, f in table.items()},
    )
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((16, 384), np.float32), rng.standard_normal((64, 384), np.float32)
    _check(blas.matmul(a, w.T), a, w.T)
    assert calls == [1]
    big = rng.standard_normal((2048, 384), np.float32)
    _check(blas.matmul(big, w.T), big, w.T)  # many rows: MKL too
    assert calls == [1, 1]
    blas.matmul(a[:1], w.T)  # one row: a GEMV
    blas.matmul(a[:, :8], w[:8, :8].T)  # a tiny product: the call would cost more
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "a,b",
    [
        (np.ones((3, 4, 5), np.float32), np.ones((5, 2), np.float32)),  # batched: NumPy's loop
        (np.ones((4, 5), np.int64), np.ones((5, 2), np.int64)),  # integers
        (np.ones((4, 5), np.float32), np.ones((5, 2), np.float64)),  # mixed: NumPy promotes
        (np.ones(5, np.float32), np.ones((5, 2), np.float32)),  # 1-D
        (np.ones((4, 0), np.float32), np.ones((0, 2), np.float32)),  # empty inner dim
        (np.ones((4, 5), np.float32)[:, ::-1], np.ones((5, 3), np.float32)),  # negative stride
    ],
)
def test_other_products_are_numpy_s(a, b):
    np.testing.assert_array_equal(blas.matmul(a, b), np.matmul(a, b))


def test_shape_errors_are_numpy_s():
    with pytest.raises(ValueError):
        blas.matmul(np.ones((4, 5), np.float32), np.ones((6, 2), np.float32))


def test_out_that_overlaps_an_operand_is_safe():
    a = np.arange(16.0, dtype=np.float32).reshape(4, 4)
    expected = a @ a
    blas.matmul(a, a, out=a)
    np.testing.assert_array_equal(a, expected)


def test_the_numpy_backend_multiplies_through_it():
    assert backend.xp.matmul is blas.matmul


def test_thread_count_goes_to_numpy_s_openblas(monkeypatch):
    """With SciPy's OpenBLAS (and MKL) loaded too, set_num_threads sets NumPy's (Note [Which
    OpenBLAS]): taking another left NumPy's products on every core."""
    pytest.importorskip("scipy.linalg")
    numpy_folder = os.path.join(threads._numpy_blas_folder(), "numpy")
    if not any(numpy_folder in path for *_, path in threads._all_blas()):
        pytest.skip("NumPy is not linked to a bundled OpenBLAS (numpy.libs)")
    blas.mkl_available()
    monkeypatch.setattr(threads, "_blas", None)
    before = threads.get_num_threads()
    try:
        setter, getter, library = threads._find_blas()
        assert library._name.startswith(numpy_folder)
        threads.set_num_threads(1)
        assert getter() == 1
    finally:
        threads.set_num_threads(before)


def _misaligned(x, offset):
    """A copy of x whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(x.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    copy = raw[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    copy[...] = x
    return copy


# (m, k, n, layout of a, layout of b): MiniLM's few-row and many-row products (row blocks
# from ROW_SPLIT_MIN_ROWS), the fine-tuning step's gradients g @ W and g.T @ x included
SPLIT_CASES = [
    (16, 384, 1536, "c", "f"),
    (60, 1536, 384, "c", "f"),
    (64, 784, 128, "c", "f"),
    (300, 384, 384, "c", "f"),
    (1024, 1536, 384, "c", "f"),
    (1000, 384, 200, "c", "c"),
    (384, 1024, 384, "f", "c"),
]


@pytest.mark.skipif(not blas.mkl_available(), reason=NO_MKL)
@pytest.mark.parametrize("m,k,n,la,lb", SPLIT_CASES)
def test_mkl_results_do_not_depend_on_alignment_or_threads(monkeypatch, m, k, n, la, lb):
    """Eager results must repeat bit for bit (resumed training equals uninterrupted, Note [Small
    GEMMs]): MKL runs in its conditional-reproducibility mode, so neither the operands'
    alignment nor the row or column split over n threads changes a bit."""
    rng = np.random.default_rng(n)
    x = _operand(rng, (m, k), la, np.float32)
    w = _operand(rng, (n, k), "c" if lb == "f" else "f", np.float32).T  # x @ w as laid out
    monkeypatch.setattr(blas, "_threads", 1)
    expected = blas.matmul(x, w)
    _check(expected, x, w)
    for offset in (4, 8, 16, 32):
        got = blas.matmul(_misaligned_like(x, offset), _misaligned_like(w, 64 - offset))
        np.testing.assert_array_equal(got, expected)
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    for count in (2, 3):
        monkeypatch.setattr(blas, "_threads", count)
        got = blas.matmul(x, w)
        if _blocks_too_small(m, n, count):  # OpenBLAS's threads (Note [Small GEMMs])
            np.testing.assert_array_equal(got, np.matmul(x, w))
        else:
            np.testing.assert_array_equal(got, expected)


def _blocks_too_small(m, n, threads):
    smallest = lambda size: min(hi - lo for lo, hi in blas._blocks(size, threads))  # noqa: E731
    return m > blas.FEW_ROWS and max(smallest(m), smallest(n)) < blas.MIN_BLOCK


def test_the_split_cases_split():
    """Every case above but one splits at 2 threads; (384, 384) at 3 falls back."""
    assert [_blocks_too_small(m, n, 2) for m, _, n, _, _ in SPLIT_CASES] == [False] * 7
    assert _blocks_too_small(384, 384, 3)


def _misaligned_like(x, offset):
    """_misaligned, keeping a transposed view transposed."""
    return _misaligned(x, offset) if x.flags.c_contiguous else _misaligned(x.T, offset).T


@pytest.mark.skipif(not blas.mkl_available(), reason=NO_MKL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,layout_a,layout_b", [c for c in CASES if c[2] >= 128] + ROW_SPLITS)
def test_split_on_numba_threads_equals_one_call(monkeypatch, dtype, m, k, n, layout_a, layout_b):
    """The row or column blocks run from numba's prange kernel (Note [Split on numba's
    threads]), not on ember's pool, and give the one-call product bit for bit."""
    if not blas.prepare_split():
        pytest.skip("numba not installed or switched off: the split runs on ember's pool")
    rng = np.random.default_rng(m * n)
    a = _operand(rng, (m, k), layout_a, dtype)
    b = _operand(rng, (k, n), layout_b, dtype)
    monkeypatch.setattr(blas, "_threads", 1)
    expected = blas.matmul(a, b)
    _check(expected, a, b)

    def pool_used(*args):
        raise AssertionError("the split ran on ember's pool")

    monkeypatch.setattr(blas.parallel, "run_chunks", pool_used)
    calls = []
    on_numba = blas._split_on_numba
    monkeypatch.setattr(blas, "_split_on_numba", lambda *a: calls.append(a) or on_numba(*a))
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    for n_threads in (2, 3):
        monkeypatch.setattr(blas, "_threads", n_threads)
        np.testing.assert_array_equal(blas.matmul(a, b), expected)
        out = np.full((m, n), np.nan, dtype)
        assert blas.matmul(a, b, out=out) is out
        np.testing.assert_array_equal(out, expected)
    assert len(calls) == 4


@pytest.mark.skipif(not blas.mkl_available(), reason=NO_MKL)
def test_split_kernel_loads_in_the_background(monkeypatch):
    """After SPLIT_WARM_UP_AFTER split products on the pool, blas's split kernel loads in a
    background thread and later splits take it, with the same bits (Note [Split on numba's
    threads])."""
    if not blas.prepare_split():
        pytest.skip("numba not installed or switched off: the split runs on ember's pool")
    monkeypatch.setenv("EMBER_KERNEL_WARM_UP", "1")
    monkeypatch.setattr(blas, "_split", {})
    warm_up = blas.KernelWarmUp(blas.prepare_split, after=3)
    monkeypatch.setattr(blas, "_warm_up", warm_up)
    monkeypatch.setattr(blas, "_threads", 2)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((1024, 384), np.float32)
    w = rng.standard_normal((384, 384), np.float32)
    first = blas.matmul(a, w.T)  # rows on the pool
    for _ in range(2):
        np.testing.assert_array_equal(blas.matmul(a, w.T), first)
    assert warm_up.thread is not None
    warm_up.thread.join(60)
    assert blas._split

    def pool_used(*args):
        raise AssertionError("the split ran on ember's pool")

    monkeypatch.setattr(blas.parallel, "run_chunks", pool_used)
    np.testing.assert_array_equal(blas.matmul(a, w.T), first)  # on numba's threads


@pytest.mark.parametrize("value", ["openblas", "numpy"])
def test_ember_blas_openblas_turns_mkl_off(monkeypatch, value):
    monkeypatch.setenv("EMBER_BLAS", value)
    monkeypatch.setattr(blas, "_mkl", None)
    assert not blas.mkl_available()


def test_ember_blas_mkl_without_a_library_warns(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_BLAS", "mkl")
    monkeypatch.setenv("EMBER_MKL_LIBRARY", str(tmp_path / "libmkl_rt.so.3"))
    monkeypatch.setattr(blas, "_mkl", None)
    with pytest.warns(RuntimeWarning, match="EMBER_BLAS=mkl: no loadable libmkl_rt"):
        assert not blas.mkl_available()
    a = np.ones((16, 384), np.float32)
    np.testing.assert_array_equal(blas.matmul(a, a.T), a @ a.T)


def test_bad_ember_blas_names_the_variable(monkeypatch):
    monkeypatch.setenv("EMBER_BLAS", "atlas")
    monkeypatch.setattr(blas, "_mkl", None)
    with pytest.raises(ValueError, match="EMBER_BLAS: expected 'auto', 'mkl' or 'openblas'"):
        blas.mkl_available()


# stacks (Note [Strided batches]): (a's shape, b's shape, how each is laid out): "c" C-ordered,
# "t" a transposed view (last two dims swapped), "p" a view with its batch dims permuted (no
# single batch stride: a call per outer index), "h" heads split as a view of (batch, length,
# heads, dim), "ht" that view transposed (`v.mT`)
BATCH_CASES = [
    ((4, 3, 64, 64), (4, 3, 64, 16), "t", "c"),  # attention backward: p.mT @ g
    ((4, 3, 64, 16), (4, 3, 16, 64), "c", "t"),  # g @ v.mT
    ((4, 3, 16, 64), (4, 3, 64, 64), "t", "c"),  # q.mT @ g
    ((6, 64, 48), (6, 48, 40), "c", "c"),
    ((4, 3, 64, 16), (4, 3, 16, 64), "p", "c"),
    ((1, 3, 64, 16), (1, 3, 16, 64), "t", "t"),
    ((2, 64, 48), (1, 48, 40), "c", "c"),  # broadcast batch: NumPy's
    ((4, 3, 64, 64), (4, 3, 64, 16), "t", "h"),  # training's p.mT @ g, g through the head merge
    ((4, 3, 64, 16), (4, 3, 16, 64), "h", "ht"),  # g @ v.mT with both heads views
    ((2, 4, 3, 64, 16), (2, 4, 3, 16, 64), "p", "c"),  # two outer dims
]


def _stacked(rng, shape, layout, dtype):
    if layout == "t":
        x = rng.standard_normal(shape[:-2] + shape[-2:][::-1]).astype(dtype)
        return x.swapaxes(-1, -2)
    if layout == "p":
        return rng.standard_normal((shape[1], shape[0]) + shape[2:]).astype(dtype).swapaxes(0, 1)
    if layout == "h":
        b, h, length, d = shape
        return rng.standard_normal((b, length, h, d)).astype(dtype).transpose(0, 2, 1, 3)
    if layout == "ht":
        b, h, d, length = shape
        return rng.standard_normal((b, length, h, d)).astype(dtype).transpose(0, 2, 3, 1)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb,la,lb", BATCH_CASES)
def test_stacked_products_without_copies(monkeypatch, sa, sb, la, lb, dtype):
    rng = np.random.default_rng(len(sa) * 7 + sa[-1])
    a, b = _stacked(rng, sa, la, dtype), _stacked(rng, sb, lb, dtype)
    monkeypatch.setattr(blas, "_threads", 1)
    work = sa[-2] * sb[-1] * max(sa[-1], 16) * int(np.prod(sa[:-2]))
    if blas.mkl_available() and sa[:-2] == sb[:-2] and work >= blas.MKL_MIN_WORK:
        assert blas._mkl_batches(a, b, None) is not None, "runs as MKL batch calls, no copy"
    expected = blas.matmul(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(dtype).eps
    bound = 2 * sa[-1] * eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert expected.shape == exact.shape and expected.dtype == dtype
    assert np.all(np.abs(expected - exact) <= bound + np.finfo(dtype).tiny)
    out = np.full(exact.shape, np.nan, dtype)
    assert blas.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, expected)
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    for count in (2, 3):  # whole matrices per thread: the same bits
        monkeypatch.setattr(blas, "_threads", count)
        np.testing.assert_array_equal(blas.matmul(a, b), expected)


def test_batch_layouts():
    x = np.zeros((4, 3, 8, 5), np.float32)
    assert blas._batch_layout(x) == (blas._NO_TRANS, 5, 12, 40)
    assert blas._batch_layout(x.swapaxes(-1, -2)) == (blas._TRANS, 5, 12, 40)
    assert blas._batch_layout(x.swapaxes(0, 1)) is None  # batch dims in another order
    assert blas._batch_layout(x[:, :2]) is None  # a gap between the batch dims
    assert blas._batch_layout(x[:, :1]) == (blas._NO_TRANS, 5, 4, 120)  # size-1 dims skipped
    # two batch strides: a call per outer index (Note [Strided batches])
    heads = np.zeros((4, 8, 3, 5), np.float32).transpose(0, 2, 1, 3)
    assert blas._batch_layout(heads) is None
    assert blas._batch_groups(heads) == (blas._NO_TRANS, 15, 3, 5, [0, 120, 240, 360])
    assert blas._batch_groups(x.swapaxes(0, 1)) == (blas._NO_TRANS, 5, 4, 120, [0, 40, 80])
    assert blas._batch_groups(np.zeros((3, 8, 5), np.float32)) is None  # one batch dim


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(3, 5, 4), (96, 40, 24), (1024, 384, 384), (1024, 1536, 384)])
def test_accumulate_adds_the_product_into_out(monkeypatch, dtype, m, k, n):
    """`matmul(a, b, out, accumulate=True)` is `out += a @ b` (MKL's beta = 1 where MKL takes
    the product, its split blocks included; NumPy's add elsewhere; Note [Gradients into
    buffers] in ember/autograd/engine.py): within rounding of the float64 sum, the same bits
    at 1, 2 and 3 threads, and a transposed operand as a flag."""
    from ember.testing.parity import assert_close, parity_rtol

    blas.prepare_split()  # numba's split blocks where numba is installed, else ember's pool
    rng = np.random.default_rng(m + k)
    a = rng.standard_normal((k, m)).astype(dtype).T  # transposed, as a weight gradient's g.T
    b = rng.standard_normal((k, n)).astype(dtype)
    start = rng.standard_normal((m, n)).astype(dtype)
    results = []
    for n_threads in (1, 2, 3):
        monkeypatch.setattr(blas, "_threads", n_threads)
        out = start.copy()
        assert blas.matmul(a, b, out=out, accumulate=True) is out
        results.append(out)
    expected = start.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    assert_close(results[0], expected, rtol=parity_rtol(depth=1, width=k, dtype=dtype))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    with pytest.raises(ValueError, match="accumulate=True needs out="):
        blas.matmul(a, b, accumulate=True)
