"""Elementwise and reduction work on every core: a small persistent thread pool that runs NumPy's
own loops on slices of one result (Note [Parallel kernels]).

L1 (backend). `ember.backend.numpy_backend` routes the NumPy namespace's elementwise ufuncs,
`where`, `astype` and the sum/max/min reductions through here; the graph compiler's fused
kernels use `threshold()` to choose a parallel (prange) or serial loop, and other kernels may
use `chunked(fn, out, *operands)` and `run_chunks(fn, argsets)` directly.

Note [Parallel kernels]: NumPy runs elementwise ufuncs and reductions on one thread, but it
releases the GIL inside their loops. Above `threshold()` elements (and with
`ember.set_num_threads(n)`, n > 1) an eager op splits its result into 2n chunks along one axis
and runs the same NumPy call on each chunk (its operands are the matching slices, or the whole
operand where it broadcasts along that axis). The caller's thread and the pool's n - 1
persistent workers claim chunks one at a time until none is left, and the caller waits only
for chunks a worker has started: on a loaded machine, where a worker may be scheduled late,
the caller does the work itself instead of waiting for it (with a fixed split in halves, an op
waits for the slowest thread: at a load average of ~20 on this 2-core machine that made 2-thread
ops 1.5-7x slower than serial ones). Below the threshold, or while another thread holds the
pool, the op runs serially, as before; eager dispatch gives ops whose operands are all small
NumPy's own functions (`serial_xp`), so small ops pay no size checks.
Why results equal the serial ones:
- elementwise ops (ufuncs, where, casts): each element's value is computed by the same NumPy
  loop from the same operand values; NumPy's SIMD loops compute an element the same way
  wherever it sits in a slice (tails use the same vector code, masked), so chunking changes no
  bit. Tested op by op at sizes above the threshold (tests/core/test_threads.py).
- reductions over some axes (sum/max/min along the last axis, over rows, ...): the chunks split
  a kept axis, so every output element is reduced from the same values in the same order by
  the same loop (NumPy's pairwise sum along a contiguous row, the row-by-row accumulation along
  a leading axis): bit for bit.
- a full sum of a C-contiguous float array: NumPy sums it in one pairwise tree (halves split at
  a multiple of 8 below n / 2, recursively, down to blocks of 128). The chunks are that tree's
  nodes a few levels down (2n rounded up to a power of two of them), and their sums are added
  in the tree's order, so the result is again bit for bit the serial one.
  Integer sums are exact in any order; max and min are order-free (a tie between -0.0 and
  +0.0 may return either zero, as the serial SIMD loop may too).
Anything else (a non-contiguous full sum, float sums with a cast to another dtype, a float16
sum through float32, ufunc calls with `out=`/`where=`/`dtype=` keywords, F-ordered operands)
stays serial, so no path changes a result.

Thresholds (`threshold()`): a parallel call costs ~13-22 us more than a serial one (measured on
the loaded 2-core machine: result allocation, slicing, four NumPy calls instead of one, a queue
hand-off and the GIL passing between threads; the bare hand-off alone is ~3 us), so it pays
once half the serial time exceeds that: from 2**18 elements for a cheap op (`a + b` on float32
takes ~25-90 us at 2**17 to 2**18 here) and 2**16 for a costly one (exp, tanh, erf, pow:
several times dearer per element), and for the graph compiler's fused kernels (Note [Parallel
loops] in ember/graph/fusion.py).

Note [Thread budget]: `ember.set_num_threads(n)` sets OpenBLAS's threads, numba's and this
pool's to n (default: the cores this process may use), so the three never ask for more than n
cores at once: a BLAS call, a fused numba kernel and a chunked NumPy op run one after another
from the caller's thread, never nested. numba's count is per thread: every thread that runs
ember's kernels takes the budget on its next kernel call (Note [Per-thread numba count] in
ember/backend/numba_kernels.py). Idle workers must not hold a core either: this pool's
threads sleep on a queue (Note [Pool hand-off]); numba's OpenMP layer runs on its own libgomp
with a passive wait policy, even where PyTorch loaded its libgomp first (Note [Own OpenMP] in
ember/backend/numba_kernels.py); OpenBLAS's workers spin 2**28 cycles (~0.13 s) after every
GEMM unless OPENBLAS_THREAD_TIMEOUT was set when NumPy loaded, which `import ember` does when
it comes first, and where NumPy came first it restarts OpenBLAS's threads to read it (Note
[BLAS spin] in ember/backend/threads.py). Results are allocated where their stores do not stall
the loads of their operands (Note [Store aliasing] in ember/backend/memory.py). The pool's
workers are started on first use and dropped in a forked child (a DataLoader worker starts its
own).

Note [Pool hand-off]: what a split costs at 2 threads, and why the workers do not spin. An
idle worker sleeps on the queue; on this VM (a Firecracker guest without a cpuidle driver: an
idle vCPU halts) waking it took ~14 us right after a job and up to ~170 us once its vCPU had
been idle a millisecond. Measured on the 2-core machine under the CPU lock, 2 threads, a packed
16 x 384 @ 384 x 1536 product (ember/backend/mkl_packed.py) after G us of Python on the
caller (medians, us): one thread 131-144 whatever G (187 after 5 ms idle); split 87-90 at G =
0-100, 126-156 at G = 500, 221-231 at G = 5000. A bounded spin was built, measured and not kept
(after each job a worker waited up to 300 us in a numba `nogil` loop on a
counter the caller moved on with every job, an atomic load and `pause` per round, then slept;
EMBER_POOL_SPIN_US / OMP_WAIT_POLICY=passive to tune or disable it). Alone it helped that
product (83 us at G = 0-100), but inside MiniLM's 1 x 16 forward it changed nothing: every
split there already ran half on the worker (360 of 720 chunks in 10 forwards, with and without
the spin), the worker claiming its chunk a median 12.5 us after the caller's without the spin
and 14 us with it, as the gaps between a forward's 36 products are short enough that the vCPU
does not sleep deeply; what is left of those ~13 us is the GIL (the worker takes it from the
caller, which holds it until its own chunk enters MKL) and the Python around a chunk. Forward
times, one process, configurations interleaved in alternating order: 7.70 / 7.89 ms with the
spin against 7.64 / 7.89 without, and 10.06 against 10.68 ms medians on a busier machine
(noise); bench_minilm_threads 1 x 16 at 2 threads, ratio to PyTorch 1.13-1.14 against
1.17-1.18 (separate processes, within their noise). Variants measured worse: spinning at
SCHED_IDLE (a worker woken onto the caller's core at idle priority waited for it: 134 us for
the product above), waiting also until the caller starts its chunk before taking the GIL, and
the caller spinning while it waits for a worker's chunk (no gain). So the workers sleep at
once, burning nothing; a faster hand-off needs chunks that run without the GIL (native work
claimed from a spinning worker, or numba's OpenMP threads as in Note [Split on numba's threads]
in ember/backend/blas.py, which split packed products take: Note [Packed split on numba's
threads] in ember/backend/mkl_packed.py).
"""

from __future__ import annotations

import _thread
import contextvars
import os
import queue
import threading

import numpy as np

from ember.backend.denormals import follow as follow_denormals
from ember.backend.memory import empty_apart

__all__ = [
    "threshold",
    "num_threads",
    "set_threads",
    "chunked",
    "run_chunks",
    "ufunc",
    "where_into",
    "copy_c_order",
    "reduce",
]

# Note [Parallel kernels]: from this many elements a cheap op (a + b, a sum, a cast) runs in
# parallel; a costly one (exp, tanh, erf, a fused kernel: tens of cycles per element) from a
# quarter of it
_MIN_SIZE = 1 << 18
_COSTLY_SHIFT = 2
_COSTLY = frozenset(
    "exp exp2 expm1 log log2 log10 log1p sin cos tan arcsin arccos arctan arctan2 sinh cosh "
    "tanh arcsinh arccosh arctanh power float_power hypot cbrt logaddexp logaddexp2".split()
)
_NDARRAY = np.ndarray

# each thread's share is cut in this many chunks, claimed by whichever thread is free: a
# worker that the OS schedules late takes fewer (Note [Parallel kernels])
_CHUNKS_PER_THREAD = 2
_threads = 0  # the cores available (set below), or what set_num_threads gave
_active = False  # _threads > 1: the ufunc wrappers check this first
_pool = None


def threshold(costly: bool = False) -> int:
    """Elements from which an op runs in parallel: a cheap one (arithmetic, comparisons, sums)
    or a `costly` one (transcendental functions, fused kernels) (Note [Parallel kernels])."""
    return _MIN_SIZE >> _COSTLY_SHIFT if costly else _MIN_SIZE


def num_threads() -> int:
    """Threads the parallel kernels use (the caller's included)."""
    if not _threads:
        set_threads(_default_threads())
    return _threads


def _default_threads() -> int:
    for name in ("EMBER_NUM_THREADS", "OMP_NUM_THREADS"):  # as OpenBLAS and numba read them
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_threads(n: int) -> None:
    """Use `n` threads (called by `ember.set_num_threads`; Note [Thread budget])."""
    global _threads, _active
    _threads = max(1, int(n))
    _active = _threads > 1


set_threads(_default_threads())  # the default: every core this process may use


# Note [Per-thread pool count]: a thread may be given a thread count of its own
# (`set_thread_count`: a serve worker's `threads_per_instance`, Note [Model instances] in
# ember/serve/batching.py), which then governs its chunked ops and split products (run_chunks,
# blas.split_threads) instead of `ember.set_num_threads`'s, as numba's count does (Note
# [Per-thread numba count] in ember/backend/numba_kernels.py): a worker given 1 thread never
# takes the pool, so N such workers use N cores, not N times the budget. Chunking does not
# change a result (Note [Parallel kernels]), so neither does the count.
_own = threading.local()


def set_thread_count(n: int | None) -> None:
    """Give the calling thread `n` threads of its own for the pool's work (None: follow
    `ember.set_num_threads` again) (Note [Per-thread pool count])."""
    if n is not None and int(n) < 1:
        raise ValueError(f"set_thread_count: expected a positive number of threads, got {n}")
    _own.count = None if n is None else int(n)


def own_thread_count():
    """The calling thread's own count (`set_thread_count`), or None."""
    return getattr(_own, "count", None)


def threads_here() -> int:
    """Threads the calling thread's parallel work uses (its own count, else the budget)."""
    own = getattr(_own, "count", None)
    return num_threads() if own is None else own


def parallel_worth(size: int, costly: bool = False) -> bool:
    """Whether an op over `size` elements should run on the pool now."""
    if not _threads:
        num_threads()
    return (
        _active
        and size >= threshold(costly)
        and not overloaded()
        and getattr(_own, "count", None) != 1  # Note [Per-thread pool count]
    )


class _Job:
    """One parallel call: its chunks, claimed one at a time by whichever thread is free."""

    __slots__ = ("fn", "argsets", "next", "closed", "running", "waiting", "lock", "done")
    __slots__ += ("error", "context")

    def __init__(self, fn, argsets, context):
        self.fn = fn
        self.argsets = argsets
        self.next = 0
        self.closed = False  # the caller found nothing left: workers claim no more
        self.running = 0  # chunks claimed by workers and not finished
        self.waiting = False
        self.lock = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.error = None
        self.context = context

    def claim(self, by_worker: bool):
        with self.lock:
            if self.closed or self.next == len(self.argsets):
                return None
            index = self.next
            self.next += 1
            if by_worker:
                self.running += 1
            return index

    def run_chunk(self, index) -> None:
        try:
            self.fn(*self.argsets[index])
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            if self.error is None:
                self.error = error

    def worker_finished(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0 and self.waiting:
                self.waiting = False
                self.done.release()

    def close_and_wait(self) -> None:
        """The caller: no more claims; wait only for chunks workers are running now."""
        with self.lock:
            self.closed = True
            if self.running == 0:
                return
            self.waiting = True
        self.done.acquire()


def _work(job):
    while True:
        index = job.claim(True)
        if index is None:
            return
        try:
            job.run_chunk(index)
        finally:
            job.worker_finished()


_STOP = object()  # a job that ends the worker taking it (`_Pool.close`)


def _worker_loop(jobs):
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        follow_denormals()  # the flush-to-zero mode set since (Note [Denormals on every thread])
        # floating-point error state (np.errstate) lives in a context variable: each worker
        # runs in its own copy of the caller's context
        job.context.copy().run(_work, job)


class _Pool:
    """Persistent worker threads fed through one queue (Note [Parallel kernels], Note [Pool
    hand-off])."""

    def __init__(self):
        self.jobs = queue.SimpleQueue()
        self.workers = 0
        self.threads = []
        self.busy = _thread.allocate_lock()

    def run(self, fn, argsets, threads) -> bool:
        """Run fn(*args) for every args in `argsets` on this thread and `threads - 1` workers;
        False, doing nothing, when another thread is using the pool."""
        if not self.busy.acquire(False):
            return False
        try:
            helpers = min(threads, len(argsets)) - 1
            while self.workers < helpers:
                worker = threading.Thread(
                    target=_worker_loop, args=(self.jobs,), name="ember-parallel", daemon=True
                )
                worker.start()
                self.threads.append(worker)
                self.workers += 1
            job = _Job(fn, argsets, contextvars.copy_context())
            for _ in range(helpers):
                self.jobs.put(job)
            try:
                while True:
                    index = job.claim(False)
                    if index is None:
                        break
                    job.run_chunk(index)
            finally:
                job.close_and_wait()
                # no claim can succeed now: drop the chunks' arrays, which a worker holding
                # the job until its next one (or a job still queued) would keep alive, and
                # with them a count of references the autograd engine reads (Note [Slot
                # gradients] in ember/autograd/engine.py)
                job.fn, job.argsets = None, ()
            if job.error is not None:
                raise job.error
            return True
        finally:
            self.busy.release()

    def close(self, timeout: float = 10.0) -> bool:
        """End the workers (they finish the job they are on); whether all ended in `timeout`
        seconds. The module's pool lives as long as the process: tests and embedders close
        pools of their own."""
        with self.busy:
            threads = list(self.threads)
            for _ in threads:
                self.jobs.put(_STOP)
            for thread in threads:
                thread.join(timeout)
            self.threads = [t for t in threads if t.is_alive()]
            self.workers = len(self.threads)
            return not self.threads


_forked_child = False


def _forget_pool():  # a forked child has none of the parent's threads
    global _pool, _forked_child
    _pool = None
    _forked_child = True


def in_forked_child() -> bool:
    """Whether this process was forked from another (whose thread pools it does not have)."""
    return _forked_child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


# Note [Overloaded machine]: with more runnable threads than cores on the machine (other
# processes), an op split over two threads ends when the later of the two is scheduled. ember
# used to run everything serially while the 1-minute load average exceeded 1.5x the cores;
# measured again on the 2-core machine with the shared lock held and k busy-looping processes
# beside a 2-thread MiniLM forward 32x128 (ember alone, medians of 3, the fallback forced on
# against plain chunking): k=0 753 ms serial against 549 ms chunked; k=2 980 against 940; k=4
# 2484 against 1835; k=12 (load ~14) 5174 against 4304; the fine-tune step 16x128: k=0 948
# against 816, k=2 2547 against 2284, k=4 4051 against 4172. Chunks are claimed dynamically
# (Note [Parallel kernels]), so a descheduled worker leaves its chunks to the caller, and the
# second core still helps whenever it is given to this process; serial never won by more than
# the noise. A process's own threads count in the load average too: a 2-thread ember run with
# OpenBLAS's default spin (Note [BLAS spin] in ember/backend/threads.py) keeps ~3 threads
# runnable, enough to pass 1.5x on 2 cores by itself. So the fallback is off by default: only
# EMBER_SERIAL_LOAD=x (a factor of the cores) turns it on, for a user who would rather leave a
# crowded machine's cores to others; then ops take NumPy's serial call (`parallel_worth` says
# no) and fused kernels their serial build while the load average exceeds x times the cores
# (read at most twice a second). Results are the same either way.
def _load_limit():
    value = os.environ.get("EMBER_SERIAL_LOAD", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(
            f"EMBER_SERIAL_LOAD: expected a number (a factor of the cores), got {value!r}"
        ) from None


_LOAD_LIMIT = _load_limit()
_load_state = [0.0, False]  # (when read, overloaded)


def overloaded() -> bool:
    """Whether EMBER_SERIAL_LOAD is set and the machine's load average exceeds it (Note
    [Overloaded machine])."""
    if _LOAD_LIMIT is None:
        return False
    import time

    now = time.monotonic()
    if now - _load_state[0] > 0.5:
        _load_state[0] = now
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # no load average on this platform
            load = 0.0
        _load_state[1] = load > _LOAD_LIMIT * (os.cpu_count() or 1)
    return _load_state[1]


def run_chunks(fn, argsets) -> None:
    """Run fn(*args) for each args in `argsets`, in parallel on the pool when it is free,
    else one after another on this thread."""
    global _pool
    threads = threads_here()  # Note [Per-thread pool count]
    if len(argsets) > 1 and threads > 1 and not overloaded():
        pool = _pool
        if pool is None:
            pool = _pool = _Pool()
        if pool.run(fn, argsets, threads):
            return
    for args in argsets:
        fn(*args)


def _split_axis(shape, n):
    """The first axis with at least n elements, else None."""
    for d, size in enumerate(shape):
        if size >= n:
            return d
    return None


def _bounds(size, n):
    return [(size * i // n, size * (i + 1) // n) for i in range(n)]


def _slice_operand(x, axis, out_ndim, lo, hi):
    """`x`'s part that broadcasts to [lo, hi) of the result's `axis` (all of it if it
    broadcasts along that axis)."""
    if type(x) is not _NDARRAY:
        return x
    d = axis - (out_ndim - x.ndim)
    if d < 0 or x.shape[d] == 1:
        return x
    return x[(slice(None),) * d + (slice(lo, hi),)]


def chunked(fn, out, *operands, costly=False):
    """fn(*operand_chunks, out=out_chunk) over slices of `out` on the pool; returns `out`.

    `operands` broadcast to `out.shape` (arrays or scalars); each chunk gets the matching slices
    (Note [Parallel kernels]). Serial when `out` is below `threshold(costly)` or one thread is
    set."""
    n = num_threads() * _CHUNKS_PER_THREAD
    axis = _split_axis(out.shape, n) if parallel_worth(out.size, costly) else None
    if axis is None:
        fn(*operands, out=out)
        return out
    argsets = []
    lead = (slice(None),) * axis
    for lo, hi in _bounds(out.shape[axis], n):
        chunk = [_slice_operand(x, axis, out.ndim, lo, hi) for x in operands]
        argsets.append((fn, chunk, out[lead + (slice(lo, hi),)]))
    run_chunks(_call_into, argsets)
    return out


def _call_into(fn, operands, out):
    fn(*operands, out=out)


# --- elementwise -------------------------------------------------------------------------------
_SCALAR_TYPES = (bool, int, float, complex)


def _operand_dtype(x):
    if type(x) is _NDARRAY:
        return x.dtype
    if type(x) in _SCALAR_TYPES:
        return type(x)  # a weak Python scalar (NEP 50)
    if isinstance(x, np.generic):
        return x.dtype
    return None


def _layout_ok(operands, shape) -> bool:
    """Every full-size array operand is C-contiguous (then the serial result is C-ordered too,
    and so is ours)."""
    for x in operands:
        if type(x) is _NDARRAY and x.ndim == len(shape) and not x.flags.c_contiguous:
            return False
    return True


def _parallel_ufunc(uf, operands, costly):
    """The ufunc's result computed in chunks, or None where the serial call must run."""
    try:
        shape = np.broadcast_shapes(*(np.shape(x) for x in operands))
        dtypes = tuple(_operand_dtype(x) for x in operands)
        if None in dtypes:
            return None
        out_dtype = uf.resolve_dtypes(dtypes + (None,))[-1]
    except (TypeError, ValueError, np.exceptions.DTypePromotionError):
        return None  # the serial call gives its own error
    size = 1
    for s in shape:
        size *= s
    if not parallel_worth(size, costly) or out_dtype.kind == "O" or not _layout_ok(operands, shape):
        return None
    out = empty_apart(shape, out_dtype, *operands)  # Note [Store aliasing]
    return chunked(uf, out, *operands, costly=costly)


def ufunc(uf):
    """`uf` (a NumPy ufunc with one result) that runs large calls in parallel: same arguments,
    same results, same attributes (`reduce`, `at`, ...) (Note [Parallel kernels])."""
    nin = uf.nin
    if uf.nout != 1 or uf.signature is not None:  # not elementwise (matmul) or two results
        return uf
    costly = uf.__name__ in _COSTLY
    shift = _COSTLY_SHIFT if costly else 0

    if nin == 1:

        def call(*args, **kwargs):
            if _active and not kwargs and len(args) == 1:
                x = args[0]
                if type(x) is _NDARRAY and x.size >= _MIN_SIZE >> shift:
                    result = _parallel_ufunc(uf, args, costly)
                    if result is not None:
                        return result
            return uf(*args, **kwargs)

    else:

        def call(*args, **kwargs):
            if _active and not kwargs and len(args) == nin:
                for x in args:
                    if type(x) is _NDARRAY and x.size >= _MIN_SIZE >> shift:
                        result = _parallel_ufunc(uf, args, costly)
                        if result is not None:
                            return result
                        break
            return uf(*args, **kwargs)

    for name in (
        "nin",
        "nout",
        "nargs",
        "ntypes",
        "types",
        "identity",
        "signature",
        "reduce",
        "accumulate",
        "reduceat",
        "outer",
        "at",
        "resolve_dtypes",
    ):
        if hasattr(uf, name):
            setattr(call, name, getattr(uf, name))
    call.__name__ = uf.__name__
    call.__qualname__ = uf.__name__
    call.__doc__ = uf.__doc__
    call.__wrapped__ = uf
    return call


def _where_chunk(c, a, b, out):
    np.copyto(out, b)
    np.copyto(out, a, where=c)


def where_into(c, a, b, kernel=_where_chunk):
    """np.where(c, a, b) in chunks (`kernel(c, a, b, out)` fills one), or None where it must
    run serially."""
    if not _active:
        return None
    try:
        shape = np.broadcast_shapes(np.shape(c), np.shape(a), np.shape(b))
    except ValueError:
        return None
    size = 1
    for s in shape:
        size *= s
    if (
        not parallel_worth(size)
        or type(c) is not _NDARRAY
        or c.dtype != np.bool_
        or not _layout_ok((c, a, b), shape)
    ):
        return None
    da, db = _operand_dtype(a), _operand_dtype(b)
    if da is None or db is None:
        return None
    dtype = np.result_type(a, b)
    if dtype.kind not in "biuf":
        return None
    out = empty_apart(shape, dtype, c, a, b)
    return chunked(kernel, out, c, a, b)


def _copy_chunk(x, out):
    np.copyto(out, x, casting="unsafe")


def copy_c_order(x):
    """A C-ordered copy of the array `x` (a strided view: heads merged, a transpose), in
    chunks on the pool where it is large (Note [Parallel kernels]: each element copied as is,
    so the same bytes as NumPy's one-thread copy). MiniLM 16 x 64's head merge, 16 x 64 x 12 x
    32 float32 from (batch, head)-ordered storage, 2 threads: 0.100 against 0.115 ms; at
    16 x 128 0.17 against 0.24 ms (min of 50, one process); a training step makes 24 such
    copies."""
    if x.ndim and parallel_worth(x.size):
        return chunked(_copy_chunk, empty_apart(x.shape, x.dtype, x), x)
    return np.array(x, copy=True, order="C")


def astype(x, dtype, /, *, copy=True, **kwargs):
    """np.astype(x, dtype, copy=...) with large casts in chunks (Note [Parallel kernels])."""
    if (
        _active
        and not kwargs
        and type(x) is _NDARRAY
        and x.size >= _MIN_SIZE
        and x.flags.c_contiguous
    ):
        dtype = np.dtype(dtype)
        if dtype == x.dtype:
            return x.copy() if copy else x
        if dtype.kind in "biuf" and x.dtype.kind in "biuf" and parallel_worth(x.size):
            return chunked(_copy_chunk, empty_apart(x.shape, dtype, x), x)
    if isinstance(x, (_NDARRAY, np.generic)):
        return x.astype(dtype, copy=copy, **kwargs)
    return np.astype(x, dtype, copy=copy, **kwargs)


# --- reductions --------------------------------------------------------------------------------
def _normal_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    axes = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < ndim:
            return None
        axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        return None
    return tuple(sorted(axes))


def _tree_leaves(lo, hi, depth):
    """NumPy's pairwise-sum split of [lo, hi), `depth` levels down (Note [Parallel kernels])."""
    if depth == 0:
        return [(lo, hi)]
    n = hi - lo
    half = n // 2
    half -= half % 8
    return _tree_leaves(lo, lo + half, depth - 1) + _tree_leaves(lo + half, hi, depth - 1)


def _tree_combine(uf, values):
    while len(values) > 1:
        values = [uf(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    return values[0]


def reduce(uf, x, axis=None, dtype=None, keepdims=False):
    """uf.reduce(x, axis, dtype, keepdims=keepdims) in chunks for `uf` in add, maximum and
    minimum, or None where the serial call must run (Note [Parallel kernels])."""
    if not _active or type(x) is not _NDARRAY or x.size < _MIN_SIZE or x.ndim == 0:
        return None
    kind = x.dtype.kind
    if kind not in "fiu" or not x.flags.c_contiguous or not parallel_worth(x.size):
        return None
    if dtype is not None:
        dtype = np.dtype(dtype)
        if kind == "f" and dtype != x.dtype:
            return None  # a cast inside the loop changes NumPy's blocking of a float sum
        if dtype.kind not in "iuf" or (kind in "iu" and dtype.kind == "f"):
            return None
    axes = _normal_axes(axis, x.ndim)
    if axes is None:
        return None
    n = num_threads() * _CHUNKS_PER_THREAD
    kept = [d for d in range(x.ndim) if d not in axes]
    if kept:
        split = next((d for d in kept if x.shape[d] >= n), None)
        if split is None:
            return None
        results = [None] * n
        lead = (slice(None),) * split

        def part(i, lo, hi):
            results[i] = uf.reduce(x[lead + (slice(lo, hi),)], axes, dtype, None, True)

        run_chunks(part, [(i, lo, hi) for i, (lo, hi) in enumerate(_bounds(x.shape[split], n))])
        out = np.concatenate(results, axis=split)
        if not keepdims:
            out = out.reshape(tuple(x.shape[d] for d in kept))
        return out
    # a full reduction
    if uf is np.add and kind == "f":
        leaves = _tree_leaves(0, x.size, (n - 1).bit_length())  # n rounded up to a power of 2
    else:  # integer sums, max, min: any split gives the same result
        leaves = _bounds(x.size, n)
    flat = x.reshape(-1)
    results = [None] * len(leaves)

    def leaf(i, lo, hi):
        results[i] = uf.reduce(flat[lo:hi], 0, dtype)

    run_chunks(leaf, [(i, lo, hi) for i, (lo, hi) in enumerate(leaves)])
    total = _tree_combine(uf, results)
    if keepdims:
        return np.asarray(total).reshape((1,) * x.ndim)
    return total


def reducer(uf):
    """`uf.reduce` running large reductions in parallel (add, maximum, minimum)."""
    serial = uf.reduce

    def call(array, axis=0, dtype=None, out=None, keepdims=False, **kwargs):
        if out is None and not kwargs and _active:
            result = reduce(uf, array, axis, dtype, keepdims)
            if result is not None:
                return result
        return serial(array, axis, dtype, out, keepdims, **kwargs)

    call.__name__ = "reduce"
    return call


def extreme(name, uf):
    """np.max / np.min (`name`) with large reductions in parallel."""
    serial = getattr(np, name)

    def call(a, axis=None, out=None, keepdims=False, **kwargs):
        if out is None and not kwargs and _active:
            result = reduce(uf, a, axis, None, keepdims)
            if result is not None:
                return result
        return serial(a, axis=axis, out=out, keepdims=keepdims, **kwargs)

    call.__name__ = name
    call.__wrapped__ = serial
    return call


def total(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    """np.sum with large sums in parallel."""
    if out is None and not kwargs and _active and type(a) is _NDARRAY and a.size >= _MIN_SIZE:
        if a.dtype.kind in "iu" and dtype is None:
            dtype = np.add.reduce(a[:0].reshape(-1), 0).dtype  # NumPy's integer sum dtype
        result = reduce(np.add, a, axis, dtype, keepdims)
        if result is not None:
            return result
    return np.sum(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kwargs)
