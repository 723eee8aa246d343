"""One MiniLM layer's four 16-row products (nn.Linear 384 -> 1152, 384 -> 384, 384 -> 1536,
1536 -> 384: the joined query/key/value projection, the attention output, the feed-forward's
two), eager, grad mode off, weights hot: ember's packed weights (Note [Packed weights] in
ember/backend/mkl_packed.py) with the split products' column blocks on ember's pool and on
numba's threads (Note [Packed split on numba's threads]), against PyTorch, in interleaved
rounds at 1 and 2 threads. Prints min / median / max of the per-round medians in us and the
ratio of medians to PyTorch, one JSON line per setting.

Run: PYTHONPATH=. python bench/bench_packed_layer.py [--rounds 5] [--calls 200] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ember  # noqa: E402, I001

from ember.backend import mkl_packed  # noqa: E402

SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)]  # (in, out) features


def _median_us(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="timed layers per round")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import torch

    ember.manual_seed(0)
    torch.manual_seed(0)
    ours = [ember.nn.Linear(k, n) for k, n in SHAPES]
    theirs = [torch.nn.Linear(k, n) for k, n in SHAPES]
    ex = {k: ember.randn(1, 16, k) for k in (384, 1536)}
    tx = {k: torch.randn(1, 16, k) for k in (384, 1536)}
    if not mkl_packed.prepare_split():
        sys.exit("MKL's packed products or numba are missing: nothing to compare")
    loaded = list(mkl_packed._split)
    mkl_packed.SPLIT_WARM_UP_AFTER = -1  # the pool's setting must not load the kernel itself

    def ember_layer():
        for layer, (k, _) in zip(ours, SHAPES):
            layer(ex[k])

    def torch_layer():
        for layer, (k, _) in zip(theirs, SHAPES):
            layer(tx[k])

    def on_pool():
        mkl_packed._split[:] = []
        ember_layer()

    def on_numba():
        mkl_packed._split[:] = loaded
        ember_layer()

    settings = {"ember, pool": on_pool, "ember, numba threads": on_numba, "torch": torch_layer}
    with ember.no_grad(), torch.no_grad():
        for threads in args.threads:
            ember.set_num_threads(threads)
            torch.set_num_threads(threads)
            medians = {name: [] for name in settings}
            for _ in range(args.rounds):
                for name, fn in settings.items():
                    fn()  # the setting's first call (packs made, threads awake)
                    medians[name].append(_median_us(fn, args.calls))
            reference = statistics.median(medians["torch"])
            for name, values in medians.items():
                median = statistics.median(values)
                print(
                    f"{threads}T {name:22s} us min/med/max {min(values):6.0f} {median:6.0f} "
                    f"{max(values):6.0f}  ratio to torch {median / reference:.2f}"
                )
                record = {"setting": name, "threads": threads, "median_us": median}
                record.update(min_us=min(values), max_us=max(values))
                print(json.dumps(record))
    mkl_packed._split[:] = loaded


if __name__ == "__main__":
    main()
