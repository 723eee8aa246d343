"""Faster NumPy kernels for convolution and max pooling (NCHW), registered by `ember.ops.conv`.

The reference forwards in `ember.ops.conv` are the spec; these compute the same values with
fewer and cheaper copies (tests/ops/test_kernels.py checks them against the references):

- im2col writes the columns as (N, C, kh, kw, Ho, Wo), one strided-slice copy per kernel tap
  (each copies whole output rows), so that `W (O, C*kh*kw) @ cols (N, C*kh*kw, Ho*Wo)` comes out
  in NCHW with no transpose; the weight gradient uses the (C, kh, kw, N, Ho, Wo) layout instead,
  making it one GEMM over N*Ho*Wo;
- the input gradient is `W^T @ g` in the same layout, then col2im as one strided add per tap;
- with numba, a first layer's few input taps run as a direct convolution (Note [Direct
  convolution]) and the gradient of max pooling over disjoint windows as a branch-free
  compiled loop (Note [Branch-free pool gradient]); the NumPy paths stay for the rest;
- max pooling is an elementwise maximum over the kernel taps (no reduction over a 6-D window
  view), and its gradient routes g to the first tap equal to the window's maximum, in row-major
  tap order, or to the window's last NaN, never to padding (Note [Pool windows] in
  ember.ops.conv, which is PyTorch's rule).

Each function has the signature of the op's reference forward, `fn(xp, *arrays, **attrs)`.
"""

from __future__ import annotations

import itertools

import numpy as np


def _out_size(n, k, s, p, d, ceil_mode=False):
    span = n + 2 * p - (d * (k - 1) + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # last window must start inside the input
        out -= 1
    return out


def _pad(x, top, bottom, left, right, fill):
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    if fill == 0:
        out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    else:
        out = np.full((n, c, h + top + bottom, w + left + right), fill, dtype=x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    return out


def _tap(a, i, j, stride, dilation, ho, wo):
    """The (.., ho, wo) strided view of `a`'s last two axes under kernel tap (i, j)."""
    r, c = i * dilation[0], j * dilation[1]
    return a[
        ...,
        r : r + stride[0] * (ho - 1) + 1 : stride[0],
        c : c + stride[1] * (wo - 1) + 1 : stride[1],
    ]


def _cols(x, kh, kw, stride, padding, dilation, channels_first=False):
    """im2col: (N, C, kh, kw, Ho, Wo), or (C, kh, kw, N, Ho, Wo) with channels_first."""
    n, c, h, w = x.shape
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    xp_ = _pad(x, padding[0], padding[0], padding[1], padding[1], 0)
    if channels_first:
        xp_ = xp_.transpose(1, 0, 2, 3)
        cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j] = _tap(xp_, i, j, stride, dilation, ho, wo)
    else:
        cols = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = _tap(xp_, i, j, stride, dilation, ho, wo)
    return cols, ho, wo


def _depthwise(w, groups):
    """One filter per channel (avg pooling, depthwise layers): for the gradients, elementwise
    work per tap beats N * C matrix products of one row each (the forward's GEMM is faster)."""
    return w.shape[1] == 1 and w.shape[0] == groups


def _gemm(a, b):
    """(G, m, k) @ (G, k, n): one BLAS call per group. Never a batch of many small products:
    each threaded OpenBLAS call synchronises its threads, and on a busy machine N of them per
    conv cost seconds (measured: 762 s per CNN epoch instead of 60 with 2 BLAS threads)."""
    return a[0] @ b[0] if a.shape[0] == 1 else np.matmul(a, b)


_DIRECT_SOURCE = """
def conv2d_direct(x, w, dh, dw, wp, out):
    n, c = x.shape[0], x.shape[1]
    o, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    ho, wo = out.shape[2], out.shape[3]
    run = (ho - 1) * wp + wo
    acc = np.empty(run, dtype=out.dtype)
    for b in range(n):
        for oc in range(o):
            for t in range(run):
                acc[t] = 0
            for ch in range(c):
                plane = x[b, ch]
                for ki in range(kh):
                    for kj in range(kw):
                        wv = w[oc, ch, ki, kj]
                        at = ki * dh * wp + kj * dw
                        src = plane[at: at + run]
                        for t in range(run):
                            acc[t] += wv * src[t]
            for i in range(ho):
                src = acc[i * wp: i * wp + wo]
                dst = out[b, oc, i]
                for j in range(wo):
                    dst[j] = src[j]
"""

# Note [Direct convolution]: with few input taps (C * kh * kw, e.g. a first layer on one
# channel) im2col copies the input kh * kw times to feed a GEMM with a tiny inner dimension,
# and the GEMM's (O, N, Ho, Wo) result needs a transposed copy. A compiled loop instead adds
# w[o, c, i, j] * (the padded input plane, flattened, from offset i*dh*Wp + j*dw) into one
# accumulator per output plane, in the padded width (as the stride-1 gradients below), so
# its inner loop is one long contiguous run that vectorizes; the valid columns are then
# written to the NCHW output once. Stride 1, one group; numba only.
_DIRECT_MAX_TAPS = 27
_COMPILED = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes numba kernels take


def _direct_kernel(x, w, stride, groups):
    if (
        stride != (1, 1)
        or groups != 1
        or w.shape[1] * w.shape[2] * w.shape[3] > _DIRECT_MAX_TAPS
        or x.dtype not in _COMPILED
        or x.dtype != w.dtype
        or x.ndim != 4
        or w.ndim != 4
        or x.shape[1] != w.shape[1]
    ):
        return None  # (bad shapes take the NumPy path, whose error the dispatcher reports)
    from ember.backend import numba_kernels

    if not numba_kernels.available():
        return None
    return numba_kernels.jit_source(_DIRECT_SOURCE, "conv2d_direct")


def conv2d(xp, x, w, stride, padding, dilation, groups):
    o, cg, kh, kw = w.shape
    n = x.shape[0]
    direct = _direct_kernel(x, w, stride, groups)
    if (
        direct is not None
        and min(
            x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1),
            x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1),
        )
        > 0
    ):
        xp_ = np.ascontiguousarray(_pad(x, padding[0], padding[0], padding[1], padding[1], 0))
        ho = _out_size(x.shape[2], kh, 1, padding[0], dilation[0])
        wo = _out_size(x.shape[3], kw, 1, padding[1], dilation[1])
        out = np.empty((n, o, ho, wo), dtype=x.dtype)
        direct(
            xp_.reshape(n, x.shape[1], -1),
            np.ascontiguousarray(w),
            dilation[0],
            dilation[1],
            xp_.shape[3],
            out,
        )
        return out
    cols, ho, wo = _cols(x, kh, kw, stride, padding, dilation, channels_first=True)
    k = cg * kh * kw
    out = _gemm(w.reshape(groups, o // groups, k), cols.reshape(groups, k, n * ho * wo))
    return np.ascontiguousarray(out.reshape(o, n, ho, wo).transpose(1, 0, 2, 3))


def conv2d_weight_grad(xp, x, g, weight_shape, stride, padding, dilation, groups):
    o, cg, kh, kw = weight_shape
    n = x.shape[0]
    og, k = o // groups, cg * kh * kw
    if cg == 1 and o == groups:  # depthwise (see _depthwise)
        xp_ = _pad(x, padding[0], padding[0], padding[1], padding[1], 0)
        ho, wo = g.shape[2], g.shape[3]
        out = np.empty(weight_shape, dtype=np.result_type(x, g))
        for i in range(kh):
            for j in range(kw):
                out[:, 0, i, j] = np.einsum(
                    "ncij,ncij->c", g, _tap(xp_, i, j, stride, dilation, ho, wo)
                )
        return out
    if stride == (1, 1) and np.isfinite(x).all():
        # as in conv2d_input_grad: g widened to the padded width with zero columns, and each
        # tap's column one contiguous run of the flattened padded plane (the wrap-around
        # meets the zero columns; finite x keeps 0 * x == 0 there)
        xp_ = _pad(x, padding[0], padding[0], padding[1], padding[1], 0)
        c, hp, wp = xp_.shape[1:]
        ho, wo = g.shape[2], g.shape[3]
        flat = xp_.transpose(1, 0, 2, 3).reshape(c, n, hp * wp)
        run = (ho - 1) * wp + wo
        cols = np.empty((c, kh, kw, n, ho * wp), dtype=x.dtype)
        cols[..., run:] = 0
        for i in range(kh):
            for j in range(kw):
                at = i * dilation[0] * wp + j * dilation[1]
                cols[:, i, j, :, :run] = flat[:, :, at : at + run]
        gw = np.zeros((o, n, ho, wp), dtype=g.dtype)
        gw[..., :wo] = g.transpose(1, 0, 2, 3)
        gmat = gw.reshape(groups, og, n * ho * wp)
        cols = cols.reshape(groups, k, n * ho * wp)
    else:
        cols, ho, wo = _cols(x, kh, kw, stride, padding, dilation, channels_first=True)
        gmat = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, og, n * ho * wo)
        cols = cols.reshape(groups, k, n * ho * wo)
    return _gemm(gmat, cols.transpose(0, 2, 1)).reshape(o, cg, kh, kw)


def conv2d_input_grad(xp, g, w, input_shape, stride, padding, dilation, groups):
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    _, _, ho, wo = g.shape
    og, k = o // groups, cg * kh * kw
    ph, pw = padding
    hp, wp = h + 2 * ph, wd + 2 * pw
    if _depthwise(w, groups):
        out = np.zeros((n, c, hp, wp), dtype=np.result_type(g, w))
        for i in range(kh):
            for j in range(kw):
                tap = _tap(out, i, j, stride, dilation, ho, wo)
                tap += g * w[:, 0, i, j, None, None]
        return out[:, :, ph : ph + h, pw : pw + wd]
    wmat = w.reshape(groups, og, k).transpose(0, 2, 1)  # (G, k, og)
    # columns in (C, kh, kw, N, rows) layout from one GEMM per group (see _gemm); col2im into
    # (C, N, hp, wp), transposed back at the end
    if stride == (1, 1) and np.isfinite(w).all():
        # col2im on flattened planes: g widened to the padded width with zero columns gives
        # columns whose tap (i, j) is one contiguous run of the padded plane at offset
        # i*dh*wp + j*dw (the zero columns land on the wrap-around and, with a finite w, add
        # nothing)
        gw = np.zeros((o, n, ho, wp), dtype=g.dtype)
        gw[..., :wo] = g.transpose(1, 0, 2, 3)
        cols = _gemm(wmat, gw.reshape(groups, og, n * ho * wp)).reshape(c, kh, kw, n, -1)
        run = (ho - 1) * wp + wo
        out = np.zeros((c, n, hp * wp), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                at = i * dilation[0] * wp + j * dilation[1]
                out[:, :, at : at + run] += cols[:, i, j, :, :run]
        out = out.reshape(c, n, hp, wp)
    else:
        gt = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, og, n * ho * wo)
        cols = _gemm(wmat, gt).reshape(c, kh, kw, n, ho, wo)
        out = np.zeros((c, n, hp, wp), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                tap = _tap(out, i, j, stride, dilation, ho, wo)
                tap += cols[:, i, j]
    return np.ascontiguousarray(out[:, :, ph : ph + h, pw : pw + wd].transpose(1, 0, 2, 3))


def _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode, fill):
    """The padded input (edges at `fill`, plus the ceil-mode overhang) and the output size."""
    h, w = x.shape[2], x.shape[3]
    ho = _out_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    wo = _out_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    eh, ew = dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1
    extra_h = max(0, (ho - 1) * stride[0] + eh - (h + 2 * padding[0]))
    extra_w = max(0, (wo - 1) * stride[1] + ew - (w + 2 * padding[1]))
    xp_ = _pad(x, padding[0], padding[0] + extra_h, padding[1], padding[1] + extra_w, fill)
    return xp_, ho, wo


def max_pool2d(xp, x, kernel, stride, padding, dilation, ceil_mode):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp_, ho, wo = _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode, fill)
    out = None
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            tap = _tap(xp_, i, j, stride, dilation, ho, wo)
            if out is None:
                out = tap.copy()
            else:
                np.maximum(out, tap, out=out)
    return out


# Note [Branch-free pool gradient]: a compiled scan per window that compares floats runs a
# data-dependent branch per tap (random maxima mispredict: slower than the NumPy passes). With
# disjoint windows inside the input and no NaN, the kernel below compares integers instead:
# each value's bits as a signed integer with the low bits flipped for negatives (the IEEE
# order; -0.0 mapped onto +0.0 so the two tie as floats do), the maximum by integer max, the
# first tap equal to it by 0/1 arithmetic, and g's bits written through an all-ones or zero
# mask: no branch on the data, and each position written once.
def _pool_grad_source(kernel, stride, dilation, bits):
    shift, low = (31, "0x7fffffff") if bits == 32 else (63, "0x7fffffffffffffff")
    taps = list(itertools.product(range(kernel[0]), range(kernel[1])))
    lines = [
        "def max_pool2d_grad(g, x, out):",
        "    p, ho, wo = g.shape",
        "    for b in range(p):",
        "        for oi in range(ho):",
        "            gr = g[b, oi]",
    ]
    for i in range(kernel[0]):
        lines += [
            f"            r{i} = x[b, oi * {stride[0]} + {i * dilation[0]}]",
            f"            o{i} = out[b, oi * {stride[0]} + {i * dilation[0]}]",
        ]
    lines.append("            for oj in range(wo):")
    ind = "                "
    for k, (i, j) in enumerate(taps):
        lines += [
            f"{ind}a = np.int64(r{i}[oj * {stride[1]} + {j * dilation[1]}])",
            f"{ind}k{k} = a ^ ((a >> {shift}) & {low})",
            f"{ind}k{k} = k{k} + (k{k} == -1)",
        ]
    lines.append(f"{ind}m = k0")
    lines += [f"{ind}m = max(m, k{k})" for k in range(1, len(taps))]
    lines += [f"{ind}gv = gr[oj]", f"{ind}taken = 0"]
    for k, (i, j) in enumerate(taps):
        lines += [
            f"{ind}e = np.int64(k{k} == m) & (1 - taken)",
            f"{ind}taken = taken | e",
            f"{ind}o{i}[oj * {stride[1]} + {j * dilation[1]}] = gv & -e",
        ]
    return "\n".join(lines) + "\n"


def _pool_grad_compiled(g, x, kernel, stride, padding, dilation):
    """Note [Branch-free pool gradient]; None where it does not apply."""
    from ember.backend import numba_kernels

    if x.ndim != 4 or g.ndim != 4 or g.shape[:2] != x.shape[:2]:
        return None  # (the compiled loop does not check bounds: bad shapes take NumPy's path)
    n, c, h, w = x.shape
    ho, wo = g.shape[2], g.shape[3]
    if (
        not numba_kernels.available()
        or x.dtype not in _COMPILED
        or g.dtype != x.dtype
        or any(padding)
        or not x.size
        or not g.size
        or any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel))
        or (ho - 1) * stride[0] + dilation[0] * (kernel[0] - 1) >= h
        or (wo - 1) * stride[1] + dilation[1] * (kernel[1] - 1) >= w
        or np.isnan(x).any()
    ):
        return None
    bits = 8 * x.dtype.itemsize
    fast = numba_kernels.jit_source(
        _pool_grad_source(kernel, stride, dilation, bits), "max_pool2d_grad"
    )
    if fast is None:
        return None
    ints = np.int32 if bits == 32 else np.int64
    tiled = dilation == (1, 1) and kernel == stride and (ho * stride[0], wo * stride[1]) == (h, w)
    out = (np.empty if tiled else np.zeros)((n * c, h, w), dtype=x.dtype)  # tiled: all written
    fast(
        np.ascontiguousarray(g).reshape(n * c, ho, wo).view(ints),
        np.ascontiguousarray(x).reshape(n * c, h, w).view(ints),
        out.view(ints),
    )
    return out.reshape(x.shape)


def max_pool2d_grad(xp, g, x, kernel, stride, padding, dilation, ceil_mode):
    out = _pool_grad_compiled(g, x, kernel, stride, padding, dilation)
    if out is not None:
        return out
    h, w = x.shape[2], x.shape[3]
    xp_, ho, wo = _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode, -np.inf)
    taps = [
        _tap(xp_, i, j, stride, dilation, ho, wo)
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]
    top = taps[0].copy()
    for tap in taps[1:]:
        np.maximum(top, tap, out=top)
    last_nan = None  # a window holding NaN routes to its last NaN, as PyTorch's kernel
    if np.isnan(top).any():
        last_nan = [None] * len(taps)
        later = np.zeros(top.shape, dtype=bool)
        for k in range(len(taps) - 1, -1, -1):
            nan = np.isnan(taps[k])
            last_nan[k] = nan & ~later
            later |= nan
    inside = None  # a window of -inf routes to its first position in the input, not padding
    if xp_.shape != x.shape and np.isneginf(top).any():
        ones = np.ones((1, 1, h, w), dtype=bool)
        inside_, _, _ = _pool_geometry(ones, kernel, stride, padding, dilation, ceil_mode, 0)
        inside = [
            _tap(inside_, i, j, stride, dilation, ho, wo)
            for i in range(kernel[0])
            for j in range(kernel[1])
        ]
    # g * mask is the cheap masked copy; it would turn an infinite g into NaN off the mask
    finite = bool(np.isfinite(g).all())
    # disjoint windows: each tap's positions are written once, so assign instead of add
    disjoint = all(s >= d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel))
    out = np.zeros(xp_.shape, dtype=g.dtype)
    free = None  # windows whose maximum no earlier tap took
    hit = np.empty(top.shape, dtype=bool)
    k = 0
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            tap = taps[k]
            np.equal(tap, top, out=hit)  # never true in a NaN window
            if inside is not None:
                hit &= inside[k]
            if free is None:
                free = ~hit
            else:
                hit &= free
                if k + 1 < len(taps):
                    free ^= hit
            if last_nan is not None:
                hit |= last_nan[k]
            k += 1
            dst = _tap(out, i, j, stride, dilation, ho, wo)
            if disjoint and finite:
                np.multiply(g, hit, out=dst)
            elif disjoint:
                np.copyto(dst, g, where=hit)
            else:
                dst += g * hit if finite else np.where(hit, g, 0)
    return out[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w]


def max_pool_indices(xp, x, kernel, stride, padding, dilation, ceil_mode):
    """Each window's argmax as a flat index into its (N, C) plane, any number of spatial dims.

    PyTorch's scan written over whole arrays: one pass per kernel tap in row-major order,
    taking a tap where it beats the running maximum or is NaN (so the first maximum, or the
    last NaN), never at a padding position; a window starts at its first position inside the
    input, which a window of -inf keeps.
    """
    nd = len(kernel)
    spatial = x.shape[2:]
    outs = [
        _out_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    ]
    floating = x.dtype.kind == "f"
    lowest = -np.inf if floating else np.iinfo(x.dtype).min
    widths = [
        max(0, (o - 1) * s + d * (k - 1) + 1 - (n + 2 * p)) + 2 * p
        for n, k, s, p, d, o in zip(spatial, kernel, stride, padding, dilation, outs)
    ]
    if any(widths):
        padded = np.full(
            x.shape[:2] + tuple(n + w for n, w in zip(spatial, widths)), lowest, dtype=x.dtype
        )
        padded[(Ellipsis,) + tuple(slice(p, p + n) for p, n in zip(padding, spatial))] = x
    else:
        padded = x
    plane_strides = [int(np.prod(spatial[d + 1 :], dtype=np.int64)) for d in range(nd)]
    best = np.full(x.shape[:2] + tuple(outs), lowest, dtype=x.dtype)
    index = np.full(best.shape, -1, dtype=np.int64)
    take = np.empty(best.shape, dtype=bool)
    unset = True  # some window has not met a position inside the input yet
    for offsets in itertools.product(*[range(k) for k in kernel]):
        flat, inside = 0, True
        for d, (j, o, s, p, dil, n) in enumerate(
            zip(offsets, outs, stride, padding, dilation, spatial)
        ):
            pos = (np.arange(o) * s - p + j * dil).reshape((o,) + (1,) * (nd - 1 - d))
            flat = flat + pos * plane_strides[d]
            inside = inside & (pos >= 0) & (pos < n)
        tap = padded[
            (Ellipsis,)
            + tuple(
                slice(j * dil, j * dil + s * (o - 1) + 1, s)
                for j, o, s, dil in zip(offsets, outs, stride, dilation)
            )
        ]
        everywhere = bool(inside.all())
        if unset:  # the windows' first positions inside the input
            np.copyto(index, flat, where=(index < 0) if everywhere else (index < 0) & inside)
            unset = not everywhere and bool((index < 0).any())
        np.greater(tap, best, out=take)
        if floating:
            take |= np.isnan(tap)
        if not everywhere:
            take &= inside
        np.copyto(best, tap, where=take)
        np.copyto(index, flat, where=take)
    return index
