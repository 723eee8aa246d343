"""Flushing denormal floats to zero on the CPU: `ember.set_flush_denormal(mode)`, as
`torch.set_flush_denormal`.

Note [Denormals]: x86 CPUs compute with denormal (subnormal) operands in microcode, ~100 cycles
an operation. Adam's moments of a parameter whose gradient stays zero (a dead ReLU unit) decay
into that range within a few hundred steps (0.9^t), and from then on every update of them is
that slow: the compiled MNIST step at batch 1 ran ~10x slower than XLA, which sets the SSE flags
FTZ (flush results to zero) and DAZ (read denormal operands as zero) on its threads. The flags
live in the MXCSR register of each thread; this module sets or clears them through the C
library's `fegetenv` / `fesetenv` (glibc on x86-64: MXCSR is the last 32-bit word of `fenv_t`).
It is off by default, as in PyTorch: results then match IEEE arithmetic bit for bit; on, a value
below float32's smallest normal (1.2e-38) reads and writes as zero, as in JAX.

Note [Denormals on every thread]: a thread starts with the flags of the thread that created
it, and keeps them: setting them on the calling thread alone left the compute threads started
before the call on the old mode. ember's pool workers (ember/backend/parallel.py) and numba's
OpenMP workers (the parallel fused kernels, the split products) are started on first use, so
a 2-thread kernel then computed one half of a tensor with denormals and the other without,
whichever mode was asked for. Measured (quiet 2-core machine, 2 threads, the compiled MNIST MLP
step at batch 64 on its real batches, 20 steps run before the switch, median of each of epochs
1-3): 397-407 us a step before this, 321-333 us after (~10 us of it the cross-entropy kernel
change of the same session); no stored state was denormal either way, so the cost is likely
the worker's denormal intermediates (the squares of tiny gradients in Adam's update). So
`set_flush_denormal` sets the calling thread, then every numba worker of the calling thread's
team (a parallel kernel, one iteration per worker at numba's full thread count; where numba's
threading layer has not started, the workers it starts later inherit the caller's flags), and
ember's pool workers take the mode before their next job (`follow`: one integer compare a job).
Other user threads keep their own flags, as with PyTorch's switch (each thread that computes
calls it; a thread's numba team is set when that thread calls it), and so do OpenBLAS's
workers (NumPy's products).
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["set_flush_denormal", "flush_denormal", "follow"]

_FTZ = 1 << 15
_DAZ = 1 << 6
_libm = None
_mode = None  # what set_flush_denormal last set (None: never called; threads keep theirs)
_generation = 0  # bumped by each set_flush_denormal: pool workers compare it (`follow`)
_local = threading.local()


def _lib():
    global _libm
    if _libm is None:
        import ctypes.util
        import platform

        _libm = False
        if platform.machine().lower() in ("x86_64", "amd64") and platform.system() == "Linux":
            name = ctypes.util.find_library("m") or "libm.so.6"
            try:
                lib = ctypes.CDLL(name)
                lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
                _libm = lib
            except OSError:
                _libm = False
    return _libm


def _mxcsr(lib, env) -> int:
    return int.from_bytes(bytes(env[28:32]), "little")


def flush_denormal() -> bool:
    """Whether the calling thread flushes denormals to zero (FTZ and DAZ set)."""
    lib = _lib()
    if not lib:
        return False
    env = (ctypes.c_ubyte * 32)()
    lib.fegetenv(env)
    return _mxcsr(lib, env) & (_FTZ | _DAZ) == (_FTZ | _DAZ)


def _set_this_thread(lib, mode: bool) -> bool:
    env = (ctypes.c_ubyte * 32)()
    if lib.fegetenv(env) != 0:
        return False
    value = _mxcsr(lib, env)
    value = value | _FTZ | _DAZ if mode else value & ~(_FTZ | _DAZ)
    env[28:32] = list(value.to_bytes(4, "little"))
    return lib.fesetenv(env) == 0


def set_flush_denormal(mode: bool) -> bool:
    """Flush denormal floats to zero (True) or compute with them (False, the default) on the
    calling thread and on ember's compute threads (Note [Denormals on every thread]); returns
    False where the CPU or platform has no such switch (Note [Denormals]).

    Example:
        >>> import ember
        >>> ember.set_flush_denormal(True)  # doctest: +SKIP
        True
        >>> ember.tensor([1e-39], dtype=ember.float32) * 1.0  # doctest: +SKIP
        tensor([0.])
        >>> ember.set_flush_denormal(False)  # doctest: +SKIP
        True
    """
    global _mode, _generation
    lib = _lib()
    if not lib or not _set_this_thread(lib, bool(mode)):
        return False
    _mode = bool(mode)
    _generation += 1
    _local.generation = _generation
    from ember.backend import numba_kernels

    numba_kernels.set_team_flush_denormal(lib, _mode)
    return True


def follow() -> None:
    """Take the mode `set_flush_denormal` set since this thread last looked (ember's pool
    workers call it before each job; Note [Denormals on every thread])."""
    if getattr(_local, "generation", 0) != _generation:
        _local.generation = _generation
        lib = _lib()
        if lib and _mode is not None:
            _set_this_thread(lib, _mode)
