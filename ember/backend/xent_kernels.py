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

Note [Wide softmax rows]: a compiled scalar loop calls libm's exp once per element (~10 ns),
while NumPy's exp is SIMD (~0.3 ns per float32). For a few classes the loop wins (no per-call
overhead); for a vocabulary (a word LM's 700 x 10000 logits) it lost 4-8x to PyTorch: the
loss and its gradient were three quarters of the LM's training step. From `_WIDE` classes on,
rows are done in blocks of about `_BLOCK` elements (they stay in the L2 cache between the
passes) with NumPy's own calls: max, x - max, exp in place, the row sums (NumPy's pairwise
float sums, as the reference), then the loss or the scaled softmax minus the scaled one-hot
in the output itself. Blocks are independent, so with `ember.set_num_threads(n > 1)` they run
on the parallel pool (`ember.backend.parallel.run_chunks`), each writing its own rows.

tests/ops/test_kernels.py checks them against the references.
"""

from __future__ import annotations

import numpy as np

from ember.backend import numba_kernels, parallel

# one row's loss and gradient for the two kernels below that compute both: each exp once, in
# the same arithmetic and order as `xent_rows` and `xent_grad_rows`, so equal bit for bit
# (`scale` keeps the caller's type: a row's entry of the scale array, or the scalar); a row
# whose target is ignored gets a zero loss and a zero gradient row
_LOSS_AND_GRAD_ROW = """\
import numba


@numba.njit(inline="always")
def loss_and_grad_row(x, i, k, ignore_index, scale, exps, losses, out):
    c = x.shape[1]
    if k == ignore_index:
        losses[i] = 0.0
        for j in range(c):
            out[i, j] = 0.0
        return
    m = x[i, 0]
    for j in range(1, c):
        if x[i, j] > m:
            m = x[i, j]
    s = 0.0
    for j in range(c):
        exps[j] = np.exp(np.float64(x[i, j]) - m)
        s += exps[j]
    losses[i] = np.log(s) - (np.float64(x[i, k]) - m)
    f = scale / s
    for j in range(c):
        out[i, j] = exps[j] * f
    out[i, k] = out[i, k] - scale


"""

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
    "xent_with_grad_rows": _LOSS_AND_GRAD_ROW
    + """\
def xent_with_grad_rows(x, t, ignore_index, scale, losses, out):
    n, c = x.shape
    exps = np.empty(c, np.float64)
    valid = 0
    for i in range(n):
        k = t[i]
        if k != ignore_index and (k < 0 or k >= c):
            return -1
        loss_and_grad_row(x, i, k, ignore_index, scale[i], exps, losses, out)
        valid += k != ignore_index
    return valid
""",
    # the same for a mean or summed loss (a scalar upstream gradient g[0]), with the row scale
    # worked out in the loop as `_row_scale` does (in the logits' dtype, then widened): the
    # compiled step's call is then this loop and two allocations (its NumPy work around the
    # per-row kernel took as long as the loop at 64 x 10: 14 -> 10 us, one row 8.7 -> 4.7 us)
    "xent_with_grad_reduced": _LOSS_AND_GRAD_ROW
    + """\
def xent_with_grad_reduced(x, t, ignore_index, g, mean, losses, out):
    n, c = x.shape
    count = 0
    for i in range(n):
        k = t[i]
        if k != ignore_index:
            if k < 0 or k >= c:
                return -1
            count += 1
    scalars = np.empty(2, x.dtype)
    scalars[0] = 1.0
    scalars[1] = max(count, 1)
    scale = np.float64(scalars[0] / scalars[1] * g[0] if mean else g[0])
    exps = np.empty(c, np.float64)
    for i in range(n):
        loss_and_grad_row(x, i, t[i], ignore_index, scale, exps, losses, out)
    return count
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


# Note [Wide softmax rows]: classes from which the NumPy row blocks beat the compiled loop,
# and the elements per block
_WIDE = 512
_BLOCK = 1 << 17


def _targets_ok(t, c, ignore_index):
    """Every target not ignored is a class index (else the reference raises, naming it)."""
    kept = t[t != ignore_index]
    return not kept.size or (int(kept.min()) >= 0 and int(kept.max()) < c)


def _row_blocks(n, c, fn):
    """fn(lo, hi) over row blocks covering [0, n), on the parallel pool when it pays."""
    rows = max(1, _BLOCK // c)
    pieces = min(n, parallel.num_threads() * 2) if parallel.parallel_worth(n * c, True) else 1
    bounds = [(n * k // pieces, n * (k + 1) // pieces) for k in range(pieces)]

    def run(lo, hi):
        for start in range(lo, hi, rows):
            fn(start, min(start + rows, hi))

    parallel.run_chunks(run, [b for b in bounds if b[0] < b[1]])


def _wide_losses(x, t, ignore_index):
    """Per-row losses (float64, 0 where ignored) of wide rows (Note [Wide softmax rows])."""
    n, c = x.shape
    losses = np.empty(n, np.float64)
    safe = np.where(t == ignore_index, 0, t)

    def block(lo, hi):
        xb = x[lo:hi]
        m = xb.max(axis=1, keepdims=True)
        e = np.subtract(xb, m)
        np.exp(e, out=e)
        picked = np.take_along_axis(xb, safe[lo:hi, None], axis=1)[:, 0] - m[:, 0]
        losses[lo:hi] = np.log(e.sum(axis=1).astype(np.float64)) - picked

    _row_blocks(n, c, block)
    losses[t == ignore_index] = 0.0
    return losses


def _wide_grad(x, t, ignore_index, scale, out):
    """scale[i] * (softmax(x_i) - onehot(t_i)) into `out` (Note [Wide softmax rows])."""
    n, c = x.shape
    safe = np.where(t == ignore_index, 0, t)

    def block(lo, hi):
        ob = out[lo:hi]
        np.subtract(x[lo:hi], x[lo:hi].max(axis=1, keepdims=True), out=ob)
        np.exp(ob, out=ob)
        ob *= (scale[lo:hi] / ob.sum(axis=1))[:, None].astype(out.dtype)
        rows = np.arange(hi - lo)
        ob[rows, safe[lo:hi]] -= scale[lo:hi].astype(out.dtype)

    _row_blocks(n, c, block)
    return out


# Each returns None where it does not apply: the op then runs its reference forward.
def cross_entropy(x, t, ignore_index, reduction):
    """softmax_cross_entropy's forward (see ember.ops.nn._xent_forward)."""
    if not _usable(x, t):
        return None
    kernel = _kernel("xent_rows")
    if kernel is None:
        return None
    x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
    if x.shape[1] >= _WIDE:
        if not _targets_ok(t, x.shape[1], ignore_index):
            return None
        losses = _wide_losses(x, t, int(ignore_index))
        valid = int(np.count_nonzero(t != ignore_index))
    else:
        losses = np.empty(x.shape[0], np.float64)
        valid = kernel(x, t, int(ignore_index), losses)
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
    x = np.ascontiguousarray(x)
    if x.shape[1] >= _WIDE:
        if not _targets_ok(t, x.shape[1], ignore_index):
            return None
        scale[t == ignore_index] = 0.0  # ignored rows: a zero gradient row
        return _wide_grad(x, t, int(ignore_index), scale, out)
    if kernel(x, t, int(ignore_index), scale, out) < 0:
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
    if reduction != "none" and g.size == 1 and x.shape[1] < _WIDE:
        kernel = _kernel("xent_with_grad_reduced")
        if kernel is None:
            return None
        losses = np.empty(x.shape[0], np.float64)
        out = np.empty(x.shape, x.dtype)
        valid = kernel(np.ascontiguousarray(x), np.ascontiguousarray(t), int(ignore_index),
                       g.reshape(1), reduction == "mean", losses, out)  # fmt: skip
        if valid < 0:
            return None
        return _reduced(losses, valid, reduction, x.dtype), out
    kernel = _kernel("xent_with_grad_rows")
    if kernel is None:
        return None
    if x.shape[1] >= _WIDE:  # the NumPy row blocks (Note [Wide softmax rows]), as those two
        loss = cross_entropy(x, t, ignore_index, reduction)
        grad = cross_entropy_grad(g, x, t, ignore_index, reduction)
        return None if loss is None or grad is None else (loss, grad)
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
