"""The fused CPU kernel of scaled-dot-product attention's backward, registered by
`ember.ops.fused` as `fused_attention_grad`: the gradients of softmax(q k^T * scale + mask) v
(dropout on the probabilities optional) with respect to q, k and v, computed a block of
(batch, head) slices at a time on ember's threads (Note [Attention training]). The op's
reference forward (`ember.ops.fused._attention_grad_forward`, the decomposition's gradients
in NumPy) is the spec (Note [Fused composites]).

Note [Attention training]: in training, `fused_attention`'s forward is the inference kernel
(Note [Attention blocks] in attention_kernels.py: a block of heads at a time, dropout by
`fused_dropout`'s hash, the context written in the (B, L, H, Ev) layout the output projection
reads) and it saves only its inputs; its VJP is one `fused_attention_grad` op, whose kernel
computes per block (one batch item's heads, whole rows of queries and keys, since the key and
value gradients sum over the queries):
- the probabilities again: q k^T (one MKL batch call on the strided views,
  `blas.stacked_product`) and the inference kernel's row pass (`attention_probs`, without
  dropout: the same bits as the forward's probabilities before dropout);
- dP = g v^T (the gradient of the dropped probabilities), then one compiled row pass
  (`attention_grad_rows`) that regenerates the dropout mask from the seed (the forward's hash
  of the flat (B, H, L, S) index), writes the dropped probabilities for the value gradient,
  drops dP likewise and makes it the scores' gradient scale * P (dP - <dP, P>) in place
  (`fused_softmax_grad`'s float32 arithmetic: Note [Float32 softmax backward]);
- three products: dq = dS k, dk = dS^T q, dv = P_dropped^T g, each written straight into a
  (B, L, H, E) buffer, whose (B, H, L, E) view is the gradient the op returns: the heads'
  producers (`split_heads`' transpose and reshape) then pass it on without a copy.
The op returns the three gradients flattened and concatenated, each with dims -3 and -2
swapped (so the (B, L, H, E) buffers back to back); the VJP takes views of them.
Recomputing the probabilities rather than keeping them costs a product and a row pass per
block, in cache; keeping them needs a second output of the forward (a (B, H, L, S) array per
layer through memory and back), which the op registry's single-output ops give only as a
flattened concatenation that the forward's caller would slice.
The blocks run on the pool with BLAS at one thread (as the forward's); each block is computed
by one thread in the same operations whatever the count, so results do not depend on it.
Where the kernel does not apply (other layouts of the leading dims, a mask that needs a
gradient, second-order gradients) the op's VJP or the reference take over.
"""

from __future__ import annotations

import math

import numpy as np

from ember.backend import attention_kernels as _ak
from ember.backend import numba_kernels, parallel, threads
from ember.backend import transformer_kernels as _tk

# one block's rows of the probabilities P (C, R, S) and of dP = g v^T: the dropped
# probabilities into `dropped` (threshold > 0), dP dropped alike and made the gradient of the
# scores q k^T in place (fused_softmax_grad's arithmetic). The dropout pass is a function of
# its own: inlined into the row loop, its code made LLVM compile the softmax gradient's loops
# 2.5x slower even where it did not run (12 heads x 64 x 64: 62 us against 25)
_GRAD_ROWS = """
@numba.njit
def drop_rows(p, dp, dropped, b, h0, heads, queries, seed, threshold, ks):
    C, R, n = p.shape
    zero = FLOAT(0.0)
    for c in range(C):
        wide_vectors()  # Note [Wide vectors] in transformer_kernels.py
        for i in range(R):
            pi = p[c, i]
            gi = dp[c, i]
            di = dropped[c, i]
            base = ((b * heads + h0 + c) * queries + i) * n
            for j in range(n):  # selects, no branch
                keep = kept(seed, base + j, threshold)
                di[j] = pi[j] * ks if keep else zero
                gi[j] = gi[j] * ks if keep else zero


def attention_grad_rows(p, dp, dropped, scale, b, h0, heads, queries, seed, threshold,
                        keep_scale):
    if threshold > 0:
        drop_rows(p, dp, dropped, b, h0, heads, queries, seed, threshold, FLOAT(keep_scale))
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
        body = _GRAD_ROWS.replace("FLOAT", "np.float32").replace("DOT", "dot32")
    else:
        dot = _tk._lanes("dot", "a, c", "np.float64(a[j]) * np.float64(c[j])")
        body = _GRAD_ROWS.replace("FLOAT", "np.float64").replace("DOT", "dot")
    return dot + _ak._KEEP + body


def _kernel(single: bool):
    """The compiled row pass of the backward (serial: blocks are the parallel work), or None."""
    if not numba_kernels.available():
        return None
    kernel = _KERNELS.get(single)
    if kernel is None:
        numba = numba_kernels._load()
        fn, on_disk = numba_kernels._define(
            numba, _tk._HEADER + _source(single), "attention_grad_rows"
        )
        kernel = numba.njit(nogil=True, cache=on_disk, error_model="numpy")(fn)
        _KERNELS[single] = kernel
    return kernel


def _blocks(batch, heads, queries, keys):
    """(b, h0, h1) blocks of whole heads, at most BLOCK_ELEMENTS scores each (at least one
    head)."""
    step = max(1, _ak.BLOCK_ELEMENTS // max(1, queries * keys))
    return [(b, h, min(heads, h + step)) for b in range(batch) for h in range(0, heads, step)]


def _product_transposed(a, b, out):
    """out = a @ b^T for stacks of matrices (views): NumPy's matmul (OpenBLAS) with b
    copied contiguous (Note [Attention training])."""
    np.matmul(a, np.ascontiguousarray(b.transpose(0, 2, 1)), out=out)


def _swapped_buffer(shape, dtype, flat):
    """`flat` as an array of `shape` (B, H, L, E) laid out (B, L, H, E) in memory."""
    batch, heads, rows, width = shape
    return flat.reshape(batch, rows, heads, width).transpose(0, 2, 1, 3)


def attention_grad(g, q, k, v, m, scale, seed, threshold, keep_scale):
    """The gradients of softmax(q k^T * scale + m) v (dropout as in `attention_kernels.
    attention`) with respect to q, k and v for the output gradient g, flattened and
    concatenated, each with dims -3 and -2 swapped (Note [Attention training]); None where
    the kernel does not apply. q (B, H, L, E) or (N, L, E), k (.., S, E), v (.., S, Ev), g
    (.., L, Ev), all with equal leading dims; m additive, broadcasting to the scores."""
    if q.ndim not in (3, 4) or k.ndim != q.ndim or v.ndim != q.ndim or g.ndim != q.ndim:
        return None
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        return None
    if g.shape != q.shape[:-1] + v.shape[-1:] or q.shape[-1] != k.shape[-1]:
        return None
    dtype = q.dtype
    if dtype not in _tk._FLOATS or any(x.dtype != dtype for x in (k, v, g)):
        return None
    queries, keys = q.shape[-2], k.shape[-2]
    size = math.prod(q.shape[:-2]) * queries * keys
    if size < _ak.COMPILED_MIN_SIZE or min(q.shape[-1], v.shape[-1]) == 0:
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
    probs_kernel, grad_kernel = _ak._kernel(dtype == np.float32), _kernel(dtype == np.float32)
    if probs_kernel is None or grad_kernel is None:
        return None
    q4, k4, v4, g4 = (x.reshape((1,) + x.shape) if x.ndim == 3 else x for x in (q, k, v, g))
    batch, heads = q4.shape[0], q4.shape[1]
    out = np.empty(q.size + k.size + v.size, dtype)
    gq = _swapped_buffer(q4.shape, dtype, out[: q.size])
    gk = _swapped_buffer(k4.shape, dtype, out[q.size : q.size + k.size])
    gv = _swapped_buffer(v4.shape, dtype, out[q.size + k.size :])

    def block(b, h0, h1):
        qs, ks, vs, gs = q4[b, h0:h1], k4[b, h0:h1], v4[b, h0:h1], g4[b, h0:h1]
        shape = (h1 - h0, queries, keys)
        probs, grads = np.empty(shape, dtype), np.empty(shape, dtype)
        _product_transposed(qs, ks, probs)
        probs_kernel(probs, m4, m is not None, scale, b, h0, 0, heads, queries, 0, 0, 1.0)
        _product_transposed(gs, vs, grads)
        dropped = np.empty(shape, dtype) if threshold > 0 else probs
        grad_kernel(
            probs, grads, dropped, scale, b, h0, heads, queries, seed, threshold, keep_scale
        )
        np.matmul(grads, ks, out=gq[b, h0:h1])
        np.matmul(grads.transpose(0, 2, 1), qs, out=gk[b, h0:h1])
        np.matmul(dropped.transpose(0, 2, 1), gs, out=gv[b, h0:h1])

    blocks = _blocks(batch, heads, queries, keys)
    n = parallel.num_threads()
    openblas = threads._find_blas() if n > 1 and len(blocks) > 1 else None
    if openblas:  # one BLAS thread per block, the blocks on n threads (Note [Attention blocks])
        openblas[0](1)
    try:
        parallel.run_chunks(block, blocks)
    finally:
        if openblas:
            openblas[0](n)
    return out
