"""Pooling against PyTorch: max pooling's values, indices and gradients of first and second
order (1-D, 2-D, 3-D), max unpooling, avg pooling's ceil-mode divisors (1-D to 3-D), and
adaptive avg and max pooling (1-D to 3-D, with indices).

Each case runs ember and PyTorch on the same arrays and prints the max abs error. Inputs come
in three kinds: random (distinct values), ties (small integers, many equal maxima per window,
where the first maximum in scan order must win) and special (NaN and -inf, where the last NaN
wins and a window of -inf picks its first position inside the input; Note [Pool windows]).
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.autograd import grad

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")
TF = torch.nn.functional

# name, nd, input shape, keyword arguments
MAX_CASES = [
    ("2d-k2", 2, (2, 3, 6, 6), {"kernel_size": 2}),
    ("2d-k3s2p1", 2, (2, 3, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("2d-ceil", 2, (1, 2, 7, 7), {"kernel_size": 2, "ceil_mode": True}),
    (
        "2d-ceil-pad-overhang",
        2,
        (1, 2, 8, 9),
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    ),
    (
        "2d-dilation",
        2,
        (2, 2, 9, 10),
        {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1), "dilation": (3, 2)},
    ),
    (
        "2d-dilation-ceil",
        2,
        (1, 3, 10, 9),
        {"kernel_size": 3, "stride": 3, "padding": 1, "dilation": 2, "ceil_mode": True},
    ),
    ("2d-overlap-s1", 2, (2, 2, 5, 6), {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("2d-unbatched", 2, (3, 6, 5), {"kernel_size": 2, "stride": 1}),
    ("1d-k3s2p1", 1, (2, 3, 11), {"kernel_size": 3, "stride": 2, "padding": 1}),
    (
        "1d-dilation-ceil",
        1,
        (2, 2, 12),
        {"kernel_size": 3, "stride": 2, "dilation": 2, "ceil_mode": True},
    ),
    ("1d-unbatched", 1, (3, 9), {"kernel_size": 2}),
    ("3d-k2", 3, (2, 2, 4, 6, 4), {"kernel_size": 2}),
    (
        "3d-pad-ceil",
        3,
        (1, 2, 5, 6, 7),
        {"kernel_size": (2, 3, 2), "stride": (2, 1, 2), "padding": 1, "ceil_mode": True},
    ),
    (
        "3d-dilation",
        3,
        (1, 2, 6, 7, 7),
        {"kernel_size": 2, "stride": 2, "padding": (0, 1, 1), "dilation": (1, 2, 3)},
    ),
    ("3d-unbatched", 3, (2, 4, 5, 4), {"kernel_size": 2, "stride": 1}),
]


def _inputs(kind, shape, rng):
    if kind == "random":
        return rng.standard_normal(shape)
    if kind == "ties":
        return rng.integers(-2, 3, shape).astype(np.float64)
    a = rng.standard_normal(shape)
    flat = a.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 10), replace=False)] = np.nan
    flat[rng.choice(flat.size, max(1, flat.size // 4), replace=False)] = -np.inf
    return a


def _err(ours, theirs):
    a = np.asarray(ours.detach() if isinstance(ours, ember.Tensor) else ours, dtype=np.float64)
    b = theirs.detach().numpy().astype(np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN positions differ"
    assert np.array_equal(a[~both & ~np.isnan(a)], b[~both & ~np.isnan(b)]), "infinities differ"
    return float(np.abs(a[both] - b[both]).max(initial=0.0))


def _pool(lib_f, nd):
    return getattr(lib_f, f"max_pool{nd}d")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("name,nd,shape,kwargs", MAX_CASES, ids=[c[0] for c in MAX_CASES])
def test_max_pool_values_indices_and_gradients_match_torch(name, nd, shape, kwargs, kind, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{name}-{kind}".encode()))
    a = _inputs(kind, shape, rng).astype(dtype)
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out, idx = _pool(F, nd)(x, return_indices=True, **kwargs)
    t_out, t_idx = _pool(TF, nd)(t, return_indices=True, **kwargs)
    assert tuple(out.shape) == tuple(t_out.shape) and tuple(idx.shape) == tuple(t_idx.shape)
    assert idx.dtype is ember.int64
    np.testing.assert_array_equal(np.asarray(idx), t_idx.numpy(), err_msg=f"{name} indices")
    values_err = _err(out, t_out)
    plain = _pool(F, nd)(x, **kwargs)  # the values-only path (fast kernels in 1-D and 2-D)
    plain_err = _err(plain, t_out)

    cot = rng.standard_normal(tuple(out.shape)).astype(dtype)
    out.backward(ember.from_numpy(cot))
    t_out.backward(torch.from_numpy(cot))
    grad_err = _err(x.grad, t.grad)
    print(
        f"{name} {kind} {np.dtype(dtype).name}: max abs err values {values_err:.3g}, "
        f"values-only {plain_err:.3g}, input grad {grad_err:.3g}; indices equal"
    )
    assert values_err == 0.0 and plain_err == 0.0
    assert grad_err <= (1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name,nd,shape,kwargs", MAX_CASES, ids=[c[0] for c in MAX_CASES])
def test_max_pool_second_order_matches_torch(name, nd, shape, kwargs):
    """d/dv and d/dx of <grad_x <max_pool(x), v>, u> (create_graph), in float64."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    a = rng.standard_normal(shape)
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out = _pool(F, nd)(x, **kwargs)
    t_out = _pool(TF, nd)(t, **kwargs)
    vv, uu = rng.standard_normal(tuple(out.shape)), rng.standard_normal(shape)
    v = ember.from_numpy(vv.copy()).requires_grad_(True)
    tv = torch.from_numpy(vv.copy()).requires_grad_(True)
    (gx,) = grad(out, [x], v, create_graph=True)
    (t_gx,) = torch.autograd.grad(t_out, [t], tv, create_graph=True)
    first = _err(gx, t_gx)
    assert gx.requires_grad
    gv, gxx = grad((gx * ember.from_numpy(uu)).sum(), [v, x], allow_unused=True)
    t_gv, t_gxx = torch.autograd.grad(
        (t_gx * torch.from_numpy(uu)).sum(), [tv, t], allow_unused=True
    )
    second = _err(gv, t_gv)
    gxx = np.zeros(shape) if gxx is None else np.asarray(gxx)
    t_gxx = torch.zeros(shape, dtype=torch.float64) if t_gxx is None else t_gxx
    second_x = _err(gxx, t_gxx)
    print(
        f"{name}: max abs err first order {first:.3g}, second order d/dv {second:.3g}, "
        f"d/dx {second_x:.3g}"
    )
    assert first <= 1e-12 and second <= 1e-12 and second_x == 0.0


# name, nd, input shape, pool kwargs, output_size (None: the default)
UNPOOL_CASES = [
    ("2d", 2, (2, 3, 6, 6), {"kernel_size": 2}, None),
    ("2d-odd-output-size", 2, (2, 3, 7, 7), {"kernel_size": 2}, (7, 7)),
    ("2d-full-output-size", 2, (1, 2, 7, 5), {"kernel_size": 2}, (1, 2, 7, 5)),
    ("2d-stride-pad", 2, (1, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}, (9, 8)),
    ("2d-unbatched", 2, (3, 4, 6), {"kernel_size": 2}, None),
    ("1d", 1, (2, 3, 9), {"kernel_size": 2}, (9,)),
    ("1d-stride-pad", 1, (2, 2, 10), {"kernel_size": 3, "stride": 3, "padding": 1}, None),
    ("3d", 3, (1, 2, 4, 6, 5), {"kernel_size": 2}, (4, 6, 5)),
    ("3d-unbatched", 3, (2, 4, 4, 4), {"kernel_size": 2}, None),
]


def _unpool(lib_f, nd):
    return getattr(lib_f, f"max_unpool{nd}d")


@pytest.mark.parametrize(
    "name,nd,shape,kwargs,size", UNPOOL_CASES, ids=[c[0] for c in UNPOOL_CASES]
)
def test_max_unpool_round_trip_and_gradients_match_torch(name, nd, shape, kwargs, size):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    a = rng.standard_normal(shape)
    out, idx = _pool(F, nd)(ember.from_numpy(a), return_indices=True, **kwargs)
    t_out, t_idx = _pool(TF, nd)(torch.from_numpy(a), return_indices=True, **kwargs)
    y = ember.from_numpy(np.asarray(out)).requires_grad_(True)
    ty = t_out.detach().clone().requires_grad_(True)
    unpool_kw = {k: v for k, v in kwargs.items() if k != "dilation"}
    up = _unpool(F, nd)(y, idx, output_size=size, **unpool_kw)
    t_up = _unpool(TF, nd)(ty, t_idx, output_size=size, **unpool_kw)
    assert tuple(up.shape) == tuple(t_up.shape)
    forward_err = _err(up, t_up)
    # the round trip: every pooled value sits at its argmax, and only there
    planes = np.asarray(up.detach()).reshape(np.asarray(out).shape[:-nd] + (-1,))
    flat_idx = np.asarray(idx).reshape(planes.shape[:-1] + (-1,))
    np.testing.assert_array_equal(
        np.take_along_axis(planes, flat_idx, -1), np.asarray(out).reshape(flat_idx.shape)
    )
    assert np.count_nonzero(planes) == len(
        np.unique(
            flat_idx
            + np.arange(flat_idx[..., 0].size).reshape(flat_idx.shape[:-1] + (1,))
            * planes.shape[-1]
        )
    )
    cot = rng.standard_normal(tuple(up.shape))
    v = ember.from_numpy(cot.copy()).requires_grad_(True)
    tv = torch.from_numpy(cot.copy()).requires_grad_(True)
    (gy,) = grad(up, [y], v, create_graph=True)
    (t_gy,) = torch.autograd.grad(t_up, [ty], tv, create_graph=True)
    grad_err = _err(gy, t_gy)
    uu = rng.standard_normal(tuple(gy.shape))
    (gv,) = grad((gy * ember.from_numpy(uu)).sum(), [v])
    (t_gv,) = torch.autograd.grad((t_gy * torch.from_numpy(uu)).sum(), [tv])
    second_err = _err(gv, t_gv)
    # module form gives the same
    module = getattr(nn, f"MaxUnpool{nd}d")(**unpool_kw)
    np.testing.assert_array_equal(
        np.asarray(module(y, idx, output_size=size).detach()), np.asarray(up.detach())
    )
    print(
        f"unpool {name}: max abs err forward {forward_err:.3g}, input grad {grad_err:.3g}, "
        f"second order {second_err:.3g}"
    )
    assert forward_err == 0.0 and grad_err == 0.0 and second_err == 0.0


def test_module_round_trip_pool_unpool_matches_torch():
    a = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    pool, unpool = nn.MaxPool2d(2, stride=2, return_indices=True), nn.MaxUnpool2d(2, stride=2)
    t_pool = torch.nn.MaxPool2d(2, stride=2, return_indices=True)
    t_unpool = torch.nn.MaxUnpool2d(2, stride=2)
    out, idx = pool(ember.from_numpy(a))
    t_out, t_idx = t_pool(torch.from_numpy(a))
    np.testing.assert_array_equal(np.asarray(idx), t_idx.numpy())
    np.testing.assert_array_equal(np.asarray(unpool(out, idx)), t_unpool(t_out, t_idx).numpy())


def _avg_cases():
    cases = []
    for n, k, s, p, ceil in itertools.product((5, 6, 7), (2, 3), (1, 2, 3), (0, 1), (False, True)):
        if p > k // 2:
            continue
        for include_pad, divisor in ((True, None), (False, None), (True, 2), (False, 5)):
            cases.append(
                (
                    (n, n + 1),
                    (k, k - 1 if k > 2 else k),
                    (s, max(1, s - 1)),
                    (p, 0),
                    ceil,
                    include_pad,
                    divisor,
                )
            )
    return cases


AVG_CASES = _avg_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool2d_ceil_mode_grid_matches_torch(dtype):
    """Every combination of size, kernel, stride, padding, ceil_mode, count_include_pad and
    divisor_override on a small grid: forward and input gradient."""
    rng = np.random.default_rng(7)
    worst_out = worst_grad = 0.0
    for size, kernel, stride, padding, ceil, include_pad, divisor in AVG_CASES:
        kw = {
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
            "ceil_mode": ceil,
            "count_include_pad": include_pad,
            "divisor_override": divisor,
        }
        a = rng.standard_normal((2, 2) + size).astype(dtype)
        x = ember.from_numpy(a.copy()).requires_grad_(True)
        t = torch.from_numpy(a.copy()).requires_grad_(True)
        out, t_out = F.avg_pool2d(x, **kw), TF.avg_pool2d(t, **kw)
        assert tuple(out.shape) == tuple(t_out.shape), kw
        cot = rng.standard_normal(tuple(out.shape)).astype(dtype)
        out.backward(ember.from_numpy(cot))
        t_out.backward(torch.from_numpy(cot))
        worst_out = max(worst_out, _err(out, t_out))
        worst_grad = max(worst_grad, _err(x.grad, t.grad))
    print(
        f"avg_pool2d {len(AVG_CASES)} configs {np.dtype(dtype).name}: max abs err "
        f"forward {worst_out:.3g}, input grad {worst_grad:.3g}"
    )
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert worst_out <= tol and worst_grad <= tol


@pytest.mark.parametrize(
    "kw",
    [
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
            "ceil_mode": True,
            "count_include_pad": False,
        },
        {"kernel_size": 2, "stride": 3, "ceil_mode": True},
        {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True},
    ],
    ids=["pad", "exclude-pad", "gaps", "k4p2"],
)
def test_avg_pool1d_ceil_mode_matches_torch(kw):
    a = np.random.default_rng(8).standard_normal((2, 3, 10))
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out, t_out = F.avg_pool1d(x, **kw), TF.avg_pool1d(t, **kw)
    out.sum().backward()
    t_out.sum().backward()
    print(
        f"avg_pool1d {kw}: max abs err forward {_err(out, t_out):.3g}, grad "
        f"{_err(x.grad, t.grad):.3g}"
    )
    assert _err(out, t_out) <= 1e-12 and _err(x.grad, t.grad) <= 1e-12


def _avg3d_cases():
    cases = []
    for k, s, p, ceil in itertools.product((2, 3), (1, 2, 3), (0, 1), (False, True)):
        if p > k // 2:
            continue
        for include_pad, divisor in ((True, None), (False, None), (False, 4)):
            cases.append(
                ((5, 6, 7), (k, 2, k), (s, max(1, s - 1), s), (p, 1, 0), ceil, include_pad, divisor)
            )
    return cases


AVG3D_CASES = _avg3d_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool3d_grid_matches_torch(dtype):
    """avg_pool3d over a grid of kernel, stride, padding, ceil_mode, count_include_pad and
    divisor_override: forward and input gradient, plus one unbatched input."""
    rng = np.random.default_rng(17)
    worst_out = worst_grad = 0.0
    for size, kernel, stride, padding, ceil, include_pad, divisor in AVG3D_CASES + [
        ((4, 5, 6), 2, 1, 1, True, False, None)
    ]:
        kw = {
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
            "ceil_mode": ceil,
            "count_include_pad": include_pad,
            "divisor_override": divisor,
        }
        lead = (2, 2) if isinstance(kernel, tuple) else (3,)  # the int-kernel case: unbatched
        a = rng.standard_normal(lead + size).astype(dtype)
        x = ember.from_numpy(a.copy()).requires_grad_(True)
        t = torch.from_numpy(a.copy()).requires_grad_(True)
        out, t_out = F.avg_pool3d(x, **kw), TF.avg_pool3d(t, **kw)
        assert tuple(out.shape) == tuple(t_out.shape), kw
        cot = rng.standard_normal(tuple(out.shape)).astype(dtype)
        out.backward(ember.from_numpy(cot))
        t_out.backward(torch.from_numpy(cot))
        worst_out = max(worst_out, _err(out, t_out))
        worst_grad = max(worst_grad, _err(x.grad, t.grad))
    print(
        f"avg_pool3d {len(AVG3D_CASES) + 1} configs {np.dtype(dtype).name}: max abs err "
        f"forward {worst_out:.3g}, input grad {worst_grad:.3g}"
    )
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert worst_out <= tol and worst_grad <= tol


def test_avg_pool3d_module_and_second_order_match_torch():
    a = np.random.default_rng(18).standard_normal((1, 2, 5, 6, 5))
    kw = {
        "kernel_size": 3,
        "stride": 2,
        "padding": 1,
        "ceil_mode": True,
        "count_include_pad": False,
    }
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out, t_out = nn.AvgPool3d(**kw)(x), torch.nn.AvgPool3d(**kw)(t)
    (gx,) = grad((out * out).sum(), [x], create_graph=True)
    (t_gx,) = torch.autograd.grad((t_out * t_out).sum(), [t], create_graph=True)
    (gxx,) = grad(gx.sum(), [x])
    (t_gxx,) = torch.autograd.grad(t_gx.sum(), [t])
    errs = (_err(out, t_out), _err(gx, t_gx), _err(gxx, t_gxx))
    print(
        "AvgPool3d module: max abs err forward {:.3g}, grad {:.3g}, second order {:.3g}".format(
            *errs
        )
    )
    assert max(errs) <= 1e-12


# name, nd, input shape, output_size
ADAPTIVE_CASES = [
    ("1d-shrink", 1, (2, 3, 11), 4),
    ("1d-grow", 1, (2, 2, 3), 5),
    ("1d-unbatched", 1, (3, 9), (9,)),
    ("2d-divisible", 2, (2, 3, 6, 8), (3, 4)),
    ("2d-overlap", 2, (2, 2, 7, 9), (3, 4)),
    ("2d-global", 2, (2, 3, 5, 4), 1),
    ("2d-none", 2, (1, 2, 7, 5), (None, 3)),
    ("2d-unbatched", 2, (3, 7, 6), (4, 4)),
    ("3d", 3, (1, 2, 5, 7, 6), (2, 3, 4)),
    ("3d-grow-none", 3, (1, 2, 3, 4, 5), (4, None, 2)),
    ("3d-unbatched", 3, (2, 4, 5, 6), 3),
]


@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("name,nd,shape,size", ADAPTIVE_CASES, ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_max_pool_values_indices_and_gradients_match_torch(name, nd, shape, size, kind):
    rng = np.random.default_rng(zlib.crc32(f"adaptive-{name}-{kind}".encode()))
    a = _inputs(kind, shape, rng).astype(np.float32)
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out, idx = getattr(F, f"adaptive_max_pool{nd}d")(x, size, return_indices=True)
    t_out, t_idx = getattr(TF, f"adaptive_max_pool{nd}d")(t, size, return_indices=True)
    assert tuple(out.shape) == tuple(t_out.shape) and idx.dtype is ember.int64
    np.testing.assert_array_equal(np.asarray(idx), t_idx.numpy(), err_msg=f"{name} indices")
    values_err = _err(out, t_out)
    module = getattr(nn, f"AdaptiveMaxPool{nd}d")(size, return_indices=True)
    m_out, m_idx = module(x)
    np.testing.assert_array_equal(np.asarray(m_idx), t_idx.numpy())
    cot = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(ember.from_numpy(cot))
    t_out.backward(torch.from_numpy(cot))
    grad_err = _err(x.grad, t.grad)
    print(
        f"adaptive max {name} {kind}: max abs err values {values_err:.3g}, module "
        f"{_err(m_out, t_out):.3g}, input grad {grad_err:.3g}; indices equal"
    )
    assert values_err == 0.0 and _err(m_out, t_out) == 0.0 and grad_err <= 1e-6


@pytest.mark.parametrize("name,nd,shape,size", ADAPTIVE_CASES, ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_pool_second_order_and_avg_match_torch(name, nd, shape, size):
    """Adaptive max: d/dv and d/dx of <grad_x <pool(x), v>, u>; adaptive avg: forward, grad and
    the second order of a squared loss; float64."""
    rng = np.random.default_rng(zlib.crc32(f"adaptive2-{name}".encode()))
    a = rng.standard_normal(shape)
    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    out = getattr(F, f"adaptive_max_pool{nd}d")(x, size)
    t_out = getattr(TF, f"adaptive_max_pool{nd}d")(t, size)
    vv, uu = rng.standard_normal(tuple(out.shape)), rng.standard_normal(shape)
    v = ember.from_numpy(vv.copy()).requires_grad_(True)
    tv = torch.from_numpy(vv.copy()).requires_grad_(True)
    (gx,) = grad(out, [x], v, create_graph=True)
    (t_gx,) = torch.autograd.grad(t_out, [t], tv, create_graph=True)
    gv, gxx = grad((gx * ember.from_numpy(uu)).sum(), [v, x], allow_unused=True)
    t_gv, t_gxx = torch.autograd.grad(
        (t_gx * torch.from_numpy(uu)).sum(), [tv, t], allow_unused=True
    )
    gxx = np.zeros(shape) if gxx is None else np.asarray(gxx)
    t_gxx = torch.zeros(shape, dtype=torch.float64) if t_gxx is None else t_gxx
    max_errs = (_err(gx, t_gx), _err(gv, t_gv), _err(gxx, t_gxx))

    x = ember.from_numpy(a.copy()).requires_grad_(True)
    t = torch.from_numpy(a.copy()).requires_grad_(True)
    avg = getattr(nn, f"AdaptiveAvgPool{nd}d")(size)(x)
    t_avg = getattr(TF, f"adaptive_avg_pool{nd}d")(t, size)
    (ga,) = grad((avg * avg * avg).sum(), [x], create_graph=True)
    (t_ga,) = torch.autograd.grad((t_avg * t_avg * t_avg).sum(), [t], create_graph=True)
    (gaa,) = grad((ga * ember.from_numpy(uu)).sum(), [x])
    (t_gaa,) = torch.autograd.grad((t_ga * torch.from_numpy(uu)).sum(), [t])
    avg_errs = (_err(avg, t_avg), _err(ga, t_ga), _err(gaa, t_gaa))
    print(
        f"adaptive {name}: max abs err max-pool first order {max_errs[0]:.3g}, second "
        f"d/dv {max_errs[1]:.3g}, d/dx {max_errs[2]:.3g}; avg-pool forward {avg_errs[0]:.3g}, "
        f"grad {avg_errs[1]:.3g}, second order {avg_errs[2]:.3g}"
    )
    assert max_errs[0] <= 1e-12 and max_errs[1] <= 1e-12 and max_errs[2] == 0.0
    assert max(avg_errs) <= 1e-12


def test_compiled_pool_unpool_and_gradient_equal_eager():
    def f(x):
        out, idx = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
        up = F.max_unpool2d(out * 2.0, idx, 3, stride=2, padding=1, output_size=(7, 8))
        return (up * up).sum() + F.avg_pool2d(x, 3, 2, 1, ceil_mode=True).sum(), idx

    a = np.random.default_rng(9).standard_normal((2, 2, 7, 8))
    eager_loss, eager_idx = f(ember.from_numpy(a))
    compiled_loss, compiled_idx = ember.compile(f)(ember.from_numpy(a))
    np.testing.assert_array_equal(np.asarray(compiled_idx), np.asarray(eager_idx))
    np.testing.assert_allclose(float(compiled_loss), float(eager_loss), rtol=1e-12)


def test_compiled_adaptive_and_avg3d_pooling_equal_eager():
    def f(x):
        out, idx = F.adaptive_max_pool2d(x, (3, 4), return_indices=True)
        avg = F.adaptive_avg_pool2d(x, (2, None))
        box = F.avg_pool3d(x.unsqueeze(1), 2, padding=1, ceil_mode=True, count_include_pad=False)
        return (out * out).sum() + avg.sum() + box.sum(), idx

    a = np.random.default_rng(10).standard_normal((2, 3, 7, 9))
    eager_loss, eager_idx = f(ember.from_numpy(a))
    compiled_loss, compiled_idx = ember.compile(f)(ember.from_numpy(a))
    np.testing.assert_array_equal(np.asarray(compiled_idx), np.asarray(eager_idx))
    np.testing.assert_allclose(float(compiled_loss), float(eager_loss), rtol=1e-12)


# --- errors: the op, what was expected, what came -----------------------------------------------
ERRORS = [
    (
        lambda: F.max_unpool2d(
            ember.ones(1, 1, 2, 2), ember.zeros(1, 1, 2, 3, dtype=ember.int64), 2
        ),
        ValueError,
        r"max_unpool2d: indices of shape \(1, 1, 2, 3\) must have the input's shape \(1, 1, 2, 2\)",
    ),
    (
        lambda: F.max_unpool2d(ember.ones(1, 1, 2, 2), ember.zeros(1, 1, 2, 2), 2),
        TypeError,
        "max_unpool2d: indices must be an integer tensor, got ember.float32",
    ),
    (
        lambda: F.max_unpool2d(
            ember.ones(1, 1, 2, 2),
            ember.zeros(1, 1, 2, 2, dtype=ember.int64),
            2,
            output_size=(8, 4),
        ),
        ValueError,
        r"max_unpool2d: invalid output_size \(8, 4\): dim 0 must be between 2 and 6 \(exclusive\), "
        r"got 8",
    ),
    (
        lambda: F.max_unpool1d(
            ember.ones(1, 1, 2), ember.zeros(1, 1, 2, dtype=ember.int64), 2, output_size=(1, 4)
        ),
        ValueError,
        "max_unpool1d: output_size should have 1 or 3 elements, got",
    ),
    (
        lambda: F.max_unpool3d(
            ember.ones(1, 2, 2, 2),
            ember.zeros(1, 2, 2, 2, dtype=ember.int64),
            2,
            output_size=(2, 4, 4),
        ),
        ValueError,
        r"max_unpool3d: invalid output_size \(2, 4, 4\): dim 0 must be between 2 and 6",
    ),
    (
        lambda: F.max_unpool2d(ember.ones(1, 1, 2, 2), ember.tensor([[[[0, 1], [2, -1]]]]), 2),
        IndexError,
        r"max_unpool2d: index -1 is out of range for an output of spatial size \(4, 4\)",
    ),
    (
        lambda: nn.MaxUnpool2d(2)(ember.ones(2, 2), ember.zeros(2, 2, dtype=ember.int64)),
        ValueError,
        r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got \(2, 2\)",
    ),
    (
        lambda: F.max_pool2d(ember.ones(1, 1, 4, 4), 2, padding=2),
        ValueError,
        "max_pool2d: padding .* must be at most half the kernel",
    ),
    (
        lambda: F.max_pool3d(ember.ones(1, 1, 2, 2, 2), 3),
        ValueError,
        r"max_pool3d: kernel \(3, 3, 3\) .* is larger than the input",
    ),
    (
        lambda: F.max_pool1d(ember.ones(1, 1, 4), 2, stride=0),
        ValueError,
        r"max_pool1d: stride must be at least 1, got \(0,\)",
    ),
    (
        lambda: F.max_pool2d(ember.ones(1, 1, 4, 4), (2, 2, 2)),
        ValueError,
        r"max_pool2d: kernel_size must be an int or 2 ints, got \(2, 2, 2\)",
    ),
    (
        lambda: F.avg_pool2d(ember.ones(1, 1, 4, 4), 2, divisor_override=0),
        ValueError,
        "avg_pool2d: divisor_override must be non-zero",
    ),
    (
        lambda: F.avg_pool3d(ember.ones(1, 1, 4, 4, 4), 2, padding=2),
        ValueError,
        "avg_pool3d: padding .* must be at most half the kernel",
    ),
    (
        lambda: F.adaptive_max_pool2d(ember.ones(1, 1, 4, 4), (2, 2, 2)),
        ValueError,
        r"adaptive_max_pool2d: output_size must be an int or 2 ints .*got \(2, 2, 2\)",
    ),
    (
        lambda: F.adaptive_avg_pool3d(ember.ones(1, 1, 0, 4, 4), 2),
        ValueError,
        r"adaptive_avg_pool3d: expected an input with non-zero spatial dims, got shape",
    ),
    (
        lambda: nn.AdaptiveMaxPool1d(2)(ember.ones(1, 1, 2, 2)),
        ValueError,
        r"expected a 2-D \(C, L\) or 3-D \(N, C, L\) input, got \(1, 1, 2, 2\)",
    ),
    (
        lambda: F.avg_pool1d(ember.ones(4), 2),
        ValueError,
        r"avg_pool1d: expected a 2-D or 3-D input, got shape \(4,\)",
    ),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_bad_pooling_inputs_name_the_op_and_what_was_expected(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "test_pooling.py" in str(info.value), f"no caller line in: {info.value}"
