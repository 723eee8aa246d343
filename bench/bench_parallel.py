"""Elementwise ops and reductions on every core (issue 21, Note [Parallel kernels]).

For `a + b`, exp, GELU, a sum over the last axis and a row softmax at (1000, 1000) and at the
MiniLM activation shapes (32*128, 384) and (32*128, 1536), plus a GEMM followed by bias + GELU
(BLAS threads and kernel threads one after another: the oversubscription check of Note [Thread
budget]), it times in one process, interleaved round by round:
- ember as it runs now (parallel above the threshold),
- ember with the parallel paths off (the threshold raised: the serial NumPy calls, as before),
- PyTorch,
and prints the medians with the ratios ember/torch, serial/torch and parallel/serial, at 1 and
2 threads (`--threads 1 2`; the order of the three rotates round by round). The figures move
with the machine's load: `--wait-idle S` waits up to S seconds for the 1-minute load average
to fall below the thread count before each workload.

    python bench/bench_parallel.py [--threads 1 2] [--rounds 7] [--wait-idle 0] [--ignore-load]

On a machine whose load average exceeds 1.5x its cores the parallel paths run serially (Note
[Overloaded machine]); `--ignore-load` measures the threaded paths there anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ember  # noqa: E402
from ember.backend import parallel  # noqa: E402
from harness import set_threads, wait_idle  # noqa: E402

SHAPES = [(1000, 1000), (32 * 128, 384), (32 * 128, 1536)]


def _time(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _number(fn, target=0.03):
    number = 1
    while _time(fn, number) * number < target and number < 1 << 16:
        number *= 2
    return number


def _serial(fn):
    def run():
        saved = parallel._MIN_SIZE
        parallel._MIN_SIZE = 1 << 62
        try:
            return fn()
        finally:
            parallel._MIN_SIZE = saved

    return run


def _wait_idle(threads, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and os.getloadavg()[0] >= threads:
        time.sleep(2)


def compare3(name, ember_fn, torch_fn, rounds, threads):
    fns = {"ember": ember_fn, "serial": _serial(ember_fn), "torch": torch_fn}
    for fn in fns.values():
        fn()
        fn()
    numbers = {k: _number(fn) for k, fn in fns.items()}
    times = {k: [] for k in fns}
    keys = list(fns)
    for _ in range(rounds):
        for k in keys:
            wait_idle()  # the previous side's threads idle first (Note [Quiet side], harness.py)
            times[k].append(_time(fns[k], numbers[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "workload": name,
        "threads": threads,
        **{f"{k}_s": v for k, v in med.items()},
        "ember/torch": med["ember"] / med["torch"],
        "serial/torch": med["serial"] / med["torch"],
        "parallel/serial": med["ember"] / med["serial"],
        "ember_min_max_s": [min(times["ember"]), max(times["ember"])],
        "load": os.getloadavg()[0],
    }
    print(
        f"{threads}t {name:<34} ember {med['ember'] * 1e6:9.1f} us  serial "
        f"{med['serial'] * 1e6:9.1f} us  torch {med['torch'] * 1e6:9.1f} us  "
        f"ember/torch {row['ember/torch']:5.2f}  serial/torch {row['serial/torch']:5.2f}  "
        f"par/serial {row['parallel/serial']:5.2f}"
    )
    print(json.dumps(row))
    return row


def workloads():
    import torch

    F, TF = ember.nn.functional, torch.nn.functional
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        a = rng.standard_normal(shape).astype(np.float32)
        b = rng.standard_normal(shape).astype(np.float32)
        ea, eb, ta, tb = ember.tensor(a), ember.tensor(b), torch.tensor(a), torch.tensor(b)
        yield f"a + b {shape}", (lambda a=ea, b=eb: a + b), (lambda a=ta, b=tb: a + b)
        yield f"exp {shape}", ea.exp, ta.exp
        yield f"gelu {shape}", (lambda a=ea: F.gelu(a)), (lambda a=ta: TF.gelu(a))
        yield f"sum(-1) {shape}", (lambda a=ea: a.sum(-1)), (lambda a=ta: a.sum(-1))
        yield (
            f"softmax(-1) {shape}",
            (lambda a=ea: F.softmax(a, -1)),
            (lambda a=ta: TF.softmax(a, -1)),
        )
    x = rng.standard_normal((32 * 128, 384)).astype(np.float32)
    w = rng.standard_normal((384, 1536)).astype(np.float32) * 0.05
    bias = rng.standard_normal(1536).astype(np.float32)
    ex, ew, eb = ember.tensor(x), ember.tensor(w), ember.tensor(bias)
    tx, tw, tb = torch.tensor(x), torch.tensor(w), torch.tensor(bias)
    yield (
        "gelu(x @ w + b) (4096,384)x(384,1536)",
        lambda: F.gelu(ex @ ew + eb),
        lambda: TF.gelu(tx @ tw + tb),
    )
    small = rng.standard_normal((16, 384)).astype(np.float32)
    es, ts = ember.tensor(small), torch.tensor(small)
    yield "a + b (16, 384) (below the threshold)", (lambda: es + es), (lambda: ts + ts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--wait-idle", type=float, default=0.0)
    parser.add_argument(
        "--ignore-load",
        action="store_true",
        help="thread even on an overloaded machine (Note [Overloaded machine])",
    )
    args = parser.parse_args()
    if args.ignore_load:
        parallel._LOAD_LIMIT = float("inf")
    print(
        f"threshold: {parallel.threshold()} elements; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; overloaded (parallel paths run serially): "
        f"{parallel.overloaded()}"
    )
    for threads in args.threads:
        set_threads(threads)
        for name, ember_fn, torch_fn in workloads():
            _wait_idle(threads, args.wait_idle)
            compare3(name, ember_fn, torch_fn, args.rounds, threads)


if __name__ == "__main__":
    main()
