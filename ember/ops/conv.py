"""Convolution and pooling primitives (NCHW), and composites (conv1d, avg and adaptive pooling).

Pooling primitives: max_pool2d and its gradient (fast NumPy kernels), max_pool_indices (each
window's argmax, for return_indices and second-order gradients) and max_unpool, the last two
over any number of spatial dims (Note [Pool windows]). max_pool1d runs as 2-D, max_pool3d
gathers the input at max_pool_indices; avg pooling (1-D to 3-D) is depthwise conv2d window
sums; adaptive pooling is a matmul per dim (avg) or max_pool_indices over gathered windows
(max; Note [Adaptive windows]).

conv2d is computed as im2col (a strided window view, copied once) times a GEMM, per group in
one batched matmul. Its VJPs are two more primitives, `conv2d_input_grad` and
`conv2d_weight_grad`; the three are bilinear and their VJPs are written with each other, so
second-order gradients work.
"""

from __future__ import annotations

import math

import numpy as np

from ember._util.errors import (
    DTypeError,
    IndexOutOfRange,
    ShapeError,
    ValueOutOfRange,
    at_user_line,
)
from ember.backend import conv_kernels as _np_kernels
from ember.ops.registry import apply, defop, int64_dtype, onnx_lowering, same_dtype


def _needs_grad(t):
    return getattr(t, "requires_grad", True)


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"conv2d: {name} must be an int or a pair, got {v}")
    return v


def _check_conv(op, x_shape, w_shape, stride, padding, dilation, groups):
    """Refuse what torch refuses before a conv runs, naming `op` (conv1d/2d/3d) with its own
    dims: non-positive stride, dilation or groups, negative padding, channels that do not fit
    the weight and groups, and a kernel larger than the padded input (torch's RuntimeErrors;
    Note [Error classes])."""
    for name, values, low in (
        ("stride", stride, 1),
        ("dilation", dilation, 1),
        ("groups", (groups,), 1),
        ("padding", padding, 0),
    ):
        if any(int(v) < low for v in values):
            raise ValueOutOfRange(
                f"{op}: {name} must be {'non-negative' if low == 0 else 'positive'}, got "
                f"{tuple(values) if name != 'groups' else groups}"
            )
    c, cg, o = x_shape[1], w_shape[1], w_shape[0]
    if c != cg * groups:
        raise ShapeError(
            f"{op}: input has {c} channels (shape {tuple(x_shape)}) but weight "
            f"{tuple(w_shape)} with groups={groups} expects {cg * groups}"
        )
    if o % groups:
        raise ShapeError(f"{op}: out channels {o} are not divisible by groups={groups}")
    sizes = tuple(n + 2 * p for n, p in zip(x_shape[2:], padding))
    kernel = tuple(w_shape[2:])
    effective = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if any(e > n for e, n in zip(effective, sizes)):
        raise ShapeError(
            f"{op}: kernel {kernel} (dilation {tuple(dilation)}) is larger than the padded "
            f"input {sizes} (input {tuple(x_shape)}, padding {tuple(padding)})"
        )


def _out_size(n, k, s, p, d, ceil_mode=False):
    eff = d * (k - 1) + 1
    span = n + 2 * p - eff
    if span < 0:
        return -1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # last window must start inside the input
        out -= 1
    return out


def _conv_shape(x, w, stride, padding, dilation, groups):
    if len(x) != 4 or len(w) != 4:
        raise ShapeError(
            f"conv2d: expected 4-D input (N, C, H, W) and weight (O, C/groups, kH, "
            f"kW), got {tuple(x)} and {tuple(w)}"
        )
    n, c, h, wd = x
    o, cg, kh, kw = w
    if c != cg * groups:
        raise ShapeError(
            f"conv2d: input has {c} channels but weight {tuple(w)} with groups="
            f"{groups} expects {cg * groups}"
        )
    if o % groups:
        raise ShapeError(f"conv2d: out channels {o} not divisible by groups={groups}")
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(wd, kw, stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError(
            f"conv2d: kernel {(kh, kw)} (dilation {dilation}) is larger than the "
            f"padded input {(h + 2 * padding[0], wd + 2 * padding[1])}"
        )
    return (n, o, ho, wo)


def _im2col(xp, x, kh, kw, stride, padding, dilation, groups):
    """(G, N*Ho*Wo, Cg*kh*kw) columns of x."""
    n, c, _h, _w = x.shape
    ph, pw = padding
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dh, dw = dilation
    win = xp.windows(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, :: stride[0], :: stride[1], ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    ho, wo = win.shape[2], win.shape[3]
    cg = c // groups
    win = win.reshape(n, groups, cg, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return xp.ascontiguousarray(win).reshape(groups, n * ho * wo, cg * kh * kw), ho, wo


def _conv_forward(xp, x, w, stride, padding, dilation, groups):
    o, cg, kh, kw = w.shape
    n = x.shape[0]
    cols, ho, wo = _im2col(xp, x, kh, kw, stride, padding, dilation, groups)
    wmat = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    out = xp.matmul(cols, wmat)  # (G, N*Ho*Wo, Og)
    out = out.reshape(groups, n, ho, wo, o // groups).transpose(1, 0, 4, 2, 3)
    return xp.ascontiguousarray(out).reshape(n, o, ho, wo)


def _conv_vjp(g, y, x, w, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    # skip the input gradient of a first layer (its input needs none): the larger half
    gx = (
        apply(CONV2D_INPUT_GRAD, g, w, input_shape=tuple(x.shape), **attrs)
        if _needs_grad(x)
        else None
    )
    gw = (
        apply(CONV2D_WEIGHT_GRAD, x, g, weight_shape=tuple(w.shape), **attrs)
        if _needs_grad(w)
        else None
    )
    return gx, gw


CONV2D = defop(
    "conv2d",
    _conv_forward,
    _conv_vjp,
    shape=_conv_shape,
    dtype=lambda a, b, **k: a,
    promote="common",
)


@onnx_lowering("conv2d")
def _conv2d_onnx(b, x, w, stride, padding, dilation, groups):
    return b.op(
        "Conv",
        x,
        w,
        kernel_shape=list(b.ins[1].shape[2:]),
        strides=list(stride),
        pads=list(padding) * 2,
        dilations=list(dilation),
        group=groups,
    )


def _input_grad_forward(xp, g, w, input_shape, stride, padding, dilation, groups):
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    _, _, ho, wo = g.shape
    og = o // groups
    gmat = g.reshape(n, groups, og, ho, wo).transpose(1, 0, 3, 4, 2).reshape(groups, -1, og)
    wmat = w.reshape(groups, og, cg * kh * kw)
    cols = xp.matmul(gmat, wmat).reshape(groups, n, ho, wo, cg, kh, kw)
    cols = cols.transpose(1, 0, 4, 5, 6, 2, 3).reshape(n, c, kh, kw, ho, wo)
    ph, pw = padding
    dh, dw = dilation
    sh, sw = stride
    out = xp.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[
                :,
                :,
                i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                j * dw : j * dw + sw * (wo - 1) + 1 : sw,
            ] += cols[:, :, i, j]
    return out[:, :, ph : ph + h, pw : pw + wd]


def _input_grad_vjp(gg, y, g, w, input_shape, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return (
        apply(CONV2D, gg, w, **attrs),
        apply(CONV2D_WEIGHT_GRAD, gg, g, weight_shape=tuple(w.shape), **attrs),
    )


CONV2D_INPUT_GRAD = defop(
    "conv2d_input_grad",
    _input_grad_forward,
    _input_grad_vjp,
    shape=lambda g, w, input_shape, **a: tuple(input_shape),
    dtype=lambda a, b, **k: a,
    promote="common",
    doc="Gradient of conv2d with respect to its input (a transposed conv).",
)


def _weight_grad_forward(xp, x, g, weight_shape, stride, padding, dilation, groups):
    o, cg, kh, kw = weight_shape
    n = x.shape[0]
    cols, ho, wo = _im2col(xp, x, kh, kw, stride, padding, dilation, groups)
    og = o // groups
    gmat = g.reshape(n, groups, og, ho, wo).transpose(1, 2, 0, 3, 4).reshape(groups, og, -1)
    return xp.matmul(gmat, cols).reshape(o, cg, kh, kw)


def _weight_grad_vjp(gw, y, x, g, weight_shape, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return (
        apply(CONV2D_INPUT_GRAD, g, gw, input_shape=tuple(x.shape), **attrs),
        apply(CONV2D, x, gw, **attrs),
    )


CONV2D_WEIGHT_GRAD = defop(
    "conv2d_weight_grad",
    _weight_grad_forward,
    _weight_grad_vjp,
    shape=lambda x, g, weight_shape, **a: tuple(weight_shape),
    dtype=lambda a, b, **k: a,
    promote="common",
    doc="Gradient of conv2d with respect to its weight.",
)


# --- pooling primitives ---------------------------------------------------------------------------
# Note [Pool windows]: along one spatial dim of size n, output window o covers the input
# positions o*s - p + j*d for j < k (s stride, p padding, d dilation, k kernel). ceil_mode adds a
# last, partial window only if it starts inside the input or the left padding ((o-1)*s < n + p),
# as PyTorch does. Max pooling never picks a padding position: a window's index (flat over the
# (N, C) plane's spatial dims, row-major, as PyTorch's `return_indices`) is its first maximum in
# row-major scan order, or its last NaN if it holds one (PyTorch's CPU kernels keep
# `val > max || isnan(val)`); a window of nothing but -inf picks its first position in the input.
# The reference kernels below are written for any number of spatial dims; max_pool2d's fast
# NumPy kernels (ember.backend.conv_kernels) follow the same rules and are tested against them.


def _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode, fill):
    """(N, C, *out, *kernel) windows of x, padded at `fill` (plus the ceil-mode overhang)."""
    outs, extents, widths = [], [], [(0, 0)] * (x.ndim - len(kernel))
    for n, k, s, p, d in zip(x.shape[x.ndim - len(kernel) :], kernel, stride, padding, dilation):
        o = _out_size(n, k, s, p, d, ceil_mode)
        e = d * (k - 1) + 1
        outs.append(o)
        extents.append(e)
        widths.append((p, p + max(0, (o - 1) * s + e - (n + 2 * p))))
    padded = xp.pad(x, tuple(widths), constant_values=fill)
    nd = len(kernel)
    win = xp.windows(padded, tuple(extents), axis=tuple(range(x.ndim - nd, x.ndim)))
    lead = (slice(None),) * (x.ndim - nd)
    return win[
        lead
        + tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(outs, stride))
        + tuple(slice(None, None, d) for d in dilation)
    ]


def _lowest(xp, dtype):
    return -xp.inf if dtype.kind == "f" else xp.iinfo(dtype).min


def _pool_out_shape(op, x, kernel, stride, padding, dilation, ceil_mode):
    """The output shape of max pooling over x's last len(kernel) dims; errors name `op`."""
    nd = len(kernel)
    x = tuple(x)
    if len(x) != nd + 2:
        dims = ("L",) if nd == 1 else ("H", "W") if nd == 2 else ("D", "H", "W")
        raise ShapeError(f"{op}: expected a {nd + 2}-D input (N, C, {', '.join(dims)}), got {x}")
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ShapeError(f"{op}: padding {padding} must be at most half the kernel {kernel}")
    outs = tuple(
        _out_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(x[2:], kernel, stride, padding, dilation)
    )
    if any(o <= 0 for o in outs):
        raise ShapeError(
            f"{op}: kernel {kernel} (dilation {dilation}, padding {padding}) is "
            f"larger than the input {x}"
        )
    return x[:2] + outs


def _max_pool_shape(x, kernel, stride, padding, dilation, ceil_mode):
    return _pool_out_shape("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode)


def _max_pool_forward(xp, x, kernel, stride, padding, dilation, ceil_mode):
    win = _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode, _lowest(xp, x.dtype))
    return win.max(axis=(4, 5))


def _max_pool_vjp(g, y, x, kernel, stride, padding, dilation, ceil_mode):
    return (
        apply(
            MAX_POOL2D_GRAD,
            g,
            x,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            ceil_mode=ceil_mode,
        ),
    )


MAX_POOL2D = defop(
    "max_pool2d", _max_pool_forward, _max_pool_vjp, shape=_max_pool_shape, dtype=same_dtype
)


def _onnx_max_pool(b, x, kernel, stride, padding, dilation, ceil_mode, outputs=1):
    """MaxPool; with ceil_mode, ONNX runtimes may add a last window that starts in the right
    padding, which PyTorch's rule (Note [Pool windows]) drops: the outputs are sliced to
    ember's output size."""
    result = b.op(
        "MaxPool",
        x,
        outputs=outputs,
        kernel_shape=list(kernel),
        strides=list(stride),
        pads=list(padding) * 2,
        dilations=list(dilation),
        ceil_mode=int(ceil_mode),
    )
    if not ceil_mode:
        return result
    nd = len(kernel)
    ends = b.ints_across([list(s[2:]) for s in b.shapes_of(b.out)])
    axes = b.const(list(range(2, 2 + nd)), "int64")
    starts = b.const([0] * nd, "int64")
    results = result if isinstance(result, list) else [result]
    sliced = [b.op("Slice", r, starts, ends, axes) for r in results]
    return sliced if isinstance(result, list) else sliced[0]


@onnx_lowering("max_pool2d")
def _max_pool2d_onnx(b, x, kernel, stride, padding, dilation, ceil_mode):
    return _onnx_max_pool(b, x, kernel, stride, padding, dilation, ceil_mode)


def _max_pool_indices_forward(xp, x, kernel, stride, padding, dilation, ceil_mode):
    nd = len(kernel)
    spatial = tuple(x.shape[2:])
    win = _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode, _lowest(xp, x.dtype))
    outs = tuple(win.shape[2 : 2 + nd])
    taps = math.prod(kernel)
    values = win.reshape(tuple(x.shape[:2]) + outs + (taps,))
    plane = xp.arange(math.prod(spatial), dtype=xp.int64).reshape((1, 1) + spatial)
    where = _pool_windows(xp, plane, kernel, stride, padding, dilation, ceil_mode, -1)
    where = where.reshape((1, 1) + outs + (taps,))
    hits = (where >= 0) & (values == values.max(axis=-1, keepdims=True))
    pick = hits.argmax(axis=-1)  # first maximum inside the input (Note [Pool windows])
    if x.dtype.kind == "f":
        nan = xp.isnan(values)
        last_nan = taps - 1 - nan[..., ::-1].argmax(axis=-1)
        pick = xp.where(nan.any(axis=-1), last_nan, pick)
    where = xp.broadcast_to(where, values.shape)
    return xp.take_along_axis(where, pick[..., None], axis=-1)[..., 0].astype(xp.int64)


def _max_pool_indices_shape(x, kernel, stride, padding, dilation, ceil_mode):
    return _pool_out_shape(
        f"max_pool{len(kernel)}d", x, kernel, stride, padding, dilation, ceil_mode
    )


MAX_POOL_INDICES = defop(
    "max_pool_indices",
    _max_pool_indices_forward,
    shape=_max_pool_indices_shape,
    dtype=int64_dtype,
    doc="Each max-pooling window's argmax as a flat index into its (N, C) plane, over any "
    "number of spatial dims (Note [Pool windows]); PyTorch's return_indices.",
)


def _gather_planes(t, index, shape):
    """t's values at the flat per-(N, C)-plane positions `index`, reshaped to `shape`."""
    n, c = index.shape[0], index.shape[1]
    plane = math.prod(tuple(t.shape)[2:])
    picked = t.reshape(n, c, plane).gather(2, index.reshape(n, c, math.prod(index.shape[2:])))
    return picked.reshape(shape)


def _max_pool_grad_forward(xp, g, x, kernel, stride, padding, dilation, ceil_mode):
    index = _max_pool_indices_forward(xp, x, kernel, stride, padding, dilation, ceil_mode)
    n, c = x.shape[0], x.shape[1]
    plane = math.prod(x.shape[2:])
    offsets = xp.arange(n * c, dtype=xp.int64).reshape((n, c) + (1,) * (index.ndim - 2)) * plane
    flat = (offsets + index).reshape(-1)
    out = xp.bincount(flat, weights=g.reshape(-1).astype(xp.float64), minlength=n * c * plane)
    return out.reshape(x.shape).astype(g.dtype)


def _max_pool_grad_vjp(gg, y, g, x, kernel, stride, padding, dilation, ceil_mode):
    # linear in g: its transpose picks each window's maximum position out of gg (PyTorch's
    # max_pool_double_backward); piecewise constant in x, so zero there, as in PyTorch
    index = apply(
        MAX_POOL_INDICES,
        x,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )
    gx = gg.new_zeros(tuple(x.shape)) if _needs_grad(x) else None
    return _gather_planes(gg, index, tuple(g.shape)), gx


MAX_POOL2D_GRAD = defop(
    "max_pool2d_grad",
    _max_pool_grad_forward,
    _max_pool_grad_vjp,
    shape=lambda g, x, **a: tuple(x),
    dtype=same_dtype,
    doc="Routes each window's gradient to its maximum (Note [Pool windows]).",
)


def _max_unpool_shape(x, index, output_size):
    if tuple(x) != tuple(index):
        raise ShapeError(
            f"max_unpool{len(output_size)}d: indices of shape {tuple(index)} must "
            f"have the input's shape {tuple(x)}"
        )
    return tuple(x[:2]) + tuple(output_size)


def _max_unpool_forward(xp, x, index, output_size):
    n, c = x.shape[0], x.shape[1]
    plane = math.prod(output_size)
    flat = index.reshape(n, c, math.prod(index.shape[2:]))
    if flat.size:
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= plane:
            raise IndexOutOfRange(
                f"max_unpool{len(output_size)}d: index {low if low < 0 else high} is out of "
                f"range for an output of spatial size {tuple(output_size)} (expected indices "
                f"in [0, {plane}))"
            )
    out = xp.zeros((n, c, plane), dtype=x.dtype)
    xp.put_along_axis(out, flat, x.reshape(flat.shape), axis=2)
    return out.reshape((n, c) + tuple(output_size))


MAX_UNPOOL = defop(
    "max_unpool",
    _max_unpool_forward,
    lambda g, y, x, index, output_size: (_gather_planes(g, index, tuple(x.shape)), None),
    shape=_max_unpool_shape,
    dtype=lambda a, b, **k: a,
    doc="Zeros of (N, C, *output_size) with x written at the flat per-plane positions `index` "
    "(max pooling's indices); any number of spatial dims.",
)


@onnx_lowering("max_pool_indices")
def _max_pool_indices_onnx(b, x, kernel, stride, padding, dilation, ceil_mode):
    """MaxPool's Indices output, flat over the whole (N, C, *spatial) tensor in ONNX, taken
    modulo the plane size to be per (N, C) plane. Both pick a window's first maximum; a
    window holding NaN is where they part (ember: its last NaN, as PyTorch's CPU kernels)."""
    _, indices = _onnx_max_pool(b, x, kernel, stride, padding, dilation, ceil_mode, outputs=2)
    plane = b.ints_across([[math.prod(s[2:])] for s in b.shapes_of(b.ins[0])])
    return b.op("Mod", indices, plane)


@onnx_lowering("max_unpool")
def _max_unpool_onnx(b, x, index, output_size):
    """ScatterElements of x into zeros of (N, C, prod(output_size)) along the plane, then the
    output's shape (ONNX's MaxUnpool wants indices flat over the whole tensor instead)."""
    shapes = b.shapes_of(b.ins[0])
    plane = math.prod(output_size)
    flat = b.ints_across([[s[0], s[1], -1] for s in shapes])
    zeros_shape = b.ints_across([[s[0], s[1], plane] for s in shapes])
    zeros = b.op("ConstantOfShape", zeros_shape)
    if b.out.dtype != np.float32:
        zeros = b.op("Cast", zeros, to=b.onnx_type(b.out.dtype))
    scattered = b.op(
        "ScatterElements",
        zeros,
        b.op("Reshape", index, flat),
        b.op("Reshape", x, flat),
        axis=2,
    )
    out_shape = b.ints_across([[s[0], s[1], *output_size] for s in shapes])
    return b.op("Reshape", scattered, out_shape)


# faster NumPy kernels (ember.backend.conv_kernels); the forwards above stay the spec
CONV2D.def_kernel("numpy")(_np_kernels.conv2d)
CONV2D_INPUT_GRAD.def_kernel("numpy")(_np_kernels.conv2d_input_grad)
CONV2D_WEIGHT_GRAD.def_kernel("numpy")(_np_kernels.conv2d_weight_grad)
MAX_POOL2D.def_kernel("numpy")(_np_kernels.max_pool2d)
MAX_POOL2D_GRAD.def_kernel("numpy")(_np_kernels.max_pool2d_grad)
MAX_POOL_INDICES.def_kernel("numpy")(_np_kernels.max_pool_indices)


# --- wrappers -----------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("conv2d: padding='same' needs stride 1")
            total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            if any(t % 2 for t in total):
                left = tuple(t // 2 for t in total)
                from ember.ops.shape import pad as _pad

                x = _pad(x, (left[1], total[1] - left[1], left[0], total[0] - left[0]))
                padding = (0, 0)
            else:
                padding = tuple(t // 2 for t in total)
        else:
            raise ValueError(f"conv2d: padding must be 'same', 'valid' or numbers, got {padding!r}")
    padding = _pair(padding, "padding")
    # The kernel against the padded input, channels and groups are checked before the kernel
    # runs (the NumPy kernel would return an empty tensor for a kernel larger than the input).
    if x.ndim != 4 or weight.ndim != 4:
        _conv_shape(tuple(x.shape), tuple(weight.shape), stride, padding, dilation, int(groups))
    _check_conv("conv2d", x.shape, weight.shape, stride, padding, dilation, int(groups))
    out = apply(
        CONV2D,
        x,
        weight,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=int(groups),
    )
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(
            f"conv1d: expected 3-D input (N, C, L) and weight (O, C/groups, K), "
            f"got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    one = lambda v: (1, v if isinstance(v, int) else v[0])
    if isinstance(padding, str):
        pad2 = padding
    else:
        pad2 = (0, padding if isinstance(padding, int) else padding[0])
        _check_conv(
            "conv1d",
            x.shape,
            weight.shape,
            one(stride)[1:],
            pad2[1:],
            one(dilation)[1:],
            int(groups),
        )
    out = conv2d(
        x.unsqueeze(2), weight.unsqueeze(2), None, one(stride), pad2, one(dilation), groups
    )
    out = out.squeeze(2)
    return out if bias is None else out + bias.reshape(1, -1, 1)


def _ntuple(v, n, name, op):
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise ValueError(at_user_line(f"{op}: {name} must be an int or {n} ints, got {v}"))
    return v


def _pool_attrs(op, nd, kernel_size, stride, padding, dilation=1):
    kernel = _ntuple(kernel_size, nd, "kernel_size", op)
    stride = (
        kernel
        if stride is None or (not isinstance(stride, int) and len(stride) == 0)
        else _ntuple(stride, nd, "stride", op)
    )
    padding = _ntuple(padding, nd, "padding", op)
    dilation = _ntuple(dilation, nd, "dilation", op)
    for name, v, low in (
        ("kernel_size", kernel, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if any(e < low for e in v):  # torch: RuntimeError (Note [Error classes])
            raise ValueOutOfRange(at_user_line(f"{op}: {name} must be at least {low}, got {v}"))
    return kernel, stride, padding, dilation


def _batched(op, nd, x):
    """x with a batch dim (unbatched inputs get one), and whether it was added."""
    if x.ndim not in (nd + 1, nd + 2):
        raise ShapeError(
            f"{op}: expected a {nd + 1}-D or {nd + 2}-D input, got shape {tuple(x.shape)}"
        )
    return (x.unsqueeze(0), True) if x.ndim == nd + 1 else (x, False)


def _max_pool(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x, unbatched = _batched(op, nd, x)
    kernel, stride, padding, dilation = _pool_attrs(op, nd, kernel_size, stride, padding, dilation)
    attrs = {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "ceil_mode": bool(ceil_mode),
    }
    shape = _pool_out_shape(op, tuple(x.shape), **attrs)  # errors in the caller's terms
    index = None
    if nd == 3:  # the values are the input at the indices; gather's VJPs give every order
        index = apply(MAX_POOL_INDICES, x, **attrs)
        out = _gather_planes(x, index, shape)
    else:  # 1-D as 2-D with a unit height: the fast kernels; flat indices are the same
        x2 = x.unsqueeze(2) if nd == 1 else x
        attrs2 = (
            attrs
            if nd == 2
            else {
                "kernel": (1,) + kernel,
                "stride": (1,) + stride,
                "padding": (0,) + padding,
                "dilation": (1,) + dilation,
                "ceil_mode": bool(ceil_mode),
            }
        )
        out = apply(MAX_POOL2D, x2, **attrs2)
        if return_indices:
            index = apply(MAX_POOL_INDICES, x2, **attrs2)
        if nd == 1:
            out = out.squeeze(2)
            index = None if index is None else index.squeeze(2)
    if unbatched:
        out = out.squeeze(0)
        index = None if index is None else index.squeeze(0)
    return (out, index) if return_indices else out


def max_pool1d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max pooling over (N, C, L) or (C, L); with return_indices, also each window's argmax.

    Example:
        >>> import ember
        >>> out, idx = max_pool1d(ember.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2, return_indices=True)
        >>> out.tolist(), idx.tolist()
        ([[[3.0, 2.0]]], [[[1, 2]]])
    """
    return _max_pool(
        "max_pool1d", 1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def max_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max pooling over (N, C, H, W) or (C, H, W) (Note [Pool windows]).

    With return_indices=True it returns (values, indices): int64 flat indices into each
    (N, C) plane of H*W, the input of `max_unpool2d`.
    """
    return _max_pool(
        "max_pool2d", 2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def max_pool3d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max pooling over (N, C, D, H, W) or (C, D, H, W); indices are flat over D*H*W."""
    return _max_pool(
        "max_pool3d", 3, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def _max_unpool(op, nd, x, indices, kernel_size, stride, padding, output_size):
    x, unbatched = _batched(op, nd, x)
    if indices.dtype.is_floating_point or indices.dtype.name == "bool":
        raise DTypeError(f"{op}: indices must be an integer tensor, got {indices.dtype}")
    if unbatched:
        indices = indices.unsqueeze(0)
    if tuple(indices.shape) != tuple(x.shape):
        shown = tuple(indices.shape)[1:] if unbatched else tuple(indices.shape)
        raise ShapeError(
            f"{op}: indices of shape {shown} must have the input's shape "
            f"{tuple(x.shape)[1:] if unbatched else tuple(x.shape)}"
        )
    kernel, stride, padding, _ = _pool_attrs(op, nd, kernel_size, stride, padding)
    default = tuple(
        (n - 1) * s + k - 2 * p for n, k, s, p in zip(tuple(x.shape)[2:], kernel, stride, padding)
    )
    if output_size is None:
        size = default
    else:
        size = tuple(int(v) for v in output_size)
        if len(size) == nd + 2 or (unbatched and len(size) == nd + 1):
            size = size[len(size) - nd :]
        if len(size) != nd:
            raise ShapeError(
                f"{op}: output_size should have {nd} or {nd + 2} elements, got {tuple(output_size)}"
            )
        for d, (want, base, s) in enumerate(zip(size, default, stride)):
            if not base - s < want < base + s:
                raise ShapeError(
                    f"{op}: invalid output_size {tuple(output_size)}: dim {d} must "
                    f"be between {base - s} and {base + s} (exclusive), got {want}"
                )
    if any(v < 0 for v in size):
        raise ShapeError(
            f"{op}: the output size {size} has a negative dim (input "
            f"{tuple(x.shape)}, kernel {kernel}, stride {stride}, padding {padding})"
        )
    out = apply(MAX_UNPOOL, x, indices, output_size=size)
    return out.squeeze(0) if unbatched else out


def max_unpool1d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool1d: x written at `indices`, zeros elsewhere."""
    return _max_unpool("max_unpool1d", 1, x, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool2d: x written at `indices` (flat over H*W), zeros elsewhere.

    Example:
        >>> import ember
        >>> x = ember.tensor([[[[1.0, 2.0], [4.0, 3.0]]]])
        >>> out, idx = max_pool2d(x, 2, return_indices=True)
        >>> max_unpool2d(out, idx, 2).tolist()
        [[[[0.0, 0.0], [4.0, 0.0]]]]
    """
    return _max_unpool("max_unpool2d", 2, x, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool3d: x written at `indices` (flat over D*H*W)."""
    return _max_unpool("max_unpool3d", 3, x, indices, kernel_size, stride, padding, output_size)


def _window_counts(n, k, s, p, out, count_include_pad):
    """How many positions each window along one dim averages (PyTorch's CPU avg_pool rule)."""
    counts = []
    for o in range(out):
        start = o * s - p
        end = min(start + k, n + p)  # the ceil-mode overhang past the padding never counts
        if not count_include_pad:
            start, end = max(start, 0), min(end, n)
        counts.append(end - start)
    return counts


def _box_sums2d(x, kernel, stride, padding, extra):
    """Each window's sum over the last two dims: a depthwise conv2d with a kernel of ones.
    `extra` zeros past the bottom/right padding cover ceil mode's overhanging last windows."""
    c = x.shape[1]
    weight = x.new_ones((c, 1) + tuple(kernel))
    if any(extra):
        from ember.ops.shape import pad as _pad

        x = _pad(x, (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0]))
        padding = (0, 0)
    return conv2d(x, weight, None, stride, padding, 1, c)


def _avg_pool(
    op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    """Average pooling over the last nd (1 to 3) dims as window sums over a divisor.

    The window sums are separable: 1-D and 2-D are one depthwise conv2d; 3-D sums (H, W)
    windows with one conv2d and then D windows with another. The divisor is divisor_override
    if given, else the product over dims of each window's extent inside the padded input
    (count_include_pad) or inside the input alone (Note [Pool windows]).
    """
    x, unbatched = _batched(op, nd, x)
    kernel, stride, padding, _ = _pool_attrs(op, nd, kernel_size, stride, padding)
    if divisor_override is not None and int(divisor_override) == 0:
        raise ValueError(at_user_line(f"{op}: divisor_override must be non-zero, got 0"))
    spatial = tuple(x.shape)[2:]
    outs = _pool_out_shape(op, tuple(x.shape), kernel, stride, padding, (1,) * nd, bool(ceil_mode))[
        2:
    ]
    extra = [
        max(0, (o - 1) * s + k - (n + 2 * p))
        for n, k, s, p, o in zip(spatial, kernel, stride, padding, outs)
    ]
    if nd == 1:
        total = _box_sums2d(
            x.unsqueeze(2), (1,) + kernel, (1,) + stride, (0,) + padding, [0] + extra
        ).squeeze(2)
    elif nd == 2:
        total = _box_sums2d(x, kernel, stride, padding, extra)
    else:
        n, c, d = x.shape[0], x.shape[1], spatial[0]
        planes = _box_sums2d(
            x.reshape(n, c * d, spatial[1], spatial[2]),
            kernel[1:],
            stride[1:],
            padding[1:],
            extra[1:],
        )
        planes = planes.reshape(n, c, d, outs[1] * outs[2])
        total = _box_sums2d(
            planes, (kernel[0], 1), (stride[0], 1), (padding[0], 0), (extra[0], 0)
        ).reshape((n, c) + tuple(outs))
    if divisor_override is not None:
        out = total / divisor_override
    elif not any(extra) and (count_include_pad or not any(padding)):
        out = total / math.prod(kernel)
    else:
        import numpy as np  # the divisor grid is a constant built from the shapes alone

        grid = np.ones((), dtype=np.float64)
        for n, k, s, p, o in zip(spatial, kernel, stride, padding, outs):
            counts = np.asarray(_window_counts(n, k, s, p, o, count_include_pad), np.float64)
            grid = np.multiply.outer(grid, counts)
        out = total / x.new_tensor(grid)
    return out.squeeze(0) if unbatched else out


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling over (N, C, L) or (C, L) (Note [Pool windows])."""
    return _avg_pool(
        "avg_pool1d", 1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, None
    )


def avg_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Average pooling over (N, C, H, W) or (C, H, W), as a depthwise convolution with a
    constant kernel (Note [Pool windows]).

    The divisor is divisor_override if given, else the window's size inside the padded input
    (count_include_pad) or inside the input alone.
    """
    return _avg_pool(
        "avg_pool2d",
        2,
        x,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


def avg_pool3d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Average pooling over (N, C, D, H, W) or (C, D, H, W): separable window sums, two
    depthwise conv2d calls, over the divisor of avg_pool2d's rule per dim.

    Example:
        >>> import ember
        >>> x = ember.arange(8.0).reshape(1, 1, 2, 2, 2)
        >>> avg_pool3d(x, 2).tolist()
        [[[[[3.5]]]]]
    """
    return _avg_pool(
        "avg_pool3d",
        3,
        x,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


# --- adaptive pooling ---------------------------------------------------------------------------
# Note [Adaptive windows]: along a dim of size n pooled to o outputs, output i covers the input
# positions [floor(i*n/o), ceil((i+1)*n/o)), as PyTorch. Windows can differ in size and overlap,
# so adaptive pooling is no regular window op: the average is a matrix per dim (each row holds
# 1/size over its window; matmul contracts one dim at a time); the maximum gathers each dim's
# windows side by side, each padded to the widest by repeating its last position, which makes
# them regular (kernel = stride = the widest window) for max_pool_indices. Scan order and hence
# PyTorch's tie and NaN rules (Note [Pool windows]) survive, as repeated positions come last.


def _adaptive_sizes(op, nd, x, output_size):
    if isinstance(output_size, (tuple, list)):
        sizes = tuple(output_size)
        if len(sizes) == 1 and nd > 1:
            sizes = sizes * nd
    else:
        sizes = (output_size,) * nd
    if len(sizes) != nd:
        raise ValueError(
            at_user_line(
                f"{op}: output_size must be an int or {nd} ints (None "
                f"keeps the input's size), got {output_size!r}"
            )
        )
    spatial = tuple(x.shape)[2:]
    sizes = tuple(n if o is None else int(o) for o, n in zip(sizes, spatial))
    if any(o < 0 for o in sizes):
        raise ValueError(
            at_user_line(f"{op}: output_size must not be negative, got {output_size!r}")
        )
    if any(n == 0 for n in spatial):
        raise ShapeError(
            at_user_line(
                f"{op}: expected an input with non-zero spatial dims, got shape {tuple(x.shape)}"
            )
        )
    return sizes


def _adaptive_bounds(n, o):
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def _adaptive_avg(op, nd, x, output_size):
    import numpy as np  # the averaging matrices are constants built from the shapes alone

    x, unbatched = _batched(op, nd, x)
    sizes = _adaptive_sizes(op, nd, x, output_size)
    n, c = x.shape[0], x.shape[1]
    if all(o == 1 for o in sizes):  # global pooling: one mean over the spatial dims
        out = x.mean(tuple(range(2, 2 + nd)), keepdim=True)
        return out.squeeze(0) if unbatched else out
    out = x
    # one dim at a time, last first: (size, rest) -> (output size, rest) by a matmul
    for d in range(nd - 1, -1, -1):
        size = out.shape[2 + d]
        rows = np.zeros((sizes[d], size), dtype=np.float64)
        for i, (lo, hi) in enumerate(_adaptive_bounds(size, sizes[d])):
            rows[i, lo:hi] = 1.0 / (hi - lo)
        lead = tuple(out.shape)[: 2 + d]
        tail = tuple(out.shape)[3 + d :]
        folded = out.reshape(lead + (size, math.prod(tail)))
        out = (x.new_tensor(rows) @ folded).reshape(lead + (sizes[d],) + tail)
    out = out.reshape((n, c) + sizes)
    return out.squeeze(0) if unbatched else out


def _adaptive_max(op, nd, x, output_size, return_indices):
    import numpy as np  # the window layout is a constant built from the shapes alone

    x, unbatched = _batched(op, nd, x)
    sizes = _adaptive_sizes(op, nd, x, output_size)
    spatial = tuple(x.shape)[2:]
    shape = tuple(x.shape)[:2] + sizes
    if (
        nd <= 2
        and not return_indices
        and 0 not in sizes
        and all(n % o == 0 for n, o in zip(spatial, sizes))
    ):
        # windows that tile the input evenly are a regular pool (kernel = stride = n / o):
        # the fast max_pool2d kernels, the same first-maximum rule (Note [Pool windows])
        kernel = tuple(n // o for n, o in zip(spatial, sizes))
        pool = max_pool1d if nd == 1 else max_pool2d
        out = pool(x, kernel, kernel)
        return out.squeeze(0) if unbatched else out
    if 0 in sizes:
        out, index = x.new_zeros(shape), x.new_zeros(shape, dtype=int64_dtype())
    else:
        laid = x.detach()
        widths, positions = [], []
        for d, (n, o) in enumerate(zip(spatial, sizes)):
            bounds = _adaptive_bounds(n, o)
            width = max(hi - lo for lo, hi in bounds)
            pos = np.array(
                [[min(lo + j, hi - 1) for j in range(width)] for lo, hi in bounds], dtype=np.int64
            ).reshape(-1)
            widths.append(width)
            positions.append(pos)
            if width * o != n or not np.array_equal(pos, np.arange(n)):
                picker = (slice(None),) * (2 + d) + (laid.new_tensor(pos, dtype=int64_dtype()),)
                laid = laid[picker]
        # where laid's flat per-plane positions sit in x's plane
        strides = [math.prod(spatial[d + 1 :]) for d in range(nd)]
        table = np.zeros((), dtype=np.int64)
        for pos, st in zip(positions, strides):
            table = np.add.outer(table, pos * st)
        widths = tuple(widths)
        local = apply(
            MAX_POOL_INDICES,
            laid,
            kernel=widths,
            stride=widths,
            padding=(0,) * nd,
            dilation=(1,) * nd,
            ceil_mode=False,
        )
        index = x.new_tensor(table.reshape(-1), dtype=int64_dtype())[local]
        out = _gather_planes(x, index, shape)
    if unbatched:
        out, index = out.squeeze(0), index.squeeze(0)
    return (out, index) if return_indices else out


def adaptive_avg_pool1d(x, output_size):
    """Averages over (N, C, L) or (C, L) windows that tile L into output_size parts
    (Note [Adaptive windows])."""
    return _adaptive_avg("adaptive_avg_pool1d", 1, x, output_size)


def adaptive_avg_pool2d(x, output_size):
    """Averages over (N, C, H, W) or (C, H, W) windows that tile (H, W) into output_size parts
    (Note [Adaptive windows]); None in output_size keeps that dim's size.

    Example:
        >>> import ember
        >>> adaptive_avg_pool2d(ember.arange(6.0).reshape(1, 1, 2, 3), (1, 2)).tolist()
        [[[[2.0, 3.0]]]]
    """
    return _adaptive_avg("adaptive_avg_pool2d", 2, x, output_size)


def adaptive_avg_pool3d(x, output_size):
    """Averages over (N, C, D, H, W) or (C, D, H, W) windows (Note [Adaptive windows])."""
    return _adaptive_avg("adaptive_avg_pool3d", 3, x, output_size)


def adaptive_max_pool1d(x, output_size, return_indices=False):
    """Maxima over (N, C, L) or (C, L) windows that tile L (Note [Adaptive windows]); with
    return_indices, also each window's argmax as a flat position in L."""
    return _adaptive_max("adaptive_max_pool1d", 1, x, output_size, return_indices)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Maxima over (N, C, H, W) or (C, H, W) windows that tile (H, W) (Note [Adaptive
    windows]); with return_indices, also each argmax, flat over H*W as PyTorch.

    Example:
        >>> import ember
        >>> out, idx = adaptive_max_pool2d(ember.tensor([[[[1.0, 5.0, 2.0]]]]), (1, 2), True)
        >>> out.tolist(), idx.tolist()
        ([[[[5.0, 5.0]]]], [[[[1, 1]]]])
    """
    return _adaptive_max("adaptive_max_pool2d", 2, x, output_size, return_indices)


def adaptive_max_pool3d(x, output_size, return_indices=False):
    """Maxima over (N, C, D, H, W) or (C, D, H, W) windows (Note [Adaptive windows]); indices
    are flat over D*H*W."""
    return _adaptive_max("adaptive_max_pool3d", 3, x, output_size, return_indices)


# --- transposed and 3-D convolutions, unfold and fold: compositions of conv2d's primitives ------
def _transposed_size(n, k, s, p, d, output_padding):
    return (n - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def _check_output_padding(output_padding, stride, dilation, op):
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= max(s, d) or op_ < 0:
            raise ValueError(
                f"{op}: output padding must be smaller than either stride or dilation, got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )


def conv_transpose2d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """The adjoint of conv2d (PyTorch's F.conv_transpose2d): weight (C_in, C_out/groups, kH,
    kW); output size (H - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1. It is
    conv2d's input-gradient primitive applied to x, so its gradients are conv2d's."""
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 4 or weight.ndim != 4:
        raise ShapeError(
            f"conv_transpose2d: expected 4-D input (N, C_in, H, W) and weight (C_in, "
            f"C_out/groups, kH, kW), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    dilation, output_padding = _pair(dilation, "dilation"), _pair(output_padding, "output_padding")
    groups = int(groups)
    n, c, h, w = x.shape
    if c != weight.shape[0] or c % groups:
        raise ShapeError(
            f"conv_transpose2d: input has {c} channels, weight {tuple(weight.shape)} expects "
            f"{weight.shape[0]} (divisible by groups={groups})"
        )
    _check_output_padding(output_padding, stride, dilation, "conv_transpose2d")
    kh, kw = weight.shape[2], weight.shape[3]
    ho = _transposed_size(h, kh, stride[0], padding[0], dilation[0], output_padding[0])
    wo = _transposed_size(w, kw, stride[1], padding[1], dilation[1], output_padding[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError(
            f"conv_transpose2d: output size {(ho, wo)} is not positive for input {(h, w)}"
        )
    out = apply(
        CONV2D_INPUT_GRAD,
        x,
        weight,
        input_shape=(n, weight.shape[1] * groups, ho, wo),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """conv_transpose2d over (N, C, 1, L)."""
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(
            f"conv_transpose1d: expected 3-D input (N, C_in, L) and weight (C_in, "
            f"C_out/groups, K), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    one = lambda v, name: (1, _ntuple(v, 1, name, "conv_transpose1d")[0])  # noqa: E731
    out = conv_transpose2d(
        x.unsqueeze(2),
        weight.unsqueeze(2),
        None,
        one(stride, "stride"),
        (0, _ntuple(padding, 1, "padding", "conv_transpose1d")[0]),
        (0, _ntuple(output_padding, 1, "output_padding", "conv_transpose1d")[0]),
        groups,
        one(dilation, "dilation"),
    ).squeeze(2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out.squeeze(0) if unbatched else out


def _triple(v, name, op):
    return _ntuple(v, 3, name, op)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution (N, C, D, H, W) as a sum over the kernel's depth of conv2d over the
    depth slices it reads (each a batch of 2-D planes)."""
    unbatched = x.ndim == 4
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 5 or weight.ndim != 5:
        raise ShapeError(
            f"conv3d: expected 5-D input (N, C, D, H, W) and weight (O, C/groups, kD, kH, kW), "
            f"got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            total = [
                d * (k - 1)
                for d, k in zip(_triple(dilation, "dilation", "conv3d"), weight.shape[2:])
            ]
            if any(t % 2 for t in total) or _triple(stride, "stride", "conv3d") != (1, 1, 1):
                raise ValueError("conv3d: padding='same' needs stride 1 and odd effective kernels")
            padding = tuple(t // 2 for t in total)
        else:
            raise ValueError(f"conv3d: padding must be 'same', 'valid' or numbers, got {padding!r}")
    stride = _triple(stride, "stride", "conv3d")
    padding = _triple(padding, "padding", "conv3d")
    dilation = _triple(dilation, "dilation", "conv3d")
    _check_conv("conv3d", x.shape, weight.shape, stride, padding, dilation, int(groups))
    n, c, d = x.shape[0], x.shape[1], x.shape[2]
    kd = weight.shape[2]
    do = _out_size(d, kd, stride[0], padding[0], dilation[0])
    if padding[0]:
        from ember.ops.shape import pad as _pad

        x = _pad(x, (0, 0, 0, 0, padding[0], padding[0]))
    out = None
    for k in range(kd):
        start = k * dilation[0]
        planes = x[:, :, start : start + stride[0] * (do - 1) + 1 : stride[0]]  # (N, C, Do, H, W)
        planes = planes.movedim(2, 1).reshape(n * do, c, x.shape[3], x.shape[4])
        term = conv2d(planes, weight[:, :, k], None, stride[1:], padding[1:], dilation[1:], groups)
        out = term if out is None else out + term
    out = out.reshape(n, do, out.shape[1], out.shape[2], out.shape[3]).movedim(1, 2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1, 1)
    return out.squeeze(0) if unbatched else out


def conv_transpose3d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """The adjoint of conv3d: each input depth slice goes through conv_transpose2d with each
    depth slice of the kernel and lands, zero-interleaved by the stride, at its output depth."""
    from ember.ops.shape import pad as _pad
    from ember.ops.shape import stack

    unbatched = x.ndim == 4
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 5 or weight.ndim != 5:
        raise ShapeError(
            f"conv_transpose3d: expected 5-D input (N, C_in, D, H, W) and weight (C_in, "
            f"C_out/groups, kD, kH, kW), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    op = "conv_transpose3d"
    stride, padding = _triple(stride, "stride", op), _triple(padding, "padding", op)
    dilation = _triple(dilation, "dilation", op)
    output_padding = _triple(output_padding, "output_padding", op)
    _check_output_padding(output_padding, stride, dilation, op)
    n, c, d = x.shape[0], x.shape[1], x.shape[2]
    kd = weight.shape[2]
    do = _transposed_size(d, kd, stride[0], padding[0], dilation[0], output_padding[0])
    full = (d - 1) * stride[0] + dilation[0] * (kd - 1) + 1 + output_padding[0]
    planes = x.movedim(2, 1).reshape(n * d, c, x.shape[3], x.shape[4])
    out = None
    for k in range(kd):
        y = conv_transpose2d(
            planes,
            weight[:, :, k],
            None,
            stride[1:],
            padding[1:],
            output_padding[1:],
            groups,
            dilation[1:],
        )
        y = y.reshape(n, d, y.shape[1], y.shape[2], y.shape[3]).movedim(1, 2)  # (N, O, D, H, W)
        if stride[0] > 1:  # interleave stride - 1 zero slices after each
            zeros = y.new_zeros(tuple(y.shape))
            y = stack([y] + [zeros] * (stride[0] - 1), 3).reshape(
                y.shape[0], y.shape[1], d * stride[0], y.shape[3], y.shape[4]
            )[:, :, : (d - 1) * stride[0] + 1]
        before = k * dilation[0]
        y = _pad(y, (0, 0, 0, 0, before, full - before - y.shape[2]))
        out = y if out is None else out + y
    out = out[:, :, padding[0] : padding[0] + do]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1, 1)
    return out.squeeze(0) if unbatched else out


def _identity_kernel(x, c, kh, kw):
    """(C*kh*kw, 1, kh, kw): output channel (c, i, j) picks kernel position (i, j)."""
    eye = np.eye(kh * kw, dtype=np.dtype(x.dtype.numpy)).reshape(kh * kw, 1, kh, kw)
    return x.new_tensor(np.tile(eye, (c, 1, 1, 1)))


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks (PyTorch's F.unfold / im2col): (N, C, H, W) -> (N, C*kh*kw, L), as a
    grouped conv2d with an identity kernel (its gradient is fold)."""
    if x.ndim not in (3, 4):
        raise ShapeError(f"unfold: expected 3-D or 4-D input, got {tuple(x.shape)}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    kh, kw = _pair(kernel_size, "kernel_size")
    c = x.shape[1]
    cols = conv2d(x, _identity_kernel(x, c, kh, kw), None, stride, padding, dilation, c)
    cols = cols.reshape(x.shape[0], c * kh * kw, -1)
    return cols.squeeze(0) if unbatched else cols


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """The adjoint of unfold (col2im): (N, C*kh*kw, L) -> (N, C, H, W), overlapping values
    summed; a transposed grouped conv with the identity kernel."""
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ShapeError(f"fold: expected 2-D or 3-D input, got {tuple(x.shape)}")
    kh, kw = _pair(kernel_size, "kernel_size")
    oh, ow = _pair(output_size, "output_size")
    stride, padding, dilation = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    if x.shape[1] % (kh * kw):
        raise ShapeError(
            f"fold: expected size of input's dimension 1 to be divisible by the product of "
            f"kernel_size, but got input.size(1)={x.shape[1]} and kernel_size={(kh, kw)}"
        )
    lh = _out_size(oh, kh, stride[0], padding[0], dilation[0])
    lw = _out_size(ow, kw, stride[1], padding[1], dilation[1])
    if lh <= 0 or lw <= 0 or lh * lw != x.shape[2]:
        raise ShapeError(
            f"fold: given output_size={(oh, ow)}, kernel_size={(kh, kw)}, dilation={dilation}, "
            f"padding={padding}, stride={stride}, expected size of input's dimension 2 to "
            f"match the calculated number of sliding blocks {lh} * {lw} = {lh * lw}, but got "
            f"input.size(2)={x.shape[2]}"
        )
    c = x.shape[1] // (kh * kw)
    out = apply(
        CONV2D_INPUT_GRAD,
        x.reshape(x.shape[0], c * kh * kw, lh, lw),
        _identity_kernel(x, c, kh, kw),
        input_shape=(x.shape[0], c, oh, ow),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=c,
    )
    return out.squeeze(0) if unbatched else out
