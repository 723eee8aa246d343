"""Fast CPU kernels for training-mode batch normalization, registered by `ember.ops.nn`.

The reference forwards of `batch_norm_train`, `batch_norm_input_grad`,
`batch_norm_weight_grad` and `batch_norm_stats` in `ember.ops.nn` are the spec. With numba
(the `fast` extra) each op here is one compiled loop per channel over the input viewed as
(N, C, L): the mean, the variance of the centred values, then one write (or one more sum)
while the channel's data is still in cache, with float64 accumulators; the composite formula
costs about eight passes forward and fifteen backward over the whole activation. The kernels
release the GIL. Without numba (or EMBER_NO_NUMBA=1) each returns None and the op runs its
reference forward (NumPy).

tests/ops/test_kernels.py checks them against the references (both paths).
"""

from __future__ import annotations

import numpy as np

from ember.backend import numba_kernels

_MOMENTS = """\
s0 = 0.0
s1 = 0.0
for i in range(n):
    j = 0
    while j + 1 < l:
        s0 += x[i, ch, j]
        s1 += x[i, ch, j + 1]
        j += 2
    if j < l:
        s0 += x[i, ch, j]
mean = (s0 + s1) / (n * l)
v0 = 0.0
v1 = 0.0
for i in range(n):
    j = 0
    while j + 1 < l:
        d0 = x[i, ch, j] - mean
        d1 = x[i, ch, j + 1] - mean
        v0 += d0 * d0
        v1 += d1 * d1
        j += 2
    if j < l:
        d0 = x[i, ch, j] - mean
        v0 += d0 * d0
var = (v0 + v1) / (n * l)
"""

_GRAD_SUMS = """\
sg = 0.0
sgc = 0.0
for i in range(n):
    for j in range(l):
        gv = g[i, ch, j]
        sg += gv
        sgc += gv * (x[i, ch, j] - mean)
"""


def _inline(block, indent="        "):
    return "".join(indent + line + "\n" for line in block.splitlines())


# the per-channel mean and variance (two passes, two accumulators each), inlined in each kernel
_SOURCES = {
    "bn_stats": "def bn_stats(x, out):\n    n, l = x.shape[0], x.shape[2]\n"
    "    for ch in range(x.shape[1]):\n"
    + _inline(_MOMENTS)
    + "        out[0, ch] = mean\n        out[1, ch] = var\n",
    "bn_train": "def bn_train(x, w, b, eps, y):\n    n, l = x.shape[0], x.shape[2]\n"
    "    for ch in range(x.shape[1]):\n"
    + _inline(_MOMENTS)
    + _inline(
        "scale = w[ch] / math.sqrt(var + eps)\nshift = b[ch]\n"
        "for i in range(n):\n    for j in range(l):\n"
        "        y[i, ch, j] = (x[i, ch, j] - mean) * scale + shift"
    ),
    "bn_input_grad": "def bn_input_grad(g, x, w, eps, out):\n    n, l = x.shape[0], x.shape[2]\n"
    "    for ch in range(x.shape[1]):\n"
    + _inline(_MOMENTS)
    + _inline(_GRAD_SUMS)
    + _inline(
        "r = 1.0 / math.sqrt(var + eps)\ngbar = sg / (n * l)\n"
        "k = r * r * sgc / (n * l)\na = w[ch] * r\n"
        "for i in range(n):\n    for j in range(l):\n"
        "        out[i, ch, j] = a * (g[i, ch, j] - gbar "
        "- (x[i, ch, j] - mean) * k)"
    ),
    "bn_weight_grad": "def bn_weight_grad(g, x, eps, out):\n    n, l = x.shape[0], x.shape[2]\n"
    "    for ch in range(x.shape[1]):\n"
    + _inline(_MOMENTS)
    + _inline(_GRAD_SUMS)
    + "        out[ch] = sgc / math.sqrt(var + eps)\n",
}

_KERNELS: dict = {}


def _kernel(name):
    """The compiled kernel `name`, or None without numba."""
    if not numba_kernels.available():
        return None
    if name not in _KERNELS:
        # reassociated float64 sums: LLVM vectorizes them (no other fast-math flag: NaN and inf
        # propagate as in the reference)
        _KERNELS[name] = numba_kernels.jit_source(_SOURCES[name], name, fastmath={"reassoc"})
    return _KERNELS[name]


def _ncl(a):
    """a as a C-contiguous (N, C, L) array."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _usable(name, x, same=(), per_channel=()):
    """The kernel for x (N, C, ...), arrays of x's shape and arrays of shape (C,): float32 or
    float64, not empty; else None (bad shapes go to the reference forward, whose error the
    dispatcher reports: the compiled loops do not check bounds)."""
    arrays = (x,) + tuple(same) + tuple(per_channel)
    if (
        any(a.dtype not in (np.float32, np.float64) for a in arrays)
        or x.size == 0
        or x.ndim < 2
        or any(a.shape != x.shape for a in same)
        or any(a.shape != (x.shape[1],) for a in per_channel)
    ):
        return None
    return _kernel(name)


# Each returns None where it does not apply (no numba, integer or empty input): the op then
# runs its reference forward (ember.ops.nn registers them that way).
def batch_norm_stats(x):
    kernel = _usable("bn_stats", x)
    if kernel is None:
        return None
    out = np.empty((2, x.shape[1]), dtype=np.float64)
    kernel(_ncl(x), out)
    return out.astype(x.dtype)


def batch_norm_train(x, w, b, eps):
    kernel = _usable("bn_train", x, per_channel=(w, b))
    if kernel is None:
        return None
    dtype = np.result_type(x, w, b)
    xs = _ncl(x.astype(dtype, copy=False))
    y = np.empty(xs.shape, dtype=dtype)
    kernel(xs, w, b, float(eps), y)
    return y.reshape(x.shape)


def batch_norm_input_grad(g, x, w, eps):
    kernel = _usable("bn_input_grad", x, (g,), (w,))
    if kernel is None:
        return None
    dtype = np.result_type(g, x, w)
    xs = _ncl(x)
    out = np.empty(xs.shape, dtype=dtype)
    kernel(_ncl(g), xs, w, float(eps), out)
    return out.reshape(x.shape)


def batch_norm_weight_grad(g, x, eps):
    kernel = _usable("bn_weight_grad", x, (g,))
    if kernel is None:
        return None
    out = np.empty((x.shape[1],), dtype=np.float64)
    kernel(_ncl(g), _ncl(x), float(eps), out)
    return out.astype(np.result_type(g, x))
