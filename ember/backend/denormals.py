"""Flushing denormal floats to zero on the CPU: `ember.set_flush_denormal(mode)`, as
`torch.set_flush_denormal`.

Note [Denormals]: x86 CPUs compute with denormal (subnormal) operands in microcode, ~100 cycles
an operation. Adam's moments of a parameter whose gradient stays zero (a dead ReLU unit) decay
into that range within a few hundred steps (0.9^t), and from then on every update of them is
that slow: the compiled MNIST step at batch 1 ran ~10x slower than XLA, which sets the SSE flags
FTZ (flush results to zero) and DAZ (read denormal operands as zero) on its threads. The flags
live in the MXCSR register of each thread; this module sets or clears them through the C
library's `fegetenv` / `fesetenv` (glibc on x86-64: MXCSR is the last 32-bit word of `fenv_t`),
for the calling thread, which runs NumPy's elementwise loops and ember's compiled kernels.
It is off by default, as in PyTorch: results then match IEEE arithmetic bit for bit; on, a value
below float32's smallest normal (1.2e-38) reads and writes as zero, as in JAX.
"""

from __future__ import annotations

import ctypes

__all__ = ["set_flush_denormal", "flush_denormal"]

_FTZ = 1 << 15
_DAZ = 1 << 6
_libm = None


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


def set_flush_denormal(mode: bool) -> bool:
    """Flush denormal floats to zero (True) or compute with them (False, the default) on the
    calling thread; returns False where the CPU or platform has no such switch (Note
    [Denormals]).

    Example:
        >>> import ember
        >>> ember.set_flush_denormal(True)  # doctest: +SKIP
        True
        >>> ember.tensor([1e-39], dtype=ember.float32) * 1.0  # doctest: +SKIP
        tensor([0.])
        >>> ember.set_flush_denormal(False)  # doctest: +SKIP
        True
    """
    lib = _lib()
    if not lib:
        return False
    env = (ctypes.c_ubyte * 32)()
    if lib.fegetenv(env) != 0:
        return False
    value = _mxcsr(lib, env)
    value = value | _FTZ | _DAZ if mode else value & ~(_FTZ | _DAZ)
    env[28:32] = list(value.to_bytes(4, "little"))
    return lib.fesetenv(env) == 0
