"""Fused Transformer ops: (bias +) GELU, layer norm with an optional residual, scale + mask +
softmax, and dropout, each forward and backward as one primitive (one pass over memory with
the compiled kernels of ember/backend/transformer_kernels.py).

Note [Fused Transformer ops]: these follow Note [Fused composites] (ember.ops.registry). Each
primitive's NumPy forward here is the reference, the kernel registered for the numpy backend
is tested against it (tests/ops/test_fused.py, tests/ops/test_kernels.py through the op
table), and each composite that uses it (`ember.ops.nn.gelu`, `layer_norm`, `softmax`,
`dropout`, `scaled_dot_product_attention`) keeps its decomposition into elementwise and
reduction primitives as `<name>_reference`, checked against the fused op in the op table.
- The VJPs call the gradient primitives; those have VJPs of their own written with ember ops,
  so second-order gradients flow (the op table checks them by finite differences).
- Layer norm recomputes each row's mean and 1/std in its backward kernels instead of saving
  them: the row is in cache, and the op keeps one output.
- Dropout's keep mask is a counter-based hash (splitmix64) of (seed, flat element index), the
  seed a 0-d int64 tensor drawn from ember's generator (`ember.manual_seed` makes it
  reproducible); the backward regenerates the same mask from the seed (no mask is stored) and
  is the same op applied to the gradient. The NumPy reference computes the same hash, so the
  fused kernel and EMBER_FAST_KERNELS=0 give the same bits.
- Every primitive has an ONNX lowering written with standard ONNX primitives (dropout exports
  as ONNX `Dropout` in training mode: the same distribution, not the same mask); the exporter
  turns the forward ones into ONNX Softmax / LayerNormalization / Gelu where the opset has them
  (Note [ONNX fused composites] in ember/onnx/_fuse.py).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import DTypeError, ShapeError
from ember.backend import attention_kernels as _attention_kernels
from ember.backend import attention_train_kernels as _attention_train_kernels
from ember.backend import transformer_kernels as _kernels
from ember.ops import elementwise as E
from ember.ops.elementwise import unbroadcast
from ember.ops.registry import apply, broadcast_shapes, defop, onnx_lowering

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = 0.044715


def _needs_grad(t):
    return getattr(t, "requires_grad", True)


def _row_sum(t, shape):
    """t summed over every dim but the last, as `shape` ((D,)): a GEMV `ones @ t` through
    BLAS, as the linear bias's gradient (Note [Linear backward] in ember/ops/linalg.py): for
    the GELU bias of MiniLM's fine-tune step (2048 x 1536, 2 threads, alone and hot) NumPy's
    `sum(0)` on one core takes 0.48 ms against 0.23 ms for the GEMV (PyTorch's sum 0.44 ms);
    inside the step, with the input gradient out of cache, last session's profile put the
    sums at 7.7 ms a step. Deterministic at any thread count (tests/ops/test_fused.py)."""
    t2 = t.reshape(-1, t.shape[-1])
    return (t2.new_ones((t2.shape[0],)) @ t2).reshape(tuple(shape))


def _bias_shape(name, x, b):
    if len(x) == 0 or tuple(b) != (x[-1],):
        raise ShapeError(f"{name}: bias must have shape ({x[-1] if x else '?'},), got {tuple(b)}")


# --- GELU with an optional bias ------------------------------------------------------------
def _gelu_value(xp, u, approximate):
    if approximate == "tanh":
        return u * 0.5 * (xp.tanh((u + u * u * u * _K) * _SQRT_2_OVER_PI) + 1.0)
    return u * 0.5 * (xp.erf(u * _SQRT_HALF) + 1.0)


def _gelu_slope(xp, u, approximate):
    if approximate == "tanh":
        t = xp.tanh((u + u * u * u * _K) * _SQRT_2_OVER_PI)
        return (t + 1.0) * 0.5 + u * 0.5 * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            u * u * (3.0 * _K) + 1.0
        )
    return (xp.erf(u * _SQRT_HALF) + 1.0) * 0.5 + u * _INV_SQRT_2PI * xp.exp(u * u * -0.5)


def _gelu_forward(xp, x, b=None, approximate="none"):
    return _gelu_value(xp, x if b is None else x + b, approximate)


def _gelu_grad_forward(xp, g, x, b=None, approximate="none"):
    return g * _gelu_slope(xp, x if b is None else x + b, approximate)


def _gelu_shape(x, b=None, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if b is not None:
        _bias_shape("gelu", x, b)
    return tuple(x)


def _gelu_vjp(g, y, x, b=None, approximate="none"):
    rest = () if b is None else (b,)
    gx = apply(GELU_GRAD, g, x, *rest, approximate=approximate)
    if b is None:
        return (gx,)
    return gx, _row_sum(gx, b.shape) if _needs_grad(b) else None


def _gelu_curvature(u, approximate):
    """GELU's second derivative at u (ember ops)."""
    if approximate == "tanh":
        t = E.tanh((u + u * u * u * _K) * _SQRT_2_OVER_PI)
        s = (u * u * (3.0 * _K) + 1.0) * _SQRT_2_OVER_PI
        return (1.0 - t * t) * (s - u * t * s * s + u * u * (3.0 * _SQRT_2_OVER_PI * _K))
    return E.exp(u * u * -0.5) * _INV_SQRT_2PI * (2.0 - u * u)


def _gelu_grad_vjp(h, y, g, x, b=None, approximate="none"):
    rest = () if b is None else (b,)
    u = x if b is None else x + b
    g_g = apply(GELU_GRAD, h, x, *rest, approximate=approximate)
    g_x = h * g * _gelu_curvature(u, approximate)
    if b is None:
        return g_g, g_x
    return g_g, g_x, _row_sum(g_x, b.shape) if _needs_grad(b) else None


GELU = defop(
    "fused_gelu",
    _gelu_forward,
    _gelu_vjp,
    shape=_gelu_shape,
    dtype=lambda x, b=None, **a: x,
    promote="float",
    doc="gelu(x + bias) (bias optional, over the last dim), exact or tanh; the decomposition "
    "is `ember.ops.nn.gelu_reference` (Note [Fused Transformer ops]).",
)
GELU_GRAD = defop(
    "fused_gelu_grad",
    _gelu_grad_forward,
    _gelu_grad_vjp,
    shape=lambda g, x, b=None, **a: _gelu_shape(x, b, **a),
    dtype=lambda g, x, b=None, **a: g,
    promote="float",
    doc="g * gelu'(x + bias): the gradient of fused_gelu with respect to its input.",
)
GELU.def_fast_kernel(
    "numpy", lambda x, b=None, approximate="none": _kernels.gelu(x, b, approximate)
)
GELU_GRAD.def_fast_kernel(
    "numpy", lambda g, x, b=None, approximate="none": _kernels.gelu_grad(g, x, b, approximate)
)


def _onnx_gelu_slope(b, u, approximate, dtype):
    c = lambda v: b.const(v, dtype)  # noqa: E731
    if approximate == "tanh":
        u2 = b.op("Mul", u, u)
        inner = b.op(
            "Mul", b.op("Add", u, b.op("Mul", b.op("Mul", u2, u), c(_K))), c(_SQRT_2_OVER_PI)
        )
        t = b.op("Tanh", inner)
        left = b.op("Mul", b.op("Add", t, c(1.0)), c(0.5))
        ds = b.op("Mul", b.op("Add", b.op("Mul", u2, c(3.0 * _K)), c(1.0)), c(_SQRT_2_OVER_PI))
        sech2 = b.op("Sub", c(1.0), b.op("Mul", t, t))
        return b.op("Add", left, b.op("Mul", b.op("Mul", b.op("Mul", u, c(0.5)), sech2), ds))
    cdf = b.op("Mul", b.op("Add", b.op("Erf", b.op("Mul", u, c(_SQRT_HALF))), c(1.0)), c(0.5))
    pdf = b.op("Mul", b.op("Exp", b.op("Mul", b.op("Mul", u, u), c(-0.5))), c(_INV_SQRT_2PI))
    return b.op("Add", cdf, b.op("Mul", u, pdf))


@onnx_lowering("fused_gelu")
def _gelu_onnx(b, x, bias=None, approximate="none"):
    u = x if bias is None else b.op("Add", x, bias)
    c = lambda v: b.const(v, b.out.dtype)  # noqa: E731
    if approximate == "tanh":
        cube = b.op("Mul", b.op("Mul", b.op("Mul", u, u), u), c(_K))
        t = b.op("Tanh", b.op("Mul", b.op("Add", u, cube), c(_SQRT_2_OVER_PI)))
    else:
        t = b.op("Erf", b.op("Mul", u, c(_SQRT_HALF)))
    return b.op("Mul", b.op("Mul", u, c(0.5)), b.op("Add", t, c(1.0)))


@onnx_lowering("fused_gelu_grad")
def _gelu_grad_onnx(b, g, x, bias=None, approximate="none"):
    u = x if bias is None else b.op("Add", x, bias)
    return b.op("Mul", g, _onnx_gelu_slope(b, u, approximate, b.out.dtype))


def fused_gelu(x, bias=None, approximate="none"):
    """gelu(x + bias) as one op (Note [Fused Transformer ops])."""
    return (
        apply(GELU, x, approximate=approximate)
        if bias is None
        else apply(GELU, x, bias, approximate=approximate)
    )


# --- layer norm over the last dim, with an optional residual -------------------------------
def _ln_input(x, r):
    return x if r is None else x + r


def _ln_forward(xp, x, w, b, r=None, eps=1e-5):
    s = _ln_input(x, r)
    c = s - s.mean(axis=-1, keepdims=True)
    var = (c * c).mean(axis=-1, keepdims=True)
    return c * (1.0 / xp.sqrt(var + eps)) * w + b


def _ln_input_grad_forward(xp, g, x, w, r=None, eps=1e-5):
    s = _ln_input(x, r)
    c = s - s.mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt((c * c).mean(axis=-1, keepdims=True) + eps)
    xhat = c * rstd
    gw = g * w
    return rstd * (
        gw - gw.mean(axis=-1, keepdims=True) - xhat * (gw * xhat).mean(axis=-1, keepdims=True)
    )


def _ln_param_grad_forward(xp, g, x, r=None, eps=1e-5):
    s = _ln_input(x, r)
    c = s - s.mean(axis=-1, keepdims=True)
    xhat = c / xp.sqrt((c * c).mean(axis=-1, keepdims=True) + eps)
    d = x.shape[-1]
    return xp.stack([(g * xhat).reshape(-1, d).sum(axis=0), g.reshape(-1, d).sum(axis=0)])


def _ln_check(name, x, params, r=None):
    if len(x) == 0:
        raise ShapeError(f"{name}: expected at least a 1-D input, got {tuple(x)}")
    for p in params:
        if tuple(p) != (x[-1],):
            raise ShapeError(
                f"{name}: weight and bias must have shape ({x[-1]},) for input {tuple(x)}, "
                f"got {tuple(p)}"
            )
    if r is not None and tuple(r) != tuple(x):
        raise ShapeError(f"{name}: residual {tuple(r)} must have the input's shape {tuple(x)}")
    return tuple(x)


def _xhat(s, eps):
    """(s - mean) * rstd and rstd over the last dim, in ember ops (keepdim shapes)."""
    c = s - s.mean(-1, keepdim=True)
    rstd = E.rsqrt((c * c).mean(-1, keepdim=True) + eps)
    return c, rstd


def _ln_vjp(g, y, x, w, b, r=None, eps=1e-5):
    rest = () if r is None else (r,)
    want_x = _needs_grad(x) or (r is not None and _needs_grad(r))
    want_params = _needs_grad(w) or _needs_grad(b)
    gx = gw = gb = None
    # one pass for both where the kernels allow (Note [Layer norm gradients together])
    with _kernels.layer_norm_grads_together() if want_x and want_params else nullcontext():
        if want_x:
            gx = apply(LAYER_NORM_INPUT_GRAD, g, x, w, *rest, eps=eps)
        if want_params:
            both = apply(LAYER_NORM_PARAM_GRAD, g, x, *rest, eps=eps)
            gw, gb = both[0], both[1]
    return (gx, gw, gb) + ((gx,) if r is not None else ())


def _ln_input_grad_vjp(h, y, g, x, w, r=None, eps=1e-5):
    # y = rstd P(g w), P the projection off {1, xhat} (self-adjoint): in g it is the op
    # itself times w; in w, sum over rows of h' g with h' = P(h) rstd; in s (Note [Fused
    # Transformer ops]) batch norm's second-order formula (ember.ops.nn._bn_input_grad_vjp)
    # with G = g w, over the last dim
    rest = () if r is None else (r,)
    unit = apply(LAYER_NORM_INPUT_GRAD, h, x, w.new_ones(tuple(w.shape)), *rest, eps=eps)
    s = _ln_input(x, r)
    c, rstd = _xhat(s, eps)
    n = s.shape[-1]
    big_g = g * w
    gc = big_g - big_g.mean(-1, keepdim=True)
    m = (big_g * c).mean(-1, keepdim=True)
    h1 = (h * gc).sum(-1, keepdim=True)
    hc = (h * c).sum(-1, keepdim=True)
    r3 = rstd * rstd * rstd
    g_s = (
        c * ((h1 - hc * m * rstd * rstd * 3.0) * (r3 / -n))
        - (h - h.mean(-1, keepdim=True)) * (r3 * m)
        - gc * (hc * (r3 / n))
    )
    g_w = _row_sum(unit * g, w.shape) if _needs_grad(w) else None
    return (unit * w, g_s, g_w) + ((g_s,) if r is not None else ())


def _ln_param_grad_vjp(h, y, g, x, r=None, eps=1e-5):
    # y[0] = sum g xhat, y[1] = sum g over rows: in g, h[0] xhat + h[1]; in s, the input
    # gradient with h[0] as the weight
    rest = () if r is None else (r,)
    c, rstd = _xhat(_ln_input(x, r), eps)
    g_g = c * rstd * h[0] + h[1]
    g_s = apply(LAYER_NORM_INPUT_GRAD, g, x, h[0], *rest, eps=eps)
    return (g_g, g_s) + ((g_s,) if r is not None else ())


LAYER_NORM = defop(
    "fused_layer_norm",
    _ln_forward,
    _ln_vjp,
    shape=lambda x, w, b, r=None, **a: _ln_check("layer_norm", x, (w, b), r),
    dtype=lambda *d, **a: d[0],
    promote="common",
    doc="(s - mean) / sqrt(var + eps) * w + b over the last dim, s = x (+ residual); the "
    "decomposition is `ember.ops.nn.layer_norm_reference` (Note [Fused Transformer ops]).",
)
LAYER_NORM_INPUT_GRAD = defop(
    "fused_layer_norm_input_grad",
    _ln_input_grad_forward,
    _ln_input_grad_vjp,
    shape=lambda g, x, w, r=None, **a: _ln_check("layer_norm", x, (w,), r),
    dtype=lambda *d, **a: d[0],
    promote="common",
    doc="Gradient of fused_layer_norm with respect to its input (and residual).",
)
LAYER_NORM_PARAM_GRAD = defop(
    "fused_layer_norm_param_grad",
    _ln_param_grad_forward,
    _ln_param_grad_vjp,
    shape=lambda g, x, r=None, **a: (2, _ln_check("layer_norm", x, (), r)[-1]),
    dtype=lambda *d, **a: d[0],
    promote="common",
    doc="(2, D): the gradients of fused_layer_norm's weight (sum of g * xhat) and bias "
    "(sum of g) over all rows.",
)
LAYER_NORM.def_fast_kernel(
    "numpy", lambda x, w, b, r=None, eps=1e-5: _kernels.layer_norm(x, r, w, b, eps)
)
LAYER_NORM_INPUT_GRAD.def_fast_kernel(
    "numpy", lambda g, x, w, r=None, eps=1e-5: _kernels.layer_norm_input_grad(g, x, r, w, eps)
)
LAYER_NORM_PARAM_GRAD.def_fast_kernel(
    "numpy", lambda g, x, r=None, eps=1e-5: _kernels.layer_norm_param_grad(g, x, r, eps)
)


def _onnx_normalized(b, x, r, eps):
    s = x if r is None else b.op("Add", x, r)
    c = b.op("Sub", s, b.reduce("ReduceMean", s, [-1], True))
    var = b.reduce("ReduceMean", b.op("Mul", c, c), [-1], True)
    rstd = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(eps, b.out.dtype))))
    return b.op("Mul", c, rstd), rstd


@onnx_lowering("fused_layer_norm")
def _ln_onnx(b, x, w, bias, r=None, eps=1e-5):
    xhat, _ = _onnx_normalized(b, x, r, eps)
    return b.op("Add", b.op("Mul", xhat, w), bias)


@onnx_lowering("fused_layer_norm_input_grad")
def _ln_input_grad_onnx(b, g, x, w, r=None, eps=1e-5):
    xhat, rstd = _onnx_normalized(b, x, r, eps)
    gw = b.op("Mul", g, w)
    mean_gw = b.reduce("ReduceMean", gw, [-1], True)
    mean_gx = b.reduce("ReduceMean", b.op("Mul", gw, xhat), [-1], True)
    return b.op("Mul", rstd, b.op("Sub", b.op("Sub", gw, mean_gw), b.op("Mul", xhat, mean_gx)))


@onnx_lowering("fused_layer_norm_param_grad")
def _ln_param_grad_onnx(b, g, x, r=None, eps=1e-5):
    xhat, _ = _onnx_normalized(b, x, r, eps)
    d = b.shapes_of(b.ins[0])[0][-1]
    rows = b.const(np.asarray([-1, d], np.int64), "int64")
    flat = lambda t: b.op("Reshape", t, rows)  # noqa: E731
    gw = b.reduce("ReduceSum", flat(b.op("Mul", g, xhat)), [0], True)
    gb = b.reduce("ReduceSum", flat(g), [0], True)
    return b.op("Concat", gw, gb, axis=0)


def fused_layer_norm(x, weight, bias, residual=None, eps=1e-5):
    """layer_norm(x + residual) over the last dim as one op (Note [Fused Transformer ops])."""
    rest = () if residual is None else (residual,)
    return apply(LAYER_NORM, x, weight, bias, *rest, eps=float(eps))


# --- scale + mask + softmax over the last dim -----------------------------------------------
def _softmax_forward(xp, s, m=None, scale=1.0):
    z = s * scale
    if m is not None:
        z = z + m
    if z.size == 0:
        return z.astype(z.dtype, copy=True)
    with np.errstate(invalid="ignore"):  # a row of -inf gives NaN, as the composite does
        e = xp.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def _softmax_grad_forward(xp, g, y, scale=1.0):
    return (y * (g - (g * y).sum(axis=-1, keepdims=True))) * scale


def _softmax_shape(s, m=None, scale=1.0):
    if len(s) == 0:
        raise ShapeError("softmax: expected at least a 1-D input, got a scalar")
    if m is not None:
        try:
            fits = broadcast_shapes(tuple(s), tuple(m)) == tuple(s)
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"softmax: mask {tuple(m)} does not broadcast to the scores {tuple(s)}"
            )
    return tuple(s)


def _softmax_vjp(g, y, s, m=None, scale=1.0):
    gs = apply(SOFTMAX_GRAD, g, y, scale=scale) if _needs_grad(s) else None
    if m is None:
        return (gs,)
    gm = None
    if _needs_grad(m):
        gm = unbroadcast(apply(SOFTMAX_GRAD, g, y, scale=1.0), m)
    return gs, gm


def _softmax_grad_vjp(h, out, g, y, scale=1.0):
    # out = scale y (g - <g, y>): linear in g (the op itself, self-adjoint); in y,
    # scale (g (h - <h, y>) - h <g, y>)
    g_g = apply(SOFTMAX_GRAD, h, y, scale=scale)
    hy = (h * y).sum(-1, keepdim=True)
    gy = (g * y).sum(-1, keepdim=True)
    return g_g, (g * (h - hy) - h * gy) * scale


SOFTMAX = defop(
    "fused_softmax",
    _softmax_forward,
    _softmax_vjp,
    shape=_softmax_shape,
    dtype=lambda *d, **a: d[0],
    promote="float",
    save_output=True,
    quiet=True,
    doc="softmax(s * scale + mask) over the last dim, mask additive and broadcast to s; the "
    "decomposition is `ember.ops.nn.softmax_reference` (Note [Fused Transformer ops]).",
)
SOFTMAX_GRAD = defop(
    "fused_softmax_grad",
    _softmax_grad_forward,
    _softmax_grad_vjp,
    shape=lambda g, y, **a: tuple(y),
    dtype=lambda *d, **a: d[0],
    promote="float",
    doc="scale * y * (g - sum(g * y)) over the last dim: the gradient of fused_softmax.",
)
SOFTMAX.def_fast_kernel("numpy", lambda s, m=None, scale=1.0: _kernels.softmax(s, m, scale))
SOFTMAX_GRAD.def_fast_kernel("numpy", lambda g, y, scale=1.0: _kernels.softmax_grad(g, y, scale))


@onnx_lowering("fused_softmax")
def _softmax_onnx(b, s, m=None, scale=1.0):
    z = b.op("Mul", s, b.const(scale, b.out.dtype))
    if m is not None:
        z = b.op("Add", z, m)
    # the primitives; the exporter emits ONNX Softmax where the opset has it (Note [ONNX fused
    # composites] in ember/onnx/_fuse.py)
    e = b.op("Exp", b.op("Sub", z, b.reduce("ReduceMax", z, [-1], True)))
    return b.op("Div", e, b.reduce("ReduceSum", e, [-1], True))


@onnx_lowering("fused_softmax_grad")
def _softmax_grad_onnx(b, g, y, scale=1.0):
    dot = b.reduce("ReduceSum", b.op("Mul", g, y), [-1], True)
    return b.op("Mul", b.op("Mul", y, b.op("Sub", g, dot)), b.const(scale, b.out.dtype))


def fused_softmax(scores, mask=None, scale=1.0):
    """softmax(scores * scale + mask) over the last dim as one op; a bool mask marks the
    positions that take part (True), a float mask is added (Note [Fused Transformer ops])."""
    if mask is None:
        return apply(SOFTMAX, scores, scale=float(scale))
    if mask.dtype is _dt.bool_:
        mask = E.where(mask, 0.0, float("-inf")).to(scores.dtype)
    return apply(SOFTMAX, scores, mask, scale=float(scale))


# --- dropout with its mask hashed from a seed -----------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK_BITS = 24  # the hash's top 24 bits against floor(p 2^24)


def _threshold(p):
    return int(p * (1 << _MASK_BITS))


def _keep(shape, seed):
    """The keep test's 24-bit hash of every element (NumPy; the kernel computes the same)."""
    n = int(np.prod(shape, dtype=np.int64))
    z = np.uint64(int(seed)) + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(64 - _MASK_BITS)).reshape(shape)


def _dropout_forward(xp, x, seed, p=0.5):
    scale = x.dtype.type(1.0 / (1.0 - p))
    keep = _keep(x.shape, np.asarray(seed).reshape(()).item()) >= _threshold(p)
    return xp.where(keep, x * scale, x.dtype.type(0))


def _dropout_vjp(g, y, x, seed, p=0.5):
    return apply(DROPOUT, g, seed, p=p), None


def _dropout_shape(x, seed, p=0.5):
    if tuple(seed) != ():
        raise ShapeError(f"dropout: the seed must be a 0-d tensor, got shape {tuple(seed)}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout: the fused op takes 0 < p < 1, got {p}")
    return tuple(x)


DROPOUT = defop(
    "fused_dropout",
    _dropout_forward,
    _dropout_vjp,
    shape=_dropout_shape,
    dtype=lambda x, seed, **a: x,
    doc="x / (1 - p) where a hash of (seed, element index) keeps it (probability 1 - p), else "
    "0; its gradient is the same op on the gradient (Note [Fused Transformer ops]).",
)
DROPOUT.needed_by = {0: (), 1: (0,)}
DROPOUT.def_fast_kernel(
    "numpy",
    lambda x, seed, p=0.5: _kernels.dropout(
        x, np.asarray(seed).reshape(()).item(), _threshold(p), x.dtype.type(1.0 / (1.0 - p))
    ),
)


@onnx_lowering("fused_dropout")
def _dropout_onnx(b, x, seed, p=0.5):
    ratio = b.const(p, b.out.dtype)
    return b.op("Dropout", x, ratio, b.const(True, "bool"))


def fused_dropout(x, p, generator=None):
    """Dropout (training) as one op whose mask a seed drawn from `generator` (ember's default
    generator if None) determines (Note [Fused Transformer ops])."""
    from ember.ops.random import randint

    seed = randint(0, 1 << 62, (), generator=generator, device=x.device)
    return apply(DROPOUT, x, seed, p=float(p))


# --- scaled-dot-product attention: matmul, scale + mask + softmax, dropout, matmul ----------
def _attention_parts(rest, masked, p):
    mask = rest[0] if masked else None
    seed = rest[-1] if p > 0.0 else None
    return mask, seed


def _attention_forward(xp, q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False):
    mask, seed = _attention_parts(rest, masked, p)
    weights = _softmax_forward(xp, xp.matmul(q, xp.swapaxes(k, -1, -2)), mask, scale)
    if p > 0.0:
        weights = _dropout_forward(xp, weights, seed, p)
    return xp.matmul(weights, v)


def _attention_dropout(dtype, seed, p):
    """(seed, threshold, keep_scale) of the kernels' in-place dropout; threshold 0: none."""
    if p > 0.0:
        seed, threshold = np.asarray(seed).reshape(()).item(), _threshold(p)
        return seed, threshold, float(dtype.type(1.0 / (1.0 - p)))
    return 0, 0, 1.0


def _attention_kernel(q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False):
    # keep: gradients are recorded, so the training kernel keeps the probabilities for the
    # backward (Note [Kept probabilities] in ember/backend/attention_train_kernels.py)
    mask, seed = _attention_parts(rest, masked, p)
    seed, threshold, keep_scale = _attention_dropout(q.dtype, seed, p)
    kernel = _attention_train_kernels.attention_keep if keep else _attention_kernels.attention
    return kernel(q, k, v, mask, scale, seed, threshold, keep_scale)


def _attention_shape(q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False):
    name = "scaled_dot_product_attention"
    if len(q) < 2 or len(k) < 2 or len(v) < 2:
        raise ShapeError(f"{name}: query, key and value need at least 2 dims, got {q}, {k}, {v}")
    if q[-1] != k[-1] or k[-2] != v[-2]:
        raise ShapeError(
            f"{name}: query {tuple(q)}, key {tuple(k)} and value {tuple(v)} must agree in the "
            "embedding dim (query, key) and the sequence length (key, value)"
        )
    lead = broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2]))
    scores = lead + (q[-2], k[-2])
    mask, seed = _attention_parts(rest, masked, p)
    if mask is not None:
        _softmax_shape(scores, mask)
    if p > 0.0:
        _dropout_shape(scores, seed, p)
    return lead + (q[-2], v[-1])


def _attention_vjp(g, out, q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False):
    # one fused_attention_grad op, which takes the probabilities the forward (keep=True)
    # kept or recomputes them (Note [Attention training]), or, where a gradient
    # of the mask is asked for or the gradients are differentiated again (create_graph: the
    # fused op's result then records, and is dropped), the decomposition's gradients with
    # the fused softmax and dropout ops
    mask, seed = _attention_parts(rest, masked, p)
    if mask is None or not _needs_grad(mask):
        flat = apply(ATTENTION_GRAD, g, out, q, k, v, *rest, scale=scale, masked=masked, p=p)
        if not flat.requires_grad:
            g_q, g_k, g_v = _swapped_parts(flat, q, k, v)
            return (g_q, g_k, g_v) + ((None,) if masked else ()) + ((None,) if p > 0.0 else ())
    # contiguous operands: NumPy's batched matmul is several times slower on strided views
    # (the forward's result, so its gradient, is laid out (B, L, H, Ev))
    g = g.contiguous()
    scores = q @ k.mT.contiguous()
    probs = (
        apply(SOFTMAX, scores, scale=scale)
        if mask is None
        else apply(SOFTMAX, scores, mask, scale=scale)
    )
    kept = apply(DROPOUT, probs, seed, p=p) if p > 0.0 else probs
    g_kept = g @ v.mT
    g_probs = apply(DROPOUT, g_kept, seed, p=p) if p > 0.0 else g_kept
    g_q = g_k = g_v = g_mask = None
    if _needs_grad(q) or _needs_grad(k):
        g_scores = apply(SOFTMAX_GRAD, g_probs, probs, scale=scale)
        g_q = unbroadcast(g_scores @ k, q) if _needs_grad(q) else None
        g_k = unbroadcast(g_scores.mT @ q, k) if _needs_grad(k) else None
    if _needs_grad(v):
        g_v = unbroadcast(kept.mT @ g, v)
    if mask is not None and _needs_grad(mask):
        g_mask = unbroadcast(apply(SOFTMAX_GRAD, g_probs, probs, scale=1.0), mask)
    return (g_q, g_k, g_v) + ((g_mask,) if masked else ()) + ((None,) if p > 0.0 else ())


def _attention_dtype(q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False):
    mask, _ = _attention_parts(rest, masked, p)
    if not q.is_floating_point or k != q or v != q or (mask is not None and mask != q):
        got = ", ".join(str(d) for d in (q, k, v) + (() if mask is None else (mask,)))
        raise DTypeError(
            "scaled_dot_product_attention: the fused op takes query, key, value (and a float "
            f"mask) of one floating dtype, got {got}"
        )
    return q


ATTENTION = defop(
    "fused_attention",
    _attention_forward,
    _attention_vjp,
    shape=_attention_shape,
    dtype=_attention_dtype,
    save_output=True,
    quiet=True,  # no promotion: it would turn the int64 seed into a float
    doc="softmax(q k^T * scale + mask) v (dropout on the probabilities optional) as one op, "
    "the scores computed a block of heads at a time (Note [Attention blocks]); the "
    "decomposition is `ember.ops.nn.scaled_dot_product_attention_reference`.",
)
ATTENTION.def_fast_kernel("numpy", _attention_kernel)


def _summed_to(xp, x, shape):
    """x summed over the dims that broadcasting added to `shape` (the array-level unbroadcast)."""
    shape = tuple(shape)
    if x.ndim > len(shape):
        x = x.sum(axis=tuple(range(x.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _swapped(shape):
    """`shape` with dims -3 and -2 swapped (the layout fused_attention_grad returns)."""
    shape = tuple(shape)
    return shape if len(shape) < 3 else shape[:-3] + (shape[-2], shape[-3], shape[-1])


def _attention_grad_forward(xp, g, out, q, k, v, *rest, scale=1.0, masked=False, p=0.0):
    mask, seed = _attention_parts(rest, masked, p)
    probs = _softmax_forward(xp, xp.matmul(q, xp.swapaxes(k, -1, -2)), mask, scale)
    kept = _dropout_forward(xp, probs, seed, p) if p > 0.0 else probs
    g_kept = xp.matmul(g, xp.swapaxes(v, -1, -2))
    g_probs = _dropout_forward(xp, g_kept, seed, p) if p > 0.0 else g_kept
    g_scores = _softmax_grad_forward(xp, g_probs, probs, scale)
    grads = (
        _summed_to(xp, xp.matmul(g_scores, k), q.shape),
        _summed_to(xp, xp.matmul(xp.swapaxes(g_scores, -1, -2), q), k.shape),
        _summed_to(xp, xp.matmul(xp.swapaxes(kept, -1, -2), g), v.shape),
    )
    parts = [xp.swapaxes(x, -3, -2).reshape(-1) if x.ndim >= 3 else x.reshape(-1) for x in grads]
    return xp.concatenate(parts).astype(q.dtype, copy=False)


def _attention_grad_kernel(g, out, q, k, v, *rest, scale=1.0, masked=False, p=0.0):
    mask, seed = _attention_parts(rest, masked, p)
    seed, threshold, keep_scale = _attention_dropout(q.dtype, seed, p)
    return _attention_train_kernels.attention_grad(
        g, out, q, k, v, mask, scale, seed, threshold, keep_scale
    )


def _attention_grad_shape(g, out, q, k, v, *rest, scale=1.0, masked=False, p=0.0):
    return (math.prod(q) + math.prod(k) + math.prod(v),)


def _swapped_parts(flat, q, k, v):
    """fused_attention_grad's flat result as the gradients of q, k and v: views of its parts
    (Note [Attention training])."""
    parts, start = [], 0
    for x in (q, k, v):
        shape = tuple(x.shape)
        size = math.prod(shape)
        part = flat[start : start + size].reshape(_swapped(shape))
        parts.append(part.transpose(-3, -2) if len(shape) >= 3 else part)
        start += size
    return parts


def _attention_no_second_order(*args, **attrs):
    raise NotImplementedError(
        "fused_attention_grad: its gradient is not defined; fused_attention's VJP takes the "
        "decomposition's gradients where they are differentiated again (create_graph) "
        "(Note [Attention training] in ember/backend/attention_train_kernels.py)"
    )


ATTENTION_GRAD = defop(
    "fused_attention_grad",
    _attention_grad_forward,
    _attention_no_second_order,
    shape=_attention_grad_shape,
    dtype=lambda g, *rest, **a: g,
    quiet=True,
    doc="The gradients of fused_attention's query, key and value for the output gradient g "
    "and the forward's result `out`, each with dims -3 and -2 swapped, flattened and "
    "concatenated, a block of heads at a time (Note [Attention training] in "
    "ember/backend/attention_train_kernels.py).",
)
ATTENTION_GRAD.def_fast_kernel("numpy", _attention_grad_kernel)


@onnx_lowering("fused_attention")
def _attention_onnx(b, q, k, v, *rest, scale=1.0, masked=False, p=0.0, keep=False, softmax=None):
    """The decomposition in ONNX primitives; `softmax(z)` emits the softmax over the last axis
    where the exporter uses ONNX's Softmax (Note [ONNX fused composites])."""
    mask, _ = _attention_parts(rest, masked, p)
    rank = len(b.shapes_of(b.ins[1])[0])
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    z = b.op("Mul", b.op("MatMul", q, b.op("Transpose", k, perm=perm)), b.const(scale, b.out.dtype))
    if mask is not None:
        z = b.op("Add", z, mask)
    if softmax is not None:
        weights = softmax(z)
    else:
        e = b.op("Exp", b.op("Sub", z, b.reduce("ReduceMax", z, [-1], True)))
        weights = b.op("Div", e, b.reduce("ReduceSum", e, [-1], True))
    if p > 0.0:
        weights = b.op("Dropout", weights, b.const(p, b.out.dtype), b.const(True, "bool"))
    return b.op("MatMul", weights, v)


def fused_attention(query, key, value, mask=None, scale=1.0, dropout_p=0.0, generator=None):
    """softmax(query key^T * scale + mask) value as one op (Note [Attention blocks]); a bool
    mask marks the positions that take part (True), a float mask is added; dropout_p > 0
    drops probabilities as `fused_dropout` does, its seed drawn from `generator`."""
    if mask is not None:
        if mask.dtype is _dt.bool_:
            mask = E.where(mask, 0.0, float("-inf")).to(query.dtype)
        _attention_dtype(query.dtype, key.dtype, value.dtype, mask.dtype, masked=True)
    else:
        _attention_dtype(query.dtype, key.dtype, value.dtype)
    rest = () if mask is None else (mask,)
    if dropout_p > 0.0:
        from ember.ops.random import randint

        rest += (randint(0, 1 << 62, (), generator=generator, device=query.device),)
    # where gradients are recorded the kernel keeps the probabilities for the backward (under
    # no_grad with leaves that require grad too: they then live as long as the result)
    keep = query.requires_grad or key.requires_grad or value.requires_grad
    return apply(
        ATTENTION,
        query,
        key,
        value,
        *rest,
        scale=float(scale),
        masked=mask is not None,
        p=float(dropout_p),
        keep=keep,
    )
