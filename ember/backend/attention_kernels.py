"""The fused CPU kernel of scaled-dot-product attention, registered by `ember.ops.fused`.

softmax(q k^T * scale + mask) v, dropout on the probabilities optional, computed a block of
(batch, head) slices at a time so that the scores never leave the cache: per block one BLAS
product q k^T, one compiled pass that scales, masks, exponentiates and sums each row (and
drops probabilities by the same hash as `fused_dropout`), one BLAS product with v written
straight into the (batch, query, head, dim) layout that the output projection reads, and a
row scaling by 1 / sum. No (B, H, L, S) tensor is allocated. The op's reference forward
(`ember.ops.fused._attention_forward`) is the spec (Note [Fused composites]).

Note [Attention blocks]: how the tile products are done was measured on this 2-core machine
(MiniLM layer: 32 x 12 heads, 128 x 128, head dim 32, float32, min of 7):
- the unfused path (batched matmul, the row-parallel softmax kernel, batched matmul): 17-19 ms
  at 1 thread, 12-15 ms at 2; the two GEMMs take 2.2 ms each, the (B, H, L, S) softmax pass 9.
- hand-written numba loops for both products (SIMD over the keys, then over the head dim, one
  query row or four at a time, scores in a row buffer): 41 and 29 ms at 1 thread, 23 and 16
  at 2: LLVM keeps the partial sums in memory, far from BLAS's register-blocked
  micro-kernels, even at K = 32.
- blocks of (batch, head) slices, each through np.matmul, the compiled row pass and np.matmul
  with OpenBLAS at one thread, run on ember's thread pool (Note [Parallel kernels]; numpy and
  the nogil kernel release the GIL): 16 ms at 1 thread, 10 at 2, bit-identical to the serial
  order (each block is computed by one thread in the same operations whatever the count).
  q k^T as one MKL batch call per block on the strided views (no copy of k^T) instead of
  np.matmul on a contiguous k^T was 3-9% less at 1 thread, 3-5% at 2 (MiniLM 32 x 128 layer,
  one process, 3 rounds of 9; since Note [Blocks on MKL], where MKL is installed, this path
  runs without MKL only, and that call is gone). P v stays on np.matmul: MKL's batch call
  refuses an output whose matrices interleave (the heads of (B, L, H, Ev)), and its products
  into a buffer plus a copy were slower.
  np.dot inside numba was not taken: it calls SciPy's own OpenBLAS, a second thread pool.
Where MKL is installed the blocks run from one compiled kernel instead (Note [Blocks on MKL]);
the pool's path above stays for NumPy's BLAS alone.
So a block is one batch item's heads (or fewer heads, or fewer query rows, when that exceeds
`BLOCK_ELEMENTS` scores), blocks run in parallel when `ember.set_num_threads(n > 1)`, and
BLAS runs at one thread meanwhile (the thread budget stays n: Note [Thread budget]).
Below `COMPILED_MIN_SIZE` scores the op runs two np.matmul products and a softmax pass between
them (Note [Small attention]); with dropout on few scores, its reference forward.
The row pass is one compiled function (no prange) that every thread runs on whole blocks, so
results do not depend on the thread count; it may reassociate the row sum (`_FAST_MATH`),
which LLVM then vectorises, without `nnan`/`ninf`, as masked scores are -inf. Its loops are
written for LLVM's vectoriser (Note [Vectorised rows] in transformer_kernels.py): exp (the
branch-free `exp_nonpositive`) and the float64 row sum in loops of their own (in one loop the
double sum made LLVM vectorise the exp 4 lanes wide), the row max over integer order keys in
the scale and mask loop (Note [Row max over order keys]; earlier 8 scalar lanes, and before that a
lane array in memory, a store-forwarding chain). A block of 12 heads x 128 x 128 float32
scores, 1 thread: 0.29-0.30 ms with the lane array, 0.16-0.20 ms (later measured 0.21-0.22)
with scalar lanes, 0.155-0.17 ms with order keys (NumPy's own AVX-512 np.exp over the same
scores alone takes 0.08 ms); `nnan` on a float max (LLVM's vector max reduction) was no
faster and loses NaN rows. The MiniLM layer (32 x 128) went from 18.1 to 14.3 ms at 1 thread.
The pass runs 16 float32 lanes (Note [Wide vectors] in transformer_kernels.py): its float64
row sum is reassociated, so its last bits depend on the vector width (on the tests' inputs
float32 results did not move, float64 ones by an ulp); every block runs the same code, so
thread counts still agree bit for bit.
Note [Blocks on MKL]: with MKL installed (Note [Small GEMMs] in blas.py) the blocks run in
`attention_blocks`, one numba kernel that loops (`prange`) over the blocks and calls MKL's
sequential cblas_?gemm through a function pointer, as blas.py's split products do (Note [Split
on numba's threads]): per head of a block q k^T into the block's scores (k read transposed
in place), the row pass above, inlined, and p v written straight into the (B, L, H, Ev) output,
whose rows of one head are a row-major matrix with leading dimension H * Ev (which MKL's batch
call, with one leading dimension for all, could not take). q, k and v are read as MKL
matrices where their last dim is unit-strided (the heads of MiniLM's joined Q/K/V product,
strided views of (B, L, 3, H, d), are), else copied first. No Python, no GIL, no pool hand-off
between blocks, and no OpenBLAS thread count to lower around them. A block's scores are an
array the kernel allocates, and MKL gets its address: numba frees an array after the last
statement that names it, so each call takes the address from the array (`scores.ctypes.data`)
rather than from a variable set once; with the address held in a variable, the p v products
read freed memory (a crash in the fresh-clone suite: a process whose allocator had returned
that memory to the system after TensorFlow's tf.data ran). Every block runs the same
calls whatever the thread count (blocks depend on the shapes alone), so 1 and n threads agree
bit for bit; the serial build (`range` for `prange`) runs in a forked child, on an overloaded
machine and at 1 thread, with the same bits. MiniLM's layer 32 x 128 on the joined heads with
its padding mask (quiet 2-core machine, one process, 9 rounds of 3 calls, medians):
1 thread 14.4 ms on the pool (np.matmul on OpenBLAS for p v) -> 12.3 ms, PyTorch's sdpa 14.9;
the same bits on these inputs (each element of p v is one length-S dot product either way).
Inside MiniLM's 32 x 128 forward (bench/profile_minilm.py, one process each, same machine
state): 80 -> 60 ms a forward at 1 thread (PyTorch's sdpa 77-80), 39 -> 29 ms at 2 (35-40).
Query blocks that keep a head's scores in L1 (32 or 64 rows of one head per block) were slower
(13.0 and 13.7 ms: twice or four times the ?gemm calls, each with its packing), as were blocks
of one head (12.5 ms). Not taken either (one process, same inputs): the row pass over scores
laid out (keys, heads, queries), `small_probs`'s vertical loops without horizontal reductions
(a block 172 us against 153: every pass then streams the block from L2, where the row pass
keeps a row in L1 across its loops); exp and a float32 sum in one loop (no faster); cutting
the trailing padded keys of a block (exact where the mask lies so far below the row's max
that exp gives 0 whatever the scores, bounded by the rows' norms, and the values are finite):
with half of a 32 x 128 batch padded by a quarter, 1 thread 13.5 -> 13.0 ms (the norm bounds
cost ~35 us a block of the ~90 saved), 2 threads 6.0 -> 6.8 ms (prange's static halves then
hold unequal work).
Backward: the op saves only its inputs and its VJP recomputes the probabilities (flash
attention's way). At the fine-tuning shape (16 x 12 heads, 128 x 128, 1 thread) forward +
backward took 52-58 ms that way against 34-48 ms for the decomposition, which keeps the
probabilities (its backward needs no second q k^T and softmax pass, and the row-parallel
softmax kernel of the recomputation is the slow part). Training now takes the op with
`keep=True`, whose kernel keeps the probabilities and whose backward is one blocked op
(Note [Attention training] in attention_train_kernels.py). The op's in-kernel
dropout draws the same bits as `fused_dropout` on the (.., L, S) probabilities, so all paths
drop alike.
"""

from __future__ import annotations

import math

import numpy as np

from ember.backend import blas, numba_kernels, parallel, threads
from ember.backend import transformer_kernels as _tk

COMPILED_MIN_SIZE = 1 << 16
BLOCK_ELEMENTS = 1 << 18  # scores per block: 1 MiB of float32, in L2

_KEEP = """
@numba.njit(inline="always")
def kept(seed, index, threshold):
    # fused_dropout's keep test of flat element `index` (Note [Fused Transformer ops])
    z = np.uint64(seed) + np.uint64(index + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)) >= np.uint64(threshold)
"""

# rows of one block in place: the probabilities exp(s * scale + mask - max) / sum, dropped
# where fused_dropout's hash says so and the kept ones times keep_scale
_PROBS = """
def attention_probs(s, m, has_mask, scale, b, h0, i0, heads, queries, seed, threshold,
                    keep_scale):
    # s: (C, R, S) the scores of heads h0 .. h0 + C of batch item b, query rows i0 .. i0 + R;
    # m: (mb, mh, ml, ms), each 1 or the full dim
    C, R, n = s.shape
    mb, mh, ml, ms = m.shape
    sc = FLOAT(scale)
    ib = b if mb > 1 else 0
    for c in range(C):
        wide_vectors()  # Note [Wide vectors] in transformer_kernels.py
        h = h0 + c
        ih = h if mh > 1 else 0
        for r in range(R):
            i = i0 + r
            row = s[c, r]
            mi = m[ib, ih, i if ml > 1 else 0]
            # the row's max as the largest order key, in the pass that scales and masks
            # (Note [Row max over order keys])
            top = KEY_LOWEST
            if has_mask and ms > 1:
                for j in range(n):
                    x = row[j] * sc + mi[j]
                    row[j] = x
                    key = order_key(x)
                    top = key if key > top else top
            elif has_mask:
                mv = mi[0]
                for j in range(n):
                    x = row[j] * sc + mv
                    row[j] = x
                    key = order_key(x)
                    top = key if key > top else top
            else:
                for j in range(n):
                    x = row[j] * sc
                    row[j] = x
                    key = order_key(x)
                    top = key if key > top else top
            largest = key_value(top)
            # exp and sum in loops of their own: with the float64 sum in the exp loop LLVM
            # vectorised it 4 lanes wide (Note [Attention blocks])
            for j in range(n):
                row[j] = EXP(row[j] - largest)
            total = 0.0
            for j in range(n):
                total += row[j]
            inverse = FLOAT(keep_scale / total)
            if threshold > 0:
                base = ((b * heads + h) * queries + i) * n
                for j in range(n):
                    row[j] = row[j] * inverse if kept(seed, base + j, threshold) else 0.0
            else:
                for j in range(n):
                    row[j] = row[j] * inverse
"""


# exp of x <= 0 (x - the row's max), NaN or -inf: exp32 (Note [Vectorised rows] in
# ember/backend/transformer_kernels.py) without the selects for large x, 0 below -87
_EXP_NONPOSITIVE = """
@numba.njit(inline="always")
def exp_nonpositive(x):
    z = max(x, EXP_LO32)
    n = np.floor(z * LOG2E32 + HALF32)
    r = z - n * LN2_HI32
    r = r - n * LN2_LO32
    p = ((((EXP_P0 * r + EXP_P1) * r + EXP_P2) * r + EXP_P3) * r + EXP_P4) * r + EXP_P5
    y = p * (r * r) + r + ONE32
    y = y * np.int32(np.int32(n + BIAS32) << 23).view(np.float32)
    return ZERO32 if x < EXP_LO32 else y
"""


def _source(single: bool) -> str:
    if single:
        head = _tk._EXP32 + _EXP_NONPOSITIVE
        body = _PROBS.replace("FLOAT", "np.float32").replace("EXP", "exp_nonpositive")
    else:
        head = ""
        body = _PROBS.replace("FLOAT", "np.float64").replace("EXP", "math.exp")
    return head + _tk._ORDER_KEYS[single] + _KEEP + body


# Note [Small attention]: below COMPILED_MIN_SIZE scores (a short request: MiniLM 1 x 16 is 12
# heads of 16 x 16) the op computes the scores with one np.matmul, k . q into the layout (keys,
# batch, heads, queries), and the output with another; between them the softmax runs over
# axis 0 of that layout, so that every loop runs along the queries (or, where the mask is one
# row per batch item, along heads x queries) instead of along rows of 16 keys. For float32 the
# softmax is one compiled pass, `small_probs` (scale, mask and the max over keys; exp32 of Note
# [Vectorised rows]; the float64 sum over keys one key after another; times float32(1 / sum)),
# whose NumPy twin `_small_probs_exact` performs the same operations in the same order, so a
# process computes the same bits before the kernel has loaded (Note [Kernel-exact small paths]
# in transformer_kernels.py: the same background warm-up) and after (tests/ops/
# test_attention.py); float64 keeps NumPy's passes of the reference's operations. MiniLM's 1 x
# 16 layer, 1 thread, `attention()` (quiet machine, min of 5 x 5000): 27 us with NumPy's seven
# passes (scale, mask, max, subtract, exp, sum, divide: 11 us of it) -> 17.7 us with the
# kernel, of which the two products take 7 (PyTorch's sdpa 17-19 us in the same runs). The
# dot products are k . q instead of q . k: equal within rounding.
# the probabilities in place: s (keys, P, W), the softmax over axis 0 of s * scale + m, with m
# (pm, wm, sm) each 1 or s's dim (the mask's last dim runs over the keys)
_SMALL_PROBS = """
def small_probs(s, m, scale, top, total):
    # top (P, W) float32 and total (P, W) float64: scratch
    ns, np_, nw = s.shape
    pm, wm, sm = m.shape
    sc = np.float32(scale)
    lowest = np.float32(-np.inf)
    for p in range(np_):
        for w in range(nw):
            top[p, w] = lowest
            total[p, w] = 0.0
    for j in range(ns):
        jm = j if sm > 1 else 0
        for p in range(np_):
            wide_vectors()  # Note [Wide vectors] in transformer_kernels.py
            row = s[j, p]
            tp = top[p]
            mp = m[p if pm > 1 else 0]
            if wm > 1:
                for w in range(nw):
                    x = row[w] * sc + mp[w, jm]
                    row[w] = x
                    tp[w] = x if x > tp[w] else tp[w]
            else:
                mv = mp[0, jm]
                for w in range(nw):
                    x = row[w] * sc + mv
                    row[w] = x
                    tp[w] = x if x > tp[w] else tp[w]
    for j in range(ns):
        for p in range(np_):
            wide_vectors()
            row = s[j, p]
            tp = top[p]
            tt = total[p]
            # exp and the float64 sum in loops of their own (Note [Attention blocks])
            for w in range(nw):
                row[w] = exp32(row[w] - tp[w])
            for w in range(nw):
                tt[w] += row[w]
    for p in range(np_):
        tp = top[p]
        tt = total[p]
        for w in range(nw):
            tp[w] = np.float32(1.0 / tt[w])  # top now holds 1 / sum
    for j in range(ns):
        for p in range(np_):
            wide_vectors()
            row = s[j, p]
            tp = top[p]
            for w in range(nw):
                row[w] = row[w] * tp[w]
"""
SMALL_GROUP = "attention_small32"
_tk.register_group(SMALL_GROUP, lambda: _tk._EXP32 + _SMALL_PROBS)

_KERNELS: dict = {}
# reassociation lets LLVM vectorise the row sum; no `nnan`/`ninf`: masked scores are -inf
# (Note [Attention blocks])
_FAST_MATH = {"reassoc", "nsz", "contract"}


def _kernel(single: bool):
    """The compiled row pass (serial: blocks are the unit of parallel work), or None."""
    if not numba_kernels.available():
        return None
    kernel = _KERNELS.get(single)
    if kernel is None:
        numba = numba_kernels._load()
        fn, on_disk = numba_kernels._define(numba, _tk._HEADER + _source(single), "attention_probs")
        kernel = numba.njit(nogil=True, cache=on_disk, error_model="numpy", fastmath=_FAST_MATH)(fn)
        _KERNELS[single] = kernel
    return kernel


def _blocks(batch, heads, queries, keys):
    """(b, h0, h1, i0, i1) blocks of at most BLOCK_ELEMENTS scores (at least one row)."""
    per_head = queries * keys
    if per_head <= BLOCK_ELEMENTS:
        step = max(1, BLOCK_ELEMENTS // per_head)
        return [
            (b, h, min(heads, h + step), 0, queries)
            for b in range(batch)
            for h in range(0, heads, step)
        ]
    rows = max(1, BLOCK_ELEMENTS // keys)
    return [
        (b, h, h + 1, i, min(queries, i + rows))
        for b in range(batch)
        for h in range(heads)
        for i in range(0, queries, rows)
    ]


def attention(q, k, v, m, scale, seed, threshold, keep_scale):
    """softmax(q k^T * scale + m) v with dropout (threshold > 0: fused_dropout's keep test
    with `seed`, kept values times keep_scale), or None where the kernel does not apply.
    q (B, H, L, E) or (N, L, E), k (.., S, E), v (.., S, Ev) with equal leading dims; m
    additive, broadcasting to the scores. The result has q's leading dims and (L, Ev), laid
    out as (B, L, H, Ev) in memory (Note [Attention blocks])."""
    if q.ndim not in (3, 4) or k.ndim != q.ndim or v.ndim != q.ndim:
        return None
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        return None
    if q.shape[-1] != k.shape[-1] or q.dtype not in _tk._FLOATS:
        return None
    if k.dtype != q.dtype or v.dtype != q.dtype or (m is not None and m.dtype != q.dtype):
        return None
    lead = q.shape[:-2]
    queries, keys, width = q.shape[-2], k.shape[-2], v.shape[-1]
    size = math.prod(lead) * queries * keys
    if width == 0 or q.shape[-1] == 0 or size == 0:
        return None
    if size < COMPILED_MIN_SIZE and threshold > 0:
        return None
    if m is not None:
        if m.ndim > 4 or m.shape[-1] not in (1, keys):
            return None
        m4 = m.reshape((1,) * (4 - m.ndim) + m.shape)
        if q.ndim == 3:
            target = (1,) + q.shape[:-2] + (queries, keys)
        else:
            target = q.shape[:-2] + (queries, keys)
        for md, td in zip(m4.shape, target):  # a loop, not a generator: ~1 us a short call
            if md != 1 and md != td:
                return None
    if size >= COMPILED_MIN_SIZE and not numba_kernels.available():
        return None
    q4 = q.reshape((1,) + q.shape) if q.ndim == 3 else q
    k4 = k.reshape((1,) + k.shape) if k.ndim == 3 else k
    v4 = v.reshape((1,) + v.shape) if v.ndim == 3 else v
    batch, heads = q4.shape[0], q4.shape[1]
    buffer = np.empty((batch, queries, heads, width), q.dtype)
    out = buffer.transpose(0, 2, 1, 3)  # (B, H, L, Ev) view
    if size < COMPILED_MIN_SIZE:
        _small(q4, k4, v4, None if m is None else m4, scale, out)
        return out if q.ndim == 4 else out[0]
    if m is None:
        m4 = np.zeros((1, 1, 1, 1), q.dtype)
    blocks = _blocks(batch, heads, queries, keys)
    if _blocks_on_mkl(q4, k4, v4, m4, m is not None, scale, buffer, blocks, seed, threshold,
                      keep_scale):  # fmt: skip
        return out if q.ndim == 4 else out[0]
    kernel = _kernel(q.dtype == np.float32)
    if kernel is None:
        return None

    def block(b, h0, h1, i0, i1):
        # k^T made contiguous for NumPy (np.matmul is ~4x slower on a transposed view)
        qs, kt = q4[b, h0:h1, i0:i1], k4[b, h0:h1].transpose(0, 2, 1)
        scores = np.empty((h1 - h0, i1 - i0, keys), q.dtype)
        np.matmul(qs, np.ascontiguousarray(kt), out=scores)
        kernel(
            scores, m4, m is not None, scale, b, h0, i0, heads, queries,
            seed, threshold, keep_scale,
        )  # fmt: skip
        np.matmul(scores, v4[b, h0:h1], out=out[b, h0:h1, i0:i1])

    on_blocks(block, blocks)
    return out if q.ndim == 4 else out[0]


def on_blocks(block, blocks):
    """block(*b) for every b in `blocks` on the pool, one BLAS thread per block, the blocks on
    n threads (Note [Attention blocks])."""
    n = parallel.num_threads()
    openblas = threads._find_blas() if n > 1 and len(blocks) > 1 else None
    if openblas:
        openblas[0](1)
    try:
        parallel.run_chunks(block, blocks)
    finally:
        if openblas:
            openblas[0](n)


# the blocks of `attention` as one compiled kernel that calls MKL's ?gemm by function pointer
# (Note [Blocks on MKL])
_BLOCKS_ON_MKL = """
block_probs = numba.njit(inline="always")(attention_probs)


def attention_blocks(gemm, q, qs, k, ks, v, vs, out, m, has_mask, scale, blocks, heads, queries,
                     keys, dim, width, seed, threshold, keep_scale):
    # q, k, v, out: addresses of the first elements; qs, ks, vs: (batch, head, row) strides in
    # elements of the (B, H, rows, cols) operands; out: (B, L, H, Ev) C-contiguous; blocks:
    # rows (b, h0, h1, i0, i1)
    item = ITEM
    for t in prange(blocks.shape[0]):
        b, h0, h1, i0, i1 = blocks[t, 0], blocks[t, 1], blocks[t, 2], blocks[t, 3], blocks[t, 4]
        rows = i1 - i0
        scores = np.empty((h1 - h0, rows, keys), FLOAT)
        # the address is taken from the array at each call, never kept in a variable: numba
        # frees an array after the last statement that names it, so MKL would read freed
        # memory after the row pass if only an address named it (Note [Blocks on MKL])
        for c in range(h1 - h0):  # scores of head h: q[b, h, i0:i1] @ k[b, h]^T
            h = h0 + c
            at = q + item * (b * qs[0] + h * qs[1] + i0 * qs[2])
            gemm(101, 111, 112, rows, keys, dim, 1.0, at, qs[2],
                 k + item * (b * ks[0] + h * ks[1]), ks[2], 0.0,
                 scores.ctypes.data + item * c * rows * keys, keys)
        block_probs(scores, m, has_mask, scale, b, h0, i0, heads, queries, seed, threshold,
                    keep_scale)
        for c in range(h1 - h0):  # out[b, i0:i1, h] = p @ v[b, h]: rows heads * width apart
            h = h0 + c
            gemm(101, 111, 111, rows, width, keys, 1.0,
                 scores.ctypes.data + item * c * rows * keys, keys,
                 v + item * (b * vs[0] + h * vs[1]), vs[2], 0.0,
                 out + item * ((b * queries + i0) * heads + h) * width, heads * width)
"""
_MKL_KERNELS: dict = {}


def _mkl_kernel(dtype, in_parallel: bool):
    """(compiled `attention_blocks` for `dtype`, MKL's ?gemm as a function pointer), or None
    without MKL or numba (Note [Blocks on MKL]); the serial build has `range` for `prange`."""
    key = (dtype, in_parallel)
    entry = _MKL_KERNELS.get(key)
    if entry is None:
        if not numba_kernels.available():
            return None
        gemms = blas._load()
        if not gemms or dtype not in gemms:
            return None
        single = dtype == np.float32
        source = (
            _tk._HEADER
            + _source(single)
            + _BLOCKS_ON_MKL.replace("FLOAT", "np.float32" if single else "np.float64").replace(
                "ITEM", str(dtype.itemsize)
            )
        )
        if not in_parallel:
            source = source.replace(" in prange(", " in range(")
        kernel = numba_kernels.jit_source(
            source, "attention_blocks", fastmath=_FAST_MATH, parallel=in_parallel
        )
        if kernel is None:
            return None
        entry = _MKL_KERNELS[key] = (kernel, blas.native_pointer(gemms[dtype]))
    return entry


def _mkl_layout(x):
    """x (B, H, rows, cols) and the strides in elements (batch, head, row) with which MKL reads
    each x[b, h] as a row-major matrix: x itself where its layout allows (the heads of a joined
    projection are such views), else a C-contiguous copy."""
    item = x.itemsize
    rows, cols = x.shape[2], x.shape[3]
    sb, sh, sr, sc = x.strides
    row = sr // item if rows > 1 else cols
    if (cols > 1 and sc != item) or min(sb, sh, sr) < 0 or (sb | sh | sr) % item or row < cols:
        x = np.ascontiguousarray(x)
        sb, sh, sr, _ = x.strides
        row = cols
    return x, np.array([sb // item, sh // item, row], np.int64)


def _blocks_on_mkl(q, k, v, m, has_mask, scale, out, blocks, seed, threshold, keep_scale):
    """Run the blocks (rows of `_blocks`) with q, k, v (B, H, rows, cols) into `out` (B, L, H,
    Ev) through `attention_blocks` (Note [Blocks on MKL]); False, nothing written, where MKL
    or numba is missing."""
    in_parallel = (
        parallel.threads_here() > 1  # a serve worker's own count (Note [Per-thread pool count])
        and len(blocks) > 1
        and not parallel.in_forked_child()
        and not parallel.overloaded()
    )
    entry = _mkl_kernel(q.dtype, in_parallel)
    if entry is None:
        return False
    kernel, gemm = entry
    (q, qs), (k, ks), (v, vs) = _mkl_layout(q), _mkl_layout(k), _mkl_layout(v)
    if in_parallel:
        numba_kernels.follow_budget()  # numba's count is per thread (Note [Per-thread numba count])
    kernel(
        gemm, q.ctypes.data, qs, k.ctypes.data, ks, v.ctypes.data, vs, out.ctypes.data, m,
        has_mask, scale, np.array(blocks, np.int64), q.shape[1], q.shape[2], k.shape[2],
        q.shape[3], v.shape[3], seed, threshold, keep_scale,
    )  # fmt: skip
    return True


def _small(q, k, v, m, scale, out):
    """softmax(q k^T * scale + m) v for few scores (Note [Small attention]), written to `out`."""
    batch, heads, queries = q.shape[0], q.shape[1], q.shape[2]
    keys = k.shape[2]
    scores = np.empty((keys, batch, heads, queries), q.dtype)
    np.matmul(k, q.swapaxes(-1, -2), out=scores.transpose(1, 2, 0, 3))
    if q.dtype == np.float32:
        _small_probs(scores, m, scale)
    else:
        flat = scores.reshape(keys, -1)
        np.multiply(flat, flat.dtype.type(scale), out=flat)
        if m is not None:
            scores += m.transpose(3, 0, 1, 2)
        with np.errstate(invalid="ignore"):  # a row of -inf gives NaN, as in the reference
            flat -= flat.max(axis=0)
            np.exp(flat, out=flat)
            flat /= flat.sum(axis=0)
    np.matmul(scores.transpose(1, 2, 3, 0), v, out=out)


def _small_probs(scores, m, scale):
    """The float32 scores (keys, B, H, L) made probabilities in place by `small_probs`, or by
    its NumPy twin until the kernel has loaded (Note [Small attention])."""
    keys, batch, heads, queries = scores.shape
    if m is None:
        s3, m3 = scores.reshape(keys, 1, -1), _NO_MASK
    elif m.shape[1] == 1 and m.shape[2] == 1:  # one mask row per batch item (key padding)
        s3, m3 = scores.reshape(keys, batch, -1), m.reshape(m.shape[0], 1, m.shape[3])
    else:
        s3 = scores.reshape(keys, batch * heads, queries)
        if (m.shape[0], m.shape[1]) in ((batch, heads), (1, 1)):
            m3 = m.reshape(-1, m.shape[2], m.shape[3])
        else:
            m3 = np.broadcast_to(m, (batch, heads) + m.shape[2:]).reshape(-1, *m.shape[2:])
    m3 = _tk._plain(m3)
    kernel = _tk._small_kernel(SMALL_GROUP, "small_probs", _F32, _small_example)
    if kernel is None:
        _small_probs_exact(s3, m3, scale)
        return
    kernel(s3, m3, float(scale), *_small_scratch(s3.shape[1:]))


_F32 = np.dtype(np.float32)
_NO_MASK = np.zeros((1, 1, 1), _F32)


def _small_example():
    """Arguments of the types `_small_probs` passes the kernel (the warm-up's)."""
    return np.zeros((2, 1, 8), _F32), np.zeros((1, 1, 2), _F32), 1.0, *_small_scratch((1, 8))


def _small_scratch(width):
    """`small_probs`'s scratch: the running max (then 1 / sum) and the sum per column."""
    return np.empty(width, _F32), np.empty(width)


def _small_probs_exact(s, m, scale):
    """`small_probs` in NumPy: its float32 operations in its order, the sums over keys in
    float64 one key after another (Note [Kernel-exact small paths] in transformer_kernels.py)."""
    x = s * np.float32(scale)
    x += m.transpose(2, 0, 1)
    with np.errstate(invalid="ignore"):  # inf - inf and NaN scores give NaN, as in the kernel
        top = np.fmax.reduce(x, axis=0, initial=-np.inf)
        e = _tk._exp32(x - top)
    # NumPy reduces over the leading axis of a contiguous 2-D array one row after another
    total = np.add.reduce(e.astype(np.float64).reshape(len(e), -1), axis=0, initial=0.0)
    inverse = (1.0 / total).astype(np.float32).reshape(top.shape)
    np.multiply(e, inverse, out=s)
