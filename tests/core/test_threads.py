"""ember.set_num_threads / get_num_threads control the BLAS library NumPy runs matmuls on."""

import numpy as np
import pytest

import ember
from ember.backend import threads


def test_set_and_get_num_threads_round_trip():
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        assert ember.get_num_threads() == 1
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        np.testing.assert_allclose(
            (ember.tensor(a) @ ember.tensor(a)).numpy(), a @ a, rtol=1e-5, atol=1e-5
        )
    finally:
        ember.set_num_threads(before)
    assert ember.get_num_threads() == before


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="positive"):
        ember.set_num_threads(0)


def test_the_blas_library_is_found_on_linux():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("BLAS discovery reads /proc/self/maps, which only Linux has")
    assert threads._find_blas(), "NumPy's BLAS library was not found among the loaded libraries"


# --- Note [Parallel kernels] (ember/backend/parallel.py): serial and parallel results equal ---
from ember.backend import numba_kernels, parallel  # noqa: E402

F = ember.nn.functional


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the parallel paths even on a loaded machine (Note [Overloaded machine] would run
    them serially there), so the tests below compare threaded runs with serial ones."""
    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


_ROWS, _COLS = 1031, 387  # above the threshold; odd sizes so chunks split unevenly
assert _ROWS * _COLS >= parallel.threshold()


def _inputs():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((_ROWS, _COLS)).astype(np.float32)
    b = rng.standard_normal((_ROWS, _COLS)).astype(np.float32)
    bias = rng.standard_normal(_COLS).astype(np.float32)
    return ember.tensor(a), ember.tensor(b), ember.tensor(bias)


# (name, fn(a, b, bias)): each result is compared bit for bit at 1 and 2 threads
PARALLEL_CASES = [
    ("add", lambda a, b, c: a + b),
    ("add bias (broadcast)", lambda a, b, c: a + c),
    ("add scalar", lambda a, b, c: a + 1.5),
    ("sub", lambda a, b, c: a - b),
    ("mul", lambda a, b, c: a * b),
    ("div", lambda a, b, c: a / b),
    ("pow", lambda a, b, c: a.abs() ** b),
    ("maximum", lambda a, b, c: ember.maximum(a, b)),
    ("neg", lambda a, b, c: -a),
    ("exp", lambda a, b, c: a.exp()),
    ("log", lambda a, b, c: a.abs().log()),
    ("tanh", lambda a, b, c: a.tanh()),
    ("sqrt", lambda a, b, c: a.abs().sqrt()),
    ("sigmoid", lambda a, b, c: a.sigmoid()),
    ("erf", lambda a, b, c: ember.erf(a)),
    ("gelu", lambda a, b, c: F.gelu(a)),
    ("relu", lambda a, b, c: F.relu(a)),
    ("less", lambda a, b, c: a < b),
    ("equal", lambda a, b, c: a == 0.5),
    ("where", lambda a, b, c: ember.where(a > 0, a, b)),
    ("where scalar", lambda a, b, c: ember.where(a > 0, a, 0.0)),
    ("cast float64", lambda a, b, c: a.to(ember.float64)),
    ("cast int32", lambda a, b, c: (a * 100).to(ember.int32)),
    ("sum all", lambda a, b, c: a.sum()),
    ("sum last", lambda a, b, c: a.sum(-1)),
    ("sum first", lambda a, b, c: a.sum(0, keepdim=True)),
    ("sum float64", lambda a, b, c: a.to(ember.float64).sum()),
    ("sum middle (3-d)", lambda a, b, c: a.reshape(_ROWS, 9, 43).sum(1)),
    ("sum leading (3-d)", lambda a, b, c: a.reshape(_ROWS, 9, 43).sum((0, 1))),
    ("amax middle (3-d)", lambda a, b, c: a.reshape(_ROWS, 9, 43).amax(1)),
    ("sum int", lambda a, b, c: (a * 100).to(ember.int32).sum()),
    ("mean", lambda a, b, c: a.mean(-1)),
    ("mean all", lambda a, b, c: a.mean()),
    ("var", lambda a, b, c: a.var(-1)),
    ("amax", lambda a, b, c: a.amax(-1)),
    ("amin all", lambda a, b, c: a.amin()),
    ("softmax", lambda a, b, c: F.softmax(a, -1)),
    ("log_softmax", lambda a, b, c: F.log_softmax(a, -1)),
    ("layer_norm", lambda a, b, c: F.layer_norm(a, (_COLS,), c, c)),
    # strided copies (parallel.copy_c_order): a head merge's reshape, contiguous of a transpose
    ("reshape copy", lambda a, b, c: a.reshape(_ROWS, 9, 43).transpose(0, 1).reshape(-1, 43)),
    ("contiguous", lambda a, b, c: a.mT.contiguous()),
]


def _run_at(threads, fn, fast):
    before = ember.get_num_threads()
    ember.set_num_threads(threads)
    try:
        if fast:
            return fn(*_inputs()).numpy()
        with numba_kernels.disable_for_tests():
            return fn(*_inputs()).numpy()
    finally:
        ember.set_num_threads(before)


@pytest.mark.parametrize("fast", [True, False], ids=["kernels-on", "kernels-off"])
@pytest.mark.parametrize("name, fn", PARALLEL_CASES, ids=[c[0] for c in PARALLEL_CASES])
def test_parallel_results_equal_serial_bit_for_bit(name, fn, fast):
    serial = _run_at(1, fn, fast)
    two = _run_at(2, fn, fast)
    assert serial.dtype == two.dtype and serial.shape == two.shape
    assert serial.tobytes() == two.tobytes(), f"{name}: 2 threads changed the result"


def test_large_ops_run_on_the_pool_and_small_ones_do_not(monkeypatch):
    calls = []
    real = parallel.run_chunks

    def counting(fn, argsets):
        calls.append(len(argsets))
        return real(fn, argsets)

    monkeypatch.setattr(parallel, "run_chunks", counting)
    a, b, _ = _inputs()
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        a + b
        a.sum(-1)
        a.sum()
        assert len(calls) == 3 and min(calls) >= 2
        small = ember.ones(100, 100)
        small + small
        small.sum()
        assert len(calls) == 3, "a small op went to the pool"
        ember.set_num_threads(1)
        a + b
        assert len(calls) == 3, "one thread set, but the op ran on the pool"
    finally:
        ember.set_num_threads(before)


def test_full_float_sums_follow_numpys_pairwise_tree():
    rng = np.random.default_rng(1)
    xp = ember.backend.get_backend("cpu").xp
    before = parallel.num_threads()
    try:
        for threads in (2, 3, 4):
            parallel.set_threads(threads)
            for n in (parallel.threshold(), parallel.threshold() + 7, 1_000_003):
                for dtype in (np.float32, np.float64):
                    x = (rng.standard_normal(n) * 1e3).astype(dtype)
                    for shape in ((n,), (1, n)):
                        assert xp.add.reduce(x.reshape(shape), None) == np.add.reduce(x, None)
                        assert xp.sum(x.reshape(shape)) == np.sum(x)
    finally:
        parallel.set_threads(before)


def test_worker_threads_keep_the_callers_floating_point_state():
    import warnings

    zeros = ember.zeros(_ROWS, _COLS)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.isneginf(zeros.log().numpy()).all()  # log is quiet (Note [Quiet kernels])
        xp = ember.backend.get_backend("cpu").xp
        with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
            xp.log(zeros.numpy())
    finally:
        ember.set_num_threads(before)


def test_concurrent_callers_get_correct_results():
    import threading

    a, b, _ = _inputs()
    expected = a.numpy() + b.numpy()
    failures = []

    def work():
        for _ in range(20):
            if not np.array_equal((a + b).numpy(), expected):
                failures.append(1)

    before = ember.get_num_threads()
    ember.set_num_threads(2)
    try:
        workers = [threading.Thread(target=work) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
    finally:
        ember.set_num_threads(before)
    assert not failures


def test_set_num_threads_governs_the_pool_and_numba():
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        assert parallel.num_threads() == 1
        ember.set_num_threads(2)
        assert parallel.num_threads() == 2
        if numba_kernels.available():
            import numba

            numba_kernels.start_threads()
            assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        ember.set_num_threads(before)


_REPORT_THREADS = """
from numba import get_num_threads
def report(out):
    for i in prange(out.shape[0]):
        out[i] = get_num_threads()
"""


def _reporting_kernel():
    """A parallel numba kernel that writes the thread count numba runs it with."""
    kernel = numba_kernels.jit_source(_REPORT_THREADS, "report", disk=False, parallel=True)

    def run(*_ignored):
        out = np.zeros(8, np.int64)
        kernel(out)
        return int(out.max())

    return run


def _through_an_op(monkeypatch, kernel):
    """The count seen by an eager op's fast kernel (OpDef.def_fast_kernel's entry)."""
    from ember.backend import transformer_kernels

    seen = []

    def gelu(x, b, approximate):
        seen.append(kernel())
        return None  # then the reference forward runs

    monkeypatch.setattr(transformer_kernels, "gelu", gelu)
    return lambda: (F.gelu(ember.ones(4, 4)), seen[-1])[1]


def _through_a_fused_kernel(monkeypatch, kernel):
    """The count seen by a compiled graph's parallel fused kernel (fusion._fork_safe)."""
    from ember.graph import fusion

    return fusion._fork_safe(kernel, _REPORT_THREADS)


def _counting(entry, monkeypatch):
    """A call through `entry` of a kernel that returns numba's thread count (skips where
    there is no count to tell apart)."""
    if not numba_kernels.available():
        pytest.skip("numba is not installed or is switched off (EMBER_NO_NUMBA)")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba runs one thread here: no count to tell apart")
    return entry(monkeypatch, _reporting_kernel())


@pytest.mark.parametrize("entry", [_through_an_op, _through_a_fused_kernel])
def test_numba_kernels_on_other_threads_follow_set_num_threads(entry, monkeypatch):
    """Note [Per-thread numba count]: numba counts threads per calling thread, so a kernel run
    from a thread ember.set_num_threads was not called on (a server worker, a user's thread)
    must still get ember's budget, and a thread's own numba.set_num_threads choice stays."""
    import threading

    run = _counting(entry, monkeypatch)
    import numba

    before = ember.get_num_threads()

    def in_new_thread(fn):
        seen = []
        worker = threading.Thread(target=lambda: seen.append(fn()))
        worker.start()
        worker.join(60)
        return seen[0]

    def own_choice():
        numba.set_num_threads(1)
        first = run()
        ember.set_num_threads(2)  # on this thread: its own call, so 2 from now on
        return first, run()

    try:
        ember.set_num_threads(1)
        assert run() == 1
        assert in_new_thread(run) == 1
        ember.set_num_threads(2)
        assert in_new_thread(run) == 2
        assert in_new_thread(lambda: (run(), ember.set_num_threads(1), run())[::2]) == (2, 1)
        ember.set_num_threads(2)
        assert in_new_thread(own_choice) == (1, 2)
    finally:
        ember.set_num_threads(before)


@pytest.mark.parametrize("entry", [_through_an_op, _through_a_fused_kernel])
def test_a_thread_count_of_its_own_stays_through_budget_changes(entry, monkeypatch):
    """Note [Per-thread numba count]: `set_thread_count(n)` (a serve worker's
    threads_per_instance) gives the calling thread n numba threads, kept when ember's budget
    changes, on another thread or its own; other threads keep following the budget."""
    import threading

    run = _counting(entry, monkeypatch)
    before = ember.get_num_threads()
    changed, seen = threading.Event(), []

    def worker():
        numba_kernels.set_thread_count(1)
        seen.append(run())
        changed.wait(60)  # the main thread changed the budget meanwhile
        seen.append(run())
        ember.set_num_threads(2)  # on this thread too
        seen.append(run())

    try:
        ember.set_num_threads(2)
        thread = threading.Thread(target=worker)
        thread.start()
        while not seen and thread.is_alive():
            thread.join(0.01)
        ember.set_num_threads(1)
        ember.set_num_threads(2)
        changed.set()
        thread.join(60)
        assert seen == [1, 1, 1]
        assert run() == 2  # the main thread follows the budget
    finally:
        changed.set()
        ember.set_num_threads(before)


def _row_step(x, bias):
    y = (x + bias) * 0.5
    z = y.exp() * y + 1.0
    return z, z.sum(-1), (y * y).amax(-1, keepdim=True)


def _column_step(x, bias):  # a sum over the rows: iterations would share accumulators
    y = (x + bias) * 0.5
    return y.exp() * y, (y * 2.0).sum(0)


@pytest.mark.skipif(not numba_kernels.available(), reason="fused kernels need numba")
@pytest.mark.parametrize("step, loops", [(_row_step, True), (_column_step, False)])
def test_fused_kernels_loop_in_parallel_above_the_threshold(monkeypatch, step, loops):
    """Note [Parallel loops] (ember/graph/fusion.py): prange over the rows where no reduction
    runs over them, and the same bits as the serial loop."""
    from ember.graph.fusion import FusedOp

    a, _, bias = _inputs()
    results = {}
    for label, size in (("parallel", parallel.threshold()), ("serial", 1 << 60)):
        monkeypatch.setattr(parallel, "_MIN_SIZE", size)
        compiled = ember.compile(step)
        results[label] = [t.numpy() for t in compiled(a, bias)]
        sources = [
            e.op.kernel_source()[0] for e in compiled.graph.eqns if isinstance(e.op, FusedOp)
        ]
        assert sources
        assert all(("prange" in s) == (loops and label == "parallel") for s in sources)
    for par, ser in zip(results["parallel"], results["serial"]):
        assert par.tobytes() == ser.tobytes()


def test_gemms_stay_right_across_thread_counts():
    """set_num_threads changes OpenBLAS's thread count between GEMMs; the products stay right
    (Note [BLAS spin]: its threads are never restarted)."""
    a = np.random.default_rng(2).standard_normal((257, 263)).astype(np.float64)
    before = ember.get_num_threads()
    try:
        for n in (2, 1, 2):
            ember.set_num_threads(n)
            np.testing.assert_allclose(
                a @ a.T, np.einsum("ik,jk->ij", a, a), rtol=1e-12, atol=1e-11
            )
    finally:
        ember.set_num_threads(before)


def test_generalized_ufuncs_are_not_chunked():
    """matmul is a NumPy ufunc with core dimensions: it keeps its own (BLAS) path and shapes
    (the small-GEMM dispatch of Note [Small GEMMs], never the chunked pool)."""
    from ember.backend import blas

    xp = ember.backend.get_backend("cpu").xp
    assert xp.matmul is blas.matmul
    a, b, c = _inputs()
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        for result, expected in (
            ((a @ c).numpy(), a.numpy().astype(np.float64) @ c.numpy()),
            ((a @ b.T).numpy(), a.numpy().astype(np.float64) @ b.numpy().T),
        ):
            assert result.shape == expected.shape
            np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-3)
    finally:
        ember.set_num_threads(before)


@pytest.mark.skipif(not numba_kernels.available(), reason="fused kernels need numba")
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_runs_parallel_fused_kernels_serially():
    """GNU OpenMP kills a forked child that starts a parallel region: a DataLoader worker
    forked after a parallel fused kernel ran must still run it (Note [Parallel loops])."""
    import os

    a, _, bias = _inputs()
    compiled = ember.compile(_row_step)
    expected = [t.numpy() for t in compiled(a, bias)]  # numba's threads have run here
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        ok = b"0"
        try:
            got = [t.numpy() for t in compiled(a, bias)]
            ok = b"1" if all(g.tobytes() == e.tobytes() for g, e in zip(got, expected)) else ok
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 1)
    os.close(read)
    assert status == 0 and answer == b"1", f"child exit status {status}, answer {answer!r}"


@pytest.mark.parametrize("name, fn", PARALLEL_CASES, ids=[c[0] for c in PARALLEL_CASES])
def test_every_case_reaches_the_pool(name, fn, monkeypatch):
    """The equality table above compares parallel runs, not serial fallbacks: each case sends
    work to the pool at 2 threads, or (GELU, softmax, layer norm) runs a row-parallel fused
    Transformer kernel (Note [Row-parallel kernels])."""
    from ember.backend import transformer_kernels

    calls = []
    real = parallel.run_chunks
    monkeypatch.setattr(
        parallel, "run_chunks", lambda f, argsets: calls.append(1) or real(f, argsets)
    )
    real_kernel = transformer_kernels._kernel
    monkeypatch.setattr(
        transformer_kernels,
        "_kernel",
        lambda group, kname, par, *contract: (
            (par and calls.append(kname)) or real_kernel(group, kname, par, *contract)
        ),
    )
    _run_at(2, fn, fast=True)
    assert calls, f"{name}: nothing ran on the pool or in a parallel fused kernel"


def test_the_default_uses_every_core_without_set_num_threads():
    """A fresh process that never calls set_num_threads runs large ops on the pool when it may
    use two or more cores."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, ember\n"
        "from ember.backend import parallel\n"
        "parallel._LOAD_LIMIT = float('inf')\n"
        "calls = []\n"
        "real = parallel.run_chunks\n"
        "parallel.run_chunks = lambda f, a: calls.append(len(a)) or real(f, a)\n"
        "x = ember.ones(1024, 1024)\n"
        "y = x + x\n"
        "print(parallel.num_threads(), len(calls))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "EMBER_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.returncode == 0, out.stderr
    threads_used, pool_calls = map(int, out.stdout.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads_used == cores
    assert pool_calls == (1 if cores > 1 else 0)


def test_an_overloaded_machine_runs_the_chunks_on_the_caller(monkeypatch):
    """Note [Overloaded machine]: the same results, no work handed to the pool's threads."""
    monkeypatch.setattr(parallel, "_LOAD_LIMIT", -1.0)  # any load average counts as overloaded
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])
    a, b, _ = _inputs()
    before = ember.get_num_threads()
    ember.set_num_threads(2)
    try:
        assert parallel.overloaded()
        monkeypatch.setattr(parallel, "_Pool", None)  # building a pool would fail the test
        monkeypatch.setattr(parallel, "_pool", None)
        np.testing.assert_array_equal((a + b).numpy(), a.numpy() + b.numpy())
        assert a.sum().item() == np.sum(a.numpy())
    finally:
        ember.set_num_threads(before)


def _python(code: str, env_drop=(), env_add=None):
    """Run `code` in a fresh interpreter from the repository root; its stdout, stripped."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env.update(env_add or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "code, user_value, expected",
    [
        ("import ember", None, "16"),  # NumPy not loaded yet: ember sets the short spin
        ("import numpy, ember", None, "16"),  # NumPy first: set, and OpenBLAS restarted
        ("import ember", "28", "28"),  # the user's choice stands
        ("import numpy, ember", "28", "28"),
    ],
)
def test_import_ember_shortens_openblas_spin(code, user_value, expected):
    """Note [BLAS spin]: `import ember` sets OPENBLAS_THREAD_TIMEOUT, never over the user's
    value."""
    env_add = {"OPENBLAS_THREAD_TIMEOUT": user_value} if user_value else None
    out = _python(
        code + "\nimport os\nprint(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))",
        env_drop=("OPENBLAS_THREAD_TIMEOUT",),
        env_add=env_add,
    )
    assert out == expected


@pytest.mark.parametrize("user_value", [None, "28"])
def test_numpy_first_restarts_openblas_threads(user_value):
    """Note [BLAS spin]: in a process that loaded NumPy first, `import ember` restarts
    OpenBLAS's threads to read the short spin (not over the user's value), and 2-thread
    products after the restart equal NumPy's 1-thread ones."""
    code = (
        "import numpy as np\n"
        "a = np.random.default_rng(0).standard_normal((300, 200))\n"
        "b = np.random.default_rng(1).standard_normal((200, 400))\n"
        "import ember\n"
        "from ember.backend import threads\n"
        "ember.set_num_threads(1)\n"
        "one = a @ b\n"
        "ember.set_num_threads(2)\n"
        "same = all(np.allclose(a @ b, one, rtol=1e-12, atol=1e-12) for _ in range(20))\n"
        "lib = threads._find_blas()\n"
        "restartable = bool(lib) and hasattr(lib[2], 'blas_thread_shutdown_')\n"
        "print(threads.blas_spin_restarted, restartable, same)\n"
    )
    env_add = {"OPENBLAS_THREAD_TIMEOUT": user_value} if user_value else None
    restarted, restartable, same = _python(
        code, env_drop=("OPENBLAS_THREAD_TIMEOUT",), env_add=env_add
    ).split()
    assert same == "True"
    assert restarted == str(restartable == "True" and user_value is None)


def test_numba_openmp_layer_loads_passive_and_deep_bound():
    """Note [Own OpenMP], Note [Short spin]: numba's threading layer loads with
    RTLD_DEEPBIND, OMP_WAIT_POLICY=PASSIVE and a short GOMP_SPINCOUNT, and none outlives the
    load."""
    if not numba_kernels.available():
        pytest.skip("numba is not installed or is switched off (EMBER_NO_NUMBA)")
    code = (
        "import os, sys\n"
        "from ember.backend import numba_kernels\n"
        "from numba.np.ufunc import parallel as layer\n"
        "seen = []\n"
        "real = layer._launch_threads\n"
        "def launch():\n"
        "    env = os.environ\n"
        "    policy, spin = env.get('OMP_WAIT_POLICY'), env.get('GOMP_SPINCOUNT')\n"
        "    seen.append((sys.getdlopenflags(), policy, spin))\n"
        "    real()\n"
        "layer._launch_threads = launch\n"
        "numba_kernels.start_threads()\n"
        "flags, policy, spin = seen[0]\n"
        "print(bool(flags & os.RTLD_DEEPBIND), policy, spin,\n"
        "      bool(sys.getdlopenflags() & os.RTLD_DEEPBIND), os.environ.get('OMP_WAIT_POLICY'),\n"
        "      os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    out = _python(code, env_drop=("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER"))
    assert out == f"True PASSIVE {numba_kernels._SPIN_COUNT} False None None"


def test_numba_kernels_do_not_run_on_pytorchs_openmp_workers():
    """Note [Own OpenMP]: with PyTorch imported first, ember's parallel kernels run on their
    own OpenMP runtime, so a later PyTorch parallel region starts PyTorch's own worker (on a
    shared runtime it would reuse numba's and the thread count would not grow)."""
    pytest.importorskip("torch")
    if not numba_kernels.available():
        pytest.skip("numba is not installed or is switched off (EMBER_NO_NUMBA)")
    import os

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads through /proc (Linux)")
    code = (
        "import os, torch\n"
        "torch.set_num_threads(2)\n"
        "import numpy as np, numba, ember\n"
        "from ember.backend import numba_kernels\n"
        "ember.set_num_threads(2)\n"
        "numba_kernels.start_threads()\n"
        "@numba.njit(parallel=True)\n"
        "def total(a):\n"
        "    s = 0.0\n"
        "    for i in numba.prange(a.size):\n"
        "        s += a[i]\n"
        "    return s\n"
        "total(np.ones(1 << 16))\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "torch.ones(1 << 22).exp_().sum()\n"
        "print(before, len(os.listdir('/proc/self/task')))\n"
    )
    out = _python(code, env_drop=("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS"))
    before, after = map(int, out.split())
    assert after > before, f"PyTorch reused numba's OpenMP workers ({before} -> {after} threads)"


def test_bench_wait_idle_returns_once_other_threads_stop():
    """bench/harness.py Note [Quiet side]: wait_idle waits out a busy thread (and only it)."""
    import threading
    import time

    harness = pytest.importorskip("bench.harness")
    import os

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("reads thread times from /proc (Linux)")
    stop = time.perf_counter() + 0.15

    def busy():
        while time.perf_counter() < stop:
            sum(range(1000))

    worker = threading.Thread(target=busy)
    worker.start()
    harness.wait_idle(quiet_ms=50, timeout_s=5.0)
    assert time.perf_counter() >= stop, "wait_idle returned while the other thread was busy"
    worker.join()
    assert harness.wait_idle(quiet_ms=10, timeout_s=5.0) < 1.0  # nothing else runs: soon done


def test_the_load_average_fallback_is_off_unless_asked(monkeypatch):
    """Note [Overloaded machine]: by default a crowded machine still gets chunked ops (measured
    faster than serial ones); EMBER_SERIAL_LOAD turns the serial fallback on."""
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (1e6, 1e6, 1e6), raising=False)
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])
    monkeypatch.delenv("EMBER_SERIAL_LOAD", raising=False)
    monkeypatch.setattr(parallel, "_LOAD_LIMIT", parallel._load_limit())
    assert not parallel.overloaded()
    monkeypatch.setenv("EMBER_SERIAL_LOAD", "1.5")
    monkeypatch.setattr(parallel, "_LOAD_LIMIT", parallel._load_limit())
    assert parallel.overloaded()
    monkeypatch.setenv("EMBER_SERIAL_LOAD", "lots")
    with pytest.raises(ValueError, match="EMBER_SERIAL_LOAD"):
        parallel._load_limit()
