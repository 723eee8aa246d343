"""The fused Transformer ops (Note [Fused Transformer ops] in ember.ops.fused) against their
decompositions, forward and backward, at sizes that take the row-parallel kernels; serial and
parallel kernels equal bit for bit (Note [Row-parallel kernels]); dropout's seeded mask."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

import ember
from ember.backend import numba_kernels
from ember.backend import transformer_kernels as K
from ember.ops import fused as Fz
from ember.ops import nn as N


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the parallel builds even on a loaded machine (Note [Overloaded machine] would pick
    the serial ones there), so the tests compare threaded runs with serial ones."""
    from ember.backend import parallel

    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


needs_numba = pytest.mark.skipif(
    not numba_kernels.available(),
    reason="numba is not installed (the `fast` extra) or EMBER_FAST_KERNELS=0",
)
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return (2e-5, 2e-5) if dtype == np.float32 else (1e-11, 1e-11)


def _close(ours, ref, dtype, what):
    rtol, atol = _tol(dtype)
    ours, ref = np.asarray(ours), np.asarray(ref)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol * scale, err_msg=what)


def _leaves(rng, dtype, *shapes):
    return [ember.from_numpy(rng.standard_normal(s).astype(dtype)).requires_grad_() for s in shapes]


def _grads(out, inputs, cot):
    return ember.autograd.grad((out * cot).sum(), inputs)


# (name, input shapes, fused fn, decomposition fn); the shapes exceed COMPILED_MIN_SIZE
CASES = [
    ("gelu", [(8, 128, 96)], lambda x: N.gelu(x), lambda x: N.gelu_reference(x)),
    (
        "gelu-tanh",
        [(8, 128, 96)],
        lambda x: N.gelu(x, "tanh"),
        lambda x: N.gelu_reference(x, "tanh"),
    ),
    (
        "bias-gelu",
        [(8, 128, 96), (96,)],
        lambda x, b: N.gelu(x, bias=b),
        lambda x, b: N.gelu_reference(x + b),
    ),
    (
        "layer-norm",
        [(8, 128, 96), (96,), (96,)],
        lambda x, w, b: N.layer_norm(x, (96,), w, b, 1e-12),
        lambda x, w, b: N.layer_norm_reference(x, (96,), w, b, 1e-12),
    ),
    (
        "residual-layer-norm",
        [(8, 128, 96), (8, 128, 96), (96,), (96,)],
        lambda x, r, w, b: N.residual_layer_norm(x, r, (96,), w, b),
        lambda x, r, w, b: N.layer_norm_reference(x + r, (96,), w, b),
    ),
    ("softmax", [(4, 3, 128, 48)], lambda s: N.softmax(s, -1), N.softmax_reference),
    (
        "bert-mask-softmax",
        [(4, 3, 128, 48), (4, 1, 1, 48)],
        lambda s, m: Fz.fused_softmax(s, m, 0.125),
        lambda s, m: N.softmax_reference(s * 0.125 + m),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_fused_op_equals_its_decomposition(case, dtype):
    name, shapes, fused, reference = case
    rng = np.random.default_rng(0)
    inputs = _leaves(rng, dtype, *shapes)
    ours, ref = fused(*inputs), reference(*inputs)
    _close(ours, ref, dtype, f"{name} forward")
    cot = ember.from_numpy(rng.standard_normal(tuple(ref.shape)).astype(dtype))
    for i, (a, b) in enumerate(zip(_grads(ours, inputs, cot), _grads(ref, inputs, cot))):
        _close(a, b, dtype, f"{name} gradient of input {i}")


def test_bool_mask_softmax_and_attention_equal_the_decomposition():
    rng = np.random.default_rng(1)
    s = ember.from_numpy(rng.standard_normal((2, 3, 5, 6)).astype(np.float32))
    keep = rng.random((2, 1, 1, 6)) > 0.3
    keep[..., 0] = True
    mask = ember.from_numpy(keep)
    ref = N.softmax_reference(ember.ops.shape.masked_fill(s * 0.5, ~mask, float("-inf")))
    _close(Fz.fused_softmax(s, mask, 0.5), ref, np.float32, "bool mask")
    q, k, v = (
        ember.from_numpy(rng.standard_normal((2, 3, 5, 4)).astype(np.float32)) for _ in "qkv"
    )
    for kwargs in ({"attn_mask": mask[..., :5]}, {"is_causal": True}):
        out = N.scaled_dot_product_attention(q, k, v, **kwargs)
        scores = (q @ k.mT) * 0.5
        m = kwargs.get("attn_mask")
        if m is None:
            m = ember.ops.shape.tril(ember.ones((5, 5), dtype=ember.bool))
        probs = N.softmax_reference(ember.ops.shape.masked_fill(scores, ~m, float("-inf")))
        _close(out, probs @ v, np.float32, f"attention {list(kwargs)}")


def test_a_row_that_is_all_masked_gives_nan_as_the_decomposition():
    s = ember.zeros((1, 1, 2, 3))
    mask = ember.tensor([[[[True, False, True]], [[False, False, False]]]]).reshape(1, 1, 2, 3)
    out = np.asarray(Fz.fused_softmax(s, mask))
    np.testing.assert_allclose(out[0, 0, 0], [0.5, 0.0, 0.5])
    assert np.isnan(out[0, 0, 1]).all()


def _serial_and_parallel(fn):
    """fn() with every kernel serial, then with every kernel parallel."""
    saved = K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE
    try:
        K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE = 1 << 62, 0
        serial = fn()
        K.PARALLEL_MIN_SIZE = 0
        parallel = fn()
    finally:
        K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE = saved
    return serial, parallel


def _grads_together(g, x, r, w, eps):
    with K.layer_norm_grads_together():
        gx = K.layer_norm_input_grad(g, x, r, w, eps)
        return np.concatenate([gx, K.layer_norm_param_grad(g, x, r, eps)])


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_parallel_kernels_equal_serial_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 96)).astype(dtype)
    r = rng.standard_normal((300, 96)).astype(dtype)
    g = rng.standard_normal((300, 96)).astype(dtype)
    w, b = rng.standard_normal(96).astype(dtype), rng.standard_normal(96).astype(dtype)
    far = x.copy()
    far[::2, :8] += 100  # the float32 backward's second pass (Note [Float32 layer norm backward])
    s = rng.standard_normal((2, 3, 50, 96)).astype(dtype)
    m = rng.standard_normal((2, 1, 1, 96)).astype(dtype)
    y = Fz._softmax_forward(np, s, m, 0.3)
    calls = {
        "gelu": lambda: K.gelu(x, b, "none"),
        "gelu_grad": lambda: K.gelu_grad(g, x, b, "tanh"),
        "gelu_grad exact": lambda: K.gelu_grad(g, x, b, "none"),
        "gelu no bias": lambda: K.gelu(x, None, "none"),
        "tanh gelu": lambda: K.gelu(x, b, "tanh"),
        "layer_norm": lambda: K.layer_norm(x, r, w, b, 1e-5),
        "layer_norm_input_grad": lambda: K.layer_norm_input_grad(g, x, r, w, 1e-5),
        "layer_norm_param_grad": lambda: K.layer_norm_param_grad(g, x, None, 1e-5),
        "layer_norm_param_grad+residual": lambda: K.layer_norm_param_grad(g, x, r, 1e-5),
        "layer_norm_grads": lambda: _grads_together(g, x, r, w, 1e-5),
        "layer_norm_grads far": lambda: _grads_together(g, far, r, w, 1e-5),
        "layer_norm_param_grad far": lambda: K.layer_norm_param_grad(g, far, None, 1e-5),
        "layer_norm+no residual": lambda: K.layer_norm(x, None, w, b, 1e-5),
        "softmax": lambda: K.softmax(s, m, 0.3),
        "softmax_grad": lambda: K.softmax_grad(s, y, 0.3),
        "dropout": lambda: K.dropout(x, 99, Fz._threshold(0.1), dtype(1 / 0.9)),
    }
    for name, call in calls.items():
        serial, parallel = _serial_and_parallel(call)
        assert serial is not None, name
        np.testing.assert_array_equal(serial, parallel, err_msg=name)
        for threads in (1, 2):  # the thread count does not change the bits either
            ember.set_num_threads(threads)
            saved = K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE
            K.PARALLEL_MIN_SIZE = K.COMPILED_MIN_SIZE = 0
            try:
                np.testing.assert_array_equal(call(), serial, err_msg=f"{name} x{threads}")
            finally:
                K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE = saved


@needs_numba
@needs_numba
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (1000.0, 0.01), (1e4, 1.0), (-50.0, 1e-3)])
@pytest.mark.parametrize("d", [384, 1536])
def test_float32_layer_norm_kernels_near_float64_whatever_the_mean(mean, std, residual, d):
    """Note [Float32 layer norm] and [Float32 layer norm backward]: shifted sums and a
    two-part mean keep the float32 kernels within a few float32 ulp of the float64 result of
    the same float32 inputs, even where the mean lies 10^5 deviations from zero (a float32
    two-pass decomposition loses ~10^-3 there), with outlier columns (rows whose first values
    lie far out take the backward's second pass) and alone or together."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((512, d)) * std + mean).astype(np.float32)
    x[::3, [1, 5, d // 2]] += np.float32(40 * std)  # outliers, two among the first 16 values
    r = (rng.standard_normal((512, d)) * std).astype(np.float32) if residual else None
    g = rng.standard_normal((512, d)).astype(np.float32)
    w, b = (rng.standard_normal(d).astype(np.float32) for _ in range(2))
    u = (x if r is None else x + r).astype(np.float64)  # the float32 sum, as the reference
    m = u.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((u - m) ** 2).mean(-1, keepdims=True) + 1e-12)
    xhat = (u - m) * rstd
    gw = g * w.astype(np.float64)
    exact_gx = rstd * (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True))
    exact_params = np.stack([(g * xhat).sum(0), g.astype(np.float64).sum(0)])
    together = _grads_together(g, x, r, w, 1e-12)
    cases = {
        "forward": (K.layer_norm(x, r, w, b, 1e-12), xhat * w + b),
        "input grad": (K.layer_norm_input_grad(g, x, r, w, 1e-12), exact_gx),
        "param grad": (K.layer_norm_param_grad(g, x, r, 1e-12), exact_params),
        "both": (together, np.concatenate([exact_gx, exact_params])),
    }
    for name, (ours, exact) in cases.items():
        assert ours is not None and ours.dtype == np.float32, name
        scale = np.abs(exact).max()
        print(f"float32 layer norm {name} d={d}: max error / max |exact| "
              f"{np.abs(ours - exact).max() / scale:.1e}")  # fmt: skip
        np.testing.assert_allclose(ours, exact, rtol=0, atol=4e-7 * scale, err_msg=name)


@needs_numba
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_layer_norm_gradients_together_equal_the_two_kernels(residual):
    """Note [Layer norm gradients together]: the one-pass kernel gives both kernels' bits, the
    parameter-gradient call takes its result only for the same arrays, and the op's backward
    uses it."""
    rng = np.random.default_rng(6)
    x, r, g = (rng.standard_normal((300, 384)).astype(np.float32) + 2 for _ in range(3))
    w, b = (rng.standard_normal(384).astype(np.float32) for _ in range(2))
    r = r if residual else None
    separate = K.layer_norm_input_grad(g, x, r, w, 1e-12), K.layer_norm_param_grad(g, x, r, 1e-12)
    with K.layer_norm_grads_together():
        together = (
            K.layer_norm_input_grad(g, x, r, w, 1e-12),
            K.layer_norm_param_grad(g, x, r, 1e-12),
        )
        assert K._together.saved is None
        K.layer_norm_input_grad(g, x, r, w, 1e-12)
        other = K.layer_norm_param_grad(g * 2, x, r, 1e-12)  # other arrays: its own kernel
    for ours, theirs in zip(together, separate):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(other, K.layer_norm_param_grad(g * 2, x, r, 1e-12))
    leaves = [ember.from_numpy(a).requires_grad_() for a in (x, w, b)]
    res = None if r is None else ember.from_numpy(r).requires_grad_()
    y = Fz.fused_layer_norm(*leaves, res, eps=1e-12)
    grads = ember.autograd.grad((y * ember.from_numpy(g)).sum(), leaves)
    np.testing.assert_array_equal(np.asarray(grads[0]), separate[0])
    np.testing.assert_array_equal(np.asarray(grads[1]), separate[1][0])
    np.testing.assert_array_equal(np.asarray(grads[2]), separate[1][1])


def test_kernel_threads_follow_set_num_threads():
    import numba

    K.gelu(np.ones((256, 256), np.float32), None, "none")  # loads the parallel kernel
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        assert numba.get_num_threads() == 1
        ember.set_num_threads(2)
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        ember.set_num_threads(before)


def test_the_numpy_path_gives_the_kernels_results():
    """EMBER_FAST_KERNELS=0 (or no numba) runs the reference forwards: dropout's mask is the
    same bits, the rest agree within rounding."""
    rng = np.random.default_rng(3)
    x = ember.from_numpy(rng.standard_normal((128, 600)).astype(np.float32))
    b = ember.from_numpy(rng.standard_normal(600).astype(np.float32))
    seed = ember.tensor(2024)

    def run():
        return (
            np.asarray(ember.ops.fused.apply(Fz.DROPOUT, x, seed, p=0.2)),
            np.asarray(N.gelu(x, bias=b)),
            np.asarray(N.layer_norm(x, (600,))),
            np.asarray(N.softmax(x, -1)),
        )

    fast = run()
    with numba_kernels.disable_for_tests():
        plain = run()
    np.testing.assert_array_equal(fast[0], plain[0])
    for ours, ref in zip(fast[1:], plain[1:]):
        _close(ours, ref, np.float32, "numpy path")


def test_dropout_is_seeded_scaled_and_its_backward_regenerates_the_mask():
    x = ember.ones((400, 250), requires_grad=True)
    ember.manual_seed(7)
    a = N.dropout(x, 0.25)
    ember.manual_seed(7)
    b = N.dropout(x, 0.25)
    c = N.dropout(x, 0.25)  # the generator moved on: another mask
    a_np = np.asarray(a.detach())
    np.testing.assert_array_equal(a_np, np.asarray(b.detach()))
    assert not np.array_equal(a_np, np.asarray(c.detach()))
    assert set(np.unique(a_np)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a_np == 0).mean() - 0.25) < 0.01
    (g,) = ember.autograd.grad((a * 3.0).sum(), [x])
    np.testing.assert_array_equal(np.asarray(g), a_np * 3.0)
    assert N.dropout(x, 0.25, training=False) is x
    np.testing.assert_array_equal(np.asarray(ember.nn.Dropout(0.5).eval()(x).detach()), 1.0)


def test_fused_ops_refuse_bad_shapes_naming_the_op():
    x = ember.randn(2, 4)
    with pytest.raises(ValueError, match="gelu: bias must have shape"):
        N.gelu(x, bias=ember.randn(3))
    with pytest.raises(ValueError, match="residual"):
        Fz.fused_layer_norm(x, ember.ones(4), ember.zeros(4), ember.randn(3, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        Fz.fused_softmax(x, ember.randn(3, 4))
    with pytest.raises(ValueError, match="approximate"):
        N.gelu(x, "fast")


@pytest.mark.skipif(not numba_kernels.available(), reason="the fused kernels need numba")
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_fused_kernels_serially():
    """GNU OpenMP kills a forked child that starts a parallel region: a DataLoader worker
    forked after a row-parallel kernel ran must still run it, on the serial build."""
    import os

    rng = np.random.default_rng(0)
    x = ember.tensor(rng.standard_normal((512, 384)).astype(np.float32))
    expected = ember.nn.functional.gelu(x).numpy()  # numba's threads have run here
    assert x.numel() >= K.PARALLEL_MIN_SIZE
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        ok = b"0"
        try:
            got = ember.nn.functional.gelu(x).numpy()
            ok = b"1" if got.tobytes() == expected.tobytes() else ok
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 1)
    os.close(read)
    assert status == 0 and answer == b"1", f"child exit status {status}, answer {answer!r}"


def _gelu_sweep():
    """Float32 inputs of the GELU checks (Note [Float32 GELU]): a dense grid over [-12, 12], the
    magnitudes 1e-30 .. 1e30 of both signs, and the edges, as (rows, 1536) above
    COMPILED_MIN_SIZE."""
    edges = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e-40, -3e-40, 4.0, -4.0, 5.66, -5.66]
    values = np.concatenate(
        [
            np.linspace(-12, 12, 120 * 1536 - 4096 - len(edges)),
            np.geomspace(1e-30, 1e30, 2048),
            -np.geomspace(1e-30, 1e30, 2048),
            edges,
        ]
    )
    return values.astype(np.float32).reshape(-1, 1536)


def _exact_gelu(u32):
    """GELU and its slope in float64 at float32 inputs, through erfc (no cancellation)."""
    u = u32.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        cdf = 0.5 * np.frompyfunc(math.erfc, 1, 1)(-u / math.sqrt(2.0)).astype(np.float64)
        return u * cdf, cdf + u * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _gelu_errors(ours, exact, u32):
    """(max relative error where u > -2, max of |error| / max(1, |u|) over finite values)."""
    u = u32.astype(np.float64)
    finite = np.isfinite(exact) & np.isfinite(ours)
    error = np.where(finite, np.abs(ours.astype(np.float64) - np.where(finite, exact, 0)), 0)
    near = finite & (u > -2) & (exact != 0)  # where 1 + erf cancels little
    relative = np.max(error[near] / np.abs(exact[near]))
    return relative, np.max(error[finite] / np.maximum(1.0, np.abs(u[finite])))


def _serial_gelu(x, bias, approximate):
    """GELU through the uncontracted serial build that small inputs load, whose bits their NumPy
    twin reproduces (large inputs take the contracted build, whose errors the sweeps bound;
    Note [Contracted GELU])."""
    kernel = K._kernel(K._gelu_group(approximate, np.float32, bias), "gelu_forward", False)
    out = np.empty_like(x)
    kernel(x, K._empty_bias(np.float32) if bias is None else bias, out)
    return out


@needs_numba
def test_float32_gelu_within_float32_rounding_of_the_exact_function():
    """Note [Float32 GELU]: the float32 kernels against GELU and its slope in float64 over a
    dense sweep with tails: relative error a few 1e-6 where u > -2 (PyTorch's float32 GELU is
    3.1e-6 there), absolute error a few 1e-7 |u| in the negative tail, where 1 + erf cancels in
    float32 as it does in PyTorch; NaN, infinities and huge values as PyTorch gives them (but
    gelu(+inf) = +inf, where PyTorch says NaN). The NumPy twin gives the kernel's bits."""
    x = _gelu_sweep()
    value, slope = _exact_gelu(x)
    ours = K.gelu(x, None, "none")
    ours_slope = K.gelu_grad(np.ones_like(x), x, None, "none")
    assert ours.dtype == ours_slope.dtype == np.float32
    for name, got, exact, bounds in (
        ("forward", ours, value, (1e-5, 4e-7)),
        ("slope", ours_slope, slope, (None, 4e-7)),
    ):
        relative, absolute = _gelu_errors(got, exact, x)
        print(f"float32 GELU {name}: max rel error (u > -2) {relative:.2e}, max abs / |u| "
              f"{absolute:.2e}")  # fmt: skip
        assert absolute <= bounds[1], name
        if bounds[0] is not None:
            assert relative <= bounds[0], name
    edges = x.reshape(-1)[-11:]
    got, got_slope = ours.reshape(-1)[-11:], ours_slope.reshape(-1)[-11:]
    assert np.isnan(got[0]) and got[1] == np.inf and np.isnan(got[2])
    assert np.all(np.isnan(got_slope[:3]))
    np.testing.assert_array_equal(got[3:7], edges[3:7] * np.float32(0.5))  # zeros, subnormals
    huge = x.reshape(-1)[-4096 - 11 : -11]
    assert np.all(ours.reshape(-1)[-4096 - 11 : -11][huge < -10] == 0)  # -0.0 below -10
    np.testing.assert_array_equal(ours.reshape(-1)[-4096 - 11 : -11][huge > 10], huge[huge > 10])
    b = np.linspace(-3, 3, 1536).astype(np.float32)
    for bias in (None, b):
        np.testing.assert_array_equal(K._small_gelu(x, bias), _serial_gelu(x, bias, "none"))


@needs_numba
def test_float32_gelu_within_float32_rounding_of_pytorch():
    torch = pytest.importorskip("torch", reason="torch (the test extra) checks GELU parity")
    x = _gelu_sweep()
    t = torch.from_numpy(x)
    theirs = torch.nn.functional.gelu(t).numpy()
    theirs_slope = torch.ops.aten.gelu_backward(torch.ones_like(t), t).numpy()
    finite = np.isfinite(x)
    scale = np.maximum(1.0, np.abs(x[finite]))
    for got, ref in (
        (K.gelu(x, None, "none"), theirs),
        (K.gelu_grad(np.ones_like(x), x, None, "none"), theirs_slope),
    ):
        difference = np.max(np.abs(got[finite] - ref[finite]) / scale)
        print(f"float32 GELU against PyTorch: max |difference| / max(1, |u|) {difference:.2e}")
        assert difference <= 8e-7  # each is within 4e-7 of the exact value


def _exact_tanh_gelu(u32):
    """The tanh approximation and its slope in float64 at float32 inputs, as u s with
    s = 1 / (1 + exp(-2z)) (no cancellation in the negative tail)."""
    u = u32.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(-2 * math.sqrt(2 / math.pi) * (u + 0.044715 * u**3))
        s = 1 / (1 + e)
        z_slope = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * u * u)
        return u * s, s + 2 * u * z_slope * e * s * s


@needs_numba
def test_float32_tanh_gelu_within_float32_rounding():
    """Note [Float32 tanh GELU]: the float32 kernels against the tanh approximation in float64
    and against PyTorch over the dense sweep: relative error a few 1e-6 where u > -2 and in
    the negative tail (where PyTorch's 1 + tanh cancels to 0), absolute error a few 1e-7
    max(1, |u|) everywhere; NaN, infinities and huge values as stated; the NumPy twin gives the
    kernel's bits."""
    torch = pytest.importorskip("torch", reason="torch (the test extra) checks GELU parity")
    x = _gelu_sweep()
    value, slope = _exact_tanh_gelu(x)
    ours = K.gelu(x, None, "tanh")
    ours_slope = K.gelu_grad(np.ones_like(x), x, None, "tanh")
    assert ours.dtype == ours_slope.dtype == np.float32
    t = torch.from_numpy(x)
    theirs = torch.nn.functional.gelu(t, approximate="tanh").numpy()
    theirs_slope = torch.ops.aten.gelu_backward(torch.ones_like(t), t, approximate="tanh")
    for name, got, exact, relative_bound in (
        ("forward", ours, value, 1e-5),
        ("slope", ours_slope, slope, None),
    ):
        relative, absolute = _gelu_errors(got, exact, x)
        print(f"float32 tanh GELU {name}: max rel error (u > -2) {relative:.2e}, max abs / "
              f"max(1, |u|) {absolute:.2e}")  # fmt: skip
        assert absolute <= 4e-7, name
        if relative_bound is not None:
            assert relative <= relative_bound, name
    tail = (x > -9) & (x < -2)
    assert np.max(np.abs(ours[tail] - value[tail]) / np.abs(value[tail])) <= 4e-5
    for got, ref in ((ours, theirs), (ours_slope, theirs_slope.numpy())):
        finite = np.isfinite(x) & np.isfinite(ref)  # PyTorch's slope: NaN where u^2 overflows
        scale = np.maximum(1.0, np.abs(x[finite]))
        difference = np.max(np.abs(got[finite] - ref[finite]) / scale)
        print(f"float32 tanh GELU against PyTorch: max |difference| / max(1, |u|) {difference:.2e}")
        assert difference <= 8e-7
    got, got_slope = ours.reshape(-1)[-11:], ours_slope.reshape(-1)[-11:]
    assert np.isnan(got[0]) and got[1] == np.inf and np.isnan(got[2])  # NaN, +inf, -inf
    assert np.isnan(got_slope[0]) and got_slope[1] == 1 and got_slope[2] == 0
    huge = x.reshape(-1)[-4096 - 11 : -11]
    assert np.all(ours.reshape(-1)[-4096 - 11 : -11][huge < -10] == 0)
    np.testing.assert_array_equal(ours.reshape(-1)[-4096 - 11 : -11][huge > 10], huge[huge > 10])
    b = np.linspace(-3, 3, 1536).astype(np.float32)
    for bias in (None, b):
        np.testing.assert_array_equal(K._small_gelu(x, bias, "tanh"), _serial_gelu(x, bias, "tanh"))


@needs_numba
def test_float32_softmax_kernel_exp_within_three_ulp_and_edges(monkeypatch):
    """The float32 softmax's call-free exp (Note [Vectorised rows]): within 3 float32 ulp of
    a float64 softmax of the same float32 shifted scores (z - max, as the reference computes
    them) from tiny to large, masked (-inf and float32's min) entries 0, an all-masked row
    NaN, a NaN score (of either sign) NaN for its row."""
    monkeypatch.setattr(K, "COMPILED_MIN_SIZE", 0)
    rng = np.random.default_rng(5)
    scale = np.array([0.01, 1.0, 30.0])[None, :, None, None]
    s = (rng.standard_normal((2, 3, 40, 200)) * scale).astype(np.float32)
    m = np.zeros((2, 1, 1, 200), np.float32)
    m[0, ..., 150:] = np.finfo(np.float32).min
    m[1, ..., 190:] = -np.inf
    ours = K.softmax(s, m, 0.7)
    z = s * np.float32(0.7) + m
    with np.errstate(invalid="ignore"):
        shifted = (z - z.max(-1, keepdims=True)).astype(np.float64)
    e = np.exp(shifted)
    exact = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    # where exp(z - max) is subnormal (z - max < -87) the kernel gives 0
    ulp = np.spacing(np.maximum(np.abs(exact), np.finfo(np.float32).tiny))
    error = np.abs(ours - exact)
    normal = exact >= 1e-36
    assert np.all(error[normal] <= 3 * ulp[normal])
    assert np.all(error[~normal] <= 1e-36)
    assert np.all(ours[0, ..., 150:] == 0) and np.all(ours[1, ..., 190:] == 0)
    edge = np.zeros((1, 1, 3, 4), np.float32)
    edge[0, 0, 1, 2] = np.nan
    edge[0, 0, 2, 1] = np.copysign(np.nan, -1.0)  # the lowest order key (Note [Row max over
    mask = np.zeros((1, 1, 3, 4), np.float32)  # order keys]): its row NaN all the same
    mask[0, 0, 0] = -np.inf
    assert np.isnan(K.softmax(edge, mask, 1.0)).all()


def _small_cases():
    """(name, dtype, call) below COMPILED_MIN_SIZE, with NaN, infinities, signed zeros, huge
    and subnormal values, rows shorter than 8 and not a multiple of 8, -inf and float32-min
    masks (Note [Kernel-exact small paths])."""
    rng = np.random.default_rng(11)
    cases = []
    for d in (3, 8, 13, 384):
        for dtype in DTYPES:
            x = (rng.standard_normal((7, d)) * 4).astype(dtype)
            x.reshape(-1)[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 3e-40]
            r = rng.standard_normal((7, d)).astype(dtype)
            w, b = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
            cases += [
                (
                    f"layer_norm d={d}",
                    dtype,
                    partial(K.layer_norm, x, None, w, b, 1e-5),
                ),
                (
                    f"layer_norm+res d={d}",
                    dtype,
                    partial(K.layer_norm, x, r, w, b, 1e-12),
                ),
            ]
            if dtype != np.float32:
                continue
            hole = np.where(rng.random((7, 1, 1, d)) < 0.3, -np.inf, 0.0).astype(dtype)
            low = np.where(rng.random((7, 1, 1, d)) < 0.3, np.finfo(dtype).min, 0.0).astype(dtype)
            cases += [
                (f"gelu d={d}", dtype, partial(K.gelu, x, None, "none")),
                (f"gelu+bias d={d}", dtype, partial(K.gelu, x, b, "none")),
                (f"tanh gelu d={d}", dtype, partial(K.gelu, x, None, "tanh")),
                (f"tanh gelu+bias d={d}", dtype, partial(K.gelu, x * 4, b, "tanh")),
                (
                    f"softmax d={d}",
                    dtype,
                    partial(K.softmax, x.reshape(1, 7, 1, d), None, 0.125),
                ),
                (
                    f"softmax -inf mask d={d}",
                    dtype,
                    partial(K.softmax, x.reshape(7, 1, 1, d), hole, 1.0),
                ),
                (
                    f"softmax min mask d={d}",
                    dtype,
                    partial(K.softmax, r.reshape(7, 1, 1, d) * 30, low, 0.7),
                ),
                (
                    f"softmax 3-d d={d}",
                    dtype,
                    partial(K.softmax, r.reshape(1, 7, d), np.zeros((7, 1), dtype), 0.7),
                ),
            ]
    return cases


@needs_numba
@pytest.mark.parametrize("length", [64, 131])
def test_float32_softmax_gradient_within_float32_rounding_of_float64(length, monkeypatch):
    """Note [Float32 softmax backward]: the float32 kernel's scale * y * (g - <g, y>), its
    dot in float32 lanes, stays within a few float32 ulp of the same formula in float64 on the
    same float32 inputs, relative to the row's size |y| (|g| + max |g|), for rows of a multiple
    of the 8 lanes and not; masked (zero) probabilities give zero gradients."""
    monkeypatch.setattr(K, "COMPILED_MIN_SIZE", 0)
    rng = np.random.default_rng(9)
    scores = rng.standard_normal((4, 3, 48, length)) * np.array([0.1, 1.0, 8.0])[:, None, None]
    scores[..., -5:] = -np.inf  # masked keys
    y = Fz._softmax_forward(np, scores.astype(np.float32), None, 1.0)
    g = (rng.standard_normal(y.shape) * 3.0).astype(np.float32)
    ours = K.softmax_grad(g, y, 0.125)
    assert ours is not None and ours.dtype == np.float32
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    exact = 0.125 * y64 * (g64 - (g64 * y64).sum(-1, keepdims=True))
    size = 0.125 * np.abs(y64) * (np.abs(g64) + np.abs(g64).max(-1, keepdims=True))
    eps = np.finfo(np.float32).eps
    assert np.all(np.abs(ours - exact) <= 4 * eps * size + np.finfo(np.float32).tiny)
    assert np.all(ours[..., -5:] == 0)


@needs_numba
def test_small_inputs_give_the_compiled_kernels_bits(monkeypatch):
    """Below COMPILED_MIN_SIZE the NumPy passes equal the compiled kernel bit for bit (NaN
    where it gives NaN), so a process that has loaded the kernels computes what a fresh one
    does (Note [Kernel-exact small paths])."""
    monkeypatch.setattr(K, "WARM_UP_AFTER", None)
    monkeypatch.setattr(K, "_READY", {})
    pick = K._pick
    for name, dtype, call in _small_cases():
        small = call()
        with monkeypatch.context() as m:
            m.setattr(K, "COMPILED_MIN_SIZE", 0)
            m.setattr(K, "PARALLEL_MIN_SIZE", 1 << 62)
            # small layer norms load the general kernels (group "layer_norm"), not the large
            # float32 inputs' one-pass kernels (Note [Float32 layer norm])
            m.setattr(K, "_norm_group", lambda dtype, g=None: "layer_norm")
            # and small GELUs the uncontracted build (Note [Contracted GELU])
            m.setattr(K, "_pick", lambda group, name, size, contract=False: pick(group, name, size))
            compiled = call()
        assert small is not None and small.dtype == dtype, name
        np.testing.assert_array_equal(small, compiled, err_msg=f"{name} {np.dtype(dtype).name}")


def test_small_inputs_agree_with_the_reference_and_keep_it_for_other_variants():
    """The kernel-exact NumPy passes stay within the fused ops' tolerance of the reference;
    float64 GELU and float64 softmax keep the reference (None here)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((16, 96)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    m = np.where(rng.random((16, 96)) < 0.2, -np.inf, 0.0).astype(np.float32)
    xp = ember.backend.get_backend("cpu").xp
    with numba_kernels.disable_for_tests():
        pairs = [
            (K.gelu(x, b, "none"), Fz._gelu_forward(xp, x, b)),
            (K.gelu(x, b, "tanh"), Fz._gelu_forward(xp, x, b, "tanh")),
            (K.layer_norm(x, x[::-1], b, b, 1e-12), Fz._ln_forward(xp, x, b, b, x[::-1], 1e-12)),
            (K.softmax(x, m, 0.3), Fz._softmax_forward(xp, x, m, 0.3)),
        ]
    for ours, ref in pairs:
        _close(ours, ref, np.float32, "small path")
    assert K.gelu(x.astype(np.float64), None, "tanh") is None
    assert K.gelu(x.astype(np.float64), None, "none") is None
    assert K.softmax(x.astype(np.float64), None, 1.0) is None


@needs_numba
def test_the_background_warm_up_loads_the_kernels_without_changing_results(monkeypatch):
    """After WARM_UP_AFTER small calls a daemon thread loads the serial kernels; the calls
    after it run them and give the same bits as before (Note [Kernel-exact small paths])."""
    monkeypatch.setenv("EMBER_KERNEL_WARM_UP", "1")
    monkeypatch.setattr(K, "WARM_UP_AFTER", 3)
    monkeypatch.setattr(K, "_READY", {})
    state = {"calls": 0, "thread": None, "failed": False, "wanted": {}}
    monkeypatch.setattr(K, "_small_state", state)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 40)).astype(np.float32)
    w = rng.standard_normal(40).astype(np.float32)
    w.flags.writeable = False  # a read-only weight (mapped from a checkpoint) is copied
    calls = [
        lambda: K.gelu(x, w, "none"),
        lambda: K.layer_norm(x, x, w, w, 1e-12),
        lambda: K.softmax(x[None, None], None, 0.5),
    ]
    before = [call() for call in calls]
    thread = state["thread"]  # None once it has finished
    if thread is not None:
        assert thread.daemon
        thread.join(120)
    assert len(K._READY) == 3 and not state["failed"], K._READY
    for call, old in zip(calls, before):
        np.testing.assert_array_equal(call(), old)


def test_gelu_bias_gradient_is_one_sum_at_any_thread_count():
    """GELU's bias gradient sums the input gradient over rows as one GEMV (`_row_sum`, Note
    [Linear backward]): the same bits at 1 and 2 threads, within float32 rounding of the
    float64 sum of the same input gradient."""
    rng = np.random.default_rng(21)
    x, g = (ember.from_numpy(rng.standard_normal((3, 700, 192)).astype(np.float32)) for _ in "xg")
    b = ember.from_numpy(rng.standard_normal(192).astype(np.float32)).requires_grad_()
    before = ember.get_num_threads()
    sums = []
    try:
        for threads in (1, 2):
            ember.set_num_threads(threads)
            gx, gb = Fz._gelu_vjp(g, None, x, b)
            sums.append(np.asarray(gb))
    finally:
        ember.set_num_threads(before)
    np.testing.assert_array_equal(sums[0], sums[1])
    exact = np.asarray(gx).astype(np.float64).reshape(-1, 192).sum(0)
    assert sums[0].shape == (192,) and sums[0].dtype == np.float32
    np.testing.assert_allclose(sums[0], exact, rtol=0, atol=2e-6 * np.abs(exact).max())
