"""Optional fast CPU kernels compiled with numba (the `fast` extra), loaded on first use.

`available()` says whether numba can be used: it is installed and EMBER_NO_NUMBA is not set.
`jit_source(source, name)` compiles the function `name` defined by Python `source` with
`numba.njit` and caches the dispatcher by its source text, so a kernel that several graphs
generate alike (same expression, dtypes and rank: the source spells all three) compiles once
per process; numba then specialises it once per argument type (dtype, rank, memory layout).
`compile_seconds()` reports the time spent compiling, for benchmarks.

Generated kernels call the scalar helpers defined here (`maximum`, `minimum`, `sign`) that
keep NumPy's semantics for NaN, which plain Python `max`/`min` do not.
"""

from __future__ import annotations

import math
import time

from ember._util.env import flag

__all__ = ["available", "jit_source", "compile_seconds", "disable_for_tests"]

_state: dict = {"numba": None, "tried": False, "seconds": 0.0, "forced_off": False}
_cache: dict = {}


def _load():
    if _state["tried"]:
        return _state["numba"]
    _state["tried"] = True
    if flag("EMBER_NO_NUMBA"):
        return None
    try:
        import numba
    except ImportError:
        return None
    _state["numba"] = numba
    return numba


def available() -> bool:
    """numba is installed and not switched off (EMBER_NO_NUMBA=1)."""
    return not _state["forced_off"] and not flag("EMBER_NO_NUMBA") and _load() is not None


class disable_for_tests:
    """Context manager: behave as if numba were absent (tests of the NumPy paths)."""

    def __enter__(self):
        self._old = _state["forced_off"]
        _state["forced_off"] = True
        return self

    def __exit__(self, *exc):
        _state["forced_off"] = self._old
        return False


def _helpers(numba):
    if "helpers" in _state:
        return _state["helpers"]
    njit = numba.njit(inline="always", cache=False, error_model="numpy")

    @njit
    def maximum(a, b):  # NumPy's maximum: NaN wins
        if a != a:
            return a
        if b != b:
            return b
        return a if a >= b else b

    @njit
    def minimum(a, b):
        if a != a:
            return a
        if b != b:
            return b
        return a if a <= b else b

    @njit
    def sign(a):
        if a != a:
            return a
        return (a > 0) - (a < 0)

    _state["helpers"] = {"maximum": maximum, "minimum": minimum, "sign": sign}
    return _state["helpers"]


def jit_source(source: str, name: str):
    """The numba-compiled function `name` from `source` (cached by source text); None when
    numba is not available."""
    kernel = _cache.get(source)
    if kernel is not None:
        return kernel
    numba = _load()
    if numba is None or not available():
        return None
    import numpy as np

    start = time.perf_counter()
    namespace = {"np": np, "math": math, **_helpers(numba)}
    exec(compile(source, f"<ember numba kernel {name}>", "exec"), namespace)
    kernel = numba.njit(fastmath=False, nogil=True, cache=False, error_model="numpy")(namespace[name])
    _state["seconds"] += time.perf_counter() - start
    _cache[source] = kernel
    return kernel


def note_compile_time(seconds: float) -> None:
    """Numba compiles lazily on a kernel's first call: callers add that time here."""
    _state["seconds"] += seconds


def compile_seconds() -> float:
    return _state["seconds"]


def cache_size() -> int:
    return len(_cache)
