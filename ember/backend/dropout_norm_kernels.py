"""Compiled kernels of `fused_dropout_add_layer_norm` (ember/ops/dropout_norm.py): the
post-norm residual of a Transformer block, layer_norm(dropout(x + bias) + residual), forward
and backward each as one pass over rows.

Note [Dropout, add and norm in one pass]: BERT's BertSelfOutput / BertOutput compute
LayerNorm(dropout(dense(h)) + h_in). As separate kernels a training step pays, per block, a
pass that adds the dense bias, a dropout pass that writes the dropped tensor, and the
residual layer norm reading it back; the backward pays the layer-norm gradient pass and a
dropout pass over its result. Here each direction is one kernel over rows:
- forward: each row's keep mask is hashed from (seed, flat element index) exactly as
  `fused_dropout` hashes it (Note [Fused Transformer ops] in ember.ops.fused: the same seed
  drawn from the same generator gives the same mask); the dropped row (x + bias) * scale or 0
  goes into a row of scratch, then the float32 layer norm of dropped + residual runs on it
  with the layer-norm kernels' own inlined row code (`row_stats`, Note [Float32 layer norm]);
- the backward takes the mask the forward kept (Note [Kept dropout masks]), or regenerates
  it from the seed where none was kept, as fused_dropout does;
- backward: the same dropped row is rebuilt, the layer-norm input and parameter gradients of
  that row are computed as the layer-norm kernels compute them (`backward_row`, both
  gradients in one pass, Note [Layer norm gradients together]), and the residual's gradient
  g_s and the input's, dropout(g_s), are written side by side ((2, rows, d)).
Every value is computed by the same float32 operations in the same order as the separate
kernels (dropout, layer norm, and the linear's bias add `out += b`), so the fused op equals
the decomposition bit for bit (tests/ops/test_dropout_norm.py), a training run gives the same
numbers as before the fusion, and serial and parallel builds agree (Note [Row-parallel
kernels]: whole rows per thread, parameter sums in fixed blocks of rows). Only float32 inputs
of at least COMPILED_MIN_SIZE elements take these kernels; the rest (float64, small inputs)
run the separate kernels one after another (`None` here), which keep their own small-input
twins (Note [Kernel-exact small paths]).

Note [Kept dropout masks]: the hash is most of what dropout costs, and the backward paid it
again: MiniLM's 1024 x 384 block output (the Trainer's 16 x 64 batch), one process, 1
thread, the backward kernel with the mask hashed 0.67 ms, with a kept mask 0.48 ms; 2
threads 0.49 / 0.33 ms (the forward's hash: 0.49 against 0.30 ms without one). So a forward
with dropout on writes each row's keep mask (one byte an element, a quarter of the output's
size; PyTorch's dropout keeps its mask too) into a (rows, d) bool array of its own, stored
under (seed, threshold, rows, d), and the backward kernel reads it instead of hashing. The
store (a `Kept`, Note [Kept for the backward] in ember/backend/kept.py) holds it only while
the op's seed array lives: the autograd node holds the seed until its backward runs, and a
forward whose graph is dropped, or that recorded none (no_grad, nothing requiring grad: the
seed goes as the call returns), takes its mask with it; the backward takes it out. A mask
depends on its key alone, so a store that misses (a second backward with retain_graph, a
compiled graph, a mask already taken) costs the hash and nothing else, and a kept mask gives
the results of a hashed one bit for bit (tests/ops/test_dropout_norm.py).
"""

from __future__ import annotations

import contextlib
import threading
import numpy as np

from ember.backend import transformer_kernels as _tk
from ember.backend.kept import Kept

_SOURCE = """
@numba.njit(inline="always")
def keep_row(seed, threshold, i, d, keep):
    # fused_dropout's keep test (transformer_kernels.KEEP) for row i
    base = np.uint64(seed)
    limit = np.uint64(threshold)
    start = np.uint64(i * d)
    for j in range(d):
        keep[j] = kept(base, limit, start + np.uint64(j))


@numba.njit(inline="always")
def dropped_row(x, db, has_bias, dropping, hashing, seed, threshold, scale, i, d, keep, out):
    # out = dropout(x[i] + db): the linear's `out += b`, then fused_dropout's x * scale or 0;
    # the keep mask hashed into `keep` (hashing) or read from it (a mask the forward kept)
    xi = x[i]
    zero = np.float32(0.0)
    if dropping:
        if hashing:
            keep_row(seed, threshold, i, d, keep)
        if has_bias:
            for j in range(d):
                v = (xi[j] + db[j]) * scale
                out[j] = v if keep[j] else zero
        else:
            for j in range(d):
                v = xi[j] * scale
                out[j] = v if keep[j] else zero
    elif has_bias:
        for j in range(d):
            out[j] = xi[j] + db[j]
    else:
        for j in range(d):
            out[j] = xi[j]


def dropout_add_norm_forward(x, db, has_bias, dropping, seed, threshold, scale, r, w, b, eps,
                             block, save_mask, mask, out):
    # save_mask: each row's keep mask goes to mask[i] (Note [Kept dropout masks])
    rows, d = x.shape
    blocks = (rows + block - 1) // block
    for k in prange(blocks):
        wide_vectors()
        kept = np.empty((1, d), np.float32)
        own = np.empty(d, np.bool_)
        for i in range(k * block, min(rows, (k + 1) * block)):
            keep = mask[i] if save_mask else own
            dropped_row(x, db, has_bias, dropping, True, seed, threshold, scale, i, d, keep,
                        kept[0])
            mean, rstd = row_stats(kept, r[i:i + 1], True, 0, d, eps)
            m32 = np.float32(mean)
            lo32 = np.float32(mean - np.float64(m32))
            r32 = np.float32(rstd)
            ki = kept[0]
            ri = r[i]
            oi = out[i]
            for j in range(d):
                oi[j] = ((ki[j] + ri[j] - m32) - lo32) * r32 * w[j] + b[j]


def dropout_add_norm_grads(g, x, db, has_bias, dropping, seed, threshold, scale, r, w, eps,
                           block, partial, want_input, out, write_x, out_x, want_params, sums,
                           has_mask, mask):
    # out (want_input): the gradient of the residual (the layer norm's input gradient); out_x
    # (write_x): of x, dropout(out); sums (want_params): the layer norm's weight and bias
    # gradients; has_mask: the keep mask is mask, as the forward kept it, not hashed again
    rows, d = x.shape
    blocks = partial.shape[0]
    for k in prange(blocks):
        wide_vectors()
        kept = np.empty((1, d), np.float32)
        own = np.empty(d, np.bool_)
        p0 = partial[k, 0]
        p1 = partial[k, 1]
        if want_params:
            clear_block(p0, p1, d)
        zero = np.float32(0.0)
        for i in range(k * block, min(rows, (k + 1) * block)):
            keep = mask[i] if has_mask else own
            dropped_row(x, db, has_bias, dropping, not has_mask, seed, threshold, scale, i, d,
                        keep, kept[0])
            # the layer norm's backward of the row as layer_norm_grads computes it (Note
            # [Float32 layer norm backward]): its statistics once, then each gradient's loop
            ri = r[i:i + 1]
            m32, lo32, r32, a32, c32 = backward_row(kept, ri, True, g[i:i + 1], w, 0, d, eps)
            ki, rr, gi = kept[0], r[i], g[i]
            if want_input:
                input_grad_loop(ki, rr, True, gi, w, m32, lo32, r32, a32, c32, d, out[i])
            if want_params:
                param_grad_loop(ki, rr, True, gi, m32, lo32, r32, d, p0, p1)
            if write_x:
                gs = out[i]
                gx = out_x[i]
                for j in range(d):
                    v = gs[j] * scale
                    gx[j] = v if keep[j] else zero
    if want_params:
        sum_blocks(partial, sums)
"""

GROUP = "dropout_norm32"
_tk.register_group(GROUP, lambda: _tk.layer_norm32_source() + _tk.KEEP + _SOURCE)

_F32 = np.dtype(np.float32)


def _fits(x, r, *params):
    """The fused float32 kernels apply: every operand float32, r shaped as x, each parameter
    (d,), at least COMPILED_MIN_SIZE elements."""
    if x.ndim == 0 or x.size < _tk.COMPILED_MIN_SIZE or r.shape != x.shape:
        return False
    d = x.shape[-1]
    return all(a.dtype == _F32 for a in (x, r) + params) and all(p.shape == (d,) for p in params)


_NO_MASK = np.empty((1, 1), np.bool_)
# keep masks the forward kept for the backward: (seed, threshold, rows, d) -> (rows, d) bool
# (Note [Kept for the backward] in ember/backend/kept.py)
_kept_masks = Kept()


def _mask_key(seed, threshold, shape):
    return int(seed), int(threshold), shape[0], shape[1]


def _owner(a):
    """The array that owns a's memory (alive while any view of it is)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def kept_mask(seed, threshold, shape):
    """The keep mask that `forward(..., keep_mask=True)` kept for these rows, taken out of the
    store (Note [Kept dropout masks]), or None."""
    return _kept_masks.take(_mask_key(seed, threshold, shape))


def forward(x, r, w, b, db, seed, threshold, scale, eps, keep_for=None):
    """layer_norm(dropout(x + db) + r) (db None: no bias; threshold 0: no dropout) through the
    fused kernel, or None where it does not apply. `keep_for` (an array: the seed's): the
    dropout's keep mask is kept for the backward while that array lives (Note [Kept dropout
    masks])."""
    if not _fits(x, r, w, b, *(() if db is None else (db,))):
        return None
    kernel = _tk._pick(GROUP, "dropout_add_norm_forward", x.size)
    if kernel is None:
        return None
    xs, rs = _tk._rows(x), _tk._rows(r)
    out = _tk.empty_apart(xs.shape, _F32, xs, rs)
    bias = _tk._empty_bias(_F32) if db is None else db
    keep_mask = keep_for is not None and threshold > 0
    mask = np.empty(xs.shape, np.bool_) if keep_mask else _NO_MASK
    kernel(xs, bias, db is not None, threshold > 0, int(seed), int(threshold), np.float32(scale),
           rs, w, b, float(eps), _tk._BLOCK, keep_mask, mask, out)  # fmt: skip
    if keep_mask:
        _kept_masks.keep(_mask_key(seed, threshold, xs.shape), mask, _owner(keep_for))
    return out.reshape(x.shape)


def grads(
    g, x, r, w, db, seed, threshold, scale, eps, want_input=True, write_x=False, want_params=True
):
    """(the residual's gradient if `want_input`, x's gradient (dropout of the first) if
    `write_x` and dropping, the layer norm's parameter gradients (2, d) in float64 if
    `want_params`; None for what is not wanted) through the fused kernel, or None where it
    does not apply."""
    if g.shape != x.shape or g.dtype != _F32 or not _fits(x, r, w, *(() if db is None else (db,))):
        return None
    kernel = _tk._pick(GROUP, "dropout_add_norm_grads", x.size)
    if kernel is None:
        return None
    xs, rs, gs = _tk._rows(x), _tk._rows(r), _tk._rows(g)
    write_x = want_input and write_x and threshold > 0
    out = _tk.empty_apart(xs.shape, _F32, gs, xs, rs) if want_input else xs
    out_x = _tk.empty_apart(xs.shape, _F32, gs, xs, rs, out) if write_x else out
    partial, sums = _tk._param_sums(xs, "layer_norm32")  # np.empty: untouched unless wanted
    bias = _tk._empty_bias(_F32) if db is None else db
    mask = kept_mask(seed, threshold, xs.shape) if threshold > 0 else None
    kernel(gs, xs, bias, db is not None, threshold > 0, int(seed), int(threshold),
           np.float32(scale), rs, w, float(eps), _tk._BLOCK, partial, want_input, out, write_x,
           out_x, want_params, sums, mask is not None,
           _NO_MASK if mask is None else mask)  # fmt: skip
    return (
        out.reshape(x.shape) if want_input else None,
        out_x.reshape(x.shape) if write_x else None,
        sums if want_params else None,
    )


_together = threading.local()


@contextlib.contextmanager
def backward_together():
    """Inside (the fused op's VJP): `input_grad` keeps what its pass computed besides the
    residual's gradient: the parameter gradients, for the `param_grads` call that follows
    with the same arrays (Note [Layer norm gradients together] in
    ember/backend/transformer_kernels.py), and x's gradient, dropout of the residual's, for
    the `fused_dropout` call on it that follows (`transformer_kernels.keep_dropout`). A
    compiled graph computes the two gradients with one joint kernel instead (`joint_grads`)."""
    _together.active, _together.saved = True, None
    try:
        yield
    finally:
        _together.active, _together.saved = False, None
        _tk.keep_dropout(None)


def input_grad(g, x, r, w, db, seed, threshold, scale, eps):
    """The residual's gradient (the layer norm's input gradient at dropout(x + db) + r), or
    None where the fused kernel does not apply; see `backward_together`."""
    keep = getattr(_together, "active", False)
    done = grads(g, x, r, w, db, seed, threshold, scale, eps, True, keep, keep)
    if done is None:
        return None
    out, out_x, sums = done  # `out` is the array returned (keep_dropout matches it by identity)
    if keep:
        _together.saved = (g, x, r, w, db, seed, eps, sums)
        if out_x is not None:
            _tk.keep_dropout((out, seed, threshold, out_x))
    return out


def param_grads(g, x, r, w, db, seed, threshold, scale, eps):
    """The (2, d) parameter gradients (float64): those `input_grad` kept for the same arrays,
    else the fused pass run for them alone."""
    saved = getattr(_together, "saved", None)
    _together.saved = None
    if saved is not None:
        sg, sx, sr, sw, sdb, sseed, seps, sums = saved
        same = sg is g and sx is x and sr is r and sw is w and sdb is db
        if same and sseed == seed and seps == eps:
            return sums
    done = grads(g, x, r, w, db, seed, threshold, scale, eps, False, False, True)
    return None if done is None else done[2]


def joint_grads(g, x, r, w, db, seed, threshold, scale, eps):
    """(the residual's gradient, the parameter gradients) in one pass, or None (Note [Joint
    kernels] in ember/graph/fusion.py)."""
    done = grads(g, x, r, w, db, seed, threshold, scale, eps, True, False, True)
    return None if done is None else (done[0], done[2])
