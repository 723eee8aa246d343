"""How many threads the CPU kernels use: `ember.set_num_threads(n)` / `get_num_threads()`.

NumPy's matrix products run on the BLAS library it was built with (OpenBLAS in the PyPI
wheels), whose worker threads busy-wait: with more runnable threads than free cores (other
processes, or a data loader's workers) a small GEMM can take 20x longer. PyTorch users set
`torch.set_num_threads`; this is ember's equivalent. It finds the BLAS library already loaded
in this process (Linux: /proc/self/maps) and calls its own thread-count setter through ctypes,
so it needs no package beyond NumPy; numba's kernel threads and the pool that runs large
elementwise ops and reductions in parallel (ember/backend/parallel.py) follow.
"""

from __future__ import annotations

import ctypes
import os
import sys

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
    "MKL_Set_Num_Threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "MKL_Get_Max_Threads",
)
_blas = None  # (setter, getter, library) once found; False when none is loaded
_requested: int | None = None

# Note [BLAS spin]: after each job OpenBLAS's worker threads busy-wait for the next one, for
# 2**28 CPU cycles by default: measured 128 ms of a core after the last GEMM on this 2-core
# machine (bench/harness.py's Note [Quiet side] has the per-thread figures). Inside ember's own
# 2-thread work the spinning worker takes the core that numba's and the pool's workers need
# between GEMMs (MiniLM forward 32x128: the BLAS worker ran 0.65 s of CPU in a 0.72 s call);
# after ember's work it takes the core from whatever runs next (the data loader, another
# library: PyTorch's LSTM layer beside it took 33.8 ms instead of 5.8 ms at 2 threads). OpenBLAS
# reads the limit (OPENBLAS_THREAD_TIMEOUT, log2 of the cycles, 4 to 30) only when NumPy loads
# it, so `import ember` sets OPENBLAS_THREAD_TIMEOUT=16 (~30 us) when NumPy is not loaded yet
# and the user has not chosen a value (at the top of ember/__init__.py, before anything imports
# NumPy; child processes inherit it). Measured on the quiet 2-core machine, ember alone at 2
# threads, one process each way (min / median): MiniLM forward 32x128 651 / 669 ms -> 517 / 529
# ms, fine-tune step 16x128 872 / 978 -> 756 / 819 ms, forward 1x16 unchanged (107 ms per 10);
# the compiled MNIST MLP step 0.37-0.40 ms either way. A process that imported NumPy first
# has OpenBLAS's threads running with the default spin already: there `import ember` sets the
# variable all the same (for child processes) and restarts OpenBLAS's threads so that they read
# it (`shorten_blas_spin`: blas_thread_shutdown_, openblas_read_env, blas_thread_init, the
# calls OpenBLAS's own fork handler makes; only where the library exports all three, and never
# over a value the user set). An earlier measurement of that restart (a compiled MNIST MLP step
# of 26.6 ms instead of 0.46 ms at 2 threads) ran while two other stalls, since fixed, hit the
# same step: numba's kernels on PyTorch's spinning OpenMP workers (Note [Own OpenMP] in
# ember/backend/numba_kernels.py) and bench_mlp's 2-thread child pinned to one core. Measured
# again without them, NumPy imported first, 2 threads, quiet machine: see the figures in
# `shorten_blas_spin`'s docstring.


def _numpy_blas_folder() -> str:
    import numpy

    return os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))


def _find_blas():
    """(setter, getter, library) of NumPy's OpenBLAS, or False when it cannot be found.

    Note [Which OpenBLAS]: a process can hold several OpenBLAS copies, each with its own thread
    pool: NumPy's (numpy.libs/libscipy_openblas64_*.so) and SciPy's (scipy.libs/
    libscipy_openblas*.so, loaded when transformers builds a model). The one to set is NumPy's,
    which every `xp.matmul` runs on; taking the first one mapped set SciPy's and left NumPy's on
    every core, so benchmarks at "1 thread" ran ember's GEMMs on 2: bench_minilm_threads.py's
    MiniLM forward 32 x 128 "at 1 thread" took 534 ms that way and 836 ms on one core (the
    quiet 2-core machine, min of 5; PyTorch 655-724 ms). `set_num_threads` sets every BLAS it
    finds (`_all_blas`), and reads the count back from NumPy's.
    """
    global _blas
    if _blas is not None:
        return _blas
    libraries = _all_blas()
    numpy_s = os.path.join(_numpy_blas_folder(), "numpy")
    # NumPy's own first; an MKL that ember loaded for few-row products (Note [Small GEMMs])
    # runs sequentially, and taking its setter would leave OpenBLAS on all cores
    libraries.sort(key=lambda item: (not item[3].startswith(numpy_s), "mkl_rt" in item[3]))
    _blas = libraries[0][:3] if libraries else False
    return _blas


_opened: dict = {}  # path -> (setter, getter, library, path) or None


def _all_blas() -> list:
    """(setter, getter, library, path) of every OpenBLAS or MKL mapped into this process
    (Linux: /proc/self/maps; Note [Which OpenBLAS])."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded)

    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                name = os.path.basename(path).lower()
                if path.startswith("/") and ("openblas" in name or "mkl_rt" in name):
                    if path not in paths:
                        paths.append(path)
    except OSError:  # not Linux: no portable way without extra packages
        return []
    found = []
    for path in paths:
        if path not in _opened:
            _opened[path] = None
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            setter = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
            getter = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                if getter is not None:
                    getter.restype = ctypes.c_int
                _opened[path] = (setter, getter, lib, path)
        if _opened[path] is not None:
            found.append(_opened[path])
    return found


_SPIN_LOG2_CYCLES = "16"  # ~30 us (Note [BLAS spin])
blas_spin_restarted = False  # whether `shorten_blas_spin` restarted OpenBLAS's threads


def shorten_blas_spin() -> bool:
    """Restart OpenBLAS's worker threads with a ~30 us idle spin, in a process that loaded NumPy
    (and so OpenBLAS, with its default 0.1 s spin) before ember; whether it did (Note [BLAS
    spin]). Not while another thread runs a BLAS call: `import ember` calls it once, at import.

    Measured on the quiet 2-core machine at 2 threads, NumPy imported first, with the default
    spin (OPENBLAS_THREAD_TIMEOUT=28 given) against this restart: MiniLM forward 32x128 (ember
    alone, mean of 5, two processes each way) 846 / 890 ms -> 682 / 715 ms, the OpenBLAS
    worker's CPU time 3.2 s -> 1.4 s in a 4.2 s run; the compiled MNIST MLP step, the canary
    for stalled threads (bench_mlp --jax-only): batch 64 422 -> 357 us a step (JAX 361 / 322 in
    the same runs), batch 1 156 -> 150 us."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:  # the user's choice, or already done
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = _SPIN_LOG2_CYCLES  # child processes read it at start
    blas = _find_blas()
    if not blas:
        return False
    lib = blas[2]
    names = ("blas_thread_shutdown_", "openblas_read_env", "blas_thread_init")
    if not all(hasattr(lib, name) for name in names):  # another BLAS, or another OpenBLAS build
        return False
    for name in names:
        getattr(lib, name).restype = ctypes.c_int if name == "blas_thread_init" else None
    lib.blas_thread_shutdown_()  # joins the workers (OpenBLAS's fork handler does the same)
    lib.openblas_read_env()  # reads OPENBLAS_THREAD_TIMEOUT again
    lib.blas_thread_init()  # new workers with the short spin
    global blas_spin_restarted
    blas_spin_restarted = True
    return True


def set_num_threads(n: int) -> None:
    """Use `n` threads in the CPU kernels: BLAS matmuls, numba kernels and the chunked NumPy
    ops (Note [Thread budget] in ember/backend/parallel.py). The default is the cores this
    process may use."""
    global _requested
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, got {n}")
    _requested = n
    _find_blas()
    for setter, *_ in _all_blas():  # SciPy's too (Note [Which OpenBLAS])
        setter(n)
    from ember.backend import blas as small_gemm
    from ember.backend import parallel

    small_gemm.set_num_threads(n)
    parallel.set_threads(n)  # the chunked NumPy ops (Note [Thread budget])
    if "numba" in sys.modules:
        from ember.backend import numba_kernels

        try:
            numba_kernels.start_threads()
        except Exception:  # noqa: BLE001 - numba's threading layer cannot start: nothing to set
            pass


def get_num_threads() -> int:
    """Threads the CPU kernels use (the BLAS library's count when it can be read)."""
    blas = _find_blas()
    if blas and blas[1] is not None:
        return int(blas[1]())
    if _requested is not None:
        return _requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
