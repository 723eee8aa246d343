"""The Python above the kernels in an eager MiniLM forward (Note [Eager inference overhead]).

Every op kernel and packed product is recorded once, then replayed (returns its recorded
output at once), so the wall time left is the Python that runs the forward: module calls, op
functions, dispatch, wrapping. `--gaps` prints the median time from each kernel call to the
next (the Python that leads to it), per kernel of one forward. A real run adds cache misses
after each product, so its Python costs more than the replay's (bench/profile_minilm.py's
"python" line measures it inside real runs, with its timers' cost).

Run: PYTHONPATH=. python bench/profile_eager_python.py [--shape 1 16] [--threads 1] [--gaps]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_transformers import FOLDER  # noqa: E402
from bench.harness import padded_batch, wait_idle  # noqa: E402


class Replay:
    """Records each kernel's output in the first call, then hands them back in order."""

    def __init__(self):
        self.tape, self.position, self.replaying, self.stamps = [], 0, False, []

    def wrap(self, name, fn):
        def kernel(xp, *arrays, **attrs):
            if not self.replaying:
                out = fn(xp, *arrays, **attrs)
                self.tape.append((name, out))
                return out
            self.stamps.append(time.perf_counter())
            self.position += 1
            return self.tape[self.position - 1][1]

        return kernel

    def wrap_product(self, product):
        def packed_product(matrix, x, out, *args, **kwargs):  # accumulate, bias
            if not self.replaying:
                product(matrix, x, out, *args, **kwargs)
                self.tape.append((f"product {matrix.n}x{matrix.k}", None))
                return
            self.stamps.append(time.perf_counter())
            self.position += 1

        return packed_product


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=2, default=[1, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--gaps", action="store_true", help="the Python before each kernel")
    args = parser.parse_args()

    import ember
    from ember import transformers as et
    from ember.backend.mkl_packed import PackedMatrix
    from ember.ops.registry import REGISTRY

    ember.set_num_threads(args.threads)
    batch, length = args.shape
    rng = np.random.default_rng(0)
    ids, mask = padded_batch(rng, batch, length)
    model = et.BertModel.from_pretrained(FOLDER).eval()
    ids, mask = ember.from_numpy(ids), ember.from_numpy(mask)

    def forward():
        with ember.no_grad():
            model(ids, attention_mask=mask)

    for _ in range(20):  # warm-up; short inputs' kernels load in the background
        forward()
    wait_idle(timeout_s=30.0)
    real = []
    for _ in range(args.rounds // 10):
        start = time.perf_counter()
        forward()
        real.append(time.perf_counter() - start)

    replay = Replay()
    saved = {op.name: (op.forward, dict(op.kernels)) for op in REGISTRY.values()}
    product = PackedMatrix.product
    for op in REGISTRY.values():
        op.forward = replay.wrap(op.name, op.forward)
        for key, kernel in list(op.kernels.items()):
            op.kernels[key] = replay.wrap(op.name, kernel)
    PackedMatrix.product = replay.wrap_product(product)
    try:
        forward()  # the recording
        replay.replaying = True
        walls, gaps = [], collections.defaultdict(list)
        for _ in range(args.rounds):
            replay.position = 0
            replay.stamps.clear()
            start = time.perf_counter()
            forward()
            end = time.perf_counter()
            walls.append(end - start)
            points = [start, *replay.stamps, end]
            for i in range(len(points) - 1):
                gaps[i].append(points[i + 1] - points[i])
    finally:
        PackedMatrix.product = product
        for op in REGISTRY.values():
            op.forward, kernels = saved[op.name]
            op.kernels.clear()
            op.kernels.update(kernels)
    if args.gaps:
        names = [name for name, _ in replay.tape] + ["(return)"]
        for i, name in enumerate(names):
            print(f"{i:4d} {name:<32} {statistics.median(gaps[i]) * 1e6:7.2f} us")
    print(
        f"ember {batch}x{length}, {args.threads} thread(s): forward min/med "
        f"{min(real) * 1e3:.3f} {statistics.median(real) * 1e3:.3f} ms; the Python above its "
        f"{len(replay.tape)} kernel calls (kernels replayed) min/med {min(walls) * 1e3:.3f} "
        f"{statistics.median(walls) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
