"""The compiled kernel of `fused_feed_forward` (ember/ops/feed_forward.py): a Transformer
block's feed-forward, layer_norm(gelu(x W1^T + b1) W2^T + b2 + x), over blocks of rows.

Note [Row-blocked feed-forward]: BERT's BertIntermediate + BertOutput in inference, as
separate ops, make each layer's (tokens, intermediate) activation pass through memory four
times (the first product writes it, the bias + GELU pass reads and writes it, the second
product reads it), each op a fork-join over the threads, and each MKL product packs its
weight into MKL's panel layout again. This kernel packs W1 and W2 once per call
(`cblas_sgemm_pack`, Note [Packed weights] in ember/backend/mkl_packed.py; at 2 threads one
weight per thread), then runs blocks of `block_rows(rows)` rows, whole blocks per thread
(numba's threads, `prange` over the thread count, block t, t + n, ... on thread t): the first
packed product (`cblas_sgemm_compute`, sequential MKL) into the thread's (block, intermediate)
scratch, bias + GELU on it in place while it is in cache, the second packed product into the
output rows, then bias + residual + layer norm on each row. No Python runs between the parts
and the threads meet once after the packs and once at the end.
Each value is computed by the same float32 operations as the separate kernels: GELU's
`gelu_value(x + b)` (Note [Float32 GELU], Note [Float32 tanh GELU]), and the one-pass layer
norm's bias add, `row_stats` and normalisation (Note [Dropout, add and norm in one pass]);
the block cut depends on the row count only, so serial and parallel builds and every thread
count give the same bits (tests/ops/test_feed_forward.py). Against the separate ops the
products may differ in the last bits where MKL's packed and plain kernels do (within float
rounding; on this machine they agreed bit for bit at MiniLM's shapes).
Measured on the 2-core machine (one process, interleaved rounds, medians, ms, MiniLM's block
4096 x 384 -> 1536 -> 384; bench/bench_feed_forward.py; others loaded the machine): this op /
the modules (over 1024-row chunks) / transformers' modules: 1 thread 58.8 / 64.7 / 66.8, 2
threads 27.9 / 34.2 / 29.6. At 1 thread the op takes about the sum of its parts (products
24.0 + 23.3 ms at MKL's peak, GELU 2.7 ms), so its gain there is the packing and the passes it
saves, not the cache; at 2 threads the threads meet twice instead of around every op. Blocks
of 64 / 128 / 256 / 512 rows (prototype, packs kept between calls, against the modules): 1
thread 0.93 / 0.89 / 0.88 / 0.90, unpacked 1024-row blocks 0.94; packing at every call cost
~1% (0.876 -> 0.887 at 1 thread, 0.846 -> 0.858 at 2), so the op keeps no packs (nothing to
invalidate, the same path eager and compiled).
Only float32 operands, MKL's packed API loaded, numba, at least `MIN_ROWS` rows and
`COMPILED_MIN_SIZE` intermediate elements take the kernel; elsewhere `forward` returns None
and the op runs its decomposition's kernels one after another (ember/ops/feed_forward.py).
"""

from __future__ import annotations


import numpy as np

from ember.backend import blas, mkl_packed, numba_kernels
from ember.backend import transformer_kernels as _tk

__all__ = ["block_rows", "forward"]

BLOCK_ROWS = 256  # rows per block: its (256, 1536) float32 intermediate is 1.5 MB, in L2
# fewest rows the kernel takes: below, its packing per call costs what it saves (eager MiniLM
# blocks, op / modules at 1 thread: 128 rows 1.07, 192 1.06, 256 1.01; compiled MiniLM 1 x 64
# forwards, op / decomposition, 1.05 at 1 thread, 1.07 at 2; 1 x 128 1.02 and 0.99; Note [Feed-
# forward in one op] in ember/transformers/encoder_heads.py)
MIN_ROWS = 256
_ROW_ALIGN = 16

_SOURCE = """
def feed_forward_forward(pack, compute, x, w1, b1, w2, b2, lw, lb, eps, block, parts, p1, p2,
                         out):
    rows, d = x.shape
    n1 = b1.shape[0]
    # each weight packed once, for products of `block` rows (one weight per thread)
    for t in prange(2):
        if t == 0:
            pack(101, 162, 112, block, n1, d, 1.0, w1.ctypes.data, d, p1.ctypes.data)
        else:
            pack(101, 162, 112, block, d, n1, 1.0, w2.ctypes.data, n1, p2.ctypes.data)
    blocks = (rows + block - 1) // block
    x0, o0, a1, a2 = x.ctypes.data, out.ctypes.data, p1.ctypes.data, p2.ctypes.data
    for t in prange(parts):
        wide_vectors()
        h = np.empty((block, n1), np.float32)
        ha = h.ctypes.data
        summed = np.empty((1, d), np.float32)
        si = summed[0]
        for k in range(t, blocks, parts):
            lo = k * block
            m = min(rows, lo + block) - lo
            offset = lo * d * 4
            compute(101, 111, 151, m, n1, d, x0 + offset, d, a1, d, 0.0, ha, n1)
            for i in range(m):
                hi = h[i]
                for j in range(n1):
                    hi[j] = gelu_value(hi[j] + b1[j])
            compute(101, 111, 151, m, d, n1, ha, n1, a2, n1, 0.0, o0 + offset, d)
            for i in range(lo, lo + m):
                oi = out[i]
                xi = x[i]
                for j in range(d):
                    si[j] = oi[j] + b2[j]
                mean, rstd = row_stats(summed, x[i:i + 1], True, 0, d, eps)
                m32 = np.float32(mean)
                lo32 = np.float32(mean - np.float64(m32))
                r32 = np.float32(rstd)
                for j in range(d):
                    oi[j] = ((si[j] + xi[j] - m32) - lo32) * r32 * lw[j] + lb[j]
"""


def _group_source(approximate: bool):
    gelu = _tk._gelu_tanh32_source() if approximate else _tk._gelu32_source()
    return lambda: gelu + _tk.layer_norm32_source() + _SOURCE


_GROUPS = {}
for _approximate in ("none", "tanh"):
    _GROUPS[_approximate] = f"feed_forward32:{int(_approximate == 'tanh')}"
    _tk.register_group(_GROUPS[_approximate], _group_source(_approximate == "tanh"))

_F32 = np.dtype(np.float32)


def _functions():
    """MKL's pack and compute functions as pointers the kernel calls (its arguments), or
    None (no packed API). Passed as arguments, as blas.py's and mkl_packed.py's split kernels
    take theirs, the kernel stays in numba's disk cache."""
    loaded = mkl_packed._functions or (mkl_packed.available() and mkl_packed._functions)
    if not loaded:
        return None
    if _addresses[0] is not loaded:  # loaded again (mkl_packed.set_enabled)
        _, pack, compute = loaded
        _addresses[:] = [loaded, (blas.native_pointer(pack), blas.native_pointer(compute))]
    return _addresses[1]


_addresses: list = [None, None]  # [mkl_packed's functions, (pack, compute) pointers]


def block_rows(rows: int) -> int:
    """Rows per block for `rows` rows: `BLOCK_ROWS`, or fewer so that two threads get a block
    each; a function of the row count alone, so every thread count cuts alike (Note
    [Row-blocked feed-forward])."""
    half = -(-rows // 2)
    return min(BLOCK_ROWS, max(_ROW_ALIGN, -(-half // _ROW_ALIGN) * _ROW_ALIGN))


def forward(x, w1, b1, w2, b2, lw, lb, eps, approximate):
    """layer_norm(gelu(x w1^T + b1, approximate) w2^T + b2 + x) with weight lw and bias lb
    through the row-blocked kernel (Note [Row-blocked feed-forward]), or None where it does
    not apply."""
    if x.ndim == 0 or w1.ndim != 2 or w2.ndim != 2:
        return None
    d = x.shape[-1]
    n1 = w1.shape[0]
    rows = x.size // d if d else 0
    if rows < MIN_ROWS or rows * n1 < _tk.COMPILED_MIN_SIZE:
        return None
    if w1.shape != (n1, d) or w2.shape != (d, n1):
        return None
    if not all(a.dtype == _F32 for a in (x, w1, b1, w2, b2, lw, lb)):
        return None
    if approximate not in _GROUPS or not numba_kernels.available():
        return None
    functions = _functions()
    if functions is None:
        return None
    kernel = _tk._pick(_GROUPS[approximate], "feed_forward_forward", rows * n1)
    if kernel is None:
        return None
    numba_kernels.follow_budget()  # numba's count is per thread (Note [Per-thread numba count])
    xs = _tk._rows(x)
    w1, w2 = np.ascontiguousarray(w1), np.ascontiguousarray(w2)
    block = block_rows(rows)
    get_size = mkl_packed._functions[0]
    p1 = np.empty(get_size(mkl_packed._B_MATRIX, block, n1, d), np.uint8)
    p2 = np.empty(get_size(mkl_packed._B_MATRIX, block, d, n1), np.uint8)
    out = _tk.empty_apart(xs.shape, _F32, xs)
    pack, compute = functions
    # the threads numba runs the kernel's blocks on (numba.get_num_threads() inside a kernel
    # would keep it out of numba's disk cache); the serial build (a forked child, a busy
    # machine) runs them in one loop and must not start numba's threads
    serial = kernel is _tk._KERNELS.get((_GROUPS[approximate], "feed_forward_forward", False))
    parts = 1 if serial else numba_kernels._load().get_num_threads()
    kernel(pack, compute, xs, w1, _tk._plain(b1), w2, _tk._plain(b2), _tk._plain(lw),
           _tk._plain(lb), float(eps), block, parts, p1, p2, out)  # fmt: skip
    return out.reshape(x.shape)
