"""MKL's packed-weight product for float32 products by a weight used again and again: few-row
ones, and many-row ones whose threads share one pack (Note [Shared packs]).

Note [Packed weights]: a Transformer answering short requests multiplies a few rows (one per
token) by the same large weights at every call. `cblas_sgemm` (Note [Small GEMMs]) re-packs
the weight into MKL's panel layout at every call, and at 16 rows that packing costs as much
as the product. MKL's packed API splits the two: `cblas_sgemm_pack` once per weight,
`cblas_sgemm_compute` per call. Measured on the quiet 2-core machine (1 thread, float32,
MiniLM's weights, us per product, plain `cblas_sgemm` / packed): 384 -> 1536 at 8 rows 194 /
76, 16 rows 237 / 139, 60 rows 534 / 403 (packed for 64 rows; 475 packed for 16); 1536 -> 384
at 16 rows 237 / 119; 384 -> 384 at 16 rows 46 / 28. From 128 rows on, the gain at 1 thread
is small (1-5%), but threads splitting a product by rows share one pack: Note [Shared packs].

This module holds the array side: `PackedMatrix` (one weight packed for products of about
`rows` rows, its output columns cut into one block per thread as `blas.matmul` cuts them, each
block packed on its own so that each thread runs one `cblas_sgemm_compute` over its own
contiguous part of the pack: Note [Packed split on numba's threads]), and
the two records that keep packs from going stale (the Tensor side, which keys packs by weight
Tensor and version, is ember/autograd/packed.py):
- `note_exposed(array)`: NumPy memory handed out to user code (`Tensor.numpy()`,
  `np.asarray(tensor)`) can be written behind every version counter, so its memory root (the
  array that owns it) is recorded, for as long as it lives, and never packed; where a pack of
  it exists already, the pack generation moves on (`generation()`), which invalidates it.
- `weights_written()`: writers that bump no version counter (a compiled graph updating its
  captured parameters in place, TF1 variable initializers and restores) move the generation
  on, invalidating every pack.
MKL's packed layout is chosen for the row count given to `cblas_sgemm_pack` (its header records
it; 1 and 5 rows even get another layout), and `cblas_sgemm_compute` accepts products of any row
count on it: the results match the plain product within float rounding (bit for bit on this
machine from 16 rows on; tests/ops/test_mkl_packed.py checks 2-128 rows against float64 with
the bound of Note [Small GEMMs], and 129-1000 rows on a pack for 512). So a weight gets at
most one pack per row bucket (`_BUCKETS`: up to 32 rows packed for 16, up to 128 packed for
64; more rows packed for `MANY_ROWS`), and a pack whose column split no longer fits the
thread count is replaced. Memory: MKL asks for ~4x the weight's bytes of address space per
pack (7.9 MB even for tiny weights) but writes about the weight's bytes, so a pack costs about
the weight's size in resident memory: at most three weights' worth per packed weight (MiniLM:
~42 MB a bucket), and no new pack once the packs held reach `EMBER_MKL_PACK_LIMIT_MB` (1024 by
default) of weight bytes. `EMBER_MKL_PACK=0` turns packing off (products then take
`blas.matmul`); it is on by default where MKL loads (`EMBER_BLAS`, Note [Small GEMMs]).
"""

from __future__ import annotations

import ctypes
import os
import weakref

import numpy as np

from ember.backend import blas, numba_kernels, parallel

__all__ = [
    "PackedMatrix",
    "available",
    "bucket_rows",
    "generation",
    "note_derived",
    "note_exposed",
    "prepare_split",
    "set_enabled",
    "is_exposed",
    "weights_written",
]

PACK_MAX_ROWS = 128  # the few-row buckets end here; more rows share a pack (Note [Shared packs])
_BUCKETS = ((32, 16), (PACK_MAX_ROWS, 64))  # (most rows, rows the pack is made for)
MANY_ROWS = 512  # rows the pack for products above PACK_MAX_ROWS is made for (Note [Shared packs])
# m * k * n from which a packed product splits over the threads. Measured again with the split
# on numba's threads (Note [Packed split on numba's threads]; 2 threads, 30 us of Python
# between products, medians of 3 x 150, us, one block / split): 4 x 384 x 1536 (2**21.2)
# 62 / 25, 8 x 384 x 384 (2**20.2) 17 / 18, 4 x 384 x 384 11 / 16, 16 x 384 x 384 (2**21.2)
# 29-38 / 25-31, 8 x 384 x 1152 (2**21.8) and up: the split wins; so the bound stays. The
# figures below are from the pool's split. A pool worker idle for a
# millisecond can take ~170 us to wake on this VM (14 us right after a job; Note [Pool
# hand-off] in ember/backend/parallel.py). Alone, a 16-row product splits with profit from
# ~2**22 (2 threads, medians, us, serial / split: 16 x 384 x 384 (2**21.2) 31 / 36, 32 x 384 x
# 384 112 / 89, 16 x 384 x 1536 131 / 83), but inside a forward the split of the smaller
# products pays all the same: MiniLM 1 x 16 at 2 threads, ember alone, one process, the
# settings interleaved in alternating order, medians of 16: 7.45 ms per forward splitting from
# 2**21 against 7.87 from 2**22 (bench_minilm_threads, separate processes, ratio to PyTorch
# 1.14 against 1.29); 1 x 8: 6.89 against 6.91, and 6.66 from 2**20 (its 8 x 384 x 384 split
# too; within the noise: at 1 x 16, where 2**20 and 2**21 split the same products, they read
# 7.07 and 7.45). Measured earlier: 5.68 ms with every product split against 5.67 unsplit and
# 5.80 split from 2**23
SPLIT_MIN_WORK = 1 << 21
# rows of a many-row product whose bias is written just before their MKL call (Note [Bias rows])
BIAS_ROWS = 256
_B_MATRIX, _PACKED = 162, 151  # CblasBMatrix, CblasPacked

_functions = None  # (get_size, pack, compute) once loaded; False where packing is off
_generation = [0]
_exposed: dict = {}  # id(memory root) -> weak reference to it (the root itself if it has none)
_packed_roots: dict = {}  # id(memory root) -> WeakSet of the PackedMatrix objects made of it
_ROOTS_KEPT = 512  # entries of _packed_roots from which the dead ones are dropped
_held = [0]  # weight bytes of the live packs (approximate under threads: only a limit reads it)


_choice = [None]  # set_enabled's choice; None: EMBER_MKL_PACK decides


def set_enabled(enabled: bool | None) -> None:
    """Turn packing on or off for this process (None: as `EMBER_MKL_PACK` says). Packs made
    before stay valid but are not used while it is off."""
    global _functions
    _choice[0] = None if enabled is None else bool(enabled)
    _functions = None


def _enabled_by_environment() -> bool:
    if _choice[0] is not None:
        return _choice[0]
    value = os.environ.get("EMBER_MKL_PACK", "").strip().lower() or "1"
    if value not in ("0", "1", "off", "on", "false", "true", "no", "yes"):
        raise ValueError(f"EMBER_MKL_PACK: expected 1 or 0, got {value!r}")
    return value in ("1", "on", "true", "yes")


def limit_bytes() -> int:
    """`EMBER_MKL_PACK_LIMIT_MB` (1024 by default) in bytes of packed weights."""
    value = os.environ.get("EMBER_MKL_PACK_LIMIT_MB", "").strip() or "1024"
    try:
        return int(float(value) * (1 << 20))
    except ValueError:
        raise ValueError(f"EMBER_MKL_PACK_LIMIT_MB: expected a number, got {value!r}") from None


def _load():
    global _functions
    if _functions is not None:
        return _functions
    _functions = False
    if not _enabled_by_environment():
        return _functions
    lib = blas.mkl_library()
    if lib is None:
        return _functions
    try:
        get_size, pack, compute = (
            lib.cblas_sgemm_pack_get_size,
            lib.cblas_sgemm_pack,
            lib.cblas_sgemm_compute,
        )
    except AttributeError:
        return _functions
    get_size.restype = ctypes.c_size_t
    get_size.argtypes = [ctypes.c_int] * 4
    pack.restype = None
    pack.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    pack.argtypes += [ctypes.c_void_p]
    compute.restype = None
    compute.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p, ctypes.c_int] * 2
    compute.argtypes += [ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    _functions = (get_size, pack, compute)
    return _functions


def available() -> bool:
    """Whether products may take packed weights: MKL loaded and `EMBER_MKL_PACK` not 0."""
    return bool(_functions if _functions is not None else _load())


def bucket_rows(m: int):
    """The row count a pack for products of `m` rows is made for, or None (no packing)."""
    if m < blas.MKL_MIN_ROWS:
        return None
    for most, rows in _BUCKETS:
        if m <= most:
            return rows
    return MANY_ROWS  # Note [Shared packs]


def generation() -> int:
    """A number that moves on whenever packs may have gone stale without a version bump."""
    return _generation[0]


def weights_written() -> None:
    """Some weights were written without a version bump (a compiled graph's in-place
    parameter updates, TF1 variable initializers and restores): every pack is stale."""
    _generation[0] += 1


def _root(array):
    base = array.base
    while base is not None:
        array = base
        base = getattr(array, "base", None)
    return array


def note_exposed(array) -> None:
    """`array` is going to user code, which may write it: its memory is never packed again
    while its owner lives, and packs of it made before are stale."""
    root = _root(array)
    key = id(root)
    if key not in _exposed:
        try:
            _exposed[key] = weakref.ref(root, lambda _, key=key: _exposed.pop(key, None))
        except TypeError:  # an owner without weak references (bytes): kept for good
            _exposed[key] = root
    if _packed_roots.get(key):
        _generation[0] += 1


def note_derived(array, holder) -> None:
    """`holder` (an object with weak references) keeps a copy made of `array`'s memory (a
    joined weight, Note [Joined projections] in ember/autograd/packed.py): handing that
    memory to user code (`note_exposed`) then moves the generation, as for a pack of it."""
    key = id(_root(array))
    _packed_roots.setdefault(key, weakref.WeakSet()).add(holder)


def is_exposed(array) -> bool:
    """Whether `array`'s memory was handed to user code (`note_exposed`)."""
    return id(_root(array)) in _exposed


def _release(nbytes):
    _held[0] -= nbytes


class PackedMatrix:
    """`x @ weight.T` for one float32 weight (out_features, in_features), packed by MKL for
    products of about `rows` rows, its output columns cut into `parts` blocks (one per thread)
    (Note [Packed weights]). Build with `PackedMatrix.create`, which returns None where
    packing does not apply."""

    __slots__ = ("rows", "parts", "n", "k", "blocks", "table", "nbytes", "__weakref__")

    @classmethod
    def create(cls, weight, rows: int, parts: int):
        functions = _load()
        if not functions or type(weight) is not np.ndarray or weight.dtype != np.float32:
            return None
        if weight.ndim != 2 or 0 in weight.shape or is_exposed(weight):
            return None
        if _held[0] + weight.nbytes > limit_bytes():
            return None
        layout = blas._layout(weight)  # (trans, ld) of the (n, k) weight in row-major terms
        if layout is None:
            return None
        return cls(functions, weight, layout, rows, parts)

    def __init__(self, functions, weight, layout, rows, parts):
        get_size, pack, _ = functions
        n, k = weight.shape
        self.rows, self.parts, self.n, self.k = rows, parts, n, k
        # weight (n, k) is B.T: B = weight.T is k x n, "transposed" when weight is row-major
        trans_w, ld = layout
        trans_b = blas._TRANS if trans_w == blas._NO_TRANS else blas._NO_TRANS
        row_step = weight.itemsize * (ld if trans_w == blas._NO_TRANS else 1)
        blocks = []
        for lo, hi in blas._blocks(n, parts) if parts > 1 else [(0, n)]:
            buffer = np.empty(get_size(_B_MATRIX, rows, hi - lo, k), np.uint8)
            pack(blas._ROW_MAJOR, _B_MATRIX, trans_b, rows, hi - lo, k, 1.0,
                 weight.ctypes.data + lo * row_step, ld, buffer.ctypes.data)  # fmt: skip
            blocks.append((lo, hi, buffer, buffer.ctypes.data))
        self.blocks = blocks
        # the blocks as the split kernel reads them: (lo, hi, packed address) a row
        self.table = np.array([(lo, hi, address) for lo, hi, _, address in blocks], np.int64)
        self.nbytes = weight.nbytes
        key = id(_root(weight))
        if len(_packed_roots) > _ROOTS_KEPT:  # drop the roots whose packs all died
            for dead in [k for k, packs in list(_packed_roots.items()) if not packs]:
                _packed_roots.pop(dead, None)
        _packed_roots.setdefault(key, weakref.WeakSet()).add(self)
        _held[0] += self.nbytes
        weakref.finalize(self, _release, self.nbytes)

    def product(self, x, out, accumulate: bool = False, bias=None) -> None:
        """out[...] = x @ weight.T (`accumulate`: out += x @ weight.T, as one pass: MKL's beta
        = 1, how PyTorch adds a linear's bias; `bias`, an (n,) float32 array: out[...] = x @
        weight.T + bias, Note [Bias rows]): x an (m, k) float32 matrix with a cblas layout
        (`blas._layout`, else ValueError), out a C-contiguous writable (m, n) float32 array
        sharing no memory with x."""
        if accumulate and bias is not None:
            raise ValueError("PackedMatrix.product: accumulate and bias exclude each other")
        layout = blas._layout(x)
        if layout is None:
            raise ValueError(f"PackedMatrix.product: x with strides {x.strides} has no layout")
        trans_x, ldx = layout
        m = x.shape[0]
        x_ptr, out_ptr, k, n = _address(x), _address(out), self.k, self.n
        beta = 1.0 if accumulate or bias is not None else 0.0
        compute = _functions[2]
        blocks = self.blocks
        item = out.itemsize
        work = m * k * n
        x_step = x.itemsize * (ldx if trans_x == blas._NO_TRANS else 1)

        def part(rows, columns, x_at, address, out_at):  # one call: these rows and columns
            compute(blas._ROW_MAJOR, trans_x, _PACKED, rows, columns, k, x_at, ldx, address, k,
                    beta, out_at, n)  # fmt: skip

        def bias_rows(lo, hi, address):  # rows lo .. hi, BIAS_ROWS at a time (Note [Bias rows])
            for start in range(lo, hi, BIAS_ROWS):
                stop = min(hi, start + BIAS_ROWS)
                out[start:stop] = bias
                part(stop - start, n, x_ptr + start * x_step, address, out_ptr + start * n * item)

        if m > blas.FEW_ROWS and len(blocks) == 1:
            address = blocks[0][3]
            if work >= SPLIT_MIN_WORK:
                # Note [Shared packs]: row blocks, every thread reading the one pack
                row_blocks = blas._blocks(m, blas.split_threads())
                if len(row_blocks) > 1 and min(hi - lo for lo, hi in row_blocks) >= blas.MIN_BLOCK:
                    if bias is not None:
                        parallel.run_chunks(bias_rows, [(lo, hi, address) for lo, hi in row_blocks])
                        return
                    parts = [(hi - lo, n, x_ptr + lo * x_step, address, out_ptr + lo * n * item)
                             for lo, hi in row_blocks]  # fmt: skip
                    parallel.run_chunks(part, parts)
                    return
            if bias is not None:
                bias_rows(0, m, address)
                return
        if bias is not None:
            out[...] = bias
        parts = [(m, hi - lo, x_ptr, address, out_ptr + lo * item) for lo, hi, _, address in blocks]
        if len(blocks) == 1 or work < SPLIT_MIN_WORK:  # the column blocks one after another
            for args in parts:
                part(*args)
            return
        split = _split[0] if _split else None  # Note [Packed split on numba's threads]
        if split is None:
            _warm_up.count()
        if split is not None and not parallel.in_forked_child() and not parallel.overloaded():
            numba_kernels.follow_budget()  # Note [Per-thread numba count]
            kernel, pointer = split
            kernel(pointer, trans_x, m, k, x_ptr, ldx, self.table, beta, out_ptr, n)
            return
        parallel.run_chunks(part, parts)


def _address(array) -> int:
    """The address of `array`'s first element: through the buffer protocol where it allows
    (0.35 us), else `ndarray.ctypes` (1.2 us; read-only or strided arrays)."""
    try:
        return ctypes.addressof(_CHAR.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


_CHAR = ctypes.c_char


# Note [Packed split on numba's threads]: a split packed product (its column blocks on the
# threads, `split_parts`) runs its blocks from one numba `prange` kernel that calls
# cblas_sgemm_compute through a function pointer on numba's OpenMP threads, as Note [Split on
# numba's threads] in ember/backend/blas.py does for the plain product, and not on ember's pool,
# whose workers need the GIL to start their ctypes call: the pool's hand-off (the queue, then
# the GIL, Note [Pool hand-off] in ember/backend/parallel.py) cost a 2-thread 16 x 384 @ 384 x
# 1536 product ~40 us over the 50 us each half takes alone. Measured on the 2-core machine under
# the CPU lock, 2 threads, medians, us (one block on one thread / two blocks on the pool / on
# numba's threads; each half alone 49-50): that product 134 / 82-89 / 60, MiniLM's four 16-row
# products of one layer (384 -> 1152, 384 -> 384, 384 -> 1536, 1536 -> 384) 413-425 / 338 /
# 244-246 (PyTorch 447-466; bench/bench_packed_layer.py); MiniLM forwards at 2 threads, ratio
# to PyTorch (bench/bench_minilm_threads.py, one process each, medians of 9-11 rounds), pool /
# numba: 1 x 16 0.92-0.95 / 0.83-0.86, 1 x 8 0.94 / 0.87, 5 x 12 1.00 / 0.91 (1 thread
# unchanged: nothing splits). Same calls on the same blocks, so the results are those of the
# pool's path, and of one call, bit for bit (tests/ops/test_mkl_packed.py). The kernel loads
# (from numba's disk cache, or compiled) in a background thread once a process has run
# `blas.SPLIT_WARM_UP_AFTER` split products (`blas.KernelWarmUp`), so a process's first
# products never wait for numba;
# until it has loaded, and in a forked child or on an overloaded machine (Note [Overloaded
# machine]), the pool runs the blocks. EMBER_KERNEL_WARM_UP=0 turns the background load off
# (`prepare_split()` still loads it when asked).
_SPLIT_SOURCE = """\
def split_compute(compute, trans_x, m, k, x, ldx, table, beta, out, n):
    for t in prange(table.shape[0]):
        lo = table[t, 0]
        compute(101, trans_x, 151, m, table[t, 1] - lo, k, x, ldx, table[t, 2], k, beta,
                out + lo * 4, n)
"""
_split: list = []  # [(numba kernel, cblas_sgemm_compute pointer)] once prepare_split() built it


def prepare_split() -> bool:
    """Load the numba kernel that runs split packed products on numba's threads (Note [Packed
    split on numba's threads]), checked on a small product; False where MKL's packed API or
    numba is missing."""
    if _split:
        return True
    functions = _load()
    if not functions or not numba_kernels.available():
        return False
    try:
        kernel = numba_kernels.jit_source(_SPLIT_SOURCE, "split_compute", parallel=True)
        if kernel is None:
            return False
        pointer = blas.native_pointer(functions[2])
        weight = (np.arange(256 * 2) % 7).astype(np.float32).reshape(256, 2)  # two blocks
        pack = PackedMatrix(functions, weight, blas._layout(weight), 16, 2)
        x = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
        out = np.empty((4, weight.shape[0]), np.float32)
        kernel(pointer, blas._NO_TRANS, 4, 2, x.ctypes.data, 2, pack.table, 0.0,
               out.ctypes.data, weight.shape[0])  # fmt: skip
        if len(pack.blocks) != 2 or not np.array_equal(out, x @ weight.T):
            return False
    except Exception:  # noqa: BLE001 - numba cannot build it: the pool runs the blocks
        return False
    _split.append((kernel, pointer))
    return True


_warm_up = blas.KernelWarmUp(prepare_split)  # the background load of the kernel above


# Note [Shared packs]: a product of more than PACK_MAX_ROWS rows (MiniLM 32 x 128: 4096 rows,
# the feed-forward's blocks of 1024, Note [Feed-forward chunks] in
# ember/transformers/encoder_heads.py) splits over the threads by rows (Note [Small GEMMs]),
# and there each thread's sequential `cblas_sgemm` packs the whole weight for itself, once per
# call. On a pack made once (for `MANY_ROWS` rows, one block: `parts` 1), the threads run
# `cblas_sgemm_compute` on their rows of x and of the result, reading the one pack: the
# packing is gone from every call, where MKL's own threads share one packing per call as
# PyTorch runs them. The row blocks are those of `blas.matmul` (cut at multiples of 64, each of
# at least `blas.MIN_BLOCK` rows, else one call), so a row's result does not depend on the
# thread count, and it equals the plain product's bit for bit on this machine
# (tests/ops/test_mkl_packed.py checks the float64 bound and 1 against 2 threads). Measured on
# the 2-core machine under the CPU lock, medians, ms, plain / packed for 512 rows (PyTorch):
# 2 threads, 1024 x 384 @ 384 x 1536 2.94 / 2.87 (2.97), 1024 x 1536 @ 1536 x 384 3.24 / 3.01
# (3.19), 1024 x 384 @ 384 x 1152 2.35 / 2.17 (2.31), 4096 x 384 @ 384 x 1152 8.89 / 8.49
# (9.90); 1 thread 1024 rows 3-5% less, 4096 rows -2 to +1%. MiniLM's forward 32 x 128 (ember
# alone, one process, the two paths alternating, medians of 10): 306.7 / 292.5 ms at 2 threads,
# 643 / 638 at 1. The bias of such a product (the joined query, key and value projection) is
# written a block of rows at a time: Note [Bias rows].
#
# Note [Bias rows]: a linear's bias reaches a packed product's result as PyTorch's addmm adds
# it: the bias rows are written into the result, then MKL adds the product to them (beta = 1).
# Written over the whole result first, the rows have left the cache before MKL reads them:
# the 4096 x 1152 result of MiniLM's joined query, key and value projection at 32 x 128 is
# 18.9 MB, whose bias copy took ~1.9 ms of a ~26 ms product at 1 thread. So `product(...,
# bias=b)` writes BIAS_ROWS rows of bias (1.2 MB at 1152 columns, inside the 2 MB L2), then
# calls MKL on those rows, block after block within each thread's rows. The blocks change no
# bits (MKL's result for a row does not depend on the rows beside it in a call, on this
# machine; tests/ops/test_mkl_packed.py compares bias= with the copy-then-accumulate path).
# Measured on the 2-core machine, one process, 10 alternating rounds, MiniLM forward 32 x 128
# (ember alone, under the CPU lock with other work around): 1 thread median 713 -> 703 ms
# (min 677 -> 657), 2 threads 398 -> 395 (min 344 both); the product alone 4096 x 384 @ 384
# x 1152 at 1 thread 26.1 -> 25.6 ms (24.2 without a bias), 256 rows a block against 128
# (25.8) and 64 (26.4).
def split_parts(m: int, k: int, n: int) -> int:
    """Column blocks of a pack for products of up to `m` rows: one per thread where the largest
    of them reaches `SPLIT_MIN_WORK`, cut as `blas.matmul` cuts (Note [Small GEMMs]); smaller
    products run the blocks one after another on the calling thread (the same results)."""
    threads = blas.split_threads()
    if threads > 1 and m * k * n >= SPLIT_MIN_WORK and n >= 2 * blas._SPLIT_ALIGN:
        return threads
    return 1
