"""The CPU matrix product behind `xp.matmul`: NumPy's BLAS, or Intel MKL for few-row products.

Note [Small GEMMs]: a Transformer answering one short request multiplies matrices of a few
rows (one per token: 16 x 384 @ 384 x 1536) by large weights, and there OpenBLAS (NumPy's
BLAS in the PyPI wheels) takes ~1.8x the time of Intel MKL (what PyTorch's CPU build uses):
OpenBLAS packs the whole weight for every call, which costs as much as the product when the
rows are few. A compiled (numba) small-row kernel (4 rows per weight-row load, fastmath)
reached 0.35-0.55x of OpenBLAS's speed at these shapes, so it is no option.

So `matmul` sends a 2-D float32/float64 product with `MKL_MIN_ROWS <= rows <= MKL_MAX_ROWS`
(512; 128 with `ember.set_num_threads(n > 1)`) and m * n * max(k, 16) >= `MKL_MIN_WORK` to
MKL's `cblas_?gemm` through ctypes, and everything else to `numpy.matmul`. MKL is the PyPI
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
  products, transposed operands included): all three within 6%: OpenBLAS stays above 512 rows.
- Tiny products (the MLP's 64 x 128 @ 128 x 10 and its gradients, ~2 us in NumPy) stay on
  NumPy: the ctypes call and checks cost ~7 us, hence `MKL_MIN_WORK`; one row is a GEMV, where
  OpenBLAS is as fast as PyTorch (1 x 784 @ 784 x 128: 5.0 us against 7.3).
MKL runs with its sequential threading layer: it starts no thread pool. With n > 1 threads a
product of at least `SPLIT_MIN_WORK` splits its columns into n blocks (cut at multiples of 64)
that ember's own pool (ember/backend/parallel.py; its workers sleep, never spin) runs as n
sequential MKL calls. Each output element is then computed by the same kernel over the same
K values as in one call, so the results equal the 1-thread ones bit for bit (tested), and no
third thread runtime competes with OpenBLAS's and numba's for the cores (Note [Thread
budget]). MKL's own threading layers were measured too (2 threads, torch in the process):
the GNU one (libgomp; PyTorch's own, with PyTorch's wait policy, where PyTorch loaded it)
matched PyTorch at every shape but is one more pool beside OpenBLAS's and numba's, and its
2-thread results differed from its 1-thread ones; the Intel one (libiomp5, whose workers spin
200 ms after a product) was 1.6-2.2x slower than PyTorch from 60 rows on and made products
run beside it on ember's pool 1.6-2.8x slower; the TBB one did not load (libtbb.so.12 is not
on the loader's path). MiniLM forwards, ember alone in one process, 2 threads,
OpenBLAS / one sequential MKL call / MKL split over the pool (min ms): 1 x 16 14.9 / 14.0 /
13.0, 5 x 12 15.7 / 18.7 / 14.2, 4 x 32 24.3 / 28.9 / 21.9; at 1 thread 17.1 / 13.2, 19.5 /
15.9, 32.5 / 26.6 (OpenBLAS / MKL).

MKL's packed-weight API (cblas_sgemm_pack once, cblas_sgemm_compute per call) was measured
but is not used: at 1 thread it takes 0.54-0.73x PyTorch's time at 16 rows, 0.78-0.86x at 60
and 0.87x for the MLP's 64 x 784 @ 784 x 128, nothing at thousands of rows; using it needs a
cache that every in-place write to a weight invalidates (the optimizers bump the Tensor's
version counter, but a write through `.numpy()` bypasses it), which this dispatch, seeing
bare arrays, cannot know: it would be keyed at the linear op, by Tensor and version.

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
import warnings

import numpy as np

from ember.backend import parallel

__all__ = ["matmul", "mkl_available", "blas_choice"]

MKL_MIN_ROWS = 2  # one row is a GEMV, where OpenBLAS is as fast
MKL_MAX_ROWS = 512  # from a few hundred rows on, OpenBLAS is as fast (Note [Small GEMMs])
MKL_MAX_ROWS_THREADED = (
    128  # n > 1 threads: MKL split over ember's pool, against n OpenBLAS threads
)
MKL_MIN_WORK = 1 << 18  # m * n * max(k, 16) below which the ctypes call costs more than it saves
SPLIT_MIN_WORK = 1 << 21  # m * k * n below which one sequential call beats the pool hand-off
_SPLIT_ALIGN = 64  # column blocks start at multiples of 64 (whole SIMD panels)

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
_CBWR_AUTO = 2  # MKL_CBWR_AUTO: the ISA's code path with alignment-independent results

_mkl = None  # {dtype: cblas function} once loaded; False when MKL is absent or turned off
_library = None  # the loaded libmkl_rt (ctypes.CDLL), for ember/backend/mkl_packed.py
_max_rows = MKL_MAX_ROWS
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
    """The threads an MKL product's columns are split over (`set_num_threads`)."""
    return _threads


def set_num_threads(n: int) -> None:
    """Follow `ember.set_num_threads`: with n > 1, larger MKL products split their columns
    over ember's thread pool (Note [Small GEMMs])."""
    global _max_rows, _threads
    _threads = max(1, int(n))
    _max_rows = MKL_MAX_ROWS if _threads <= 1 else MKL_MAX_ROWS_THREADED


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


def _column_blocks(n: int, parts: int) -> list:
    """[lo, hi) column ranges, one per thread, cut at multiples of _SPLIT_ALIGN."""
    cuts = [0]
    for i in range(1, parts):
        cut = (n * i // parts) // _SPLIT_ALIGN * _SPLIT_ALIGN
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def matmul(a, b, out=None):
    """`numpy.matmul(a, b, out=out)`, with few-row float products on MKL (Note [Small
    GEMMs])."""
    if (
        type(a) is not np.ndarray
        or type(b) is not np.ndarray
        or a.ndim != 2
        or b.ndim != 2
        or not MKL_MIN_ROWS <= a.shape[0] <= _max_rows
        or a.dtype != b.dtype
        or a.dtype.kind != "f"
        or _mkl is False
    ):
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    table = _mkl or _load()
    gemm = table.get(a.dtype) if table else None
    m, k = a.shape
    n = b.shape[1]
    if gemm is None or b.shape[0] != k or k == 0 or m * n * max(k, 16) < MKL_MIN_WORK:
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    layout_a = _layout(a)
    layout_b = _layout(b)
    if out is None:
        result = np.empty((m, n), a.dtype)
    elif (
        type(out) is np.ndarray
        and out.shape == (m, n)
        and out.dtype == a.dtype
        and out.flags.c_contiguous
        and not np.may_share_memory(out, a)
        and not np.may_share_memory(out, b)
    ):
        result = out
    else:
        result = None
    if layout_a is None or layout_b is None or result is None:
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    trans_a, lda = layout_a
    trans_b, ldb = layout_b
    a_ptr, b_ptr, c_ptr = a.ctypes.data, b.ctypes.data, result.ctypes.data
    if _threads > 1 and m * k * n >= SPLIT_MIN_WORK and n >= 2 * _SPLIT_ALIGN:
        item = a.itemsize
        b_step = item * (ldb if trans_b == _TRANS else 1)  # bytes from one column to the next

        def block(lo, hi):
            gemm(_ROW_MAJOR, trans_a, trans_b, m, hi - lo, k, 1.0, a_ptr, lda,
                 b_ptr + lo * b_step, ldb, 0.0, c_ptr + lo * item, n)  # fmt: skip

        parallel.run_chunks(block, _column_blocks(n, _threads))
        return result
    gemm(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a_ptr, lda, b_ptr, ldb, 0.0, c_ptr, n)
    return result
