"""Every registered fast kernel (`OpDef.def_kernel`) against its op's reference forward.

Two sources of inputs: the op-table rows that exercise the op (run forward and backward with
each kernel call also checked against the reference on the same arrays), and larger random
shapes and attributes for the convolution and pooling kernels, in float32 and float64.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

import ember
from ember.backend import get_backend
from ember.ops import REGISTRY
from ember.testing.op_table import ROWS, row_rng

XP = get_backend("cpu").xp
KERNEL_OPS = sorted(name for name, op in REGISTRY.items() if op.kernels)
EXACT = {"max_pool2d", "max_pool_indices", "where"}  # pick values or positions: bitwise equal


def _tolerance(op_name, dtype):
    if op_name in EXACT:
        return 0.0, 0.0
    return (1e-12, 1e-12) if dtype == np.float64 else (2e-5, 2e-5)


def _compare(op_name, ours, ref, dtype, context):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{op_name} {context}: shape {ours.shape} != {ref.shape}"
    assert ours.dtype == ref.dtype, f"{op_name} {context}: dtype {ours.dtype} != {ref.dtype}"
    rtol, atol = _tolerance(op_name, dtype)
    finite = np.isfinite(ref)
    scale = max(1.0, float(np.abs(ref[finite]).max(initial=0.0)))
    err = np.abs(ours[finite].astype(np.float64) - ref[finite].astype(np.float64))
    print(f"{op_name} {context}: max abs err {err.max(initial=0.0):.3g}")
    np.testing.assert_allclose(
        ours, ref, rtol=rtol, atol=atol * scale, equal_nan=True, err_msg=f"{op_name} {context}"
    )


@contextlib.contextmanager
def _checked_kernels(calls):
    """Make every numpy kernel also run the reference forward and compare the two."""
    saved = {}
    for name in KERNEL_OPS:
        op = REGISTRY[name]
        kernel = op.kernels.get("numpy")
        if kernel is None:
            continue
        saved[name] = kernel

        def checking(xp, *arrays, _op=op, _kernel=kernel, **attrs):
            ours = _kernel(xp, *arrays, **attrs)
            ref = _op.forward(xp, *arrays, **attrs)
            # the tolerance follows the floating operands (class indices are int64)
            floats = [a for a in arrays if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
            dtype = np.result_type(*(floats or [a for a in arrays if isinstance(a, np.ndarray)]))
            _compare(_op.name, ours, ref, dtype, f"shapes {[np.shape(a) for a in arrays]} {attrs}")
            calls[_op.name] = calls.get(_op.name, 0) + 1
            return ours

        op.kernels["numpy"] = checking
    try:
        yield
    finally:
        for name, kernel in saved.items():
            REGISTRY[name].kernels["numpy"] = kernel


def _row_cases():
    cases = []
    for row in ROWS:
        if not any(name in KERNEL_OPS for name in row.ops):
            continue
        for i, sample in enumerate(row.samples(row_rng(row))):
            for dtype in (np.float32, np.float64):
                cases.append(
                    pytest.param(
                        row, sample, dtype, id=f"{row.name}-{sample.name or i}-{dtype.__name__}"
                    )
                )
    return cases


def test_the_conv_and_pool_kernels_are_registered():
    for name in (
        "conv2d",
        "conv2d_input_grad",
        "conv2d_weight_grad",
        "max_pool2d",
        "max_pool2d_grad",
        "max_pool_indices",
    ):
        assert REGISTRY[name].kernels.get("numpy") is not None, name


def _run_row(row, sample, dtype, calls):
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and i not in row.int_args:
            arr = a.astype(dtype)
            if sample.noncontiguous and arr.ndim >= 2:
                arr = np.ascontiguousarray(arr.T).T
            args.append(ember.from_numpy(arr).requires_grad_(True))
        elif isinstance(a, np.ndarray):  # masks and indices: tensors without gradients
            args.append(ember.from_numpy(a))
        else:
            args.append(a)
    with _checked_kernels(calls):
        out = row.fn(*args, **sample.kwargs)
        if row.grad and out.requires_grad:  # e.g. norm(p=0), a count, has no gradient
            weights = np.linspace(-1, 1, out.numel(), dtype=dtype).reshape(tuple(out.shape))
            (out * ember.from_numpy(weights)).sum().backward()


@pytest.mark.parametrize("row,sample,dtype", _row_cases())
def test_kernels_match_reference_on_op_table_rows(row, sample, dtype):
    _run_row(row, sample, dtype, {})


def test_every_kernel_is_exercised_by_the_op_table():
    calls = {}
    for param in _row_cases():
        _run_row(*param.values, calls)
    missing = [name for name in KERNEL_OPS if not calls.get(name)]
    assert not missing, f"kernels that no op-table sample reaches: {missing}"


def _numba_modes():
    """The kernels' paths: with numba where it is installed, and the NumPy fallback."""
    from ember.backend import numba_kernels

    modes = [
        pytest.param(
            contextlib.nullcontext, id="numpy" if not numba_kernels.available() else "numba"
        )
    ]
    if numba_kernels.available():
        modes.append(pytest.param(numba_kernels.disable_for_tests, id="numpy"))
    return modes


# --- larger random shapes ------------------------------------------------------------------------
CONV_CASES = [
    # x shape, w shape, stride, padding, dilation, groups
    ((8, 1, 28, 28), (16, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((8, 16, 14, 14), (32, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((4, 6, 17, 13), (8, 3, 5, 3), (2, 3), (2, 1), (1, 1), 2),
    ((3, 4, 16, 15), (4, 1, 3, 3), (1, 1), (0, 2), (2, 3), 4),  # depthwise, dilated
    ((2, 8, 11, 12), (6, 8, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1
    ((2, 3, 9, 10), (5, 3, 4, 2), (3, 2), (0, 1), (2, 1), 1),
    ((2, 4, 7, 7), (4, 2, 7, 7), (1, 1), (3, 3), (1, 1), 2),  # kernel as large as input
    ((3, 2, 9, 8), (5, 2, 3, 2), (1, 1), (2, 0), (2, 3), 1),  # direct, dilated
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}p{c[3]}d{c[4]}g{c[5]}"
)
@pytest.mark.parametrize("mode", _numba_modes())
def test_conv_kernels_on_random_shapes(case, dtype, mode):
    with mode():
        _check_conv_kernels(case, dtype)


def _check_conv_kernels(case, dtype):
    from ember.ops.conv import CONV2D, CONV2D_INPUT_GRAD, CONV2D_WEIGHT_GRAD

    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    y = CONV2D.forward(XP, x, w, **attrs)
    _compare("conv2d", CONV2D.kernels["numpy"](XP, x, w, **attrs), y, dtype, str(case))
    g = rng.standard_normal(y.shape).astype(dtype)
    for gg in (g, g.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)):  # contiguous, not
        _compare(
            "conv2d_input_grad",
            CONV2D_INPUT_GRAD.kernels["numpy"](XP, gg, w, input_shape=xs, **attrs),
            CONV2D_INPUT_GRAD.forward(XP, gg, w, input_shape=xs, **attrs),
            dtype,
            str(case),
        )
        _compare(
            "conv2d_weight_grad",
            CONV2D_WEIGHT_GRAD.kernels["numpy"](XP, x, gg, weight_shape=ws, **attrs),
            CONV2D_WEIGHT_GRAD.forward(XP, x, gg, weight_shape=ws, **attrs),
            dtype,
            str(case),
        )
    # non-finite values: the kernels' zero-padded shortcuts must not turn 0 * inf into NaN
    x_inf, w_inf = x.copy(), w.copy()
    x_inf.reshape(-1)[::37] = np.inf
    w_inf.reshape(-1)[::5] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in both
        _compare(
            "conv2d_weight_grad",
            CONV2D_WEIGHT_GRAD.kernels["numpy"](XP, x_inf, g, weight_shape=ws, **attrs),
            CONV2D_WEIGHT_GRAD.forward(XP, x_inf, g, weight_shape=ws, **attrs),
            dtype,
            f"{case} inf",
        )
        _compare(
            "conv2d_input_grad",
            CONV2D_INPUT_GRAD.kernels["numpy"](XP, g, w_inf, input_shape=xs, **attrs),
            CONV2D_INPUT_GRAD.forward(XP, g, w_inf, input_shape=xs, **attrs),
            dtype,
            f"{case} inf",
        )


POOL_CASES = [
    # x shape, kernel, stride, padding, dilation, ceil_mode
    ((8, 16, 28, 28), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((4, 3, 15, 13), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((4, 3, 15, 13), (3, 2), (2, 1), (1, 0), (1, 1), True),
    ((2, 5, 12, 11), (2, 3), (1, 2), (1, 1), (2, 1), False),
    ((2, 5, 12, 11), (2, 2), (3, 3), (0, 1), (1, 1), True),  # gaps between windows
    ((2, 2, 9, 9), (3, 3), (3, 3), (1, 1), (1, 1), True),
]


def _pool_inputs(shape, dtype, rng):
    yield "random", rng.standard_normal(shape).astype(dtype)
    yield "ties", rng.integers(-2, 3, shape).astype(dtype)  # many equal maxima in a window
    special = rng.standard_normal(shape).astype(dtype)
    flat = special.reshape(-1)
    flat[rng.choice(flat.size, flat.size // 20, replace=False)] = np.nan
    flat[rng.choice(flat.size, flat.size // 20, replace=False)] = -np.inf
    flat[rng.choice(flat.size, flat.size // 20, replace=False)] = np.inf
    yield "nan-inf", special
    yield "all -inf", np.full(shape, -np.inf, dtype=dtype)


@pytest.mark.parametrize("mode", _numba_modes())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    POOL_CASES,
    ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}p{c[3]}d{c[4]}{'-ceil' if c[5] else ''}",
)
def test_max_pool_kernels_on_random_shapes(case, dtype, mode):
    with mode():
        _check_max_pool_kernels(case, dtype)


def _check_max_pool_kernels(case, dtype):
    from ember.ops.conv import MAX_POOL2D, MAX_POOL2D_GRAD, MAX_POOL_INDICES

    xs, kernel, stride, padding, dilation, ceil_mode = case
    rng = np.random.default_rng(2)
    attrs = {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "ceil_mode": ceil_mode,
    }
    for name, x in _pool_inputs(xs, dtype, rng):
        y = MAX_POOL2D.forward(XP, x, **attrs)
        _compare(
            "max_pool2d", MAX_POOL2D.kernels["numpy"](XP, x, **attrs), y, dtype, f"{case} {name}"
        )
        g = rng.standard_normal(y.shape).astype(dtype)
        gs = [g, g.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)]
        if name == "nan-inf":
            g2 = g.copy()
            g2.reshape(-1)[::7] = np.inf
            gs.append(g2)  # an infinite gradient stays off the non-maximal positions
        for gg in gs:
            _compare(
                "max_pool2d_grad",
                MAX_POOL2D_GRAD.kernels["numpy"](XP, gg, x, **attrs),
                MAX_POOL2D_GRAD.forward(XP, gg, x, **attrs),
                dtype,
                f"{case} {name}",
            )
        _compare(
            "max_pool_indices",
            MAX_POOL_INDICES.kernels["numpy"](XP, x, **attrs),
            MAX_POOL_INDICES.forward(XP, x, **attrs),
            dtype,
            f"{case} {name}",
        )


POOL_INDEX_CASES = [
    # x shape, kernel, stride, padding, dilation, ceil_mode: 1-D and 3-D (2-D: POOL_CASES)
    ((4, 3, 17), (3,), (2,), (1,), (1,), True),
    ((2, 5, 20), (2,), (3,), (1,), (4,), False),
    ((2, 3, 6, 9, 7), (2, 3, 2), (2, 1, 2), (1, 1, 0), (1, 1, 2), True),
    ((2, 2, 7, 7, 8), (3, 3, 3), (3, 3, 3), (1, 1, 1), (1, 1, 1), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    POOL_INDEX_CASES,
    ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}p{c[3]}d{c[4]}{'-ceil' if c[5] else ''}",
)
def test_max_pool_indices_kernel_in_1d_and_3d(case, dtype):
    from ember.ops.conv import MAX_POOL_INDICES

    xs, kernel, stride, padding, dilation, ceil_mode = case
    attrs = {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "ceil_mode": ceil_mode,
    }
    for name, x in _pool_inputs(xs, dtype, np.random.default_rng(4)):
        _compare(
            "max_pool_indices",
            MAX_POOL_INDICES.kernels["numpy"](XP, x, **attrs),
            MAX_POOL_INDICES.forward(XP, x, **attrs),
            dtype,
            f"{case} {name}",
        )


def test_max_pool_kernel_on_integers():
    from ember.ops.conv import MAX_POOL2D, MAX_POOL_INDICES

    x = np.random.default_rng(3).integers(-100, 100, (2, 3, 9, 8)).astype(np.int32)
    for k, s, p, c in itertools.product((2, 3), (1, 2), (0, 1), (False, True)):
        attrs = {
            "kernel": (k, k),
            "stride": (s, s),
            "padding": (p, p),
            "dilation": (1, 1),
            "ceil_mode": c,
        }
        _compare(
            "max_pool2d",
            MAX_POOL2D.kernels["numpy"](XP, x, **attrs),
            MAX_POOL2D.forward(XP, x, **attrs),
            np.int32,
            str(attrs),
        )
        _compare(
            "max_pool_indices",
            MAX_POOL_INDICES.kernels["numpy"](XP, x, **attrs),
            MAX_POOL_INDICES.forward(XP, x, **attrs),
            np.int32,
            str(attrs),
        )


BN_CASES = [(16, 8, 14, 14), (8, 3, 5, 7), (6, 4), (5, 3, 4, 2, 3), (2, 5, 1, 1)]


@pytest.mark.parametrize("mode", _numba_modes())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_CASES, ids=str)
def test_batch_norm_kernels_on_random_shapes(shape, dtype, mode):
    from ember.ops.nn import (
        BATCH_NORM_INPUT_GRAD,
        BATCH_NORM_STATS,
        BATCH_NORM_TRAIN,
        BATCH_NORM_WEIGHT_GRAD,
    )

    rng = np.random.default_rng(5)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    with mode():
        for name, offset in (("centred", 0.0), ("offset", 50.0)):  # a large mean: cancellation
            x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            for gx in (x, np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)):
                for op, args, attrs in (
                    (BATCH_NORM_STATS, (gx,), {}),
                    (BATCH_NORM_TRAIN, (gx, w, b), {"eps": 1e-5}),
                    (BATCH_NORM_INPUT_GRAD, (g, gx, w), {"eps": 1e-5}),
                    (BATCH_NORM_WEIGHT_GRAD, (g, gx), {"eps": 1e-5}),
                ):
                    _compare(
                        op.name,
                        op.kernels["numpy"](XP, *args, **attrs),
                        op.forward(XP, *args, **attrs),
                        dtype,
                        f"{shape} {name}",
                    )


XENT_CASES = [((64, 10), -100), ((1, 10), -100), ((7, 3), 1), ((5, 30522), -100), ((97, 2048), 5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,ignore_index", XENT_CASES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_kernels_on_random_shapes(shape, ignore_index, reduction, dtype):
    """softmax_cross_entropy and its gradient: the compiled row loops (float64 sums) against
    the reference forwards, with ignored targets, each reduction, and large logits."""
    from ember.backend import numba_kernels, xent_kernels

    if not numba_kernels.available():
        pytest.skip("numba (the `fast` extra) is not installed or EMBER_NO_NUMBA is set")
    rng = np.random.default_rng(len(shape) + shape[0])
    x = (rng.standard_normal(shape) * 8).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[::3] = ignore_index if ignore_index < 0 else t[::3]
    g = np.asarray(rng.standard_normal(shape[0]) if reduction == "none" else 0.7, dtype=dtype)
    fwd, grad = REGISTRY["softmax_cross_entropy"], REGISTRY["softmax_cross_entropy_grad"]
    attrs = {"ignore_index": ignore_index, "reduction": reduction}
    ours = xent_kernels.cross_entropy(x, t, **attrs)
    assert ours is not None
    _compare("softmax_cross_entropy", ours, fwd.forward(XP, x, t, **attrs), dtype, "random")
    ours = xent_kernels.cross_entropy_grad(g, x, t, **attrs)
    assert ours is not None
    ref = grad.forward(XP, g, x, t, **attrs)
    _compare("softmax_cross_entropy_grad", ours, ref, dtype, "random")
    # the joint loops (a compiled step's loss and gradient) give the two kernels' bits
    loss, both = xent_kernels.cross_entropy_with_grad(g, x, t, **attrs)
    np.testing.assert_array_equal(loss, xent_kernels.cross_entropy(x, t, **attrs))
    np.testing.assert_array_equal(both, ours)
    # a target out of range: the kernel declines, the reference raises with the target
    bad = t.copy()
    bad[0] = shape[1]
    assert xent_kernels.cross_entropy(x, bad, **attrs) is None
    assert xent_kernels.cross_entropy_with_grad(g, x, bad, **attrs) is None
    with pytest.raises(IndexError, match="out of range"):
        fwd.kernels["numpy"](XP, x, bad, **attrs)
