"""Where large results live in memory: glibc's handling of freed blocks and output buffers placed
so that a kernel's stores do not stall its loads.

L1 (backend). `keep_freed_memory()` runs once when the NumPy backend loads; `empty_apart(shape,
dtype, *inputs)` is the output allocator of the compiled Transformer kernels
(ember/backend/transformer_kernels.py) and of the chunked NumPy ops (ember/backend/parallel.py).

Note [Freed memory]: glibc's malloc serves a block above its mmap threshold (128 KiB, raised to
the size of the largest block freed so far, at most 32 MiB) with a fresh mmap, and gives the top
of its heap back to the kernel once more than twice that threshold is free there. A Transformer
layer allocates and frees several 6-25 MiB activations per call, so both happen all the time,
and every page that comes back must be faulted in and zeroed again on its first write. On this
machine (a virtual machine whose host reclaims freed guest pages) a fault costs ~46 us:
MiniLM's GELU over a fresh 4096 x 1536 float32 output took 30 ms instead of 6 ms (523 faults a
call), at 1 thread as at 2. `keep_freed_memory()` sets the mmap threshold to its largest value
(32 MiB) and the trim threshold to `EMBER_MALLOC_KEEP_MB` (default 512 MiB): blocks up to 32
MiB come from the heap, and up to 512 MiB of freed heap stays mapped for the next call (the
process's resident size stays near its peak, as with PyTorch's caching allocators). It does
nothing where the C library is not glibc, or with EMBER_MALLOC_KEEP_MB=0. The same setting
helps a PyTorch model in the same process (its GELU in bench/profile_minilm.py went from 55 to
~30 ms per forward).

Note [Store aliasing]: a loop that reads x[j] and writes out[j] stalls when out lies a little
above x modulo 1 MiB (0 < (out - x) mod 2**20 < ~256 bytes): the CPU takes each load to depend
on the stores just issued to an address with the same low bits, and waits for them. glibc's heap
puts two blocks of one size S (a multiple of 64 KiB: every activation here) S + 16 bytes apart,
so a kernel's output allocated right after its input of the same size sits exactly there:
measured on the quiet machine, 1 thread, GELU over 1024 x 1536 float32: 1.5 ms with the
output anywhere else, 7.2 ms at 1 MiB + 16 bytes, 7.5 ms at 6 MiB + 16 bytes (MiniLM's
packed-batch GELU ran every fourth call at ~6 ms against 1.5 ms: the "GELU inside the forward
is 4x slower than alone" of issue 21). `empty_apart` allocates as `np.empty` does, and where
the result would trail an input by 1 to 1023 bytes modulo 4 KiB (the low bits; a stricter
test than the stall needs, and as cheap) it allocates 4 KiB more and starts the result at a
256-byte step that trails no input: the result is then a view of that block. Values are not
affected, only where they are stored.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["keep_freed_memory", "empty_apart"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest on 64-bit systems
_KEEP_DEFAULT_MB = 512
_tuned = None


def keep_freed_memory() -> bool:
    """Keep freed blocks mapped for the next allocation (Note [Freed memory]); whether glibc
    took the setting."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    value = os.environ.get("EMBER_MALLOC_KEEP_MB", "").strip()
    try:
        keep_mb = int(value) if value else _KEEP_DEFAULT_MB
    except ValueError:
        raise ValueError(
            f"EMBER_MALLOC_KEEP_MB: expected a whole number of MiB, got {value!r}"
        ) from None
    if keep_mb <= 0 or not hasattr(os, "confstr"):
        return _tuned
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return _tuned
    except (ValueError, OSError):  # not glibc (musl, macOS)
        return _tuned
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _tuned
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    keep = min(keep_mb, 2047) << 20
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, keep)
    )
    return _tuned


_APART_MIN_BYTES = 1 << 16  # smaller outputs stay in the caches: no measurable stall
_TRAIL = 1024  # bytes: a result this close above an input (mod 4 KiB) is moved
_STEP = 256
_PAGE = 4096


def _address(a) -> int:
    return a.__array_interface__["data"][0]


def _trails(start: int, addresses) -> bool:
    return any(0 < (start - a) % _PAGE < _TRAIL for a in addresses)


def empty_apart(shape, dtype, *inputs) -> np.ndarray:
    """`np.empty(shape, dtype)`, C-ordered, placed so that writing it while reading `inputs`
    (arrays, or anything else, ignored) does not stall (Note [Store aliasing])."""
    out = np.empty(shape, dtype)
    if out.nbytes < _APART_MIN_BYTES:
        return out
    addresses = [
        _address(x) for x in inputs if type(x) is np.ndarray and x.nbytes >= _APART_MIN_BYTES
    ]
    if not addresses or not _trails(_address(out), addresses):
        return out
    block = np.empty(out.nbytes + _PAGE, np.uint8)
    base = _address(block)
    shift = next(
        (s for s in range(0, _PAGE, _STEP) if not _trails(base + s, addresses)), 0
    )  # at most 3 arrays trail-check 4 steps each: a free step always exists
    return block[shift : shift + out.nbytes].view(out.dtype).reshape(out.shape)
