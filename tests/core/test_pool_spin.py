"""The thread pool's bounded spin (Note [Pool spin]) and per-thread counts (Note [Per-thread pool
count]) in ember/backend/parallel.py: results unchanged, workers that stop spinning and end."""

import threading
import time

import numpy as np
import pytest

import ember
from ember.backend import blas, numba_kernels, parallel

needs_numba = pytest.mark.skipif(
    not numba_kernels.available(), reason="the spin is a numba loop; without numba workers sleep"
)


def _cpu_seconds(thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of this test's own (workers that build their spin after one job), closed after."""
    pool = parallel._Pool()
    monkeypatch.setattr(parallel, "_pool", pool)
    monkeypatch.setattr(parallel, "_SPIN_AFTER_JOBS", 1)
    before_us = parallel.spin_microseconds()
    before_threads = parallel.num_threads()
    yield pool
    parallel.set_threads(before_threads)
    parallel.set_spin_microseconds(before_us)
    assert pool.close(30), "a pool worker did not end"
    assert not any(t.is_alive() for t in pool.threads)


def _post_jobs(count, threads=2):
    parallel.set_threads(threads)
    seen = set()
    for _ in range(count):
        parallel.run_chunks(lambda i: seen.add(threading.get_ident()), [(i,) for i in range(4)])
    return seen


@needs_numba
@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs thread CPU clocks")
def test_workers_spin_after_a_job_and_sleep_after_the_bound(fresh_pool):
    parallel.set_spin_microseconds(20_000)  # 20 ms: long enough to see on a busy machine
    _post_jobs(3)
    assert parallel._spinner(), "the spin did not build"
    (worker,) = fresh_pool.threads
    _post_jobs(3)  # the worker now spins after each job
    start = _cpu_seconds(worker)
    time.sleep(0.01)
    spun = _cpu_seconds(worker) - start
    assert spun > 0.001, f"the worker did not spin after its job ({spun * 1e3:.2f} ms of CPU)"
    time.sleep(0.1)  # well past the bound
    start = _cpu_seconds(worker)
    time.sleep(0.2)
    idle = _cpu_seconds(worker) - start
    assert idle < 0.005, f"the worker kept a core after the bound ({idle * 1e3:.2f} ms of CPU)"


@needs_numba
def test_a_spinning_worker_takes_the_next_job(fresh_pool, monkeypatch):
    parallel.set_spin_microseconds(50_000)
    _post_jobs(2)
    assert parallel._spinner()
    taken = []
    real = fresh_pool.spin

    def counting(spinner, jobs):
        job = real(spinner, jobs)
        taken.append(job is not None)
        return job

    monkeypatch.setattr(fresh_pool, "spin", counting)
    _post_jobs(1)  # the worker enters the patched spin after this job
    for _ in range(20):
        time.sleep(0.001)  # well inside the 50 ms bound
        _post_jobs(1)
    assert any(taken), "no job was taken from the spin"


@needs_numba
@pytest.mark.parametrize("threads", [2, 3])
def test_results_with_the_spin_equal_one_thread(fresh_pool, threads):
    parallel.set_spin_microseconds(5_000)
    rng = np.random.default_rng(0)
    a = ember.from_numpy(rng.standard_normal((512, 1024)).astype(np.float32))
    b = ember.from_numpy(rng.standard_normal((512, 1024)).astype(np.float32))
    w = rng.standard_normal((1536, 384)).astype(np.float32)
    x = rng.standard_normal((64, 384)).astype(np.float32)

    def compute():
        return [(a * b + a).numpy(), (a.exp()).sum(-1).numpy(), blas.matmul(x, w.T)]

    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        serial = compute()
        ember.set_num_threads(threads)
        for _ in range(3):  # the first runs build the spin, the later ones run beside it
            for got, want in zip(compute(), serial):
                assert got.tobytes() == want.tobytes()
    finally:
        ember.set_num_threads(before)


def test_closed_pools_leave_no_threads(fresh_pool):
    _post_jobs(2, threads=3)
    assert len(fresh_pool.threads) == 2
    assert fresh_pool.close(30)
    assert fresh_pool.threads == [] and fresh_pool.workers == 0


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, parallel._DEFAULT_SPIN_US),
        ({"EMBER_POOL_SPIN_US": "0"}, 0),
        ({"EMBER_POOL_SPIN_US": "120"}, 120),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),  # a user's OpenMP wait policy is respected
        ({"OMP_WAIT_POLICY": "passive", "EMBER_POOL_SPIN_US": "50"}, 50),  # ember's own wins
        ({"OMP_WAIT_POLICY": "active"}, parallel._DEFAULT_SPIN_US),
    ],
)
def test_the_spin_length_comes_from_the_environment(monkeypatch, env, expected):
    before = parallel.spin_microseconds()
    for name in ("EMBER_POOL_SPIN_US", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        parallel.set_spin_microseconds(None)
        assert parallel.spin_microseconds() == expected
    finally:
        parallel.set_spin_microseconds(before)


def test_a_bad_spin_length_names_the_variable(monkeypatch):
    before = parallel.spin_microseconds()
    monkeypatch.setenv("EMBER_POOL_SPIN_US", "fast")
    try:
        with pytest.raises(ValueError, match="EMBER_POOL_SPIN_US.*'fast'"):
            parallel.set_spin_microseconds(None)
    finally:
        monkeypatch.delenv("EMBER_POOL_SPIN_US")
        parallel.set_spin_microseconds(before)


def test_a_thread_count_of_its_own_governs_the_pool(monkeypatch):
    """Note [Per-thread pool count]: a thread given 1 thread runs its chunks and products
    serially while others keep the budget; results are the same."""
    runs = []
    real = parallel._Pool.run

    def counting(self, fn, argsets, threads):
        runs.append((threading.get_ident(), threads))
        return real(self, fn, argsets, threads)

    monkeypatch.setattr(parallel._Pool, "run", counting)
    rng = np.random.default_rng(1)
    a = ember.from_numpy(rng.standard_normal((512, 1024)).astype(np.float32))
    expected = (a + a).numpy()
    seen = {}

    def worker(count):
        parallel.set_thread_count(count)
        seen[count] = (parallel.threads_here(), blas.split_threads(), (a + a).numpy())
        parallel.set_thread_count(None)
        seen[(count, "after")] = parallel.threads_here()

    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        for count in (1, 3):
            thread = threading.Thread(target=worker, args=(count,))
            thread.start()
            thread.join(60)
            threads_of = [t for ident, t in runs if ident == thread.ident]
            assert threads_of == ([] if count == 1 else [3])
        assert seen[1][:2] == (1, 1) and seen[3][:2] == (3, 3)
        assert seen[(1, "after")] == seen[(3, "after")] == 2
        for count in (1, 3):
            assert seen[count][2].tobytes() == expected.tobytes()
        assert parallel.threads_here() == 2 and parallel.own_thread_count() is None
        with pytest.raises(ValueError, match="set_thread_count"):
            parallel.set_thread_count(0)
    finally:
        ember.set_num_threads(before)
