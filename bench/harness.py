"""Side-by-side timing: ember and a reference framework in one process, warm-up, medians.

Each workload gives a pair of zero-argument callables (ember, reference) doing the same work.
`run` times them interleaved (so noise on a shared machine hits both), prints the median
times and the ratio ember/reference, and one JSON line per workload.
"""

from __future__ import annotations

import json
import statistics
import time


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
    n_e, n_r = _calibrate(ember_fn), _calibrate(reference_fn)
    te, tr = [], []
    for _ in range(repeats):
        te.append(_time(ember_fn, n_e))
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
