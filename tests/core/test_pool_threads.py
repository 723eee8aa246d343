"""ember's thread pool (ember/backend/parallel.py): pools that end their workers, and a
thread's own count (Note [Per-thread pool count])."""

import sys
import threading

import numpy as np
import pytest

import ember
from ember.backend import blas, parallel


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of this test's own, closed after."""
    pool = parallel._Pool()
    monkeypatch.setattr(parallel, "_pool", pool)
    before_threads = parallel.num_threads()
    yield pool
    parallel.set_threads(before_threads)
    assert pool.close(30), "a pool worker did not end"
    assert not any(t.is_alive() for t in pool.threads)


def _post_jobs(count, threads=2):
    parallel.set_threads(threads)
    seen = set()
    for _ in range(count):
        parallel.run_chunks(lambda i: seen.add(threading.get_ident()), [(i,) for i in range(4)])
    return seen


def test_closed_pools_leave_no_threads(fresh_pool):
    _post_jobs(2, threads=3)
    workers = list(fresh_pool.threads)
    assert len(workers) == 2 and all(t.is_alive() for t in workers)
    assert fresh_pool.close(30)
    assert fresh_pool.threads == [] and fresh_pool.workers == 0
    assert not any(t.is_alive() for t in workers)
    _post_jobs(1, threads=2)  # a closed pool starts new workers when used again
    assert len(fresh_pool.threads) == 1


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
    x = rng.standard_normal((256, 384)).astype(np.float32)
    w = rng.standard_normal((1536, 384)).astype(np.float32)
    expected = (a + a).numpy()
    product = blas.matmul(x, w.T)  # 256 x 384 x 1536: above blas.SPLIT_MIN_WORK
    seen = {}

    def worker(count):
        parallel.set_thread_count(count)
        sums, products = (a + a).numpy(), blas.matmul(x, w.T)
        seen[count] = (parallel.threads_here(), blas.split_threads(), sums, products)
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
            assert threads_of == [] if count == 1 else (threads_of and set(threads_of) == {3})
        assert seen[1][:2] == (1, 1) and seen[3][:2] == (3, 3)
        assert seen[(1, "after")] == seen[(3, "after")] == 2
        for count in (1, 3):
            assert seen[count][2].tobytes() == expected.tobytes()
            assert seen[count][3].tobytes() == product.tobytes()  # Note [Small GEMMs]
        assert parallel.threads_here() == 2 and parallel.own_thread_count() is None
        with pytest.raises(ValueError, match="set_thread_count"):
            parallel.set_thread_count(0)
    finally:
        ember.set_num_threads(before)


def test_a_finished_job_holds_no_chunk_arrays(fresh_pool):
    """After `run_chunks` returns, neither a worker (which keeps its last job until the next)
    nor a job left in the queue holds the chunks' arguments: the autograd engine counts
    references to a gradient buffer written by parallel chunks (Note [Slot gradients])."""
    parallel.set_threads(2)
    out = np.zeros(1 << 16)
    before = sys.getrefcount(out)
    for _ in range(5):
        parallel.run_chunks(np.add, [(out[:10], 1.0, out[:10]), (out[10:], 1.0, out[10:])])
        assert sys.getrefcount(out) == before
    assert fresh_pool.workers == 1  # the chunks ran on the pool, not serially
