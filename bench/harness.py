"""Side-by-side timing: ember and a reference framework in one process, warm-up, medians.

Each workload gives a pair of zero-argument callables (ember, reference) doing the same work.
`compare` times them interleaved (so noise on a shared machine hits both), prints the median
times and the ratio ember/reference, and one JSON line per workload.

Note [Quiet side]: users run one framework per process, so a side's time must not include the
other side's idle threads still spinning on the cores. After a call returns, thread pools keep
running for a while, waiting for the next job: NumPy's OpenBLAS workers spin 2**28 CPU cycles
(measured 128 ms of a core after the last GEMM on this 2-core machine, unless
OPENBLAS_THREAD_TIMEOUT was set when NumPy loaded; Note [BLAS spin] in ember/backend/threads.py),
PyTorch's OpenMP workers ~4.5 ms, XLA's Eigen pool and ember's own pool and numba workers
(passive) none measurable. Timed back to back, the 128 ms spin landed in the reference's
round: at 2 threads PyTorch's LSTM layer (bench_rnn) took 33.8 ms and its GRU layer 104 ms,
against 5.8 ms and 9.0 ms with this wait (5.2 ms and 8.2 ms with OpenBLAS's spin cut to 2**4
cycles instead: the spin, not ember's other threads, was the cause). So before each
timed call `wait_idle()` waits until no other thread of the process has run for `quiet_ms`
(10 ms), reading each thread's CPU time from /proc/self/task/*/schedstat every 2 ms, and gives
up after 1 s (then times anyway). Without /proc (not Linux) it returns at once.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time

import numpy as np


def padded_batch(rng, batch: int, length: int):
    """(ids, mask) int64 arrays of BERT input: random token ids, and an attention mask whose
    second half of the batch pads its last quarter (the MiniLM benches' and profiles' input)."""
    ids = rng.integers(1000, 20000, (batch, length))
    mask = np.ones_like(ids)
    mask[batch // 2 :, length * 3 // 4 :] = 0
    return ids, mask


def set_threads(n: int | None = None) -> int:
    """Give ember and PyTorch the same number of CPU threads (default 1, or
    EMBER_BENCH_THREADS): on a shared machine, oversubscribed BLAS threads busy-wait and turn
    timings into noise."""
    import os

    import ember

    n = int(os.environ.get("EMBER_BENCH_THREADS", "1")) if n is None else n
    ember.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


def thread_cpu_ns() -> dict:
    """CPU time (ns) each thread of this process has run so far, by thread id
    (/proc/self/task/*/schedstat; empty where there is no /proc)."""
    times = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return times
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                times[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return times


def wait_idle(quiet_ms: float = 10.0, timeout_s: float = 1.0, poll_ms: float = 2.0) -> float:
    """Wait until no other thread of this process has run for `quiet_ms` (Note [Quiet
    side]); give up after `timeout_s`. Returns the seconds waited."""
    me = threading.get_native_id()
    start = time.perf_counter()
    last = thread_cpu_ns()
    if not last:
        return 0.0
    last_busy = start
    while True:
        time.sleep(poll_ms / 1e3)
        now_times = thread_cpu_ns()
        now = time.perf_counter()
        # a thread that wakes to check a queue runs a few us: busy is >10% of the interval
        busy = any(
            t - last.get(tid, 0) > 100_000 * poll_ms for tid, t in now_times.items() if tid != me
        )
        last = now_times
        if busy:
            last_busy = now
        elif now - last_busy >= quiet_ms / 1e3:
            return now - start
        if now - start >= timeout_s:
            return now - start


def _time(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _calibrate(fn, target=0.05):
    number = 1
    while True:
        t = _time(fn, number)
        if t * number >= target or number >= 1 << 20:
            return number
        number *= 2


def compare(
    name: str,
    ember_fn,
    reference_fn,
    reference: str = "torch",
    repeats: int = 7,
    warmup: int = 2,
    unit: str = "s",
    extra: dict | None = None,
) -> dict:
    for _ in range(warmup):
        ember_fn()
        reference_fn()
    wait_idle()
    n_e = _calibrate(ember_fn)
    wait_idle()
    n_r = _calibrate(reference_fn)
    te, tr = [], []
    for _ in range(
        repeats
    ):  # each side timed once the other's threads are idle (Note [Quiet side])
        wait_idle()
        te.append(_time(ember_fn, n_e))
        wait_idle()
        tr.append(_time(reference_fn, n_r))
    me, mr = statistics.median(te), statistics.median(tr)
    result = {
        "workload": name,
        "ember_s": me,
        f"{reference}_s": mr,
        "ratio": me / mr,
        "reference": reference,
    }
    if extra:
        result.update(extra)
    print(f"{name:<40} ember {_fmt(me):>10}  {reference} {_fmt(mr):>10}  ratio {me / mr:6.2f}")
    print(json.dumps(result))
    return result


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"
