"""Eager dispatch and the compiled step, before and after a change to the op surface or the
tracer (issue 13): `a + b` on (4,), the seed's linear regression (1000 steps, eager and
compiled) and the seed MLP's epoch (Adam, batch 64), each as ember/PyTorch ratios timed in
one process (interleaved rounds, medians), so that runs of two source trees compare.

    python bench/bench_dispatch.py [--tree PATH] [--threads N] [--mlp-steps 200]

`--tree` imports ember from another checkout (main, say) with this same script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=os.path.dirname(HERE))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mlp-steps", type=int, default=200)
    return parser.parse_args()


def main():
    args = _args()
    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.join(HERE, "..", "examples", "seed"))
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    sys.path.insert(0, os.path.abspath(args.tree))
    import numpy as np
    import torch

    import ember
    from harness import compare, set_threads

    assert ember.__file__.startswith(os.path.abspath(args.tree)), ember.__file__
    set_threads(args.threads)
    rows = []
    a = np.random.default_rng(0).standard_normal((4,)).astype(np.float32)
    ea, eb, ta, tb = ember.tensor(a), ember.tensor(a), torch.tensor(a), torch.tensor(a)
    rows.append(compare("a + b (4,)", lambda: ea + eb, lambda: ta + tb))

    def regression(lib, compiled=False):
        W = lib.tensor([0.3], requires_grad=True)
        b = lib.tensor([-0.3], requires_grad=True)
        x = lib.tensor([1.0, 2.0, 3.0, 4.0])
        y = lib.tensor([0.0, -1.0, -2.0, -3.0])

        def step(x, y):
            loss = ((W * x + b - y) ** 2).sum()
            W.grad = None
            b.grad = None
            loss.backward()
            with lib.no_grad():
                W.sub_(W.grad * 0.01)
                b.sub_(b.grad * 0.01)
            return loss

        step = lib.compile(step) if compiled else step

        def run():
            with lib.no_grad():
                W.copy_(lib.tensor([0.3]))
                b.copy_(lib.tensor([-0.3]))
            for _ in range(1000):
                loss = step(x, y)
            return loss

        return run

    rows.append(
        compare(
            "seed regression 1000 steps eager",
            regression(ember),
            regression(torch),
            repeats=5,
        )
    )
    rows.append(
        compare(
            "seed regression 1000 steps compiled (torch eager)",
            regression(ember, True),
            regression(torch),
            repeats=5,
        )
    )
    from _mnist import load_mnist, normalized
    from bench_mlp import mlp, run_epoch

    images, labels = load_mnist("train")
    data = {}
    for lib in (ember, torch):
        lib.manual_seed(0)
        data[lib] = (
            lib.from_numpy(normalized(images).reshape(-1, 784)),
            lib.from_numpy(labels),
            mlp(lib),
        )
        run_epoch(lib, data[lib][2], data[lib][0], data[lib][1], steps=20)

    def epoch(lib):
        x, y, model = data[lib]
        return lambda: run_epoch(lib, model, x, y, steps=args.mlp_steps)

    rows.append(
        compare(
            f"seed MLP Adam, {args.mlp_steps} steps of batch 64",
            epoch(ember),
            epoch(torch),
            repeats=3,
            warmup=1,
        )
    )
    print(json.dumps({"tree": args.tree, "threads": args.threads}))


if __name__ == "__main__":
    main()
