"""The CPU matrix product behind `xp.matmul`: Intel MKL for 2-D float products where installed,
NumPy's BLAS for the rest.

Note [Small GEMMs]: a Transformer answering one short request multiplies matrices of a few
rows (one per token: 16 x 384 @ 384 x 1536) by large weights, and there OpenBLAS (NumPy's
BLAS in the PyPI wheels) takes ~1.8x the time of Intel MKL (what PyTorch's CPU build uses):
OpenBLAS packs the whole weight for every call, which costs as much as the product when the
rows are few. A compiled (numba) small-row kernel (4 rows per weight-row load, fastmath)
reached 0.35-0.55x of OpenBLAS's speed at these shapes, so it is no option.

So `matmul` sends a 2-D float32/float64 product with at least `MKL_MIN_ROWS` rows and
m * n * max(k, 16) >= `MKL_MIN_WORK` to MKL's `cblas_?gemm` through ctypes, and everything
else to `numpy.matmul`. MKL is the PyPI
`mkl` wheel (the `mkl` extra, also in `test`: Intel Simplified Software License, ~730 MB
installed with its dependencies), found lazily, on the first product that qualifies (~6 ms),
in the environment's `lib` folder or at `EMBER_MKL_LIBRARY`; `import ember` never loads it.
`EMBER_BLAS` chooses: `auto` (the default: MKL when installed), `mkl` (the same, warning
when it cannot be loaded), `openblas` (NumPy's BLAS only). Measured on the quiet 2-core
machine (Xeon, AVX-512), float32, min of 5 rounds, bench/bench_matmul_small.py (ember's
dispatch, NumPy and PyTorch on the same operands in one process), 1 thread, ember / torch:
- 16 rows (MiniLM 1 x 16) x @ W.T: 1.00-1.10 (OpenBLAS 1.7-2.1); 60 rows (5 x 12): 0.99-1.08
  (OpenBLAS 1.25-1.4); MNIST MLP 64 x 784 @ 784 x 128: 1.00 (OpenBLAS 1.45), its weight
  gradient 128 x 64 @ 64 x 784: 1.11 (1.29); batch 1's 128 x 1 @ 1 x 784: 1.6 (NumPy takes
  its slow non-BLAS loop for K = 1: 14x torch's time).
- 2048-4096 rows (MiniLM 32 x 128, the fine-tuning step's forward and both backward
  products, transposed operands included): all three within 6% one product at a time; MKL
  0.98-1.01x PyTorch, OpenBLAS 1.00-1.07x. Inside MiniLM's forward (32 x 128, one process,
  interleaved, 7 rounds, min) ember took 693 ms with these on OpenBLAS and 666 ms on MKL at 1
  thread, 399 and 374 ms at 2 (PyTorch 653 and 333); the fine-tuning step 16 x 128 was level
  (1200 / 1207 ms at 1 thread, 734 / 740 at 2). Other shapes, 1 / 2 threads, MKL / OpenBLAS:
  1024^3 0.96 / 1.02, 2048^3 0.99 / 1.01, convolution-like 12544 x 288 @ 288 x 64 0.90 /
  0.88, 50176 x 27 @ 27 x 64 0.91 / 0.80, 64 x 12544 @ 12544 x 288 0.73 / 0.84; 256^3 and
  512^3 at 2 threads 1.05. So products of any row count above one go to MKL.
- Tiny products (the MLP's 64 x 128 @ 128 x 10 and its gradients, ~2 us in NumPy) stay on
  NumPy: the ctypes call and checks cost ~7 us, hence `MKL_MIN_WORK`; one row is a GEMV, where
  OpenBLAS is as fast as PyTorch (1 x 784 @ 784 x 128: 5.0 us against 7.3).
MKL runs with its sequential threading layer: it starts no thread pool. With n > 1 threads a
product of at least `SPLIT_MIN_WORK` splits into n blocks (cut at multiples of 64) that
ember's own pool (ember/backend/parallel.py; its workers sleep, never spin) or numba's threads
(Note [Split on numba's threads]) run as n
sequential MKL calls: a product of up to `FEW_ROWS` (128) rows by its columns, a larger one by
its rows (each thread its rows of a and of the result; 2048-4096 rows: 0.96-1.06x PyTorch at
2 threads, OpenBLAS's threads 0.95-1.12x), or by its columns where the row blocks would be
thin. Each output element is then computed by the same kernel over the same K values as in
one call, so the results equal the 1-thread ones bit for bit (tested), and no third thread
runtime competes with OpenBLAS's and numba's for the cores (Note [Thread budget]). That holds
for blocks of at least `MIN_BLOCK` (192) rows or columns: MKL takes another kernel, with
another summation order, for a call of up to ~160 rows when K is large (g.T @ x with
K = 2048: every block of 1-160 rows differed from the same rows of one call, none of 192-768
did), and the same for blocks of 64-128 columns from a few hundred rows on. A product above
`FEW_ROWS` rows whose row and column blocks would both be thinner (384 x 384 at 3 threads)
runs on OpenBLAS's threads. MKL's own threading layers were measured too (2 threads, torch in
the process):
the GNU one (libgomp; PyTorch's own, with PyTorch's wait policy, where PyTorch loaded it)
matched PyTorch at every shape but is one more pool beside OpenBLAS's and numba's, and its
2-thread results differed from its 1-thread ones; the Intel one (libiomp5, whose workers spin
200 ms after a product) was 1.6-2.2x slower than PyTorch from 60 rows on and made products
run beside it on ember's pool 1.6-2.8x slower; the TBB one did not load (libtbb.so.12 is not
on the loader's path). MiniLM forwards, ember alone in one process, 2 threads,
OpenBLAS / one sequential MKL call / MKL split over the pool (min ms): 1 x 16 14.9 / 14.0 /
13.0, 5 x 12 15.7 / 18.7 / 14.2, 4 x 32 24.3 / 28.9 / 21.9; at 1 thread 17.1 / 13.2, 19.5 /
15.9, 32.5 / 26.6 (OpenBLAS / MKL).

MKL's packed-weight API (cblas_sgemm_pack once, cblas_sgemm_compute per call) is not used
here: at 1 thread it takes 0.54-0.73x PyTorch's time at 16 rows, 0.78-0.86x at 60 and 0.87x
for the MLP's 64 x 784 @ 784 x 128, nothing at thousands of rows, but it needs a cache that
every in-place write to a weight invalidates (the optimizers bump the Tensor's version
counter, but a write through `.numpy()` bypasses it), which this dispatch, seeing bare
arrays, cannot know: eager inference keys it at the linear op, by Tensor and version (Note
[Packed weights] in ember/backend/mkl_packed.py).

Determinism: MKL runs in its conditional numerical reproducibility mode (`MKL_CBWR_AUTO`, set
before its first computation, no measurable cost), whose results do not depend on the
operands' memory alignment (tested at offsets of 4-48 bytes; none differed on this machine
without it either). Results differ from NumPy's only by float rounding: each element is a
length-K dot product in another summation order, so |mkl - numpy| <= 2 K eps sum|a_ik b_kj|
(tests/ops/test_blas.py checks that bound against a float64 product).

An earlier session made MKL opt-in because, with PyTorch in the process, loading it seemed to
slow OpenBLAS's own products 2-20x (MiniLM 16 x 20: 1.8 s against 0.3 s). It does not
reproduce on the quiet machine, neither now nor at that commit: MKL's sequential layer maps
libmkl_rt, _core, _sequential, _intel_lp64 and the AVX-512 kernels, no OpenMP runtime, and
starts no thread (the process's thread count and each thread's CPU time are unchanged);
OpenBLAS's 2-thread products with torch loaded took 565 / 1888 us (128 x 384 @ 384 x 1536,
512 x 1536 @ 1536 x 384) before loading MKL and 576 / 2107 us after, and at that commit
MiniLM 16 x 20 took 55 ms without MKL and 62 ms with it (torch 43 and 47 ms in the same
processes). That measurement ran before the CPU lock, on a machine loaded by other jobs,
while OpenBLAS's workers still spun 0.13 s after each GEMM (Note [BLAS spin]) and numba's
kernels ran on PyTorch's spinning OpenMP workers (Note [Own OpenMP]); those, not MKL, are the
likely cause.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
import warnings

import numpy as np

from ember._util.env import flag
from ember.backend import parallel

__all__ = ["matmul", "mkl_available", "blas_choice"]

MKL_MIN_ROWS = 2  # one row is a GEMV, where OpenBLAS is as fast
MKL_MIN_WORK = 1 << 18  # m * n * max(k, 16) below which the ctypes call costs more than it saves
SPLIT_MIN_WORK = 1 << 21  # m * k * n below which one sequential call beats the pool hand-off
FEW_ROWS = 128  # up to here n threads take column blocks of any width (Note [Small GEMMs])
MIN_BLOCK = 192  # above FEW_ROWS, the fewest rows or columns a thread's block may have
_SPLIT_ALIGN = 64  # blocks start at multiples of 64 rows or columns (whole SIMD panels)

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
_CBWR_AUTO = 2  # MKL_CBWR_AUTO: the ISA's code path with alignment-independent results

_mkl = None  # {dtype: cblas function} once loaded; False when MKL is absent or turned off
_batched = {}  # {dtype: cblas ?gemm_batch_strided} where MKL has it (Note [Strided batches])
_library = None  # the loaded libmkl_rt (ctypes.CDLL), for ember/backend/mkl_packed.py
_threads = 1


def blas_choice() -> str:
    """`EMBER_BLAS`: "auto" (MKL for few-row products when installed; the default), "mkl"
    (the same, warning when MKL cannot be loaded) or "openblas" (NumPy's BLAS only)."""
    value = os.environ.get("EMBER_BLAS", "").strip().lower() or "auto"
    if value == "numpy":
        value = "openblas"
    if value not in ("auto", "mkl", "openblas"):
        raise ValueError(f"EMBER_BLAS: expected 'auto', 'mkl' or 'openblas', got {value!r}")
    return value


def _library_paths() -> list:
    explicit = os.environ.get("EMBER_MKL_LIBRARY")
    if explicit:
        return [explicit]
    folders = [os.path.join(sys.prefix, "lib")]
    if sys.base_prefix != sys.prefix:
        folders.append(os.path.join(sys.base_prefix, "lib"))
    paths = []
    for folder in folders:
        paths += sorted(glob.glob(os.path.join(folder, "libmkl_rt.so*")), reverse=True)
    return paths


def _load():
    """The cblas functions of MKL, or False (Note [Small GEMMs])."""
    global _mkl, _library
    if _mkl is not None:
        return _mkl
    _mkl = False
    choice = blas_choice()
    if choice == "openblas":
        return _mkl
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_SEQUENTIAL))
            lib.MKL_CBWR_Set(ctypes.c_int(_CBWR_AUTO))  # before MKL's first computation
        except (OSError, AttributeError):
            continue
        table = {}
        for dtype, name, scalar in (
            (np.float32, "cblas_sgemm", ctypes.c_float),
            (np.float64, "cblas_dgemm", ctypes.c_double),
        ):
            fn = getattr(lib, name)
            fn.restype = None
            fn.argtypes = [ctypes.c_int] * 6 + [
                scalar,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_int,
                scalar,
                ctypes.c_void_p,
                ctypes.c_int,
            ]
            table[np.dtype(dtype)] = fn
            batched = getattr(lib, name + "_batch_strided", None)  # MKL 2020.2 and later
            if batched is not None:
                batched.restype = None
                matrix = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
                batched.argtypes = [ctypes.c_int] * 6 + [scalar] + matrix * 2 + [scalar]
                batched.argtypes += matrix + [ctypes.c_int]
                _batched[np.dtype(dtype)] = batched
        _mkl = table
        _library = lib
        break
    if _mkl is False and choice == "mkl":
        warnings.warn(
            "EMBER_BLAS=mkl: no loadable libmkl_rt (pip install 'ember[mkl]', or name it in "
            "EMBER_MKL_LIBRARY); matrix products run on NumPy's BLAS",
            RuntimeWarning,
            stacklevel=3,
        )
    return _mkl


def mkl_available() -> bool:
    """Whether few-row products run on MKL (Note [Small GEMMs])."""
    return bool(_load())


def mkl_library():
    """The loaded libmkl_rt (a ctypes.CDLL) or None: MKL's other entry points (the packed-weight
    products of ember/backend/mkl_packed.py) come from the library this module loaded."""
    return _library if _load() else None


def split_threads() -> int:
    """The threads an MKL product is split over: the calling thread's own count where it has one
    (a serve worker's `threads_per_instance`, `parallel.set_thread_count`), else
    `set_num_threads`'s."""
    own = parallel.own_thread_count()
    return _threads if own is None else own


def set_num_threads(n: int) -> None:
    """Follow `ember.set_num_threads`: with n > 1, larger MKL products split their rows or
    columns over ember's thread pool (Note [Small GEMMs])."""
    global _threads
    _threads = max(1, int(n))


def _layout(x):
    """(transpose flag, leading dimension) of a 2-D operand in row-major cblas terms, or None
    when its elements are not laid out as a (possibly transposed) strided matrix."""
    item = x.itemsize
    s0, s1 = x.strides
    rows, cols = x.shape
    if s1 == item and s0 % item == 0 and s0 // item >= max(1, cols):
        return _NO_TRANS, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= max(1, rows):
        return _TRANS, s1 // item
    return None


def _blocks(n: int, parts: int) -> list:
    """[lo, hi) row or column ranges, one per thread, cut at multiples of _SPLIT_ALIGN."""
    cuts = [0]
    for i in range(1, parts):
        cut = (n * i // parts) // _SPLIT_ALIGN * _SPLIT_ALIGN
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def _result(out, shape, a, b):
    """The array MKL writes the product into: a new one, or `out` where MKL can write it (a
    C-contiguous array of the shape and dtype, not overlapping an operand); None otherwise."""
    if out is None:
        return np.empty(shape, a.dtype)
    if (
        type(out) is np.ndarray
        and out.shape == shape
        and out.dtype == a.dtype
        and out.flags.c_contiguous
        and not np.may_share_memory(out, a)
        and not np.may_share_memory(out, b)
    ):
        return out
    return None


def matmul(a, b, out=None, accumulate=False):
    """`numpy.matmul(a, b, out=out)`, with 2-D float products on MKL where it is installed
    (Note [Small GEMMs]). With `accumulate` the product is added into `out` (`out += a @ b`; on
    MKL its beta = 1, no temporary: Note [Gradients into buffers] in ember/autograd/engine.py)."""
    beta = 0.0
    if accumulate:
        if out is None:
            raise ValueError("matmul: accumulate=True needs out=")
        beta = 1.0
    if a.ndim > 2 or b.ndim > 2:
        return _batched_matmul(a, b, out) if not beta else _numpy_matmul(a, b, out, beta)
    if (
        type(a) is not np.ndarray
        or type(b) is not np.ndarray
        or a.ndim != 2
        or b.ndim != 2
        or a.shape[0] < MKL_MIN_ROWS
        or a.dtype != b.dtype
        or a.dtype.kind != "f"
        or _mkl is False
    ):
        return _numpy_matmul(a, b, out, beta)
    table = _mkl or _load()
    gemm = table.get(a.dtype) if table else None
    m, k = a.shape
    n = b.shape[1]
    if gemm is None or b.shape[0] != k or k == 0 or m * n * max(k, 16) < MKL_MIN_WORK:
        return _numpy_matmul(a, b, out, beta)
    layout_a = _layout(a)
    layout_b = _layout(b)
    result = _result(out, (m, n), a, b)
    if layout_a is None or layout_b is None or result is None:
        return _numpy_matmul(a, b, out, beta)
    trans_a, lda = layout_a
    trans_b, ldb = layout_b
    a_ptr, b_ptr, c_ptr = a.ctypes.data, b.ctypes.data, result.ctypes.data
    threads = split_threads() if m * k * n >= SPLIT_MIN_WORK else 1
    if threads > 1:
        item = a.itemsize
        row_blocks = _blocks(m, threads) if m > FEW_ROWS else ()
        if m > FEW_ROWS and min(hi - lo for lo, hi in row_blocks) < MIN_BLOCK:
            row_blocks = ()
            if min(hi - lo for lo, hi in _blocks(n, threads)) < MIN_BLOCK:
                # neither split keeps MKL's results those of one call: OpenBLAS's threads
                return _numpy_matmul(a, b, out, beta)
        if row_blocks:  # each thread its rows of a and of the result
            a_step = item * (lda if trans_a == _NO_TRANS else 1)  # bytes from row to row
            table = [(hi - lo, n, lo * a_step, 0, lo * n * item) for lo, hi in row_blocks]
            if _split_on_numba(a.dtype, trans_a, trans_b, k, a_ptr, lda, b_ptr, ldb, c_ptr,
                               n, table, beta):  # fmt: skip
                return result

            def rows(lo, hi):
                gemm(_ROW_MAJOR, trans_a, trans_b, hi - lo, n, k, 1.0, a_ptr + lo * a_step,
                     lda, b_ptr, ldb, beta, c_ptr + lo * n * item, n)  # fmt: skip

            parallel.run_chunks(rows, row_blocks)
            return result
        if n >= 2 * _SPLIT_ALIGN:  # each thread its columns of b and of the result
            b_step = item * (ldb if trans_b == _TRANS else 1)  # bytes from column to column

            blocks = _blocks(n, threads)
            table = [(m, hi - lo, 0, lo * b_step, lo * item) for lo, hi in blocks]
            if _split_on_numba(a.dtype, trans_a, trans_b, k, a_ptr, lda, b_ptr, ldb, c_ptr,
                               n, table, beta):  # fmt: skip
                return result

            def columns(lo, hi):
                gemm(_ROW_MAJOR, trans_a, trans_b, m, hi - lo, k, 1.0, a_ptr, lda,
                     b_ptr + lo * b_step, ldb, beta, c_ptr + lo * item, n)  # fmt: skip

            parallel.run_chunks(columns, blocks)
            return result
    gemm(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a_ptr, lda, b_ptr, ldb, beta, c_ptr, n)
    return result


def _numpy_matmul(a, b, out, beta):
    """NumPy's matmul for the cases MKL does not take (`out += a @ b` with `beta`)."""
    if beta:
        return np.add(out, np.matmul(a, b), out=out)
    return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


# --- the column split on numba's threads ------------------------------------------------------
# Note [Split on numba's threads]: the row or column blocks of a split MKL product (Note [Small
# GEMMs]) run as n sequential MKL calls either on ember's pool (Python workers: each block
# needs the GIL to start its ctypes call) or, once `prepare_split()` built it, from one numba
# `prange` kernel that calls cblas_?gemm through a function pointer on numba's OpenMP threads,
# the ones the fused graph kernels use. Same calls, same blocks, so the results are the same
# bit for bit. Why: the pool's hand-off costs two thread wake-ups in a row (the worker's
# queue, then the GIL the caller drops when its own block enters MKL), each tens of us for an
# idle vCPU on this VM, so products of ~50-100 us gained nothing: the MNIST MLP's 64 x 784 @
# 784 x 128 (quiet 2-core machine, 2 threads, medians, us) took 84.6 in one call, 87.5 split on
# the pool and 59.9 on numba's threads; with 50 us of serial work between products (the
# worker asleep, as inside a training step) 85, 135 and 55; the compiled MLP step (bench/
# bench_mlp.py --profile-lines) 364 -> 313 us. The row blocks of a training step's products
# likewise (2 threads, medians, us, MiniLM at 16 x 64: 1024 x 384 @ 384 x {1152, 384, 1536},
# 1024 x 1536 @ 1536 x 384): pool 2834 / 1019 / 3348 / 3664, numba 2682 / 843 / 3175 / 3255,
# PyTorch's threaded MKL 2631 / 826 / 3133 / 3235. The kernel is compiled (or loaded from
# numba's disk cache, ~0.2 s) when the graph compiler builds an executor with a product
# (ember/graph/executor.py), or in a background thread once a process has run
# `SPLIT_WARM_UP_AFTER` split products on the pool (`KernelWarmUp`), so a process's first
# products never wait for numba. In a forked child (Note [Parallel loops] in
# ember/graph/fusion.py) and on an overloaded machine (Note [Overloaded machine]) the pool's
# path runs instead.
_SPLIT_SOURCE = """\
def split_gemm(gemm, trans_a, trans_b, k, a, lda, b, ldb, c, ldc, table, beta):
    for t in prange(table.shape[0]):
        gemm(101, trans_a, trans_b, table[t, 0], table[t, 1], k, 1.0, a + table[t, 2], lda,
             b + table[t, 3], ldb, beta, c + table[t, 4], ldc)
"""
_split = {}  # {dtype: (numba kernel, cblas function pointer)} once prepare_split() built it


def prepare_split() -> bool:
    """Build the numba kernel that runs split MKL products on numba's threads (Note [Split on
    numba's threads]); False where MKL or numba is missing."""
    if _split:
        return True
    table = _load()
    if not table:
        return False
    from ember.backend import numba_kernels

    built = {}
    try:
        kernel = numba_kernels.jit_source(_SPLIT_SOURCE, "split_gemm", parallel=True)
        if kernel is None:
            return False
        for dtype, fn in table.items():
            pointer = native_pointer(fn)
            a = np.arange(1.0, 5.0, dtype=dtype).reshape(2, 2)
            c = np.empty((2, 2), dtype)
            item = a.itemsize
            table = np.array([[2, 1, 0, 0, 0], [2, 1, 0, item, item]], np.int64)  # two columns
            kernel(pointer, _NO_TRANS, _NO_TRANS, 2, a.ctypes.data, 2, a.ctypes.data, 2,
                   c.ctypes.data, 2, table, 0.0)  # fmt: skip
            if not np.array_equal(c, a @ a):
                return False
            built[dtype] = (kernel, pointer)
    except Exception:  # noqa: BLE001 - numba cannot build it: the pool's path stays
        return False
    _split.update(built)
    return True


def native_pointer(fn):
    """The ctypes function `fn` (argtypes set) as a function pointer that a numba kernel can
    call, its pointer arguments taken as integers (numba passes addresses so)."""
    args = [ctypes.c_size_t if t is ctypes.c_void_p else t for t in fn.argtypes]
    return ctypes.CFUNCTYPE(fn.restype, *args)(ctypes.cast(fn, ctypes.c_void_p).value)


def _split_on_numba(dtype, trans_a, trans_b, k, a, lda, b, ldb, c, ldc, table, beta=0.0):
    """Run the blocks, rows of `table` (m, n, and the byte offsets of each block's a, b and c),
    from numba's prange kernel; False (nothing done) where it is not built (it is then asked
    for in the background, `KernelWarmUp`), or in a forked child or on an overloaded
    machine."""
    entry = _split.get(dtype) if _split else None
    if entry is None:
        _warm_up.count()
        return False
    if parallel.in_forked_child() or parallel.overloaded():
        return False
    from ember.backend import numba_kernels

    numba_kernels.follow_budget()  # numba's count is per thread (Note [Per-thread numba count])
    kernel, pointer = entry
    kernel(pointer, trans_a, trans_b, k, a, lda, b, ldb, c, ldc, np.array(table, np.int64), beta)
    return True


SPLIT_WARM_UP_AFTER = 16  # split products on the pool before a split kernel loads


class KernelWarmUp:
    """Loads a numba split kernel (`load`: blas's and mkl_packed's `prepare_split`) in a
    background thread once a process has run `after` split products on the pool (`count()`
    for each), so that the first products never wait for numba and later ones run on numba's
    threads (Note [Split on numba's threads]). Started once; not in a forked child, nor with
    EMBER_KERNEL_WARM_UP=0 (tests/conftest.py); joined before a fork, so that a child never
    inherits numba half loaded."""

    def __init__(self, load, after=None):
        self.load = load
        self.after = SPLIT_WARM_UP_AFTER if after is None else after
        self.calls = 0
        self.thread = None
        _WARM_UPS.append(self)

    def count(self) -> None:
        self.calls += 1
        if (
            self.calls == self.after
            and self.thread is None
            and not parallel.in_forked_child()
            and flag("EMBER_KERNEL_WARM_UP", True)
        ):
            thread = threading.Thread(target=self.load, name="ember-split-warm-up", daemon=True)
            self.thread = thread  # started once
            thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


_WARM_UPS: list = []


def _join_warm_ups_before_fork():
    for warm_up in _WARM_UPS:
        warm_up.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_join_warm_ups_before_fork)
_warm_up = KernelWarmUp(prepare_split)


# Note [Strided batches]: attention's products in training are stacks of small matrices, 192
# (batch x heads) of 128 x 128 @ 128 x 32 for MiniLM 16 x 128, and its backward multiplies
# transposed views of them (`g @ v.mT`, `q.mT @ g`, `p.mT @ g`). NumPy (2.x) runs a stack with
# a transposed operand in its own loop without BLAS, 2-100x slower than copying the operand
# first, so such operands used to be copied (12.6 MB for the probabilities, 3-6 ms a product
# at 2 threads). MKL's `cblas_?gemm_batch_strided` takes each operand as (pointer, leading
# dimension, transpose flag, one stride between matrices): where both operands' batch dims
# are equal and each collapses to one stride (any view whose last two dims are a strided
# matrix, transposed or not), the stack runs as that one call, no copy, split over ember's
# pool by whole matrices at n threads; each matrix is computed by the same sequential kernel
# as at one thread, so the results equal bit for bit (tests/ops/test_blas.py). Elsewhere
# (broadcast batch dims, integers, no MKL) the operands with a strided last dim are copied
# and NumPy multiplies them, as before.
# Heads split as views of a (batch, length, heads, dim) activation (`x.view(B, L, H, d)
# .transpose(1, 2)`, and the gradient arriving through that merge in training) have two batch
# strides, which no single call takes: such a stack runs as one batch call per outer index
# (`_batch_groups`: the last batch dim has one stride, the others any), the same kernel on the
# same matrices, so the same bits. The fine-tuning step 16 x 128 (2 threads) copied
# `p.mT` (12.6 MB) and multiplied `g @ v.mT` through NumPy's loop for them: 7.3 and 3.2 ms a
# layer, against ~1.9 ms each as grouped calls.
def _batch_layout(x):
    """(transpose flag, leading dim, batch count, batch stride) in elements, or None."""
    if type(x) is not np.ndarray or x.ndim < 3:
        return None
    matrix = _layout(x[(0,) * (x.ndim - 2)]) if x.size else None
    if matrix is None:
        return None
    stride = None
    expected = None
    for size, step in zip(reversed(x.shape[:-2]), reversed(x.strides[:-2])):
        if size == 1:
            continue
        if expected is not None and step != expected:
            return None
        if stride is None:
            stride = step
        expected = step * size
    stride = 0 if stride is None else stride
    if stride < 0 or stride % x.itemsize:
        return None
    return matrix + (int(np.prod(x.shape[:-2])), stride // x.itemsize)


def _batch_groups(x):
    """(transpose flag, leading dim, inner count, inner stride, outer offsets) in elements of a
    stack of 4 or more dims whose last batch dim has one stride and the others any (Note
    [Strided batches]), or None."""
    if type(x) is not np.ndarray or x.ndim < 4 or x.size == 0:
        return None
    inner = _batch_layout(x[(0,) * (x.ndim - 3)])
    if inner is None or any(step % x.itemsize for step in x.strides[:-3]):
        return None
    offsets = np.zeros((), np.int64)
    for size, step in zip(x.shape[:-3], x.strides[:-3]):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * (step // x.itemsize))
    trans, ld, _, stride = inner
    return trans, ld, x.shape[-3], stride, offsets.ravel().tolist()


def _copied_if_strided(x):
    # NumPy's stacked matmul with a transposed view runs without BLAS (Note [Strided batches])
    if x.ndim > 2 and x.strides[-1] != x.itemsize:
        return np.ascontiguousarray(x)
    return x


def _batched_matmul(a, b, out):
    """A stack of products: one MKL batch call where the layouts allow, else NumPy's matmul
    on copies of operands with a strided last dim (Note [Strided batches])."""
    if hasattr(a, "__array_interface__") and hasattr(b, "__array_interface__"):
        result = _mkl_batches(a, b, out)
        if result is not None:
            return result
        a, b = _copied_if_strided(a), _copied_if_strided(b)
    return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


def _mkl_batches(a, b, out):
    if (
        _mkl is False
        or type(a) is not np.ndarray
        or type(b) is not np.ndarray
        or a.ndim != b.ndim
        or a.shape[:-2] != b.shape[:-2]
        or a.dtype != b.dtype
        or a.dtype.kind != "f"
        or a.shape[-1] != b.shape[-2]
    ):
        return None
    table = _mkl or _load()
    batched = _batched.get(a.dtype) if table else None
    m, k = a.shape[-2:]
    n = b.shape[-1]
    count = int(np.prod(a.shape[:-2]))
    if batched is None or k == 0 or count == 0 or m * n * max(k, 16) * count < MKL_MIN_WORK:
        return None
    layout_a, layout_b = _batch_layout(a), _batch_layout(b)
    if layout_a is not None and layout_b is not None:
        layout_a, layout_b = layout_a + ([0],), layout_b + ([0],)
    else:  # two batch strides: one call per outer index (Note [Strided batches])
        layout_a, layout_b = _batch_groups(a), _batch_groups(b)
        if layout_a is None or layout_b is None:
            return None
    shape = a.shape[:-2] + (m, n)
    result = _result(out, shape, a, b)
    if result is None:
        return None
    trans_a, lda, inner, stride_a, outer_a = layout_a
    trans_b, ldb, _, stride_b, outer_b = layout_b
    item = a.itemsize
    a_ptr, b_ptr, c_ptr = a.ctypes.data, b.ctypes.data, result.ctypes.data

    def matrices(lo, hi):
        while lo < hi:  # the matrices [lo, hi) of the flattened batch, a call per outer index
            group, i = divmod(lo, inner)
            top = min(hi, (group + 1) * inner)
            a_at = a_ptr + (outer_a[group] + i * stride_a) * item
            b_at = b_ptr + (outer_b[group] + i * stride_b) * item
            batched(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a_at, lda, stride_a, b_at, ldb,
                    stride_b, 0.0, c_ptr + lo * m * n * item, n, m * n, top - lo)  # fmt: skip
            lo = top

    threads = split_threads() if count > 1 and m * n * k * count >= SPLIT_MIN_WORK else 1
    if threads > 1:
        parts = min(threads, count)
        parallel.run_chunks(
            matrices, [(count * i // parts, count * (i + 1) // parts) for i in range(parts)]
        )
    else:
        matrices(0, count)
    return result
