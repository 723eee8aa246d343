"""Neural-network composites, each a formula over primitives (their gradients come for free):
softmax, log_softmax, gelu (exact and tanh), silu, leaky_relu, elu, softplus, layer_norm,
group_norm, batch_norm, dropout, nll_loss, cross_entropy, scaled_dot_product_attention.

Where a benchmark showed it matters, the composite runs a fused primitive (ember.ops.fused:
gelu, layer_norm, softmax, dropout, the softmax of attention) and its decomposition stays as
`<name>_reference`, the reference the op table checks it against (Note [Fused Transformer ops];
DESIGN.md, "The op registry is the single source of truth").
"""

from __future__ import annotations

import math

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import DTypeNotImplemented, IndexOutOfRange, ShapeError, ValueOutOfRange
from ember.backend import host_values
from ember.backend import norm_kernels as _norm_kernels
from ember.backend import xent_kernels as _xent_kernels
from ember.ops import elementwise as E
from ember.ops import reduce as R
from ember.ops import shape as S
from ember.ops.fused import (
    fused_attention,
    fused_dropout,
    fused_gelu,
    fused_layer_norm,
    fused_softmax,
)
from ember.ops.random import bernoulli, uniform
from ember.ops.registry import apply, broadcast_shapes, defop, onnx_lowering, public

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _half_to_float(x):
    """float16 computes in float32 (Note [Half-precision accumulation]); (x, dtype to return)."""
    return (x.to(_dt.float32), x.dtype) if x.dtype == _dt.float16 else (x, None)


_FUSED_DTYPES = (_dt.float32, _dt.float64)


def _fused(x):
    """x takes the fused ops' path (float32/float64; float16 keeps its decomposition, which
    accumulates in float32: Note [Half-precision accumulation])."""
    return x.dtype in _FUSED_DTYPES


# torch's names of the integer scalar types, for errors worded as torch's
_TORCH_TYPE_NAMES = {
    "bool": "Bool",
    "uint8": "Byte",
    "int8": "Char",
    "int16": "Short",
    "int32": "Int",
    "int64": "Long",
}


def _floating_input(x, op: str) -> None:
    """Refuse a non-float input as torch does ("not implemented for 'Long'"), rather than
    compute in a float the user did not ask for."""
    if not x.dtype.is_floating_point:
        torch_name = _TORCH_TYPE_NAMES.get(x.dtype.name, x.dtype.name)
        raise DTypeNotImplemented(
            f"{op}: not implemented for {torch_name!r} (input dtype {x.dtype}): expected a "
            f"floating-point tensor; pass dtype=ember.float32 or convert with .float()"
        )


@public("softmax")
def softmax(x, dim=-1, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    _floating_input(x, "softmax")
    if _fused(x) and x.ndim > 0 and dim in (-1, x.ndim - 1):
        return fused_softmax(x)
    return softmax_reference(x, dim)


def softmax_reference(x, dim=-1, dtype=None):
    """The decomposition of softmax (the fused op is tested against it)."""
    if dtype is not None:
        x = x.to(dtype)
    x, half = _half_to_float(x)
    if x.numel() == 0:  # nothing to normalise (amax of an empty tensor has no value)
        out = x * 1.0
    else:
        shifted = x - R.amax(x, dim, keepdim=True).detach()
        e = shifted.exp()
        out = e / e.sum(dim, keepdim=True)
    return out if half is None else out.to(half)


@public("log_softmax")
def log_softmax(x, dim=-1, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    _floating_input(x, "log_softmax")
    x, half = _half_to_float(x)
    if x.numel() == 0:
        out = x * 1.0
    else:
        shifted = x - R.amax(x, dim, keepdim=True).detach()
        out = shifted - shifted.exp().sum(dim, keepdim=True).log()
    return out if half is None else out.to(half)


def gelu(x, approximate="none", bias=None):
    """x * Phi(x) (exact, with erf) or its tanh approximation; `bias` (over the last dim,
    ember's extension) is added first in the same pass (Note [Fused Transformer ops])."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if _fused(x) and (bias is None or _fused(bias)):
        return fused_gelu(x, bias, approximate)
    return gelu_reference(x if bias is None else x + bias, approximate)


def gelu_reference(x, approximate="none"):
    """The decomposition of gelu (the fused op is tested against it)."""
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * _SQRT_2_OVER_PI
        return x * 0.5 * (E.tanh(inner) + 1.0)
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * 0.5 * (E.erf(x * _SQRT_HALF) + 1.0)


def silu(x):
    return x * E.sigmoid(x)


def leaky_relu(x, negative_slope=0.01):
    return E.where(x > 0, x, x * negative_slope)


def elu(x, alpha=1.0):
    return E.where(x > 0, x, (E.expm1(E.minimum(x, 0.0))) * alpha)


def softplus(x, beta=1.0, threshold=20.0):
    # log(1 + e^s) = max(s, 0) + log1p(e^-|s|): no exp that overflows (softplus(12) in float16
    # is 12, not inf); above `threshold` it is x itself, as in torch.
    scaled = x * beta
    stable = (E.maximum(scaled, 0.0) + E.log1p(E.exp(-E.abs(scaled)))) / beta
    return E.where(scaled > threshold, x, stable)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return E.clamp(x, min_val, max_val)


def hardsigmoid(x):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between."""
    return E.clamp(x + 3.0, 0.0, 6.0) / 6.0


def hardswish(x):
    """x * hardsigmoid(x) (MobileNetV3)."""
    return x * (E.clamp(x + 3.0, 0.0, 6.0) / 6.0)


def softsign(x):
    return x / (E.abs(x) + 1.0)


def celu(x, alpha=1.0):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0")
    return E.where(x > 0, x, E.expm1(E.minimum(x, 0.0) / alpha) * alpha)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al."""
    return elu(x, _SELU_ALPHA) * _SELU_SCALE


def mish(x):
    """x * tanh(softplus(x))."""
    return x * E.tanh(softplus(x))


def softmin(x, dim=-1, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    _floating_input(x, "softmin")
    return softmax(-x, dim)


def _check_normalized_shape(x_shape, normalized_shape, name):
    """The dims normalized_shape covers at the end of `x_shape` (a tuple), else ShapeError."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    ndim = len(x_shape)
    if x_shape[ndim - len(shape) :] != shape:
        raise ShapeError(f"{name}: input {x_shape} does not end with normalized_shape {shape}")
    return tuple(range(ndim - len(shape), ndim))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x_shape = tuple(x.shape)
    dims = _check_normalized_shape(x_shape, normalized_shape, "layer_norm")
    d = x_shape[-1] if x_shape else 0
    if len(dims) == 1 and _fused(x) and d > 0:
        w = weight if weight is not None else x.new_ones((d,))
        b = bias if bias is not None else x.new_zeros((d,))
        return fused_layer_norm(x, w, b, None, eps)
    return layer_norm_reference(x, normalized_shape, weight, bias, eps)


def residual_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """layer_norm(x + residual) with the add in the same pass (Transformer blocks' post-norm
    residual; Note [Fused Transformer ops])."""
    x_shape = tuple(x.shape)
    dims = _check_normalized_shape(x_shape, normalized_shape, "layer_norm")
    dtype = x.dtype
    d = x_shape[-1] if x_shape else 0
    if (
        len(dims) == 1
        and dtype in _FUSED_DTYPES
        and residual.dtype is dtype
        and residual.shape == x_shape
        and d > 0
    ):
        w = weight if weight is not None else x.new_ones((d,))
        b = bias if bias is not None else x.new_zeros((d,))
        return fused_layer_norm(x, w, b, residual, eps)
    return layer_norm_reference(x + residual, normalized_shape, weight, bias, eps)


def layer_norm_reference(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The decomposition of layer_norm (the fused op is tested against it)."""
    dims = _check_normalized_shape(tuple(x.shape), normalized_shape, "layer_norm")
    x, half = _half_to_float(x)  # Note [Half-precision accumulation]
    mean = x.mean(dims, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dims, keepdim=True)
    out = centered * E.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out if half is None else out.to(half)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[0], x.shape[1]
    if c % num_groups:
        raise ShapeError(f"group_norm: {c} channels are not divisible by {num_groups} groups")
    x, half = _half_to_float(x)  # Note [Half-precision accumulation]
    grouped = x.reshape(n, num_groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    centered = grouped - mean
    var = (centered * centered).mean(-1, keepdim=True)
    out = (centered * E.rsqrt(var + eps)).reshape(tuple(x.shape))
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out if half is None else out.to(half)


def batch_norm_reference(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """The decomposition of batch_norm (the fused training op is tested against it)."""
    if x.ndim < 2:
        raise ShapeError(
            f"batch_norm: expected at least 2-D input (N, C, ...), got {tuple(x.shape)}"
        )
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        n = x.numel() // x.shape[1]
        if n <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when "
                f"training, got input {tuple(x.shape)}"
            )
        mean = x.mean(dims, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dims, keepdim=True)
        if running_mean is not None:  # detached operands: these updates record no graph
            m = momentum
            running_mean.mul_(1 - m).add_(mean.reshape(-1).detach() * m)
            running_var.mul_(1 - m).add_(var.reshape(-1).detach() * (m * n / (n - 1)))
        out = centered * E.rsqrt(var + eps)
    else:
        out = (x - running_mean.reshape(shape)) * E.rsqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


# --- batch norm in training mode: fused (Note [Fused composites]) -----------------------------
# Per channel c over the n values of dims (0, 2, 3, ...): mean, var (biased), r = 1/sqrt(var+eps),
# xhat = (x - mean) r, y = w xhat + b. Gradients: gb = sum g, gw = sum g xhat,
# gx = w r (g - mean(g) - xhat mean(g xhat)). The three ops below are those formulas, their
# VJPs are written with each other (second order works); batch_norm_stats gives the running
# statistics (no gradient: PyTorch updates them outside the graph).
def _bn_axes(ndim, c):
    return (0,) + tuple(range(2, ndim)), (1, c) + (1,) * (ndim - 2)


def _bn_centred(xp, x):
    dims, shape = _bn_axes(x.ndim, x.shape[1])
    c = x - x.mean(axis=dims, keepdims=True)
    return c, (c * c).mean(axis=dims, keepdims=True), dims, shape


def _bn_stats_forward(xp, x):
    c, var, dims, _ = _bn_centred(xp, x)
    return xp.stack([x.mean(axis=dims), var.reshape(-1)])


def _bn_train_forward(xp, x, w, b, eps):
    c, var, _, shape = _bn_centred(xp, x)
    return c * (1 / xp.sqrt(var + eps)) * w.reshape(shape) + b.reshape(shape)


def _bn_input_grad_forward(xp, g, x, w, eps):
    c, var, dims, shape = _bn_centred(xp, x)
    r = 1 / xp.sqrt(var + eps)
    xhat = c * r
    return (
        w.reshape(shape)
        * r
        * (g - g.mean(axis=dims, keepdims=True) - xhat * (g * xhat).mean(axis=dims, keepdims=True))
    )


def _bn_weight_grad_forward(xp, g, x, eps):
    c, var, dims, _ = _bn_centred(xp, x)
    return (g * (c * (1 / xp.sqrt(var + eps)))).sum(axis=dims)


def _bn_shape(x, *rest, **attrs):
    if len(x) < 2:
        raise ShapeError(f"batch_norm: expected at least 2-D input (N, C, ...), got {tuple(x)}")
    for p in rest:
        if tuple(p) != (x[1],):
            raise ShapeError(
                f"batch_norm: weight and bias must have shape ({x[1]},) for input "
                f"{tuple(x)}, got {tuple(p)}"
            )
    return tuple(x)


def _bn_ewise(t, attr):
    """(x - mean) and rsqrt(var + eps) of a Tensor x, in ember ops, keepdim shapes."""
    dims, _ = _bn_axes(t.ndim, t.shape[1])
    c = t - t.mean(dims, keepdim=True)
    return c, E.rsqrt((c * c).mean(dims, keepdim=True) + attr), dims


def _bn_train_vjp(g, y, x, w, b, eps):
    dims, _ = _bn_axes(x.ndim, x.shape[1])
    need = lambda t: getattr(t, "requires_grad", True)  # noqa: E731
    return (
        apply(BATCH_NORM_INPUT_GRAD, g, x, w, eps=eps) if need(x) else None,
        apply(BATCH_NORM_WEIGHT_GRAD, g, x, eps=eps) if need(w) else None,
        g.sum(dims) if need(b) else None,
    )


def _bn_input_grad_vjp(h, y, g, x, w, eps):
    # y = w r P(g), P the projection off {1, xhat} (self-adjoint), so the VJP in g is the op
    # itself; in w it is sum(h * y / w); in x, with c = x - mean, m = mean(g c), H1 = sum h (g -
    # mean g), Hc = sum h c: w [-(r^3/n) c (H1 - 3 r^2 m Hc) - r^3 m (h - mean h)
    # - (r^3/n) Hc (g - mean g)]
    _, shape = _bn_axes(x.ndim, x.shape[1])
    g_g = apply(BATCH_NORM_INPUT_GRAD, h, x, w, eps=eps)
    c, r, dims = _bn_ewise(x, eps)
    n = x.numel() // x.shape[1]
    gc = g - g.mean(dims, keepdim=True)
    m = (g * c).mean(dims, keepdim=True)
    h1 = (h * gc).sum(dims, keepdim=True)
    hc = (h * c).sum(dims, keepdim=True)
    r3 = r * r * r
    g_x = (
        c * ((h1 - hc * m * r * r * 3.0) * (r3 / -n))
        - (h - h.mean(dims, keepdim=True)) * (r3 * m)
        - gc * (hc * (r3 / n))
    ) * w.reshape(shape)
    unit = apply(BATCH_NORM_INPUT_GRAD, g, x, w.new_ones(tuple(w.shape)), eps=eps)
    return g_g, g_x, (h * unit).sum(dims)


def _bn_weight_grad_vjp(h, y, g, x, eps):
    # y = sum g xhat per channel: linear in g; its derivative in x is the input gradient with
    # h as the weight
    c, r, _ = _bn_ewise(x, eps)
    _, shape = _bn_axes(x.ndim, x.shape[1])
    return (c * r * h.reshape(shape), apply(BATCH_NORM_INPUT_GRAD, g, x, h, eps=eps))


BATCH_NORM_TRAIN = defop(
    "batch_norm_train",
    _bn_train_forward,
    _bn_train_vjp,
    shape=_bn_shape,
    dtype=lambda x, w, b, **k: x,
    promote="common",
    doc="Batch normalization with batch statistics: (x - mean) / sqrt(var + eps) * w + b per "
    "channel (dim 1); `batch_norm_reference` is its decomposition (Note [Fused composites]).",
)
BATCH_NORM_INPUT_GRAD = defop(
    "batch_norm_input_grad",
    _bn_input_grad_forward,
    _bn_input_grad_vjp,
    shape=lambda g, x, w, **k: _bn_shape(x, w),
    dtype=lambda g, x, w, **k: g,
    promote="common",
    doc="Gradient of batch_norm_train with respect to its input.",
)
BATCH_NORM_WEIGHT_GRAD = defop(
    "batch_norm_weight_grad",
    _bn_weight_grad_forward,
    _bn_weight_grad_vjp,
    shape=lambda g, x, **k: (_bn_shape(x)[1],),
    dtype=lambda g, x, **k: g,
    promote="common",
    doc="Gradient of batch_norm_train with respect to its weight: sum(g * xhat) per channel.",
)
BATCH_NORM_STATS = defop(
    "batch_norm_stats",
    _bn_stats_forward,
    None,
    shape=lambda x: (2, _bn_shape(x)[1]),
    dtype=lambda x: x,
    doc="(2, C): each channel's mean and biased variance over dims 0, 2, ...",
)


def _onnx_bn_centred(b, x):
    """(x - mean, biased variance) over dims 0, 2, ... (kept), as ONNX nodes."""
    dims, _ = _bn_axes(b.ins[0].ndim, b.ins[0].shape[1])
    mean = b.reduce("ReduceMean", x, dims, True)
    centred = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Mul", centred, centred), dims, True)
    return mean, centred, var


@onnx_lowering("batch_norm_train")
def _bn_train_onnx(b, x, w, bias, eps):
    """Batch statistics (a BatchNorm with track_running_stats=False runs this in eval too)."""
    _, shape = _bn_axes(b.ins[0].ndim, b.ins[0].shape[1])
    _, centred, var = _onnx_bn_centred(b, x)
    scale = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(eps, b.out.dtype))))
    target = b.const(list(shape), "int64")
    out = b.op("Mul", b.op("Mul", centred, scale), b.op("Reshape", w, target))
    return b.op("Add", out, b.op("Reshape", bias, target))


@onnx_lowering("batch_norm_stats")
def _bn_stats_onnx(b, x):
    mean, _, var = _onnx_bn_centred(b, x)
    row = b.const([1, -1], "int64")
    return b.op("Concat", b.op("Reshape", mean, row), b.op("Reshape", var, row), axis=0)


BATCH_NORM_TRAIN.def_fast_kernel("numpy", _norm_kernels.batch_norm_train)
BATCH_NORM_INPUT_GRAD.def_fast_kernel("numpy", _norm_kernels.batch_norm_input_grad)
BATCH_NORM_WEIGHT_GRAD.def_fast_kernel("numpy", _norm_kernels.batch_norm_weight_grad)
BATCH_NORM_STATS.def_fast_kernel("numpy", _norm_kernels.batch_norm_stats)


def batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """PyTorch's F.batch_norm: batch statistics in training (and running-stat updates in place,
    with the unbiased variance), running statistics in eval."""
    if not training or x.ndim < 2 or not x.dtype.is_floating_point:
        return batch_norm_reference(
            x, running_mean, running_var, weight, bias, training, momentum, eps
        )
    n = x.numel() // x.shape[1]
    if n <= 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when "
            f"training, got input {tuple(x.shape)}"
        )
    if running_mean is not None:  # detached: these updates record no graph
        stats = apply(BATCH_NORM_STATS, x.detach())
        m = momentum
        running_mean.mul_(1 - m).add_(stats[0] * m)
        running_var.mul_(1 - m).add_(stats[1] * (m * n / (n - 1)))
    c = x.shape[1]
    w = weight if weight is not None else x.new_ones((c,))
    b = bias if bias is not None else x.new_zeros((c,))
    return apply(BATCH_NORM_TRAIN, x, w, b, eps=float(eps))


def dropout(x, p=0.5, training=True, generator=None):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if x.dtype.is_floating_point:
        return fused_dropout(x, p, generator)
    return dropout_reference(x, p, training, generator)


def dropout_reference(x, p=0.5, training=True, generator=None):
    """The decomposition of dropout (a uniform draw per element; the fused op hashes a seed)."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = uniform(tuple(x.shape), dtype=x.dtype, generator=generator, device=x.device) >= p
    return E.where(keep, x * (1.0 / (1.0 - p)), 0.0)


def feature_dropout(x, p=0.5, training=True, spatial_dims=2, generator=None, name="dropout2d"):
    """Zero whole channels: each (sample, channel) map of an input (N, C, *spatial) or
    (C, *spatial) is kept with probability 1 - p and scaled by 1 / (1 - p). dropout2d takes
    any rank >= 2 as torch's does, masking (dim 0, dim 1) entries (with a warning)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: probability must be in [0, 1], got {p}")
    if spatial_dims == 2 and x.ndim != 4 and x.ndim >= 2:
        # PyTorch's dropout2d masks (dim 0, dim 1) entries whatever the rank: a 3-D input is
        # read as (N, C, L) (1-D channel dropout) and a 2-D one drops single elements, each
        # with a warning; ember follows it, so ported code keeps its behaviour
        import warnings

        warnings.warn(
            f"{name}: received a {x.ndim}-D input; as torch's dropout2d does, it is read as "
            f"(N, C{', L' if x.ndim == 3 else ''}) and each (n, c) entry is dropped whole "
            f"(use {'dropout1d' if x.ndim == 3 else 'dropout'} to say so and silence this)",
            stacklevel=3,
        )
        if not training or p == 0.0:
            return x
        if p == 1.0:
            return x * 0.0
        shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
        keep = uniform(shape, dtype=x.dtype, generator=generator, device=x.device) >= p
        return E.where(keep, x * (1.0 / (1.0 - p)), 0.0)
    if x.ndim not in (spatial_dims + 1, spatial_dims + 2):
        raise ShapeError(
            f"{name}: expected a {spatial_dims + 1}-D (unbatched) or {spatial_dims + 2}-D "
            f"(batched) input, got {tuple(x.shape)}"
        )
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    lead = x.ndim - spatial_dims
    shape = tuple(x.shape[:lead]) + (1,) * spatial_dims
    keep = uniform(shape, dtype=x.dtype, generator=generator, device=x.device) >= p
    return E.where(keep, x * (1.0 / (1.0 - p)), 0.0)


def dropout1d(x, p=0.5, training=True, inplace=False):
    return feature_dropout(x, p, training, 1, name="dropout1d")


def dropout2d(x, p=0.5, training=True, inplace=False):
    return feature_dropout(x, p, training, 2, name="dropout2d")


def dropout3d(x, p=0.5, training=True, inplace=False):
    return feature_dropout(x, p, training, 3, name="dropout3d")


def _reduce(loss, reduction, name, denominator=None):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / denominator if denominator is not None else loss.mean()
    raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _class_dim_last(x):
    """(N, C, d1, ...) -> (N*d1*..., C); (C,) -> (1, C)."""
    if x.ndim == 1:
        return x.unsqueeze(0)
    if x.ndim == 2:
        return x
    return S.movedim(x, 1, -1).reshape(-1, x.shape[1])


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    if log_probs.ndim < 1:
        raise ShapeError("nll_loss: input must have at least 1 dim (C,) or (N, C, ...)")
    c = log_probs.shape[0] if log_probs.ndim == 1 else log_probs.shape[1]
    expected = () if log_probs.ndim == 1 else (log_probs.shape[0],) + tuple(log_probs.shape[2:])
    if tuple(target.shape) != expected:
        raise ShapeError(
            f"nll_loss: target shape {tuple(target.shape)} does not match input "
            f"{tuple(log_probs.shape)} (expected {expected})"
        )
    if target.dtype.is_floating_point:
        raise TypeError(f"nll_loss: target must hold class indices (integers), got {target.dtype}")
    flat = _class_dim_last(log_probs)
    t = target.reshape(-1)
    valid = t != ignore_index
    safe_t = E.where(valid, t, 0)
    # a symbolic target has no values to check (Note [Staging backends]): the compiled
    # gather reports a bad index
    values = host_values(safe_t._data)
    if values is not None and values.size and (int(values.max()) >= c or int(values.min()) < 0):
        raise IndexOutOfRange(
            f"nll_loss: target {int(host_values(t._data).max())} is out of range for {c} classes"
        )
    picked = -S.gather(flat, 1, safe_t.unsqueeze(1)).squeeze(1)
    w = valid.to(flat.dtype)
    if weight is not None:
        w = w * S.index_select(weight, 0, safe_t)
    loss = picked * w
    if reduction == "none":
        return loss.reshape(expected)
    return _reduce(loss, reduction, "nll_loss", w.sum())


# --- softmax cross entropy over class indices: fused (Note [Fused composites]) ----------------
def _xent_shape(x, t, ignore_index, reduction):
    if len(x) != 2 or tuple(t) != (x[0],):
        raise ShapeError(
            f"cross_entropy: expected logits (N, C) and target (N,), got {tuple(x)} and {tuple(t)}"
        )
    return (x[0],) if reduction == "none" else ()


def _xent_parts(xp, x, t, ignore_index):
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    c = x.shape[1]
    if safe.size and (int(safe.max()) >= c or int(safe.min()) < 0):
        bad = int(safe.max()) if int(safe.max()) >= c else int(safe.min())
        raise IndexError(f"cross_entropy: target {bad} is out of range for {c} classes")
    m = x.max(axis=1, keepdims=True) if x.shape[1] else xp.zeros((x.shape[0], 1), x.dtype)
    exps = x - m  # exp(x - m), in place: one (N, C) buffer for the whole computation
    xp.exp(exps, out=exps)
    total = exps.sum(axis=1)
    lse = xp.log(total)
    picked = xp.take_along_axis(x, safe[:, None], axis=1)[:, 0] - m[:, 0]
    return valid, safe, exps, total, lse, picked


def _xent_forward(xp, x, t, ignore_index, reduction):
    valid, _, _, _, lse, picked = _xent_parts(xp, x, t, ignore_index)
    loss = xp.where(valid, lse - picked, 0).astype(x.dtype, copy=False)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum(dtype=x.dtype)
    with xp.errstate(invalid="ignore", divide="ignore"):  # no valid target: nan, as PyTorch
        return (loss.sum() / valid.sum()).astype(x.dtype)


def _xent_vjp(g, y, x, t, ignore_index, reduction):
    return (apply(XENT_GRAD, g, x, t, ignore_index=ignore_index, reduction=reduction), None)


SOFTMAX_CROSS_ENTROPY = defop(
    "softmax_cross_entropy",
    _xent_forward,
    _xent_vjp,
    shape=_xent_shape,
    dtype=lambda d, t, **a: d,
    doc="Cross entropy of logits (N, C) against class indices (N,), with ignore_index and "
    "reduction; `cross_entropy_reference` is its decomposition (Note [Fused composites]).",
)


@onnx_lowering("softmax_cross_entropy")
def _xent_onnx(b, x, t, ignore_index, reduction):
    return b.op("SoftmaxCrossEntropyLoss", x, t, reduction=reduction, ignore_index=ignore_index)


def _xent_grad_forward(xp, g, x, t, ignore_index, reduction):
    valid, safe, p, total, _, _ = _xent_parts(xp, x, t, ignore_index)
    p *= (1.0 / total)[:, None].astype(p.dtype, copy=False)  # softmax, in the same buffer
    p[xp.arange(x.shape[0]), safe] -= 1.0
    scale = valid.astype(x.dtype)
    if reduction == "mean":
        scale = scale / max(int(valid.sum()), 1)
    scale = scale * g if reduction == "none" else scale * g[()]
    p *= scale[:, None]
    return p.astype(x.dtype, copy=False)


def _xent_grad_vjp(gg, y, g, x, t, ignore_index, reduction):
    # y = s * (softmax(x) - onehot(t)) with s the per-row scale (linear in g); written in
    # ember ops so that second-order gradients flow.
    valid = (t != ignore_index).to(x.dtype)
    if reduction == "mean":
        valid = valid / E.maximum(valid.sum(), 1.0)
    p = softmax(x, 1)
    onehot = S.one_hot(E.where(t != ignore_index, t, 0), x.shape[1]).to(x.dtype)
    row = (gg * (p - onehot)).sum(1) * valid
    g_g = row if reduction == "none" else row.sum()
    s = valid * (g if reduction == "none" else g.reshape(()))
    inner = gg * s.unsqueeze(1)
    g_x = p * (inner - (inner * p).sum(1, keepdim=True))
    return (g_g, g_x, None)


XENT_GRAD = defop(
    "softmax_cross_entropy_grad",
    _xent_grad_forward,
    _xent_grad_vjp,
    shape=lambda g, x, t, **a: tuple(x),
    dtype=lambda g, x, t, **a: x,
    doc="Gradient of softmax_cross_entropy with respect to the logits.",
)

# one compiled loop over the rows each, where numba is there (ember/backend/xent_kernels.py)
SOFTMAX_CROSS_ENTROPY.def_fast_kernel("numpy", _xent_kernels.cross_entropy)
XENT_GRAD.def_fast_kernel("numpy", _xent_kernels.cross_entropy_grad)
# the loss and its gradient in one pass over the logits (a compiled training step needs both)
SOFTMAX_CROSS_ENTROPY.joint["softmax_cross_entropy_grad"] = (
    lambda xp, g, x, t, ignore_index, reduction: _xent_kernels.cross_entropy_with_grad(
        g, x, t, ignore_index, reduction
    )
)


def cross_entropy(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """PyTorch's F.cross_entropy: class indices or class probabilities as target."""
    if (
        weight is None
        and not label_smoothing
        and input.ndim == 2
        and target.ndim == 1
        and not target.dtype.is_floating_point
        and reduction in ("mean", "sum", "none")
        and input.dtype.is_floating_point
    ):
        if target.shape[0] != input.shape[0]:
            raise ShapeError(
                f"cross_entropy: target shape {tuple(target.shape)} does not match "
                f"input {tuple(input.shape)} (expected ({input.shape[0]},))"
            )
        return apply(
            SOFTMAX_CROSS_ENTROPY,
            input,
            target,
            ignore_index=int(ignore_index),
            reduction=reduction,
        )
    return cross_entropy_reference(input, target, weight, ignore_index, reduction, label_smoothing)


def cross_entropy_reference(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """The decomposition of cross entropy (all cases; the fused op is tested against it)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    class_dim = 0 if input.ndim == 1 else 1
    logp = log_softmax(input, class_dim)
    c = input.shape[class_dim]
    if target.dtype.is_floating_point:  # probabilities
        if tuple(target.shape) != tuple(input.shape):
            raise ShapeError(
                f"cross_entropy: probability target shape {tuple(target.shape)} "
                f"must equal input shape {tuple(input.shape)}"
            )
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / c
        terms = logp * target
        if weight is not None:
            shape = [1] * input.ndim
            shape[class_dim] = c
            terms = terms * weight.reshape(tuple(shape))
        loss = -terms.sum(class_dim)
        if reduction == "mean":
            n = input.numel() // c if input.ndim > 1 else 1
            return loss.sum() / n
        return _reduce(loss, reduction, "cross_entropy")
    nll = nll_loss(logp, target, weight, ignore_index, reduction)
    if not label_smoothing:
        return nll
    flat = _class_dim_last(logp)
    t = target.reshape(-1)
    valid = (t != ignore_index).to(flat.dtype)
    if weight is not None:
        smooth = -(flat * weight).sum(1)
        denom = (S.index_select(weight, 0, E.where(t != ignore_index, t, 0)) * valid).sum()
    else:
        smooth = -flat.sum(1)
        denom = valid.sum()
    smooth = smooth * valid
    if reduction == "none":
        smooth = smooth.reshape(tuple(target.shape))
    else:
        smooth = _reduce(smooth, reduction, "cross_entropy", denom)
    return nll * (1.0 - label_smoothing) + smooth * (label_smoothing / c)


def _repeat_heads(x, heads, name):
    """`x` (..., H, S, E) with each head repeated heads // H times in place (torch's
    repeat_interleave on dim -3), for grouped-query attention."""
    if x.ndim < 3:
        raise IndexOutOfRange(
            f"scaled_dot_product_attention: enable_gqa needs a heads dim (-3); {name} has shape "
            f"{tuple(x.shape)}"
        )
    h = x.shape[-3]
    if h == heads:
        return x
    if h == 0 or heads % h:
        raise ShapeError(
            f"scaled_dot_product_attention: number of heads in key and value must divide the "
            f"number of heads in query: query has {heads}, {name} has {h}"
        )
    lead, rest = tuple(x.shape[:-3]), tuple(x.shape[-2:])
    x = S.expand(S.unsqueeze(x, -3), lead + (h, heads // h) + rest)
    return x.reshape(lead + (heads,) + rest)


def scaled_dot_product_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    generator=None,
):
    """softmax(q k^T * scale + mask) v. A bool mask marks positions that take part (True);
    a float mask is added to the scores. Shapes (..., L, E), (..., S, E), (..., S, Ev).
    `enable_gqa`: key and value may have fewer heads (dim -3) than query, each repeated to
    query's count as torch does; `is_causal` and `attn_mask` together are refused, as in torch.
    """
    if is_causal and attn_mask is not None:
        raise ShapeError(
            "scaled_dot_product_attention: explicit attn_mask should not be set when "
            "is_causal=True (fold the causal mask into attn_mask instead)"
        )
    if enable_gqa:
        key = _repeat_heads(key, query.shape[-3] if query.ndim >= 3 else 0, "key")
        value = _repeat_heads(value, query.shape[-3] if query.ndim >= 3 else 0, "value")
    q_shape, k_shape = query.shape, key.shape
    if q_shape[-1] != k_shape[-1]:
        raise ShapeError(
            f"scaled_dot_product_attention: query {tuple(q_shape)} and key "
            f"{tuple(k_shape)} differ in the last (embedding) dim"
        )
    if k_shape[-2] != value.shape[-2]:
        raise ShapeError(
            f"scaled_dot_product_attention: key {tuple(k_shape)} and value "
            f"{tuple(value.shape)} differ in sequence length"
        )
    scale = 1.0 / math.sqrt(q_shape[-1]) if scale is None else scale
    L, Sk = q_shape[-2], k_shape[-2]
    if 0.0 <= dropout_p < 1.0 and _attention_fused(query, key, value, attn_mask):
        # with gradients recorded too: the op's backward is one fused op (Note [Attention
        # training] in ember/backend/attention_train_kernels.py)
        mask = attn_mask
        if is_causal:
            mask = S.tril(query.new_ones((L, Sk), dtype=_dt.bool_))
        return fused_attention(query, key, value, mask, scale, dropout_p, generator)
    return scaled_dot_product_attention_reference(
        query, key, value, attn_mask, dropout_p, is_causal, scale, generator
    )


def _attention_fused(query, key, value, attn_mask):
    """The arguments take the one-op path (`fused_attention`): float32/float64 inputs of one
    dtype and a mask (bool, or of that dtype, recording no gradient) that broadcasts to the
    scores."""
    dtype = query.dtype
    if dtype not in _FUSED_DTYPES or key.dtype is not dtype or value.dtype is not dtype:
        return False
    # explicit tests, no generator: this runs once per attention layer of every short
    # request (Note [Eager inference overhead] in ember/autograd/dispatch.py)
    if attn_mask is None:
        return True
    if getattr(attn_mask, "requires_grad", False):
        return False
    if attn_mask.dtype is not _dt.bool_ and attn_mask.dtype is not dtype:
        return False
    q_shape, k_shape, mask_shape = tuple(query.shape), tuple(key.shape), tuple(attn_mask.shape)
    lead = q_shape[:-2]
    if k_shape[:-2] != lead:
        try:
            lead = broadcast_shapes(lead, k_shape[:-2])
        except ShapeError:
            return False
    scores = lead + (q_shape[-2], k_shape[-2])
    # the mask broadcasts to the scores' shape: each of its dims (aligned at the end) 1 or equal
    offset = len(scores) - len(mask_shape)
    if offset < 0:
        return False
    for i, size in enumerate(mask_shape):
        if size != 1 and size != scores[offset + i]:
            return False
    return True


def scaled_dot_product_attention_reference(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, generator=None
):
    """The decomposition of `scaled_dot_product_attention` into matmul, the fused scale +
    mask + softmax op, dropout and matmul (Note [Fused composites]): the reference of the
    one-op path and the path of every other dtype or mask."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # k^T as a view: the NumPy backend's matmul hands it to MKL as a transpose flag, or copies
    # it for NumPy's batched matmul (~4x slower on a transposed view; Note [Strided batches])
    scores = query @ key.mT
    L, Sk = query.shape[-2], key.shape[-2]
    if _fused(scores) and not (is_causal and attn_mask is not None):
        mask = attn_mask
        if is_causal:
            mask = S.tril(query.new_ones((L, Sk), dtype=_dt.bool_))
        if mask is None or (
            (mask.dtype is _dt.bool_ or mask.dtype == scores.dtype)
            and broadcast_shapes(tuple(scores.shape), tuple(mask.shape)) == tuple(scores.shape)
        ):
            weights = fused_softmax(scores, mask, scale)
            if dropout_p > 0.0:
                weights = dropout(weights, dropout_p, True, generator)
            return weights @ value
    scores = scores * scale
    if is_causal:
        causal = S.tril(query.new_ones((L, Sk), dtype=_dt.bool_))
        scores = S.masked_fill(scores, E.logical_not(causal), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype is _dt.bool_:
            scores = S.masked_fill(scores, E.logical_not(attn_mask), float("-inf"))
        else:
            scores = scores + attn_mask
    weights = softmax(scores, -1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, True, generator)
    return weights @ value


def mse_loss(input, target, reduction="mean"):
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    return _reduce(E.abs(input - target), reduction, "l1_loss")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    d = E.abs(input - target)
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    loss = E.where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def _bce_forward(xp, x, t):
    inside = (x >= 0) & (x <= 1)  # nan is outside, as in torch
    if not bool(xp.all(inside)):
        bad = x[~inside].reshape(-1)[0]
        raise ValueOutOfRange(
            f"binary_cross_entropy: all elements of input should be between 0 and 1 "
            f"(probabilities), got {float(bad)}; for logits use binary_cross_entropy_with_logits"
        )
    with np.errstate(divide="ignore"):
        log_p = xp.maximum(xp.log(x), -100.0)
        log_q = xp.maximum(xp.log1p(-x), -100.0)
    return -(t * log_p + (1 - t) * log_q)


def _bce_vjp(g, y, x, t):
    # torch's rule: (x - t) / max(x (1 - x), 1e-12), finite where x saturates to 0 or 1
    # (Note [Zero-safe gradients]).
    gx = g * (x - t) / E.maximum((1.0 - x) * x, 1e-12)
    gt = g * (E.log1p(-x) - E.log(x))
    return gx, gt


def _bce_shape(x, t, **attrs):
    if tuple(x) != tuple(t):
        raise ShapeError(
            f"binary_cross_entropy: target size {tuple(t)} differs from input size {tuple(x)}; "
            "they must match"
        )
    return tuple(x)


BINARY_CROSS_ENTROPY = defop(
    "binary_cross_entropy",
    _bce_forward,
    _bce_vjp,
    shape=_bce_shape,
    dtype=lambda x, t, **k: x,
    promote="float",
    doc="Elementwise -(t log x + (1 - t) log(1 - x)), logs clamped at -100 as in torch, with "
    "torch's finite gradient at saturated probabilities; input must lie in [0, 1].",
)


@onnx_lowering("binary_cross_entropy")
def _bce_onnx(b, x, t):
    """-(t max(log x, -100) + (1 - t) max(log(1 - x), -100)); the range check of the
    reference is a runtime error ONNX cannot raise, so it is left out."""
    dtype = b.out.dtype
    low = b.const(-100.0, dtype)
    one = b.const(1.0, dtype)
    log_p = b.op("Max", b.op("Log", x), low)
    log_q = b.op("Max", b.op("Log", b.op("Sub", one, x)), low)
    total = b.op("Add", b.op("Mul", t, log_p), b.op("Mul", b.op("Sub", one, t), log_q))
    return b.op("Neg", total)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    _bce_shape(tuple(input.shape), tuple(target.shape))  # torch refuses broadcasting here
    loss = apply(BINARY_CROSS_ENTROPY, input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    # log(sigmoid(x)) = -softplus(-x), computed stably
    log_sig = -(E.log1p(E.exp(-E.abs(input))) + E.maximum(-input, 0.0))
    log_one_minus = log_sig - input
    if pos_weight is not None:
        loss = -(pos_weight * target * log_sig + (1.0 - target) * log_one_minus)
    else:
        loss = -(target * log_sig + (1.0 - target) * log_one_minus)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def kl_div(input, target, reduction="mean", log_target=False):
    if log_target:
        loss = target.exp() * (target - input)
    else:
        loss = E.where(target > 0, target * (E.log(E.where(target > 0, target, 1.0)) - input), 0.0)
    if reduction == "batchmean":
        return loss.sum() / input.shape[0]
    return _reduce(loss, reduction, "kl_div")


_ = bernoulli
