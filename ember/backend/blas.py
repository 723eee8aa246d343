"""The CPU matrix product behind `xp.matmul`: NumPy's BLAS, or Intel MKL for few-row products.

Note [Small GEMMs]: a Transformer answering one short request multiplies matrices of a few
rows (one per token: 16 x 384 @ 384 x 1536) by large weights, and there OpenBLAS (NumPy's
BLAS in the PyPI wheels) takes 1.7-2.1x the time of Intel MKL (what PyTorch's CPU build
uses): OpenBLAS packs the whole weight for every call, which costs as much as the product
when the rows are few. Measured on this 2-core machine (1 thread, min of 9 rounds, float32,
MiniLM shapes; bench/bench_matmul_small.py): MKL 1.7-2.1x faster at 16-32 rows, 1.3-1.5x
at 64, about equal from 320 rows on, where OpenBLAS stays. A compiled (numba) small-row
kernel (4 rows per weight-row load, fastmath) reached 0.35-0.55x of OpenBLAS's speed at these
shapes, so it is no option.

MKL's gain shrinks with the rows (1.3-1.5x at 64, about none from 256 on) and ember serve's
packed batches (Note [Packed batches], 100-400 rows) ran as fast on either library, so MKL
takes the products of one short request: up to `MKL_MAX_ROWS` = 64 rows. (With MKL loaded,
`ember.set_num_threads` must still find NumPy's OpenBLAS first, not MKL's setter: an
OpenBLAS left on all cores busy-waits and ran MiniLM 20x slower on the loaded machine.)

So, with `EMBER_BLAS=mkl`, `matmul` sends a 2-D float32/float64 product with
`MKL_MIN_ROWS <= rows <= MKL_MAX_ROWS` to MKL's `cblas_?gemm` through ctypes (the PyPI `mkl`
wheel, the `mkl` extra: Intel Simplified Software License, free to use and redistribute,
about 1 GB installed), and everything else to `numpy.matmul`. MKL is found lazily, on the
first product that qualifies, in the environment's `lib` folder (where the wheel puts
`libmkl_rt.so`) or at `EMBER_MKL_LIBRARY`. It is opt-in, not taken whenever installed,
because in a process that also runs PyTorch, loading it made OpenBLAS's own products (the
rows above the limit) 2-20x slower on this machine (MiniLM 16 x 20: 1.8 s against 0.3 s
for PyTorch; batched serving at half speed), which is not understood yet; without PyTorch in
the process no slowdown was seen. MKL runs with its sequential threading layer and its
thread count left at 1, so it starts no thread pool that could spin against NumPy's and
numba's threads on a loaded machine; this is why its row limit stays low when
`ember.set_num_threads(n > 1)` gives OpenBLAS more threads (`MKL_MAX_ROWS_THREADED`).
Results differ from NumPy's only by float rounding: each element is a length-K dot product in
another summation order, so |mkl - numpy| <= 2 K eps sum|a_ik b_kj| (tests/ops/test_blas.py
checks that bound against a float64 product).
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
    global _mkl
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
