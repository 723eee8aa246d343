"""Core benchmarks (issue 3): per-op overhead, matmul, the seed's linear regression (eager).

Run: `make bench` or `python bench/bench_core.py`. Prints ember/PyTorch ratios and JSON lines.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ember  # noqa: E402
from harness import compare, set_threads  # noqa: E402


def bench_add():
    import torch

    results = []
    for shape in [(4,), (1000, 1000)]:
        a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ea, eb = ember.tensor(a), ember.tensor(a)
        ta, tb = torch.tensor(a), torch.tensor(a)
        results.append(
            compare(f"a + b {shape}", lambda ea=ea, eb=eb: ea + eb, lambda ta=ta, tb=tb: ta + tb)
        )
    return results


def bench_matmul():
    import torch

    results = []
    for n in (1024, 2048):
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        ea, ta = ember.tensor(a), torch.tensor(a)
        flops = 2 * n**3
        r = compare(f"matmul {n}", lambda ea=ea: ea @ ea, lambda ta=ta: ta @ ta, repeats=5)
        r["ember_gflops"] = flops / r["ember_s"] / 1e9
        r["torch_gflops"] = flops / r["torch_s"] / 1e9
        print(
            f"{'':<40} ember {r['ember_gflops']:.0f} GFLOP/s, torch {r['torch_gflops']:.0f} GFLOP/s"
        )
        results.append(r)
    return results


def _linear_regression_ember():
    W = ember.tensor([0.3], requires_grad=True)
    b = ember.tensor([-0.3], requires_grad=True)
    x = ember.tensor([1.0, 2.0, 3.0, 4.0])
    y = ember.tensor([0.0, -1.0, -2.0, -3.0])
    for _ in range(1000):
        loss = ((W * x + b - y) ** 2).sum()
        W.grad = b.grad = None
        loss.backward()
        with ember.no_grad():
            W -= 0.01 * W.grad
            b -= 0.01 * b.grad
    return W, b, loss


def _linear_regression_torch():
    import torch

    W = torch.tensor([0.3], requires_grad=True)
    b = torch.tensor([-0.3], requires_grad=True)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([0.0, -1.0, -2.0, -3.0])
    for _ in range(1000):
        loss = ((W * x + b - y) ** 2).sum()
        W.grad = b.grad = None
        loss.backward()
        with torch.no_grad():
            W -= 0.01 * W.grad
            b -= 0.01 * b.grad
    return W, b, loss


def bench_linear_regression():
    W, b, loss = _linear_regression_ember()
    print(f"  ember result: W {W.item():.7f} b {b.item():.7f} loss {loss.item():.3g}")
    return [
        compare(
            "seed linear regression, 1000 steps eager",
            _linear_regression_ember,
            _linear_regression_torch,
            repeats=5,
        )
    ]


def main():
    import torch

    threads = set_threads()
    print(f"torch {torch.__version__}, numpy {np.__version__}, {threads} thread(s) each")
    results = bench_add() + bench_matmul() + bench_linear_regression()
    return results


if __name__ == "__main__":
    main()
