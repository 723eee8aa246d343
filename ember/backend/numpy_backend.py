"""The NumPy backend: the CPU and the reference for every other backend.

`xp` is NumPy's namespace plus the extras ops need and NumPy lacks (see `ember.backend`).
"""

from __future__ import annotations

import math
import types

import numpy as np

from ember.backend import Backend, Device, blas, memory, parallel, register_backend

memory.keep_freed_memory()  # Note [Freed memory]

# erf by rational approximations (Cody-style, as in the Cephes library): x*T(x^2)/U(x^2) on
# |x| < 1, and 1 - exp(-x^2) P(x)/Q(x) beyond; relative error near 1e-16 in float64, so the
# float32 result is correctly rounded in practice.
_ERF_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
_ERF_U = (
    1.0,
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)
_ERFC_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
_ERFC_Q = (
    1.0,
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)


def _polyval(coefficients, x):
    result = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        result *= x
        result += c
    return result


def erf(x):
    x = np.asarray(x)
    out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    z = np.abs(x.astype(np.float64))
    small = z < 1.0
    zs = np.where(small, z, 0.0)
    zz = zs * zs
    inner = zs * _polyval(_ERF_T, zz) / _polyval(_ERF_U, zz)
    zl = np.clip(z, 1.0, 6.0)  # erf(6) == 1 in float64
    outer = 1.0 - np.exp(-zl * zl) * _polyval(_ERFC_P, zl) / _polyval(_ERFC_Q, zl)
    result = np.where(small, inner, outer)
    result = np.where(np.isnan(z), np.nan, result)
    return np.copysign(result, x).astype(out_dtype, copy=False)


# Note [Fast erf]: `erf` above is the reference. `erf_fast` is the kernel registered for the
# numpy backend (ember.ops.elementwise), built with numba (optional, the `fast` extra; loaded
# on the first call; EMBER_FAST_KERNELS=0 or no numba gives the reference):
# - float32: a rational approximation on [-4, 4] (odd degree-13 numerator over degree-8
#   denominator in x, the form Eigen and XLA use for float32 erf; beyond 4, erf rounds to +-1
#   in float32) evaluated in float64, so it vectorises (SIMD) and stays within 2 ulp of the
#   correctly rounded value: about 100x faster than the reference, 11x faster than libm's
#   erf per element. GELU in BERT spends most of its elementwise time here.
# - float64: libm's erf per element.
# Small float32 arrays (under ERF_COMPILED_MIN_SIZE elements: a short sequence's GELU) take
# `_erf32_numpy`, the same approximation as NumPy passes, so a fresh process answers without
# loading numba; it is used with or without numba, so results do not depend on the extra. The
# two paths do the same float64 operations in the same order; the compiled one may fuse a
# multiply-add ("contract"), which can move the float64 intermediate by an ulp, almost never
# the float32 result: they agree bit for bit on the test grid and within 1 float32 ulp always.
# Tested against `erf` in tests/ops/test_fast_kernels.py (relative error <= 2 eps).
# Across machines: the float32 kernel allows one flag, "contract" (fused multiply-adds), and
# no reassociation, so its bits depend only on whether the CPU has FMA (every AVX2/AVX-512
# CPU does); numba's disk cache is keyed by the CPU model and features, so machine code built
# on another CPU is never loaded. The 2-eps bound holds either way; parity tests against other
# frameworks use Note [Parity tolerances] (ember/testing/parity.py), which is far above it.
_ERF_NUMERATOR = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_DENOMINATOR = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_ERF_UFUNC = None  # {numpy dtype: ufunc} once built; False without numba
_EN0, _EN1, _EN2, _EN3, _EN4, _EN5, _EN6 = _ERF_NUMERATOR
_ED0, _ED1, _ED2, _ED3, _ED4 = _ERF_DENOMINATOR


def _erf32(x):  # compiled by _build_erf_ufunc; module-level so numba can cache it on disk
    z = min(max(np.float64(x), -4.0), 4.0)  # NaN passes through min/max
    z2 = z * z
    p = (((((_EN0 * z2 + _EN1) * z2 + _EN2) * z2 + _EN3) * z2 + _EN4) * z2 + _EN5) * z2 + _EN6
    q = (((_ED0 * z2 + _ED1) * z2 + _ED2) * z2 + _ED3) * z2 + _ED4
    return np.float32(z * p / q)


def _erf64(x):
    return math.erf(x)


def _build_erf_ufunc():
    """The ufuncs, compiled once and kept in numba's on-disk cache (about 2 s to compile,
    milliseconds to load in a later process)."""
    global _ERF_UFUNC
    from ember.backend import numba_kernels

    _ERF_UFUNC = False
    if not numba_kernels.available():
        return
    import numba

    # "contract" lets multiply-adds fuse; no fast-math flag that assumes finite values
    _ERF_UFUNC = {
        np.dtype(np.float32): numba.vectorize(
            ["float32(float32)"], fastmath={"contract"}, cache=True
        )(_erf32),
        np.dtype(np.float64): numba.vectorize(["float64(float64)"], cache=True)(_erf64),
    }


def _erf32_numpy(x):
    """`_erf32` in NumPy: the same float64 operations in the same order (Note [Fast erf])."""
    z = np.clip(x.astype(np.float64), -4.0, 4.0)  # NaN passes through
    z2 = z * z
    p = _EN0 * z2 + _EN1
    for c in (_EN2, _EN3, _EN4, _EN5, _EN6):
        p *= z2
        p += c
    q = _ED0 * z2 + _ED1
    for c in (_ED2, _ED3, _ED4):
        q *= z2
        q += c
    p *= z
    p /= q
    return p.astype(np.float32)


# Below this many elements a float32 erf runs `_erf32_numpy`: a few NumPy passes cost less than
# loading numba and the cached kernel on a process's first GELU (0.5-1 s; Note [Fast erf]).
ERF_COMPILED_MIN_SIZE = 1 << 16


def erf_fast(x):
    """erf by the fast kernel where there is one (Note [Fast erf]), else the reference."""
    x = np.asarray(x)
    if x.dtype == np.float32 and x.size < ERF_COMPILED_MIN_SIZE:
        return _erf32_numpy(x)
    if _ERF_UFUNC is None:
        _build_erf_ufunc()
    kernel = _ERF_UFUNC.get(x.dtype) if _ERF_UFUNC else None
    if parallel.parallel_worth(x.size, costly=True) and x.flags.c_contiguous:
        out = np.empty(x.shape, x.dtype if x.dtype.kind == "f" else np.float64)
        fn = kernel if kernel is not None else _erf_into  # Note [Parallel kernels]
        return parallel.chunked(fn, out, x, costly=True)
    if kernel is None:
        return erf(x)
    return kernel(x)


def _erf_into(x, out):
    out[...] = erf(x)


# Note [Bitwise where]: np.where(c, a, b) over a random boolean mask runs a data-dependent
# branch per element: 3.3 ms for ReLU's gradient at (64, 16, 28, 28) float32, against 0.3 ms
# for g * c. `where_bits` selects by bits instead, with no branch: the mask as all-ones or
# all-zero integers of the float's width, ANDed with each operand's bits (NaN payloads, signed
# zeros and infinities pass through), so it equals np.where bit for bit. It takes a bool
# condition and two operands of one float32/float64 dtype (0-d included); else np.where.
_BIT_INTS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def where_bits(c, a, b):
    ints = _BIT_INTS.get(getattr(a, "dtype", None))
    if (
        ints is None
        or type(c) is not np.ndarray
        or c.dtype != np.bool_
        or type(a) is not np.ndarray
        or type(b) is not np.ndarray
        or a.dtype != b.dtype
        or max(c.size, a.size, b.size) < 16384
    ):  # np.where as fast below (at 8192)
        return np.where(c, a, b)
    if parallel._active:  # Note [Parallel kernels]
        out = parallel.where_into(c, a, b, _where_bits_into)
        if out is not None:
            return out
    mask = c.view(np.int8).astype(ints)
    np.negative(mask, out=mask)  # 0 or -1: all bits set
    if b.ndim == 0 and not b.view(ints):  # where(c, a, +0.0): ReLU's and dropout's gradients
        out = np.bitwise_and(a.view(ints), mask)
    else:
        out = np.bitwise_and(a.view(ints), mask)
        np.invert(mask, out=mask)
        out = np.bitwise_or(out, np.bitwise_and(b.view(ints), mask))
    if out.ndim < max(c.ndim, a.ndim, b.ndim) or out.shape != np.broadcast_shapes(
        c.shape, a.shape, b.shape
    ):
        out = np.broadcast_to(out, np.broadcast_shapes(c.shape, a.shape, b.shape)).copy()
    return out.view(a.dtype)


def _where_bits_into(c, a, b, out):
    """`where_bits` of one chunk, written into `out` (operands broadcast to it)."""
    ints = _BIT_INTS[out.dtype]
    mask = c.view(np.int8).astype(ints)
    np.negative(mask, out=mask)
    bits = out.view(ints)
    np.bitwise_and(a.view(ints), mask, out=bits)
    if not (b.ndim == 0 and not b.view(ints)):
        np.invert(mask, out=mask)
        np.bitwise_or(bits, np.bitwise_and(b.view(ints), mask), out=bits)


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (in place; returns target)."""
    if not _add_rows(target, index, values):
        np.add.at(target, index, values)
    return target


# Note [Row scatter-add]: an embedding's gradient is `index_add` of the output gradient's rows
# into a zero table, one row per token. `np.add.at` takes ~3 ms for 1024 rows of 384 floats
# (it handles each row as a generic subspace), ~9 ms of each MiniLM training step over the word,
# position and token-type embeddings (PyTorch's index_add: ~0.1 ms each). One integer index over
# the first axis of a C-contiguous float table with matching values runs as a compiled loop
# instead: the rows in index order, each element's sum in the same order as np.add.at's, so
# the same bits (tests/ops/test_fast_kernels.py). Other indices keep np.add.at.
_ADD_ROWS_SOURCE = """
def add_rows(target, index, values):
    for i in range(index.shape[0]):
        row = target[index[i]]
        source = values[i]
        for k in range(row.shape[0]):
            row[k] += source[k]
"""
_ADD_ROWS_MIN = 16  # rows from which the compiled loop pays for its call


def _add_rows(target, index, values) -> bool:
    """Note [Row scatter-add]: the compiled loop where it applies; False where it does not."""
    if isinstance(index, tuple):
        if len(index) != 1:
            return False
        index = index[0]
    if (
        type(target) is not np.ndarray
        or type(index) is not np.ndarray
        or type(values) is not np.ndarray
        or index.dtype.kind not in "iu"
        or index.size < _ADD_ROWS_MIN
        or target.ndim < 2
        or target.size == 0
        or target.dtype not in (np.float32, np.float64)
        or values.dtype != target.dtype
        or values.shape != index.shape + target.shape[1:]
        or not target.flags.c_contiguous
    ):
        return False
    from ember.backend import numba_kernels

    kernel = numba_kernels.jit_source(_ADD_ROWS_SOURCE, "add_rows")
    if kernel is None:
        return False
    rows = target.shape[0]
    flat = index.reshape(-1)
    low, high = int(flat.min()), int(flat.max())
    if low < -rows or high >= rows:  # np.add.at raises its IndexError
        return False
    if low < 0:
        flat = np.where(flat < 0, flat + rows, flat)
    kernel(
        target.reshape(rows, -1),
        flat.astype(np.int64, copy=False),
        np.ascontiguousarray(values).reshape(flat.shape[0], -1),
    )
    return True


def windows(x, window_shape, axis):
    """Sliding windows as a strided view (no copy): numpy's sliding_window_view."""
    return np.lib.stride_tricks.sliding_window_view(x, window_shape, axis=axis)


# Note [Quiet kernels]: PyTorch computes log(0), x/0 and overflowing powers without a warning;
# the NumPy kernels that can raise floating-point warnings run under `quiet`. NumPy 2 keeps its
# error state in a context variable: setting it to a prepared all-ignore state costs a fraction
# of `np.errstate(all="ignore")` (which builds the state on each entry), on every pow and div.
try:
    from numpy._core._multiarray_umath import _make_extobj
    from numpy._core._ufunc_config import _extobj_contextvar as _FP_STATE

    _IGNORE_ALL = _make_extobj(all="ignore")
except (ImportError, AttributeError, TypeError):  # another NumPy: the public context manager
    _FP_STATE = None


def quiet(fn):
    """`fn` with NumPy's floating-point warnings off while it runs (Note [Quiet kernels])."""
    if _FP_STATE is None:

        def run(*args, **kwargs):
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)
    else:

        def run(*args, **kwargs):
            token = _FP_STATE.set(_IGNORE_ALL)
            try:
                return fn(*args, **kwargs)
            finally:
                _FP_STATE.reset(token)

    run.__name__ = fn.__name__
    run.__module__ = fn.__module__
    run.__wrapped__ = fn  # inspect.signature reads the kernel's own signature
    return run


def _parallel_paths(ns):
    """Large elementwise ops and sum/max/min in `ns` run on every core (Note [Parallel
    kernels] in ember/backend/parallel.py): the same NumPy loops on slices of the result."""
    for name, value in np.__dict__.items():
        # elementwise ufuncs only: a generalized one (matmul, vecdot) has core dimensions
        if (
            isinstance(value, np.ufunc)
            and value.nout == 1
            and value.signature is None
            and not name.startswith("_")
        ):
            ns.__dict__[name] = parallel.ufunc(value)
    for name in ("add", "maximum", "minimum"):
        ns.__dict__[name].reduce = parallel.reducer(getattr(np, name))
    ns.where = _where
    ns.astype = parallel.astype
    ns.sum = parallel.total
    ns.max = ns.amax = parallel.extreme("max", np.maximum)
    ns.min = ns.amin = parallel.extreme("min", np.minimum)


def _where(condition, *values):
    """np.where, in parallel over large results (Note [Parallel kernels])."""
    if len(values) == 2 and parallel._active:
        out = parallel.where_into(condition, *values)
        if out is not None:
            return out
    return np.where(condition, *values)


def _make_namespace(parallel_paths=True):
    ns = types.ModuleType("ember.backend.numpy_backend.xp")
    ns.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    if parallel_paths:
        _parallel_paths(ns)
    ns.erf = erf
    ns.scatter_add = scatter_add
    ns.windows = windows
    ns.matmul = blas.matmul  # 2-D float products on MKL when installed (Note [Small GEMMs])
    return ns


class NumpyBackend(Backend):
    name = "numpy"
    device_type = "cpu"
    array_type = np.ndarray
    xp = _make_namespace()
    # the same namespace with NumPy's own functions, no parallel paths: eager dispatch hands
    # it to kernels whose operands are all below parallel.threshold(costly=True), so small
    # ops skip the size checks of the parallel wrappers (Note [Parallel kernels])
    serial_xp = _make_namespace(parallel_paths=False)
    _cpu = Device("cpu")

    def device_of(self, array) -> Device:
        return self._cpu

    def asarray(self, data, dtype=None, device=None, copy=None):
        if hasattr(data, "__array_namespace__") and not isinstance(data, np.ndarray):
            # another backend's array (e.g. CuPy): bring it to host memory first
            data = data.get() if hasattr(data, "get") else np.asarray(data)
        return np.array(data, dtype=dtype, copy=copy) if copy else np.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return array

    def new_bit_generator(self, seed: int):
        return np.random.Generator(np.random.PCG64(seed))

    def rng_get_state(self, rng) -> dict:
        return rng.bit_generator.state

    def rng_set_state(self, rng, state: dict) -> None:
        rng.bit_generator.state = state


backend = NumpyBackend()
register_backend(backend)
