"""Convolution and pooling primitives (NCHW), and composites (conv1d, avg/adaptive pooling).

conv2d is computed as im2col (a strided window view, copied once) times a GEMM, per group in
one batched matmul. Its VJPs are two more primitives, `conv2d_input_grad` and
`conv2d_weight_grad`; the three are bilinear and their VJPs are written with each other, so
second-order gradients work.
"""

from __future__ import annotations

from ember._util.errors import ShapeError
from ember.backend import conv_kernels as _np_kernels
from ember.ops.registry import apply, defop, same_dtype


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"conv2d: {name} must be an int or a pair, got {v}")
    return v


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
        raise ShapeError(f"conv2d: expected 4-D input (N, C, H, W) and weight (O, C/groups, kH, "
                         f"kW), got {tuple(x)} and {tuple(w)}")
    n, c, h, wd = x
    o, cg, kh, kw = w
    if c != cg * groups:
        raise ShapeError(f"conv2d: input has {c} channels but weight {tuple(w)} with groups="
                         f"{groups} expects {cg * groups}")
    if o % groups:
        raise ShapeError(f"conv2d: out channels {o} not divisible by groups={groups}")
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(wd, kw, stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError(f"conv2d: kernel {(kh, kw)} (dilation {dilation}) is larger than the "
                         f"padded input {(h + 2 * padding[0], wd + 2 * padding[1])}")
    return (n, o, ho, wo)


def _im2col(xp, x, kh, kw, stride, padding, dilation, groups):
    """(G, N*Ho*Wo, Cg*kh*kw) columns of x."""
    n, c, _h, _w = x.shape
    ph, pw = padding
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dh, dw = dilation
    win = xp.windows(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1], ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
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
    gx = apply(CONV2D_INPUT_GRAD, g, w, input_shape=tuple(x.shape), **attrs) \
        if _needs_grad(x) else None
    gw = apply(CONV2D_WEIGHT_GRAD, x, g, weight_shape=tuple(w.shape), **attrs) \
        if _needs_grad(w) else None
    return gx, gw


def _needs_grad(t):
    return getattr(t, "requires_grad", True)


CONV2D = defop("conv2d", _conv_forward, _conv_vjp, shape=_conv_shape,
               dtype=lambda a, b, **k: a, promote="common")


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
            out[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                j * dw: j * dw + sw * (wo - 1) + 1: sw] += cols[:, :, i, j]
    return out[:, :, ph: ph + h, pw: pw + wd]


def _input_grad_vjp(gg, y, g, w, input_shape, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return (apply(CONV2D, gg, w, **attrs),
            apply(CONV2D_WEIGHT_GRAD, gg, g, weight_shape=tuple(w.shape), **attrs))


CONV2D_INPUT_GRAD = defop(
    "conv2d_input_grad", _input_grad_forward, _input_grad_vjp,
    shape=lambda g, w, input_shape, **a: tuple(input_shape), dtype=lambda a, b, **k: a,
    promote="common", doc="Gradient of conv2d with respect to its input (a transposed conv).")


def _weight_grad_forward(xp, x, g, weight_shape, stride, padding, dilation, groups):
    o, cg, kh, kw = weight_shape
    n = x.shape[0]
    cols, ho, wo = _im2col(xp, x, kh, kw, stride, padding, dilation, groups)
    og = o // groups
    gmat = g.reshape(n, groups, og, ho, wo).transpose(1, 2, 0, 3, 4).reshape(groups, og, -1)
    return xp.matmul(gmat, cols).reshape(o, cg, kh, kw)


def _weight_grad_vjp(gw, y, x, g, weight_shape, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return (apply(CONV2D_INPUT_GRAD, g, gw, input_shape=tuple(x.shape), **attrs),
            apply(CONV2D, x, gw, **attrs))


CONV2D_WEIGHT_GRAD = defop(
    "conv2d_weight_grad", _weight_grad_forward, _weight_grad_vjp,
    shape=lambda x, g, weight_shape, **a: tuple(weight_shape), dtype=lambda a, b, **k: a,
    promote="common", doc="Gradient of conv2d with respect to its weight.")


# --- max pooling ------------------------------------------------------------------------------
def _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode, fill):
    _n, _c, h, w = x.shape
    kh, kw = kernel
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0], ceil_mode)
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1], ceil_mode)
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    extra_h = max(0, (ho - 1) * stride[0] + eh - (h + 2 * padding[0]))
    extra_w = max(0, (wo - 1) * stride[1] + ew - (w + 2 * padding[1]))
    xp_ = xp.pad(x, ((0, 0), (0, 0), (padding[0], padding[0] + extra_h),
                     (padding[1], padding[1] + extra_w)), constant_values=fill)
    win = xp.windows(xp_, (eh, ew), axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]][:, :, :ho, :wo]
    return win, xp_.shape


def _max_pool_shape(x, kernel, stride, padding, dilation, ceil_mode):
    if len(x) != 4:
        raise ShapeError(f"max_pool2d: expected a 4-D input (N, C, H, W), got {tuple(x)}")
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ShapeError(f"max_pool2d: padding {padding} must be at most half the kernel "
                             f"{kernel}")
    ho = _out_size(x[2], kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    wo = _out_size(x[3], kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if ho <= 0 or wo <= 0:
        raise ShapeError(f"max_pool2d: kernel {kernel} is larger than the input {tuple(x)}")
    return (x[0], x[1], ho, wo)


def _max_pool_forward(xp, x, kernel, stride, padding, dilation, ceil_mode):
    fill = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
    win, _ = _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode, fill)
    return win.max(axis=(4, 5))


def _max_pool_vjp(g, y, x, kernel, stride, padding, dilation, ceil_mode):
    return (apply(MAX_POOL2D_GRAD, g, x, kernel=kernel, stride=stride, padding=padding,
                  dilation=dilation, ceil_mode=ceil_mode),)


MAX_POOL2D = defop("max_pool2d", _max_pool_forward, _max_pool_vjp, shape=_max_pool_shape,
                   dtype=same_dtype)


def _max_pool_grad_forward(xp, g, x, kernel, stride, padding, dilation, ceil_mode):
    n, c, h, w = x.shape
    win, padded_shape = _pool_windows(xp, x, kernel, stride, padding, dilation, ceil_mode,
                                      -xp.inf)
    ho, wo = win.shape[2], win.shape[3]
    kh, kw = kernel
    arg = win.reshape(n, c, ho, wo, kh * kw).argmax(axis=-1)  # first max, as PyTorch
    ki, kj = arg // kw, arg % kw
    rows = xp.arange(ho).reshape(1, 1, ho, 1) * stride[0] + ki * dilation[0]
    cols = xp.arange(wo).reshape(1, 1, 1, wo) * stride[1] + kj * dilation[1]
    hp, wp = padded_shape[2], padded_shape[3]
    plane = (xp.arange(n * c).reshape(n, c, 1, 1)) * (hp * wp)
    flat = (plane + rows * wp + cols).reshape(-1)
    out = xp.bincount(flat, weights=g.reshape(-1).astype(xp.float64), minlength=n * c * hp * wp)
    out = out.reshape(n, c, hp, wp)[:, :, padding[0]: padding[0] + h, padding[1]: padding[1] + w]
    return out.astype(g.dtype)


MAX_POOL2D_GRAD = defop(
    "max_pool2d_grad", _max_pool_grad_forward,
    shape=lambda g, x, **a: tuple(x), dtype=same_dtype,
    doc="Routes each window's gradient to its (first) maximum. Not differentiable again.")

# faster NumPy kernels (ember.backend.conv_kernels); the forwards above stay the spec
CONV2D.def_kernel("numpy")(_np_kernels.conv2d)
CONV2D_INPUT_GRAD.def_kernel("numpy")(_np_kernels.conv2d_input_grad)
CONV2D_WEIGHT_GRAD.def_kernel("numpy")(_np_kernels.conv2d_weight_grad)
MAX_POOL2D.def_kernel("numpy")(_np_kernels.max_pool2d)
MAX_POOL2D_GRAD.def_kernel("numpy")(_np_kernels.max_pool2d_grad)


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
            raise ValueError(f"conv2d: padding must be 'same', 'valid' or numbers, got "
                             f"{padding!r}")
    out = apply(CONV2D, x, weight, stride=stride, padding=_pair(padding, "padding"),
                dilation=dilation, groups=int(groups))
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(f"conv1d: expected 3-D input (N, C, L) and weight (O, C/groups, K), "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if isinstance(padding, str):
        pad2 = padding
    else:
        pad2 = (0, padding if isinstance(padding, int) else padding[0])
    one = lambda v: (1, v if isinstance(v, int) else v[0])
    out = conv2d(x.unsqueeze(2), weight.unsqueeze(2), None, one(stride), pad2, one(dilation),
                 groups)
    out = out.squeeze(2)
    return out if bias is None else out + bias.reshape(1, -1, 1)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported yet")
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    out = apply(MAX_POOL2D, x, kernel=kernel, stride=stride, padding=_pair(padding, "padding"),
                dilation=_pair(dilation, "dilation"), ceil_mode=bool(ceil_mode))
    return out.squeeze(0) if squeeze else out


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    one = lambda v: (1, v if isinstance(v, int) else v[0])
    return max_pool2d(x.unsqueeze(-2), one(kernel_size), None if stride is None else one(stride),
                      (0, padding if isinstance(padding, int) else padding[0]), one(dilation),
                      ceil_mode).squeeze(-2)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling as a depthwise convolution with a constant kernel."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ShapeError(f"avg_pool2d: expected a 3-D or 4-D input, got {tuple(x.shape)}")
    if ceil_mode:
        raise NotImplementedError("avg_pool2d: ceil_mode=True is not supported yet")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    c = x.shape[1]
    weight = x.new_ones((c, 1) + kernel)
    total = conv2d(x, weight, None, stride, padding, 1, c)
    if divisor_override:
        out = total / divisor_override
    elif count_include_pad or padding == (0, 0):
        out = total / (kernel[0] * kernel[1])
    else:
        counts = conv2d(x.new_ones((1, 1) + tuple(x.shape[2:])), x.new_ones((1, 1) + kernel),
                        None, stride, padding)
        out = total / counts
    return out.squeeze(0) if squeeze else out


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    one = lambda v: (1, v if isinstance(v, int) else v[0])
    return avg_pool2d(x.unsqueeze(-2), one(kernel_size), None if stride is None else one(stride),
                      (0, padding if isinstance(padding, int) else padding[0]), ceil_mode,
                      count_include_pad).squeeze(-2)


def _adaptive(x, output_size, reduce_fn, name):
    from ember.ops.shape import stack

    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    h, w = x.shape[2], x.shape[3]
    oh, ow = _pair(output_size if not isinstance(output_size, (tuple, list)) else tuple(
        h if o is None else o for o in output_size), "output_size")
    if h % oh == 0 and w % ow == 0 and name == "avg":
        out = avg_pool2d(x, (h // oh, w // ow))
    else:
        rows = []
        for i in range(oh):
            h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
            cells = []
            for j in range(ow):
                w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
                cells.append(reduce_fn(x[:, :, h0:h1, w0:w1]))
            rows.append(stack(cells, -1))
        out = stack(rows, -2)
    return out.squeeze(0) if squeeze else out


def adaptive_avg_pool2d(x, output_size):
    return _adaptive(x, output_size, lambda t: t.mean((2, 3)), "avg")


def adaptive_max_pool2d(x, output_size):
    return _adaptive(x, output_size, lambda t: t.amax((2, 3)), "max")
