"""Convolution and max-pooling ops at the MNIST CNN's shapes (batch 64, float32): ember against
PyTorch eager, forward and forward+backward, plus ember's fast kernel against its own reference
forward (the op's spec) for each primitive.

    python bench/bench_conv.py [--threads 1]

Both libraries run on `--threads` BLAS threads (default 1, as bench_mlp.py).
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv() -> int:
    """--threads N (default 1), applied to both libraries with harness.set_threads."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


_THREADS = _threads_from_argv()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from harness import compare, set_threads

CONVS = {"conv1": ((64, 1, 28, 28), (16, 1, 3, 3)), "conv2": ((64, 16, 14, 14), (32, 16, 3, 3))}
POOLS = {"pool1": (64, 16, 28, 28), "pool2": (64, 32, 14, 14)}


def _pair(label, ember_fn, torch_fn):
    """Forward, and forward + backward of the sum."""
    return [
        compare(f"{label} forward", ember_fn, torch_fn),
        compare(
            f"{label} forward+backward",
            lambda: ember_fn().sum().backward(),
            lambda: torch_fn().sum().backward(),
        ),
    ]


def bench_against_torch():
    import torch

    import ember
    import ember.nn.functional as F

    set_threads(_THREADS)
    rng = np.random.default_rng(0)
    results = []
    for name, (xs, ws) in CONVS.items():
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        ex, ew = ember.from_numpy(x), ember.from_numpy(w).requires_grad_(True)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w).requires_grad_(True)
        if name != "conv1":  # conv1's input is the data: no input gradient, as in training
            ex.requires_grad_(True)
            tx.requires_grad_(True)
        results += _pair(
            f"{name} conv2d(padding=1) {xs}",
            lambda a=ex, b=ew: F.conv2d(a, b, padding=1),
            lambda a=tx, b=tw: torch.nn.functional.conv2d(a, b, padding=1),
        )
    for name, xs in POOLS.items():
        x = rng.standard_normal(xs).astype(np.float32)
        ex = ember.from_numpy(x).requires_grad_(True)
        tx = torch.from_numpy(x).requires_grad_(True)
        results += _pair(
            f"{name} max_pool2d(2) {xs}",
            lambda a=ex: F.max_pool2d(a, 2),
            lambda a=tx: torch.nn.functional.max_pool2d(a, 2),
        )
    # the paths without fast kernels: indices, unpooling, 3-D max pooling, ceil-mode avg pooling
    x = rng.standard_normal(POOLS["pool2"]).astype(np.float32)
    ex, tx = ember.from_numpy(x).requires_grad_(True), torch.from_numpy(x).requires_grad_(True)
    tF = torch.nn.functional

    def pool_unpool(lib_f, a):
        out, idx = lib_f.max_pool2d(a, 2, return_indices=True)
        return lib_f.max_unpool2d(out, idx, 2)

    results += _pair(
        f"pool2 max_pool2d(2, return_indices) + max_unpool2d {x.shape}",
        lambda: pool_unpool(F, ex),
        lambda: pool_unpool(tF, tx),
    )
    results += _pair(
        f"pool2 avg_pool2d(3, 2, 1, ceil_mode) {x.shape}",
        lambda: F.avg_pool2d(ex, 3, 2, 1, ceil_mode=True),
        lambda: tF.avg_pool2d(tx, 3, 2, 1, ceil_mode=True),
    )
    x3 = rng.standard_normal((16, 16, 8, 14, 14)).astype(np.float32)
    ex3 = ember.from_numpy(x3).requires_grad_(True)
    tx3 = torch.from_numpy(x3).requires_grad_(True)
    results += _pair(
        f"max_pool3d(2) {x3.shape}", lambda: F.max_pool3d(ex3, 2), lambda: tF.max_pool3d(tx3, 2)
    )
    return results


def bench_kernels_against_reference():
    """Each primitive's registered NumPy kernel against its reference forward."""
    from ember.backend import get_backend
    from ember.ops.conv import (
        CONV2D,
        CONV2D_INPUT_GRAD,
        CONV2D_WEIGHT_GRAD,
        MAX_POOL2D,
        MAX_POOL2D_GRAD,
    )

    xp = get_backend("cpu").xp
    rng = np.random.default_rng(0)
    f32 = np.float32
    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    pool = {
        "kernel": (2, 2),
        "stride": (2, 2),
        "padding": (0, 0),
        "dilation": (1, 1),
        "ceil_mode": False,
    }
    cases = []
    for name, (xs, ws) in CONVS.items():
        x, w = rng.standard_normal(xs).astype(f32), rng.standard_normal(ws).astype(f32)
        g = rng.standard_normal((xs[0], ws[0]) + xs[2:]).astype(f32)
        cases.append((f"{name} conv2d", CONV2D, (x, w), conv))
        cases.append(
            (f"{name} conv2d_weight_grad", CONV2D_WEIGHT_GRAD, (x, g), dict(conv, weight_shape=ws))
        )
        if name != "conv1":
            cases.append(
                (f"{name} conv2d_input_grad", CONV2D_INPUT_GRAD, (g, w), dict(conv, input_shape=xs))
            )
    for name, xs in POOLS.items():
        x = rng.standard_normal(xs).astype(f32)
        g = rng.standard_normal(xs[:2] + (xs[2] // 2, xs[3] // 2)).astype(f32)
        cases.append((f"{name} max_pool2d", MAX_POOL2D, (x,), pool))
        cases.append((f"{name} max_pool2d_grad", MAX_POOL2D_GRAD, (g, x), pool))
    results = []
    for label, op, arrays, attrs in cases:
        kernel = op.kernels["numpy"]
        results.append(
            compare(
                f"{label} kernel",
                lambda k=kernel, a=arrays, t=attrs: k(xp, *a, **t),
                lambda f=op.forward, a=arrays, t=attrs: f(xp, *a, **t),
                reference="reference",
            )
        )
    return results


if __name__ == "__main__":
    print(f"({_THREADS} BLAS thread(s))")
    bench_against_torch()
    bench_kernels_against_reference()
