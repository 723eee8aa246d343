"""Fast CPU kernels for softmax cross entropy over class indices, registered by `ember.ops.nn`.

The reference forwards of `softmax_cross_entropy` and `softmax_cross_entropy_grad` in
`ember.ops.nn` are the spec. They make about twenty NumPy calls each (max, shift, exp, sum,
log, gather, masks, the mean), which for the small logits of a classifier step (64 x 10, or
one row) cost more than the arithmetic: the compiled MNIST step spent a third of its time at
batch 1 there. With numba (the `fast` extra) each is one compiled loop over the rows: the
row's maximum, the sum of exp(x - max) in float64, the loss or the gradient row, with the
target checked in the loop. Rounding: the sums accumulate in float64 and each result is
rounded to the logits' dtype once, so a result differs from the reference (float32 sums) by
at most a few units in the last place. Without numba (or EMBER_NO_NUMBA=1), for other dtypes,
or for an out-of-range target, each returns None and the op runs its reference forward
(whose error names the bad target).

tests/ops/test_kernels.py checks them against the references.
"""

from __future__ import annotations

import numpy as np

from ember.backend import numba_kernels

_SOURCES = {
    # losses (N,) in float64, count of valid rows; returns -1 for a target out of range
    "xent_rows": """\
def xent_rows(x, t, ignore_index, losses):
    n, c = x.shape
    valid = 0
    for i in range(n):
        k = t[i]
        if k == ignore_index:
            losses[i] = 0.0
            continue
        if k < 0 or k >= c:
            return -1
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(c):
            s += np.exp(np.float64(x[i, j]) - m)
        losses[i] = np.log(s) - (np.float64(x[i, k]) - m)
        valid += 1
    return valid
""",
    # gradient rows: scale[i] * (softmax(x_i) - onehot(t_i)); -1 for a bad target
    "xent_grad_rows": """\
def xent_grad_rows(x, t, ignore_index, scale, out):
    n, c = x.shape
    for i in range(n):
        k = t[i]
        if k == ignore_index:
            for j in range(c):
                out[i, j] = 0.0
            continue
        if k < 0 or k >= c:
            return -1
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(c):
            s += np.exp(np.float64(x[i, j]) - m)
        f = scale[i] / s
        for j in range(c):
            out[i, j] = np.exp(np.float64(x[i, j]) - m) * f
        out[i, k] = out[i, k] - scale[i]
    return 0
""",
    # both at once (a compiled training step needs the loss and its gradient): each exp once,
    # the same arithmetic in the same order as the two kernels above, so equal bit for bit
    "xent_with_grad_rows": """\
def xent_with_grad_rows(x, t, ignore_index, scale, losses, out):
    n, c = x.shape
    exps = np.empty(c, np.float64)
    valid = 0
    for i in range(n):
        k = t[i]
        if k == ignore_index:
            losses[i] = 0.0
            for j in range(c):
                out[i, j] = 0.0
            continue
        if k < 0 or k >= c:
            return -1
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(c):
            exps[j] = np.exp(np.float64(x[i, j]) - m)
            s += exps[j]
        losses[i] = np.log(s) - (np.float64(x[i, k]) - m)
        f = scale[i] / s
        for j in range(c):
            out[i, j] = exps[j] * f
        out[i, k] = out[i, k] - scale[i]
        valid += 1
    return valid
""",
}

_KERNELS: dict = {}


def _kernel(name):
    if not numba_kernels.available():
        return None
    if name not in _KERNELS:
        _KERNELS[name] = numba_kernels.jit_source(_SOURCES[name], name)
    return _KERNELS[name]


def _usable(x, t):
    if (
        x.dtype not in (np.float32, np.float64)
        or x.ndim != 2
        or x.shape[1] == 0
        or t.ndim != 1
        or t.shape[0] != x.shape[0]
        or t.dtype.kind not in "iu"
    ):
        return False
    return True


# Each returns None where it does not apply: the op then runs its reference forward.
def cross_entropy(x, t, ignore_index, reduction):
    """softmax_cross_entropy's forward (see ember.ops.nn._xent_forward)."""
    if not _usable(x, t):
        return None
    kernel = _kernel("xent_rows")
    if kernel is None:
        return None
    losses = np.empty(x.shape[0], np.float64)
    valid = kernel(np.ascontiguousarray(x), np.ascontiguousarray(t), int(ignore_index), losses)
    if valid < 0:
        return None
    return _reduced(losses, valid, reduction, x.dtype)


def _reduced(losses, valid, reduction, dtype):
    """The loss from the rows' float64 losses and the count of valid rows."""
    if reduction == "none":
        return losses.astype(dtype)
    total = losses.sum()
    if reduction == "sum":
        return np.asarray(total, dtype=dtype)
    return np.asarray(total / valid if valid else np.nan, dtype=dtype)  # none valid: nan


def cross_entropy_grad(g, x, t, ignore_index, reduction):
    """softmax_cross_entropy_grad's forward (see ember.ops.nn._xent_grad_forward)."""
    if not _usable(x, t) or g.dtype != x.dtype:
        return None
    kernel = _kernel("xent_grad_rows")
    if kernel is None:
        return None
    t = np.ascontiguousarray(t)
    scale = _row_scale(g, x, t, ignore_index, reduction)
    if scale is None:
        return None
    out = np.empty(x.shape, x.dtype)
    if kernel(np.ascontiguousarray(x), t, int(ignore_index), scale, out) < 0:
        return None
    return out


def _row_scale(g, x, t, ignore_index, reduction):
    """Each row's factor of the gradient (float64), rounded as the reference rounds it."""
    n = x.shape[0]
    if reduction == "none":
        if g.shape != (n,):
            return None
        return g.astype(np.float64)
    if g.size != 1:
        return None
    if reduction == "mean":
        count = int(np.count_nonzero(t != ignore_index))
        # the reference rounds the per-row scale to the logits' dtype first
        s = x.dtype.type(1.0) / x.dtype.type(max(count, 1)) * g.reshape(())
    else:
        s = g.reshape(())
    return np.full(n, np.float64(x.dtype.type(s)))


def cross_entropy_with_grad(g, x, t, ignore_index, reduction):
    """(softmax_cross_entropy's forward, softmax_cross_entropy_grad's forward with upstream
    gradient `g`) in one pass over the logits, equal to `cross_entropy` and
    `cross_entropy_grad` bit for bit; None where those would return None."""
    if not _usable(x, t) or g.dtype != x.dtype:
        return None
    kernel = _kernel("xent_with_grad_rows")
    if kernel is None:
        return None
    t = np.ascontiguousarray(t)
    scale = _row_scale(g, x, t, ignore_index, reduction)
    if scale is None:
        return None
    losses = np.empty(x.shape[0], np.float64)
    out = np.empty(x.shape, x.dtype)
    valid = kernel(np.ascontiguousarray(x), t, int(ignore_index), scale, losses, out)
    if valid < 0:
        return None
    return _reduced(losses, valid, reduction, x.dtype), out
