"""Elementwise ops and reductions on every core (Note [Parallel kernels]).

Standardises 20,000 of the bundled MNIST training images (20,000 x 784 values), then runs the work a
classifier's layers do on them: a bias add, GELU, a row softmax, sums and a mean, eagerly at 1
thread and at every thread `ember` may use, and once more compiled (fused kernels). It checks
that the results are equal bit for bit across thread counts and prints the times (which move
with the machine's load).

    python examples/parallel_ops.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))

import ember  # noqa: E402
from _mnist import load_mnist, normalized  # noqa: E402
from ember.backend import parallel  # noqa: E402

F = ember.nn.functional


def layer_work(x, bias):
    h = F.gelu(x + bias)
    p = F.softmax(h, -1)
    return p, h.sum(-1), h.mean(), (x * x).sum(0)


def timed(fn, *args, repeats=5):
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main():
    images = load_mnist("train")[0][:20000]
    x = ember.tensor(normalized(images).reshape(len(images), -1))
    bias = ember.tensor(np.linspace(-1, 1, x.shape[1], dtype=np.float32))
    cores = parallel.num_threads()
    compiled = ember.compile(layer_work)
    print(f"input {tuple(x.shape)}, threshold {parallel.threshold()} elements, cores {cores}")
    if parallel.overloaded():
        print(
            f"the machine is overloaded (load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores): the parallel paths run on one thread "
            "(Note [Overloaded machine])"
        )
    results = {}
    before = ember.get_num_threads()
    try:
        for threads in sorted({1, max(2, cores)}):
            ember.set_num_threads(threads)
            for mode, fn in (("eager", layer_work), ("compiled", compiled)):
                out, seconds = timed(fn, x, bias)
                results[(mode, threads)] = [t.numpy() for t in out]
                print(f"{mode:>8} at {threads} thread(s): {seconds * 1e3:8.1f} ms")
    finally:
        ember.set_num_threads(before)
    for mode in ("eager", "compiled"):
        runs = [v for k, v in results.items() if k[0] == mode]
        same = all(a.tobytes() == b.tobytes() for a, b in zip(runs[0], runs[-1]))
        print(f"{mode}: results at 1 and {max(2, cores)} threads equal bit for bit: {same}")
        if not same:
            raise SystemExit(f"{mode} results changed with the thread count")


if __name__ == "__main__":
    main()
