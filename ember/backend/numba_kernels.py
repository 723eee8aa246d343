"""Optional fast CPU kernels compiled with numba (the `fast` extra), loaded on first use.

`available()` says whether numba can be used: it is installed and EMBER_NO_NUMBA is not set
(nor EMBER_FAST_KERNELS=0). It reads the environment once, on its first call, as numba's own
settings are read once: kernels are checked on every op, so the answer must cost a dict read;
`reread_environment()` reads the switches again (tests that change them).
`jit_source(source, name)` compiles the function `name` defined by Python `source` with
`numba.njit` and caches the dispatcher by its source text and name, so a kernel that several graphs
generate alike (same expression, dtypes and rank: the source spells all three) compiles once
per process; numba then specialises it once per argument type (dtype, rank, memory layout).
`compile_seconds()` reports the time spent compiling, for benchmarks.

Compiled kernels are also cached on disk between processes: each source is written once to
`$EMBER_CACHE_DIR/numba/k3_<sha256>.py` (default `~/.cache/ember`) and compiled with numba's
`cache=True`, which keeps the machine code beside it, so a later process loads a kernel in
milliseconds instead of compiling it again. Where that folder cannot be written, kernels are
compiled in memory only.

Generated kernels call the scalar helpers defined here (`maximum`, `minimum`, `sign`) that
keep NumPy's semantics for NaN, which plain Python `max`/`min` do not.
"""

from __future__ import annotations

import math
import threading
import time

from ember._util.env import flag
from ember.backend import parallel as _parallel

__all__ = [
    "available",
    "jit_source",
    "compile_seconds",
    "disable_for_tests",
    "follow_budget",
    "reread_environment",
]

# "switched_off": EMBER_NO_NUMBA / EMBER_FAST_KERNELS as read on first use (None: not yet read)
_state: dict = {
    "numba": None,
    "tried": False,
    "seconds": 0.0,
    "forced_off": False,
    "switched_off": None,
}
_cache: dict = {}
_load_lock = threading.Lock()


def _load():
    if _state["tried"]:
        return _state["numba"]
    # one import at a time, and "tried" set only once it has ended: a thread that asks while
    # another imports (the short-input warm-up, Note [Kernel-exact small paths] in
    # ember/backend/transformer_kernels.py) waits for numba instead of finding it absent
    with _load_lock:
        if _state["tried"]:
            return _state["numba"]
        numba = None
        if not flag("EMBER_NO_NUMBA"):
            try:
                import numba
            except ImportError:
                numba = None
        _state["numba"] = numba
        _state["tried"] = True
        return numba


def available() -> bool:
    """numba is installed and not switched off (EMBER_NO_NUMBA=1, or EMBER_FAST_KERNELS=0
    which turns every compiled kernel off in favour of the NumPy reference paths; both read
    once, on the first call: `reread_environment`)."""
    off = _state["switched_off"]
    if off is None:
        off = _state["switched_off"] = flag("EMBER_NO_NUMBA") or not flag(
            "EMBER_FAST_KERNELS", True
        )
    return not off and not _state["forced_off"] and _load() is not None


def reread_environment() -> None:
    """Read EMBER_NO_NUMBA and EMBER_FAST_KERNELS again on the next `available()` call (for
    tests that change them; kernels already compiled stay cached for when they are on)."""
    _state["switched_off"] = None
    if _state["numba"] is None:
        _state["tried"] = False  # EMBER_NO_NUMBA may have kept numba from loading


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


def jit_source(source: str, name: str, disk: bool = True, fastmath=False, parallel=False):
    """The numba-compiled function `name` from `source` (cached by source text and name); None when
    numba is not available. `disk=False` skips the on-disk cache (a retry when loading from
    it failed). `fastmath` is numba's flag set (e.g. {"reassoc"} lets LLVM vectorize a sum);
    it is part of the cached source text, so kernels compiled with other flags never mix.
    `parallel=True` compiles `prange` loops to run on numba's threads (Note [Parallel kernels]
    in ember/backend/parallel.py); the source then imports prange itself."""
    if not available():  # checked first: disable_for_tests also hides compiled kernels
        return None
    if fastmath:
        source = f"# fastmath: {sorted(fastmath)}\n{source}"
    if parallel:
        source = f"# parallel\nfrom numba import prange\n\n{source}"
    kernel = _cache.get((source, name, disk))
    if kernel is not None:
        return kernel
    numba = _load()
    if parallel:
        start_threads()
    start = time.perf_counter()
    fn, on_disk = _define(numba, source, name) if disk else _define_in_memory(numba, source, name)
    flags = set(fastmath) if fastmath else False
    kernel = numba.njit(
        fastmath=flags, nogil=True, cache=on_disk, error_model="numpy", parallel=bool(parallel)
    )(fn)
    if on_disk:
        _rebuild_on_bad_machine_code(kernel, fn)
    _state["seconds"] += time.perf_counter() - start
    _cache[(source, name, disk)] = kernel
    return kernel


# Note [Own OpenMP]: numba's OpenMP layer (numba/np/ufunc/omppool, linked to the system's
# libgomp) starts with OMP_WAIT_POLICY=PASSIVE unless the user chose a policy: idle OpenMP
# workers then sleep instead of spinning on the cores that the next BLAS call or chunked NumPy
# op needs. The variable is set only while numba loads its OpenMP library (libgomp reads it
# once, at load), so other libraries in the process never see it. A process that imported
# PyTorch first already holds PyTorch's own libgomp, loaded with RTLD_GLOBAL; numba's layer
# then bound to it, so ember's parallel kernels ran on PyTorch's OpenMP workers with PyTorch's
# wait policy (spinning ~ms after every region) while OpenBLAS's worker spun too (Note [BLAS
# spin] in ember/backend/threads.py): each pool's idle spin took the core the other's work
# needed. Measured on the quiet 2-core machine at 2 threads: the compiled MNIST MLP step (batch
# 64, bench/bench_mlp.py) took 7.1 ms beside torch (the OpenMP worker 0.7 s and OpenBLAS's
# 1.3 s of CPU in a 1.4 s round) against 0.40 ms without torch. So numba's layer is loaded with
# RTLD_DEEPBIND: its GOMP_* calls bind to the libgomp it links (a second copy, with ember's
# passive policy and its own workers), never to one another library put in the global scope:
# 0.37-0.47 ms beside torch and JAX. (Where numba starts first, a later `import torch` finds
# that libgomp already loaded under its soname and shares it, passive policy included.)
# Note [Short spin]: with the passive policy alone an idle OpenMP worker sleeps at once, and
# waking it costs each parallel region ~12 us on this VM (an empty 2-thread prange: 12.3 us,
# against ~2 us while the worker still spins), more when its vCPU has gone idle. A training
# step runs its parallel kernels back to back (the compiled MNIST MLP at batch 64: the weight
# gradient's split product, Note [Split on numba's threads] in ember/backend/blas.py, then the
# Adam update), and paid the wake-up at each. So the workers spin `_SPIN_COUNT` rounds
# (libgomp's GOMP_SPINCOUNT, set beside the policy while numba loads its OpenMP library;
# ~12 us here, at ~12 ns a round, measured as the worker's CPU time after a region at 50000
# rounds: ~0.6 ms) before they sleep: enough to bridge kernels that follow one another, too
# short to hold a core that the next BLAS call or serial stretch needs. Longer spins were
# measured too (2-core machine under the CPU lock, 2 threads, bench/bench_mlp.py --jax-only,
# ember / jax.jit medians, two runs each; spin rounds 0 / 1000 / 20000 / 50000): batch 64 1.19
# 1.08 / 0.97 0.93 / 0.98 0.95 / 0.94 0.98, batch 1 0.73 0.75 / 0.77 0.62 / 0.82 0.82 / 0.90
# 0.95: a worker spinning through most of the step slowed batch 1 (whose one parallel kernel
# comes once a step) by up to a quarter. MiniLM, ember alone, 2 threads (bench/
# bench_minilm_threads.py --ember-only, 5 rounds, median ms) at 0 / 1000 rounds: forward
# 32 x 128 447 / 440, 1 x 16 89 / 91, fine-tune step 920 / 913 (noise). A user's
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
_SPIN_COUNT = 1000


def start_threads() -> None:
    """Start numba's threads with ember's thread budget (Note [Thread budget] in
    ember/backend/parallel.py) on an OpenMP runtime of ember's own, waiting passively (Note
    [Own OpenMP])."""
    numba = _load()
    if numba is None:
        return
    from numba.np.ufunc import parallel as numba_parallel

    from ember.backend import parallel

    with _start_lock:  # the environment and dlopen flags below are process-wide
        _launch(numba_parallel)
    budget = parallel.num_threads()
    own = getattr(_local, "own", None)  # Note [Per-thread numba count]
    if own is not None:
        numba.set_num_threads(own)
        _local.budget = budget
        return
    count = min(budget, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(count)
    _local.count, _local.budget = count, budget  # Note [Per-thread numba count]


_start_lock = threading.Lock()


# Note [Denormals on every thread] (ember/backend/denormals.py): each iteration sets the flags
# of the thread that runs it through the C library's fegetenv / fesetenv (MXCSR: bytes 28-31
# of glibc's x86-64 fenv_t; FTZ is bit 15, DAZ bit 6) and records which thread it ran on
_TEAM_FLAGS_SOURCE = """\
from numba import get_thread_id


def set_team_flags(get_env, set_env, envs, mode, ran_on):
    for i in prange(envs.shape[0]):
        env = envs[i]
        get_env(env.ctypes.data)
        if mode:
            env[29] |= 0x80
            env[28] |= 0x40
        else:
            env[29] &= 0x7F
            env[28] &= 0xBF
        set_env(env.ctypes.data)
        ran_on[i] = get_thread_id()
"""


def set_team_flush_denormal(libm, mode: bool) -> bool:
    """Set (or clear) the flush-to-zero flags on every numba worker of the calling thread's
    team (Note [Denormals on every thread]); False where numba's threading layer has not
    started (the workers it starts later inherit the caller's flags) or a worker was missed."""
    import ctypes

    import numpy as np

    if not available():
        return False
    numba = _load()
    from numba.np.ufunc import parallel as numba_parallel

    if not numba_parallel._is_initialized:
        return False
    kernel = jit_source(_TEAM_FLAGS_SOURCE, "set_team_flags", parallel=True)
    if kernel is None:
        return False
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_size_t)  # pointers travel as integers
    get_env = proto(ctypes.cast(libm.fegetenv, ctypes.c_void_p).value)
    set_env = proto(ctypes.cast(libm.fesetenv, ctypes.c_void_p).value)
    every = numba.config.NUMBA_NUM_THREADS
    before = numba.get_num_threads()
    numba.set_num_threads(every)  # one iteration per worker, those above today's count too
    try:
        ran_on = np.full(every, -1, np.int64)
        kernel(get_env, set_env, np.zeros((every, 32), np.uint8), bool(mode), ran_on)
    finally:
        numba.set_num_threads(before)
    return set(ran_on.tolist()) == set(range(every))


_define_lock = threading.Lock()  # _define's module registration


def _launch(numba_parallel) -> None:
    import os
    import sys

    if not numba_parallel._is_initialized:
        chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
        if not chosen:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            os.environ["GOMP_SPINCOUNT"] = str(_SPIN_COUNT)  # Note [Short spin]
        flags = sys.getdlopenflags() if hasattr(sys, "getdlopenflags") else None
        if flags is not None and hasattr(os, "RTLD_DEEPBIND"):
            sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            numba_parallel._launch_threads()
        finally:
            if flags is not None:
                sys.setdlopenflags(flags)
            if not chosen:
                del os.environ["OMP_WAIT_POLICY"]
                del os.environ["GOMP_SPINCOUNT"]


def set_thread_count(n: int) -> None:
    """Give the calling thread `n` numba kernel threads of its own, which ember's budget then
    leaves alone (a serve worker's `threads_per_instance`; Note [Per-thread numba count]).
    Starts numba's threading layer if it has not started; nothing without numba."""
    if not available():
        return
    _local.own = max(1, min(int(n), _state["numba"].config.NUMBA_NUM_THREADS))
    start_threads()


# Note [Per-thread numba count]: numba keeps its thread count per calling thread (its threading
# layer holds it in thread-local storage): `numba.set_num_threads`, which
# `ember.set_num_threads` calls through `start_threads`, reaches only the thread that calls it,
# and every other thread (a server worker, a DataLoader or pipeline thread, a user's thread)
# runs parallel kernels on NUMBA_NUM_THREADS threads (all cores), whatever ember's budget says
# (Note [Thread budget] in ember/backend/parallel.py). As PyTorch does for its OpenMP count
# (`lazy_init_num_threads`), each entry to a compiled kernel calls `follow_budget()`: a thread
# that has not yet seen the current budget (ember.set_num_threads changed it, or the thread is
# new) sets numba's count to it; then the check is one thread-local read (~0.1 us) until the
# budget changes again. A thread given a count of its own (`set_thread_count`: a serve
# worker's `threads_per_instance`, Note [Model instances] in ember/serve/batching.py) keeps it
# through budget changes, and so does one that chose its count with `numba.set_num_threads`:
# the count is only changed while it is the one ember set there last (or numba's default, in a
# thread ember never set). Only ember's
# entries call it (`OpDef.def_fast_kernel`'s wrapper, the graph's parallel fused kernels): a
# user's own numba functions keep numba's rules.
_local = threading.local()


def follow_budget() -> None:
    """Give the calling thread's numba kernels ember's thread budget, if they do not have it
    yet (Note [Per-thread numba count]); cheap when nothing changed."""
    if getattr(_local, "budget", 0) != _parallel._threads:
        _adopt_budget()


def _adopt_budget() -> None:
    numba = _state["numba"]
    if numba is None:  # not loaded: no compiled kernel runs yet
        return
    numba_parallel = _state.get("numba_parallel")
    if numba_parallel is None:  # imported once: a process of small inputs runs only serial
        # kernels, so every op call comes here (an import statement each time: ~0.5 us)
        from numba.np.ufunc import parallel as numba_parallel

        _state["numba_parallel"] = numba_parallel
    if not numba_parallel._is_initialized:  # no parallel kernel yet: start_threads sets it
        return
    budget = _parallel.num_threads()
    default = numba.config.NUMBA_NUM_THREADS
    current = numba.get_num_threads()
    own = getattr(_local, "own", None)
    if own is None and current == getattr(_local, "count", default):  # not the thread's own
        count = min(budget, default)
        if count != current:
            numba.set_num_threads(count)
        _local.count = count
    _local.budget = budget


_HEADER = (
    "import math\nimport numpy as np\nfrom ember.backend.numba_kernels import helper\n"
    "maximum, minimum, sign = helper('maximum'), helper('minimum'), helper('sign')\n\n"
)


def helper(name):
    return _helpers(_load())[name]


def _cache_dir():
    import os

    root = os.environ.get("EMBER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "ember"
    )
    return os.path.join(root, "numba")


# Note [Kernel cache checks]: the kernel cache folder holds Python source that ember executes,
# so nothing in it is trusted as found: the folder must belong to this user and be writable
# by nobody else (else the cache is not used: kernels compile in memory), and a kernel file is
# executed only if its bytes are exactly the source being compiled (the file name is a hash
# of it; the content is compared in full). A file that differs (corrupt, truncated, planted)
# is rewritten atomically and the machine code numba cached beside it is dropped, so a damaged
# entry is rebuilt instead of breaking the kernel until someone deletes it by hand.
def _private_folder(folder: str) -> bool:
    import os
    import stat

    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.stat(folder)
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return owner_ok and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _drop_machine_code(folder: str, stem: str) -> None:
    import glob
    import os

    for cached in glob.glob(os.path.join(folder, "__pycache__", f"{stem}.*")):
        try:
            os.unlink(cached)
        except OSError:
            pass


def _rebuild_on_bad_machine_code(kernel, fn) -> None:
    """If numba's cached machine code for `kernel` cannot be loaded (damaged, or written by an
    incompatible process), drop it and let numba compile afresh and save again, instead of
    failing on every call until the files are deleted by hand (Note [Kernel cache checks])."""
    import os

    cache = getattr(kernel, "_cache", None)
    load = getattr(cache, "load_overload", None)
    if load is None:
        return
    folder, stem = os.path.split(os.path.splitext(fn.__code__.co_filename)[0])

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:  # noqa: BLE001 - whatever the damaged cache raises: compile instead
            _drop_machine_code(folder, stem)
            return None

    cache.load_overload = load_overload


def _define(numba, source, name):
    """The Python function `name` of `source`: from a checked file in the kernel cache folder
    when it can be used (so numba can cache the machine code), else defined in memory
    (Note [Kernel cache checks])."""
    import hashlib
    import importlib.util
    import os
    import sys

    text = _HEADER + source
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    stem = f"k3_{digest}"
    try:
        folder = _cache_dir()
        if not _private_folder(folder):
            return _define_in_memory(numba, source, name)
        path = os.path.join(folder, f"{stem}.py")
        try:
            with open(path, "rb") as f:
                intact = f.read() == text.encode()
        except FileNotFoundError:
            intact = False
        if not intact:
            _drop_machine_code(folder, stem)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)  # atomic: concurrent processes see whole files only
        modname = f"ember_numba_{stem}"
        # one thread at a time: the module is registered before it runs (below), so another
        # thread (a data pipeline's workers resizing their first images) must not find it
        # half-defined
        with _define_lock:
            module = sys.modules.get(modname)
            if module is None:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                # registered first: numba's cache finds the kernel's module by name when it loads
                sys.modules[modname] = module
                try:
                    spec.loader.exec_module(module)
                except Exception:  # noqa: BLE001 - changed under us: compile in memory instead
                    del sys.modules[modname]
                    return _define_in_memory(numba, source, name)
        return getattr(module, name), True
    except OSError:
        return _define_in_memory(numba, source, name)


def _define_in_memory(numba, source, name):
    import numpy as np

    namespace = {"np": np, "math": math, **_helpers(numba)}
    exec(compile(source, f"<ember numba kernel {name}>", "exec"), namespace)
    return namespace[name], False


def note_compile_time(seconds: float) -> None:
    """Numba compiles lazily on a kernel's first call: callers add that time here."""
    _state["seconds"] += seconds


def compile_seconds() -> float:
    return _state["seconds"]


def cache_size() -> int:
    return len(_cache)
