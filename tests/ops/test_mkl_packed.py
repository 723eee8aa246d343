"""Packed weights (Note [Packed weights], Note [Pack validity]): eager inference products by
MKL-packed weights equal the plain product within float rounding at every row count they
take, split over threads or not; a pack never outlives a write to its weight, whichever way
the write comes; the off switch, the memory limit and the paths that must not pack."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.autograd import packed
from ember.backend import blas, mkl_packed
from ember.ops import linalg

NO_PACK = "MKL not installed (the `mkl` extra) or packing turned off (EMBER_MKL_PACK=0)"
pytestmark = pytest.mark.skipif(not mkl_packed.available(), reason=NO_PACK)


def _check(result, x, w):
    """|result - x @ w.T| <= 2 K eps (|x| @ |w.T|), against a float64 product (the bound of
    Note [Small GEMMs])."""
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    eps = np.finfo(np.float32).eps
    bound = 2 * x.shape[1] * eps * (np.abs(x).astype(np.float64) @ np.abs(w.T).astype(np.float64))
    assert result.dtype == np.float32 and result.shape == exact.shape
    assert np.all(np.abs(result - exact) <= bound + np.finfo(np.float32).tiny)


@pytest.fixture
def two_threads():
    before = ember.get_num_threads()
    ember.set_num_threads(2)
    yield
    ember.set_num_threads(before)


def _split_on(monkeypatch, path):
    """Run split packed products on the pool or on numba's threads (Note [Packed split on
    numba's threads])."""
    if path == "numba":
        if not mkl_packed.prepare_split():
            pytest.skip("numba is not installed or turned off (EMBER_NO_NUMBA)")
    else:
        monkeypatch.setattr(mkl_packed, "_split", [])
        # no background load
        monkeypatch.setattr(mkl_packed, "_warm_up", blas.KernelWarmUp(lambda: None, after=-1))


@pytest.mark.parametrize("k,n", [(384, 1536), (1536, 384), (37, 200)])
@pytest.mark.parametrize("rows", [16, 64])
@pytest.mark.parametrize("path", ["pool", "numba"])
def test_packed_product_matches_float64_at_every_row_count(
    monkeypatch, two_threads, k, n, rows, path
):
    """MKL's packed layout is made for `rows` rows; products of other row counts (2-128, odd
    ones included: 5 rows get another layout from MKL) are still right, split over the pool
    or numba's threads, or not."""
    monkeypatch.setattr(mkl_packed, "SPLIT_MIN_WORK", 1)
    _split_on(monkeypatch, path)
    rng = np.random.default_rng(k + n)
    w = rng.standard_normal((n, k), np.float32)
    whole = mkl_packed.PackedMatrix.create(w, rows, 1)
    split = mkl_packed.PackedMatrix.create(w, rows, 2)
    for m in (2, 3, 5, 8, 15, 16, 17, 31, 32, 60, 64, 127, 128):
        x = rng.standard_normal((m, k), np.float32)
        out = np.full((m, n), np.nan, np.float32)
        whole.product(x, out)
        _check(out, x, w)
        out_split = np.full((m, n), np.nan, np.float32)
        split.product(x, out_split)
        _check(out_split, x, w)
        # every element by the same kernel over the same K: equal bit for bit
        np.testing.assert_array_equal(out_split, out)
        with_bias = np.tile(rng.standard_normal(n).astype(np.float32), (m, 1))
        whole_bias, split_bias = with_bias.copy(), with_bias.copy()
        whole.product(x, whole_bias, accumulate=True)
        split.product(x, split_bias, accumulate=True)
        np.testing.assert_array_equal(split_bias, whole_bias)
        _check(whole_bias - with_bias, x, w)
    # a transposed or sliced input (a cblas layout of its own)
    x = np.ascontiguousarray(rng.standard_normal((k, 16), np.float32)).T
    out = np.empty((16, n), np.float32)
    whole.product(x, out)
    _check(out, x, w)
    out_split = np.empty((16, n), np.float32)
    split.product(x, out_split)
    np.testing.assert_array_equal(out_split, out)


@pytest.mark.parametrize("k,n", [(384, 1152), (1536, 384), (37, 200)])
def test_shared_pack_rows_agree_at_one_and_two_threads(monkeypatch, k, n):
    """A pack for many rows (Note [Shared packs]): row blocks on two threads read the one pack
    and give the one-thread result bit for bit, within the float64 bound, bias added or not;
    the bias written a block of rows at a time (`bias=`, Note [Bias rows]) gives the bits of
    the bias copied first and accumulated into."""
    rng = np.random.default_rng(k * n)
    w = rng.standard_normal((n, k), np.float32)
    pack = mkl_packed.PackedMatrix.create(w, mkl_packed.MANY_ROWS, 1)
    before = ember.get_num_threads()
    try:
        for m, transposed in ((16, False), (129, False), (200, False), (383, False),
                              (600, False), (1000, False), (600, True)):  # fmt: skip
            x = rng.standard_normal((m, k), np.float32)
            if transposed:  # a cblas layout of its own: the rows' offsets step by one float
                x = np.ascontiguousarray(x.T).T
            bias = np.tile(rng.standard_normal(n).astype(np.float32), (m, 1))
            results = []
            for threads in (1, 2):
                ember.set_num_threads(threads)
                out = np.full((m, n), np.nan, np.float32)
                pack.product(x, out)
                with_bias = bias.copy()
                pack.product(x, with_bias, accumulate=True)
                bias_rows = np.full((m, n), np.nan, np.float32)
                pack.product(x, bias_rows, bias=bias[0])
                np.testing.assert_array_equal(bias_rows, with_bias)
                results.append((out, with_bias))
            (one, one_bias), (two, two_bias) = results
            _check(one, x, w)
            _check(one_bias - bias, x, w)
            np.testing.assert_array_equal(two, one)
            np.testing.assert_array_equal(two_bias, one_bias)
    finally:
        ember.set_num_threads(before)


def test_bias_and_accumulate_exclude_each_other():
    pack = mkl_packed.PackedMatrix.create(np.ones((200, 64), np.float32), 16, 1)
    out = np.zeros((16, 200), np.float32)
    with pytest.raises(ValueError, match="accumulate and bias"):
        pack.product(np.ones((16, 64), np.float32), out, True, np.ones(200, np.float32))


def _linear_model(k=384, n=512):
    ember.manual_seed(0)
    return ember.nn.Linear(k, n)


def _inference(layer, x):
    with ember.no_grad():
        return layer(x).array.copy()


def _expected(layer, x):
    return x.array @ layer.weight.array.T.astype(np.float64) + layer.bias.array


def _packs_of(weight):
    entry = packed._entries.get(id(weight))
    if entry is None:
        return []
    return [p for p in entry.packs.values() if isinstance(p, mkl_packed.PackedMatrix)]


def _assert_close(got, expected, k):
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * k * 6e-8 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(1, 16), (1, 8), (5, 12), (3, 40), (2,), (4, 100)])
def test_inference_takes_the_pack(shape):
    layer = _linear_model()
    x = ember.randn(*shape, 384)
    first = _inference(layer, x)
    rows = int(np.prod(shape))
    assert len(_packs_of(layer.weight)) == (rows >= blas.MKL_MIN_ROWS)
    second = _inference(layer, x)
    assert second.shape == (*shape, 512) and second.dtype == np.float32
    _assert_close(second, _expected(layer, x), 384)
    np.testing.assert_array_equal(first, second)  # one arithmetic from the first call on
    with ember.no_grad():  # the plain op agrees within float rounding
        plain = linalg.apply(linalg.LINEAR, x, layer.weight, layer.bias).array
    _assert_close(second, plain, 384)


@pytest.mark.parametrize("path", ["pool", "numba"])
def test_two_threads_split_the_pack_and_agree_bit_for_bit(monkeypatch, path):
    _split_on(monkeypatch, path)
    layer = _linear_model(384, 1536)
    x = ember.randn(1, 16, 384)
    many = ember.randn(3, 200, 384)  # one pack shared by the threads (Note [Shared packs])
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        _inference(layer, x)
        one, one_many = _inference(layer, x), _inference(layer, many)
        ember.set_num_threads(2)
        monkeypatch.setattr(mkl_packed, "SPLIT_MIN_WORK", 1)
        two, two_many = _inference(layer, x), _inference(layer, many)
        packs = {p.rows: p for p in _packs_of(layer.weight)}
        assert packs[16].parts == 2 and len(packs[16].blocks) == 2
        assert len(packs[mkl_packed.MANY_ROWS].blocks) == 1
    finally:
        ember.set_num_threads(before)
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(two_many, one_many)
    _assert_close(one_many, _expected(layer, many), 384)


def test_split_kernel_loads_in_the_background(monkeypatch, two_threads):
    """After SPLIT_WARM_UP_AFTER split products on the pool, the numba split kernel loads in a
    background thread, and later splits take it (Note [Packed split on numba's threads])."""
    if not mkl_packed.prepare_split():
        pytest.skip("numba is not installed or turned off (EMBER_NO_NUMBA)")
    monkeypatch.setenv("EMBER_KERNEL_WARM_UP", "1")
    monkeypatch.setattr(mkl_packed, "_split", [])
    warm_up = blas.KernelWarmUp(mkl_packed.prepare_split, after=3)
    monkeypatch.setattr(mkl_packed, "_warm_up", warm_up)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1536, 384), np.float32)
    x = rng.standard_normal((16, 384), np.float32)
    pack = mkl_packed.PackedMatrix.create(w, 16, 2)
    first = np.empty((16, 1536), np.float32)
    pack.product(x, first)
    out = np.empty_like(first)
    for _ in range(2):
        pack.product(x, out)
    thread = warm_up.thread
    assert thread is not None
    thread.join(60)
    assert mkl_packed._split
    pack.product(x, out)  # on numba's threads
    np.testing.assert_array_equal(out, first)


def _write_optimizer(layer):
    layer.weight.grad = ember.ones_like(layer.weight)
    ember.optim.SGD([layer.weight], lr=0.5).step()


def _write_load_state_dict(layer):
    state = {k: v * 2 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)


def _write_copy(layer):
    with ember.no_grad():
        layer.weight.copy_(ember.randn(*layer.weight.shape))


def _write_inplace(layer):
    with ember.no_grad():
        layer.weight.mul_(-1.5)


def _write_setitem_of_a_view(layer):
    with ember.no_grad():
        layer.weight.T[3] = 7.0


def _write_detached(layer):
    layer.weight.detach().add_(1.0)


def _write_numpy(layer):
    layer.weight.detach().numpy()[:2] = 5.0


def _write_numpy_taken_before(layer, held=[]):  # noqa: B006  (filled by the test)
    held[0][:, :3] = -2.0


def _write_asarray(layer):
    np.asarray(layer.weight.detach())[5] = 3.0


def _write_data_rebound(layer):
    layer.weight.data = ember.randn(*layer.weight.shape)


def _write_array_rebound(layer):
    layer.weight.array = np.ascontiguousarray(layer.weight.array[::-1])


def _write_compiled_step(layer):
    opt = ember.optim.SGD(layer.parameters(), lr=0.1)

    @ember.compile
    def step(x):
        opt.zero_grad()
        loss = layer(x).square().mean()
        loss.backward()
        opt.step()
        return loss

    step(ember.randn(4, layer.in_features))


def _write_init(layer):
    ember.nn.init.normal_(layer.weight)


WRITES = {
    "optimizer step": _write_optimizer,
    "load_state_dict": _write_load_state_dict,
    "copy_": _write_copy,
    "in-place op": _write_inplace,
    "setitem on a view": _write_setitem_of_a_view,
    "in-place on detach()": _write_detached,
    ".numpy() write": _write_numpy,
    ".numpy() taken before packing": _write_numpy_taken_before,
    "np.asarray write": _write_asarray,
    ".data rebound": _write_data_rebound,
    ".array rebound": _write_array_rebound,
    "compiled training step": _write_compiled_step,
    "nn.init": _write_init,
}


@pytest.mark.parametrize("write", list(WRITES))
def test_no_stale_pack_after_a_write(write):
    layer = _linear_model()
    x = ember.randn(1, 16, 384)
    if write == ".numpy() taken before packing":
        _write_numpy_taken_before.__defaults__[0][:] = [layer.weight.detach().numpy()]
    _inference(layer, x)
    _inference(layer, x)
    if write.startswith((".numpy", "np.asarray")):
        pass  # packed or not, what matters is the result after the write
    else:
        assert len(_packs_of(layer.weight)) == 1
    WRITES[write](layer)
    for _ in range(3):  # first, second (packs again where allowed) and third call
        _assert_close(_inference(layer, x), _expected(layer, x), 384)


def test_memory_handed_to_user_code_is_never_packed():
    layer = _linear_model()
    x = ember.randn(1, 16, 384)
    view = layer.weight.detach()[1:].numpy()  # a view of the weight's memory, not the weight
    for _ in range(3):
        _inference(layer, x)
    assert _packs_of(layer.weight) == []
    view[0] = 1.0
    _assert_close(_inference(layer, x), _expected(layer, x), 384)


def test_grad_mode_and_tracing_take_the_op():
    layer = _linear_model()
    x = ember.randn(1, 16, 384)
    out = layer(x)  # grad mode on, the weight requires grad: recorded as always
    out = layer(x)
    assert out.grad_fn is not None and _packs_of(layer.weight) == []
    layer.requires_grad_(False)
    _inference(layer, x)
    _inference(layer, x)
    assert len(_packs_of(layer.weight)) == 1  # nothing requires grad: packed with grad mode on
    traced = ember.compile(lambda t: layer(t))
    _assert_close(traced(x).array, _expected(layer, x), 384)


def test_off_switch_and_memory_limit(monkeypatch):
    monkeypatch.setenv("EMBER_MKL_PACK", "0")
    monkeypatch.setattr(mkl_packed, "_functions", None)
    assert not mkl_packed.available()
    layer = _linear_model()
    x = ember.randn(1, 16, 384)
    for _ in range(3):
        _assert_close(_inference(layer, x), _expected(layer, x), 384)
    assert _packs_of(layer.weight) == []
    monkeypatch.setenv("EMBER_MKL_PACK", "1")
    monkeypatch.setattr(mkl_packed, "_functions", None)
    monkeypatch.setenv("EMBER_MKL_PACK_LIMIT_MB", "0")
    for _ in range(3):
        _assert_close(_inference(layer, x), _expected(layer, x), 384)
    assert _packs_of(layer.weight) == []
    monkeypatch.setenv("EMBER_MKL_PACK", "maybe")
    monkeypatch.setattr(mkl_packed, "_functions", None)
    with pytest.raises(ValueError, match="EMBER_MKL_PACK"):
        mkl_packed.available()


def test_packs_die_with_their_weight():
    layer = _linear_model()
    x = ember.randn(1, 16, 384)
    _inference(layer, x)
    _inference(layer, x)
    held = mkl_packed._held[0]
    key = id(layer.weight)
    assert key in packed._entries
    del layer
    import gc

    gc.collect()
    assert key not in packed._entries
    assert mkl_packed._held[0] <= held - 384 * 512 * 4
