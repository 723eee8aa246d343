"""Fast CPU kernels for the Transformer hot path, registered by `ember.ops.fused`.

The reference forwards in `ember.ops.fused` are the spec (Note [Fused composites] in
ember.ops.registry). With numba (the `fast` extra) each op here is one compiled pass over its
rows: bias + GELU and its gradient, layer norm (with an optional residual added on the fly)
and its input and parameter gradients, scale + mask + softmax and its gradient, and dropout
whose keep mask is a counter-based hash of (seed, element index), so the backward regenerates
it instead of storing it.

Note [Row-parallel kernels]: every kernel runs `prange` over rows (the last dim is the row):
one row is computed by one thread from start to end, in the same order of operations as the
serial build of the same source, so the parallel result equals the serial one bit for bit
(no fast-math reassociation: sums run in order, in float64). The parameter gradient of layer
norm sums over rows: it adds fixed blocks of `_BLOCK` rows in parallel and then the blocks in
order, so its bits do not depend on the thread count either. Below `COMPILED_MIN_SIZE`
elements an op runs its NumPy reference forward instead (a short sequence's activations: a
fresh process answers without loading numba, as Note [Fast erf] does for erf); below
`PARALLEL_MIN_SIZE` a serial build would run (the two are equal by default, so every compiled
call is parallel; the tests lower them to compare the builds). The parallel build uses the
threads `ember.set_num_threads` asks for (numba's own count).
Without numba (or EMBER_NO_NUMBA=1 / EMBER_FAST_KERNELS=0) every function returns None and
the op runs its reference forward (NumPy). tests/ops/test_fused.py checks both.
"""

from __future__ import annotations

import numpy as np

from ember.backend import numba_kernels, parallel

COMPILED_MIN_SIZE = 1 << 16
PARALLEL_MIN_SIZE = 1 << 16
_BLOCK = 64  # rows per partial sum of the layer-norm parameter gradient

_SQRT_HALF = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2PI = 0.3989422804014327


def _erf_source():
    """erf32(z): Note [Fast erf]'s float32 rational approximation (float64 arithmetic, within
    2 float32 ulp), about 10x cheaper than libm's erf; float64 inputs keep libm's."""
    from ember.backend.numpy_backend import _ERF_DENOMINATOR, _ERF_NUMERATOR

    n0, n1, n2, n3, n4, n5, n6 = _ERF_NUMERATOR
    d0, d1, d2, d3, d4 = _ERF_DENOMINATOR
    return f"""
@numba.njit(inline="always")
def exp_any(z, single):
    # float32 work calls expf / tanhf (about half libm's double-precision cost)
    if single:
        return np.float64(math.exp(np.float32(z)))
    return math.exp(z)


@numba.njit(inline="always")
def tanh_any(z, single):
    if single:
        return np.float64(math.tanh(np.float32(z)))
    return math.tanh(z)


@numba.njit(inline="always")
def erf_any(z, single):
    if not single:
        return math.erf(z)
    if z != z:
        return z
    z = min(max(z, -4.0), 4.0)
    z2 = z * z
    p = (((((({n0!r} * z2 + {n1!r}) * z2 + {n2!r}) * z2 + {n3!r}) * z2 + {n4!r}) * z2 + {n5!r}) * z2
         + {n6!r})
    q = (((({d0!r} * z2 + {d1!r}) * z2 + {d2!r}) * z2 + {d3!r}) * z2 + {d4!r})
    return z * p / q
"""


_GELU = f"""
@numba.njit(inline="always")
def gelu_value(u, approximate, single):
    if approximate:
        inner = {_SQRT_2_OVER_PI} * (u + 0.044715 * u * u * u)
        return 0.5 * u * (1.0 + tanh_any(inner, single))
    return 0.5 * u * (1.0 + erf_any(u * {_SQRT_HALF}, single))


@numba.njit(inline="always")
def gelu_slope(u, approximate, single):
    if approximate:
        inner = {_SQRT_2_OVER_PI} * (u + 0.044715 * u * u * u)
        t = tanh_any(inner, single)
        return 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * {_SQRT_2_OVER_PI} * (
            1.0 + 3.0 * 0.044715 * u * u
        )
    return 0.5 * (1.0 + erf_any(u * {_SQRT_HALF}, single)) + u * {_INV_SQRT_2PI} * exp_any(
        -0.5 * u * u, single
    )


def gelu_forward(x, b, has_bias, approximate, single, out):
    rows, d = x.shape
    for i in prange(rows):
        for j in range(d):
            u = np.float64(x[i, j])
            if has_bias:
                u += np.float64(b[j])
            out[i, j] = gelu_value(u, approximate, single)


def gelu_backward(g, x, b, has_bias, approximate, single, out):
    rows, d = x.shape
    for i in prange(rows):
        for j in range(d):
            u = np.float64(x[i, j])
            if has_bias:
                u += np.float64(b[j])
            out[i, j] = g[i, j] * gelu_slope(u, approximate, single)
"""

_LAYER_NORM = """
@numba.njit(inline="always")
def row_moments(x, r, has_residual, i, d):
    s = 0.0
    for j in range(d):
        v = np.float64(x[i, j])
        if has_residual:
            v += np.float64(r[i, j])
        s += v
    mean = s / d
    q = 0.0
    for j in range(d):
        v = np.float64(x[i, j])
        if has_residual:
            v += np.float64(r[i, j])
        q += (v - mean) * (v - mean)
    return mean, q / d


def layer_norm_forward(x, r, has_residual, w, b, eps, out):
    rows, d = x.shape
    for i in prange(rows):
        mean, var = row_moments(x, r, has_residual, i, d)
        rstd = 1.0 / math.sqrt(var + eps)
        for j in range(d):
            v = np.float64(x[i, j])
            if has_residual:
                v += np.float64(r[i, j])
            out[i, j] = (v - mean) * rstd * w[j] + b[j]


def layer_norm_input_grad(g, x, r, has_residual, w, eps, out):
    # gx = rstd (gw - mean(gw) - xhat mean(gw xhat)), gw = g * w
    rows, d = x.shape
    for i in prange(rows):
        mean, var = row_moments(x, r, has_residual, i, d)
        rstd = 1.0 / math.sqrt(var + eps)
        s1 = 0.0
        s2 = 0.0
        for j in range(d):
            v = np.float64(x[i, j])
            if has_residual:
                v += np.float64(r[i, j])
            gw = np.float64(g[i, j]) * w[j]
            s1 += gw
            s2 += gw * (v - mean) * rstd
        m1 = s1 / d
        m2 = s2 / d
        for j in range(d):
            v = np.float64(x[i, j])
            if has_residual:
                v += np.float64(r[i, j])
            out[i, j] = rstd * (np.float64(g[i, j]) * w[j] - m1 - (v - mean) * rstd * m2)


def layer_norm_param_grad(g, x, r, has_residual, eps, block, partial, out):
    # out[0] = sum over rows of g * xhat, out[1] = sum of g; blocks of rows in parallel, then
    # the blocks in order (Note [Row-parallel kernels])
    rows, d = x.shape
    blocks = partial.shape[0]
    for k in prange(blocks):
        for j in range(d):
            partial[k, 0, j] = 0.0
            partial[k, 1, j] = 0.0
        for i in range(k * block, min(rows, (k + 1) * block)):
            mean, var = row_moments(x, r, has_residual, i, d)
            rstd = 1.0 / math.sqrt(var + eps)
            for j in range(d):
                v = np.float64(x[i, j])
                if has_residual:
                    v += np.float64(r[i, j])
                gv = np.float64(g[i, j])
                partial[k, 0, j] += gv * (v - mean) * rstd
                partial[k, 1, j] += gv
    for j in range(d):
        s0 = 0.0
        s1 = 0.0
        for k in range(blocks):
            s0 += partial[k, 0, j]
            s1 += partial[k, 1, j]
        out[0, j] = s0
        out[1, j] = s1
"""

_SOFTMAX = """
def softmax_forward(s, m, has_mask, scale, out):
    # s, out: (A, B, C, S) C-contiguous; m: (ma, mb, mc, ms), each 1 or s's dim
    na, nb, nc, n = s.shape
    ma, mb, mc, ms = m.shape
    for flat in prange(na * nb * nc):
        a = flat // (nb * nc)
        bb = (flat // nc) % nb
        c = flat % nc
        ia = a if ma > 1 else 0
        ib = bb if mb > 1 else 0
        ic = c if mc > 1 else 0
        # in the output's dtype (float32 work calls expf), sums in float64
        for j in range(n):
            v = s[a, bb, c, j] * scale
            if has_mask:
                v = v + m[ia, ib, ic, j if ms > 1 else 0]
            out[a, bb, c, j] = v
        top = out[a, bb, c, 0]
        for j in range(1, n):
            v = out[a, bb, c, j]
            if v > top or v != v:
                top = v
        total = 0.0
        for j in range(n):
            e = math.exp(out[a, bb, c, j] - top)
            out[a, bb, c, j] = e
            total += e
        for j in range(n):
            out[a, bb, c, j] = out[a, bb, c, j] / total


def softmax_backward(g, y, scale, out):
    rows, n = y.shape
    for i in prange(rows):
        dot = 0.0
        for j in range(n):
            dot += np.float64(g[i, j]) * np.float64(y[i, j])
        for j in range(n):
            out[i, j] = scale * np.float64(y[i, j]) * (np.float64(g[i, j]) - dot)
"""

_DROPOUT = """
def dropout_forward(x, seed, threshold, scale, out):
    rows, d = x.shape
    golden = np.uint64(0x9E3779B97F4A7C15)
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    base = np.uint64(seed)
    limit = np.uint64(threshold)
    for i in prange(rows):
        for j in range(d):
            z = base + np.uint64(i * d + j + 1) * golden
            z = (z ^ (z >> np.uint64(30))) * m1
            z = (z ^ (z >> np.uint64(27))) * m2
            z = z ^ (z >> np.uint64(31))
            if (z >> np.uint64(40)) >= limit:
                out[i, j] = x[i, j] * scale
            else:
                out[i, j] = 0.0
"""

_HEADER = "import math\nimport numba\nimport numpy as np\nfrom numba import prange\n"
_SOURCES = {
    "gelu": None,  # built on first use (_erf_source reads numpy_backend's constants)
    "layer_norm": _LAYER_NORM,
    "softmax": _SOFTMAX,
    "dropout": _DROPOUT,
}
_KERNELS: dict = {}


def _threads():
    """Start numba's threads with ember's thread budget (Note [Thread budget] in
    ember/backend/parallel.py)."""
    try:
        numba_kernels.start_threads()
    except Exception:  # noqa: BLE001 - numba's threading layer could not start: serial
        pass


def _kernel(group: str, name: str, parallel: bool):
    """The compiled kernel, or None without numba (Note [Row-parallel kernels])."""
    if not numba_kernels.available():
        return None
    key = (name, parallel)
    kernel = _KERNELS.get(key)
    if kernel is None:
        numba = numba_kernels._load()
        body = _SOURCES[group] if group != "gelu" else _erf_source() + _GELU
        source = _HEADER + body
        if not parallel:
            # the serial build is its own source, so its own cache file: numba's disk cache
            # does not tell a parallel build from a serial one of the same function, and a
            # serial call (a forked child) that loads the parallel machine code is killed
            source = source.replace(" in prange(", " in range(")
        fn, on_disk = numba_kernels._define(numba, source, name)
        kernel = numba.njit(parallel=parallel, nogil=True, cache=on_disk, error_model="numpy")(fn)
        if parallel:
            _threads()
        _KERNELS[key] = kernel
    return kernel


def _pick(group, name, size):
    if size < COMPILED_MIN_SIZE:
        return None
    # the serial build in a forked child (GNU OpenMP kills one that starts a parallel region
    # after its parent's threads ran) and on an overloaded machine (Note [Overloaded machine])
    in_parallel = (
        size >= PARALLEL_MIN_SIZE and not parallel.in_forked_child() and not parallel.overloaded()
    )
    return _kernel(group, name, in_parallel)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _rows(a):
    """a as a C-contiguous (rows, last dim) array."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1])


def _floats(*arrays):
    return all(a is None or a.dtype in _FLOATS for a in arrays)


def _empty_bias(dtype):
    return np.zeros(1, dtype)


# Each function returns None where its kernel does not apply (no numba, other dtypes, empty or
# 0-d input): the op then runs its reference forward.
def gelu(x, b, approximate):
    if x.ndim == 0 or x.size == 0 or not _floats(x, b):
        return None
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[-1]):
        return None
    kernel = _pick("gelu", "gelu_forward", x.size)
    if kernel is None:
        return None
    dtype = x.dtype if b is None else np.result_type(x, b)
    xs = _rows(x.astype(dtype, copy=False))
    out = np.empty(xs.shape, dtype)
    bias = _empty_bias(dtype) if b is None else b.astype(dtype, copy=False)
    kernel(xs, bias, b is not None, approximate == "tanh", dtype == np.float32, out)
    return out.reshape(x.shape)


def gelu_grad(g, x, b, approximate):
    if x.ndim == 0 or x.size == 0 or g.shape != x.shape or not _floats(g, x, b):
        return None
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[-1]):
        return None
    kernel = _pick("gelu", "gelu_backward", x.size)
    if kernel is None:
        return None
    dtype = np.result_type(g, x) if b is None else np.result_type(g, x, b)
    xs = _rows(x.astype(dtype, copy=False))
    out = np.empty(xs.shape, dtype)
    bias = _empty_bias(dtype) if b is None else b.astype(dtype, copy=False)
    args = (bias, b is not None, approximate == "tanh", dtype == np.float32, out)
    kernel(_rows(g.astype(dtype, copy=False)), xs, *args)
    return out.reshape(x.shape)


def _norm_args(x, r, *params):
    if x.ndim == 0 or x.size == 0 or not _floats(x, r, *params):
        return None
    if r is not None and r.shape != x.shape:
        return None
    if any(p.shape != (x.shape[-1],) for p in params):
        return None
    dtype = np.result_type(x, *params) if r is None else np.result_type(x, r, *params)
    xs = _rows(x.astype(dtype, copy=False))
    rs = xs if r is None else _rows(r.astype(dtype, copy=False))
    return dtype, xs, rs


def layer_norm(x, r, w, b, eps):
    args = _norm_args(x, r, w, b)
    kernel = args and _pick("layer_norm", "layer_norm_forward", x.size)
    if not kernel:
        return None
    dtype, xs, rs = args
    out = np.empty(xs.shape, dtype)
    kernel(
        xs, rs, r is not None, w.astype(dtype, copy=False), b.astype(dtype, copy=False), eps, out
    )
    return out.reshape(x.shape)


def layer_norm_input_grad(g, x, r, w, eps):
    if g.shape != x.shape:
        return None
    args = _norm_args(x, r, w)
    kernel = args and _pick("layer_norm", "layer_norm_input_grad", x.size)
    if not kernel or not _floats(g):
        return None
    dtype, xs, rs = args
    out = np.empty(xs.shape, np.result_type(dtype, g))
    kernel(_rows(g), xs, rs, r is not None, w.astype(dtype, copy=False), eps, out)
    return out.reshape(x.shape)


def layer_norm_param_grad(g, x, r, eps):
    if g.shape != x.shape:
        return None
    args = _norm_args(x, r)
    kernel = args and _pick("layer_norm", "layer_norm_param_grad", x.size)
    if not kernel or not _floats(g):
        return None
    dtype, xs, rs = args
    blocks = -(-xs.shape[0] // _BLOCK)
    partial = np.empty((blocks, 2, xs.shape[1]), np.float64)
    out = np.empty((2, xs.shape[1]), np.float64)
    kernel(_rows(g), xs, rs, r is not None, eps, _BLOCK, partial, out)
    return out.astype(np.result_type(dtype, g))


def softmax(s, m, scale):
    """softmax(s * scale + m) over the last dim; m (additive, float) broadcasts to s."""
    if s.ndim == 0 or s.ndim > 4 or s.size == 0 or not _floats(s, m):
        return None
    if m is not None and (m.ndim > s.ndim or m.shape[-1] not in (1, s.shape[-1])):
        return None
    kernel = _pick("softmax", "softmax_forward", s.size)
    if kernel is None:
        return None
    dtype = s.dtype if m is None else np.result_type(s, m)
    lead = (1,) * (4 - s.ndim)
    s4 = np.ascontiguousarray(s.astype(dtype, copy=False)).reshape(lead + s.shape)
    if m is None:
        m4 = np.zeros((1, 1, 1, 1), dtype)
    else:
        m4 = m.astype(dtype, copy=False).reshape((1,) * (4 - m.ndim) + m.shape)
        if any(md not in (1, sd) for md, sd in zip(m4.shape, s4.shape)):
            return None
    out = np.empty(s4.shape, dtype)
    kernel(s4, m4, m is not None, scale, out)
    return out.reshape(s.shape)


def softmax_grad(g, y, scale):
    if y.ndim == 0 or y.size == 0 or g.shape != y.shape or not _floats(g, y):
        return None
    kernel = _pick("softmax", "softmax_backward", y.size)
    if kernel is None:
        return None
    out = np.empty(y.shape, np.result_type(g, y))
    kernel(_rows(g), _rows(y), scale, out.reshape(-1, y.shape[-1]))
    return out


def dropout(x, seed, threshold, scale):
    if x.size == 0 or not _floats(x):
        return None
    kernel = _pick("dropout", "dropout_forward", x.size)
    if kernel is None:
        return None
    xs = np.ascontiguousarray(x).reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    out = np.empty(xs.shape, x.dtype)
    kernel(xs, int(seed), int(threshold), scale, out)
    return out.reshape(x.shape)
