"""The fused CPU kernels of scaled-dot-product attention in training, registered by
`ember.ops.fused`: the forward of `fused_attention` with `keep=True` (gradients recorded),
which keeps the probabilities for the backward, and `fused_attention_grad`, the gradients
with respect to q, k and v, each computed a block of (batch, head) slices at a time on
ember's threads (Note [Attention training]). The ops' reference forwards
(`ember.ops.fused._attention_forward` and `_attention_grad_forward`, the decomposition in
NumPy) are the spec (Note [Fused composites]).

Note [Attention training]: with gradients recorded, `scaled_dot_product_attention` takes
`fused_attention` with `keep=True` (the decomposition only where the mask needs a
gradient). Per block
(one batch item's heads, whole rows, since the key and value gradients sum over the queries):
- forward: q k^T (NumPy's matmul, k^T copied contiguous), the inference kernel's row pass
  (`attention_probs` of attention_kernels.py, without dropout) into a kept (B, H, L, S) array
  of probabilities P, the dropout pass (`attention_dropped`: fused_dropout's hash of the
  flat (B, H, L, S) index) into a kept copy P_d, and P_d v written straight into the
  (B, L, H, Ev) layout the output projection reads;
- backward (`fused_attention_grad`): dP = g v^T, one row pass that drops it by the same hash
  and makes it the scores' gradient scale * P (dP - <dP, P>) (`fused_softmax_grad`'s float32
  arithmetic: Note [Float32 softmax backward]), and three products, dq = dS k, dk = dS^T q,
  dv = P_d^T g, each written straight into a (B, L, H, E) buffer whose (B, H, L, E) view is
  the gradient: the heads' producers (`split_heads`' transpose and reshape) pass it on
  without a copy. The op returns the three flattened and concatenated, each with dims -3 and
  -2 swapped; the VJP takes views of them. Under create_graph the VJP takes the
  decomposition's gradients instead (the fused gradient op is not differentiated again).
How P reaches the backward: Note [Kept probabilities]. Measured (16 x 12 heads x 64 x 64,
head dim 32, dropout 0.1, heads as views; one process, min of 30): recomputing them in the
backward (q k^T and the row pass again, per block ~0.1 ms of ~0.25) took 4.4-4.8 ms at 1
thread against 2.7 with them kept; forward 2.7 ms either way (the inference kernel 2.7-2.8).
The blocks run on the pool with BLAS at one thread (as the inference kernel's); each block is
computed by one thread in the same operations whatever the count, so results do not depend
on it. The products take NumPy's matmul (OpenBLAS): at these blocks one MKL batch call on the
strided views took 0.053 ms for q k^T against 0.030 (0.106 vs 0.107
at 128 x 128). Where the kernels do not apply (other leading dims, below COMPILED_MIN_SIZE
scores, no numba) the op runs its reference.
"""

from __future__ import annotations

import math

import numpy as np

from ember.backend import attention_kernels as _ak
from ember.backend import numba_kernels
from ember.backend import transformer_kernels as _tk
from ember.backend.kept import Kept

# dropout of one block's rows (C, R, S): dst = src * keep_scale where fused_dropout's hash of
# the flat (B, H, L, S) index keeps the element, else 0; and the softmax
# gradient's rows, dP dropped first where threshold > 0 (fused_softmax_grad's arithmetic).
# The dropout pass is a function of its own: inlined into the softmax gradient's row loop, its
# code made LLVM compile that loop 2.5x slower even where it did not run (12 heads x 64 x 64:
# 62 us against 25)
_ROWS = """
@numba.njit
def drop_rows(src, dst, b, h0, heads, queries, seed, threshold, ks):
    C, R, n = src.shape
    zero = FLOAT(0.0)
    for c in range(C):
        wide_vectors()  # Note [Wide vectors] in transformer_kernels.py
        for i in range(R):
            si = src[c, i]
            di = dst[c, i]
            base = ((b * heads + h0 + c) * queries + i) * n
            for j in range(n):  # a select, no branch
                di[j] = si[j] * ks if kept(seed, base + j, threshold) else zero


def attention_dropped(p, dropped, b, h0, heads, queries, seed, threshold, keep_scale):
    drop_rows(p, dropped, b, h0, heads, queries, seed, threshold, FLOAT(keep_scale))


def attention_grad_rows(p, raw, dp, scale, b, h0, heads, queries, seed, threshold,
                        keep_scale):
    # raw: g v^T; dp: receives it dropped (raw itself where threshold is 0), then the scores'
    # gradient. Dropped into another array: in place LLVM's alias check sent the dropout
    # loop to its scalar version (94 us against 24 a block of 12 x 64 x 64)
    if threshold > 0:
        drop_rows(raw, dp, b, h0, heads, queries, seed, threshold, FLOAT(keep_scale))
    C, R, n = p.shape
    sc = FLOAT(scale)
    for c in range(C):
        for i in range(R):
            pi = p[c, i]
            gi = dp[c, i]
            d = DOT(gi, pi, n)
            for j in range(n):
                gi[j] = (pi[j] * (gi[j] - d)) * sc
"""

_KERNELS: dict = {}


def _source(single: bool) -> str:
    if single:  # float32 rows in float32 (Note [Float32 softmax backward])
        dot = _tk._lanes("dot32", "a, c", "a[j] * c[j]", start="np.float32(0.0)")
        body = _ROWS.replace("FLOAT", "np.float32").replace("DOT", "dot32")
    else:
        dot = _tk._lanes("dot", "a, c", "np.float64(a[j]) * np.float64(c[j])")
        body = _ROWS.replace("FLOAT", "np.float64").replace("DOT", "dot")
    return dot + _ak._KEEP + body


def _kernel(single: bool, name: str):
    """A compiled row pass (serial: blocks are the parallel work), or None without numba."""
    if not numba_kernels.available():
        return None
    kernel = _KERNELS.get((single, name))
    if kernel is None:
        numba = numba_kernels._load()
        fn, on_disk = numba_kernels._define(numba, _tk._HEADER + _source(single), name)
        kernel = numba.njit(nogil=True, cache=on_disk, error_model="numpy")(fn)
        _KERNELS[(single, name)] = kernel
    return kernel


def _blocks(batch, heads, queries, keys):
    """(b, h0, h1) blocks of whole heads, at most BLOCK_ELEMENTS scores each (at least one
    head)."""
    step = max(1, _ak.BLOCK_ELEMENTS // max(1, queries * keys))
    return [(b, h, min(heads, h + step)) for b in range(batch) for h in range(0, heads, step)]


def _product_transposed(a, b, out):
    """out = a @ b^T for stacks of matrices (views): NumPy's matmul (OpenBLAS) with b copied
    contiguous (Note [Attention training])."""
    np.matmul(a, np.ascontiguousarray(b.transpose(0, 2, 1)), out=out)


def _swapped_buffer(shape, flat):
    """`flat` as an array of `shape` (B, H, L, E) laid out (B, L, H, E) in memory."""
    batch, heads, rows, width = shape
    return flat.reshape(batch, rows, heads, width).transpose(0, 2, 1, 3)


def _operands(q, k, v, m, g=None):
    """(q4, k4, v4, m4, g4) as (B, H, ., .) arrays, m4 the 4-d mask (zeros (1, 1, 1, 1) for
    none), or None where the kernels do not apply."""
    if q.ndim not in (3, 4) or k.ndim != q.ndim or v.ndim != q.ndim:
        return None
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        return None
    if q.shape[-1] != k.shape[-1] or min(q.shape[-1], v.shape[-1]) == 0:
        return None
    dtype = q.dtype
    if dtype not in _tk._FLOATS or k.dtype != dtype or v.dtype != dtype:
        return None
    if g is not None and (g.dtype != dtype or g.shape != q.shape[:-1] + v.shape[-1:]):
        return None
    queries, keys = q.shape[-2], k.shape[-2]
    if math.prod(q.shape[:-2]) * queries * keys < _ak.COMPILED_MIN_SIZE:
        return None
    if m is not None:
        if m.dtype != dtype or m.ndim > 4:
            return None
        m4 = m.reshape((1,) * (4 - m.ndim) + m.shape)
        target = ((1,) if q.ndim == 3 else ()) + q.shape[:-2] + (queries, keys)
        for md, td in zip(m4.shape, target):
            if md != 1 and md != td:
                return None
    else:
        m4 = np.zeros((1, 1, 1, 1), dtype)
    lead = (lambda x: x.reshape((1,) + x.shape)) if q.ndim == 3 else (lambda x: x)
    return lead(q), lead(k), lead(v), m4, None if g is None else lead(g)


# Note [Kept probabilities]: the probabilities of a training forward, and their dropped copy,
# are kept (Note [Kept for the backward] in ember/backend/kept.py) under the id of the context
# array the forward returned, while that array lives: the backward that passes it (the op's
# saved output) takes them. The backward recomputes them where none are kept (a graph run
# backward twice, the inference forward's VJP), the same bits either way: both come from the
# same operations.
_KEPT = Kept()


def attention_keep(q, k, v, m, scale, seed, threshold, keep_scale):
    """softmax(q k^T * scale + m) v as `attention_kernels.attention` computes it (dropout:
    fused_dropout's keep test with `seed`, kept values times keep_scale), the probabilities
    and their dropped copy kept for the backward (Note [Kept probabilities]); None where the
    kernels do not apply. The result is laid out (B, L, H, Ev) in memory."""
    operands = _operands(q, k, v, m)
    single = q.dtype == np.float32
    probs_kernel, drop_kernel = _ak._kernel(single), _kernel(single, "attention_dropped")
    if operands is None or probs_kernel is None or drop_kernel is None:
        return None
    q4, k4, v4, m4, _ = operands
    batch, heads, queries = q4.shape[:3]
    keys, width = k4.shape[2], v4.shape[3]
    probs = np.empty((batch, heads, queries, keys), q.dtype)
    dropped = np.empty_like(probs) if threshold > 0 else probs
    out = np.empty((batch, queries, heads, width), q.dtype).transpose(0, 2, 1, 3)

    def block(b, h0, h1):
        p, d = probs[b, h0:h1], dropped[b, h0:h1]
        _product_transposed(q4[b, h0:h1], k4[b, h0:h1], p)
        probs_kernel(p, m4, m is not None, scale, b, h0, 0, heads, queries, 0, 0, 1.0)
        if threshold > 0:
            drop_kernel(p, d, b, h0, heads, queries, seed, threshold, keep_scale)
        np.matmul(d, v4[b, h0:h1], out=out[b, h0:h1])

    _ak.on_blocks(block, _blocks(batch, heads, queries, keys))
    result = out if q.ndim == 4 else out[0]
    _KEPT.keep(id(result), (probs, dropped), result)
    return result


def attention_grad(g, out, q, k, v, m, scale, seed, threshold, keep_scale):
    """The gradients of softmax(q k^T * scale + m) v (dropout as in `attention_keep`) with
    respect to q, k and v for the output gradient g, flattened and concatenated, each with
    dims -3 and -2 swapped (Note [Attention training]); None where the kernels do not apply.
    `out`: the forward's result, whose kept probabilities are used (else recomputed). q
    (B, H, L, E) or (N, L, E), k (.., S, E), v (.., S, Ev), g (.., L, Ev), all with equal
    leading dims; m additive, broadcasting to the scores."""
    operands = _operands(q, k, v, m, g)
    single = q.dtype == np.float32
    grad_kernel = _kernel(single, "attention_grad_rows")
    drop_kernel = _kernel(single, "attention_dropped")
    probs_kernel = _ak._kernel(single)
    if operands is None or grad_kernel is None or drop_kernel is None or probs_kernel is None:
        return None
    q4, k4, v4, m4, g4 = operands
    dtype = q.dtype
    batch, heads, queries = q4.shape[:3]
    keys = k4.shape[2]
    kept = None if out is None else _KEPT.take(id(out))
    flat = np.empty(q.size + k.size + v.size, dtype)
    gq = _swapped_buffer(q4.shape, flat[: q.size])
    gk = _swapped_buffer(k4.shape, flat[q.size : q.size + k.size])
    gv = _swapped_buffer(v4.shape, flat[q.size + k.size :])

    def block(b, h0, h1):
        qs, ks, vs, gs = q4[b, h0:h1], k4[b, h0:h1], v4[b, h0:h1], g4[b, h0:h1]
        shape = (h1 - h0, queries, keys)
        if kept is not None:
            probs, dropped = kept[0][b, h0:h1], kept[1][b, h0:h1]
        else:
            probs = np.empty(shape, dtype)
            _product_transposed(qs, ks, probs)
            probs_kernel(probs, m4, m is not None, scale, b, h0, 0, heads, queries, 0, 0, 1.0)
            dropped = probs
            if threshold > 0:
                dropped = np.empty(shape, dtype)
                drop_kernel(probs, dropped, b, h0, heads, queries, seed, threshold, keep_scale)
        raw = np.empty(shape, dtype)
        _product_transposed(gs, vs, raw)
        grads = np.empty(shape, dtype) if threshold > 0 else raw
        grad_kernel(probs, raw, grads, scale, b, h0, heads, queries, seed, threshold, keep_scale)
        np.matmul(grads, ks, out=gq[b, h0:h1])
        np.matmul(grads.transpose(0, 2, 1), qs, out=gk[b, h0:h1])
        np.matmul(dropped.transpose(0, 2, 1), gs, out=gv[b, h0:h1])

    _ak.on_blocks(block, _blocks(batch, heads, queries, keys))
    return flat
