"""Where MiniLM's forward spends its time, ember against PyTorch, op category by op category.

ember: every registered kernel is wrapped with a timer (keyed by op name and, for matmul, by
the kind of product: a weight GEMM (..., K) @ (K, N) or a batched attention product), so the
table shows each category's milliseconds and share of the forward; what is left of the wall
time is Python: module calls, dispatch, autograd bookkeeping. PyTorch: `torch.profiler` with
the same grouping of aten ops. Both run at the thread count given (default 1) on the same
random batch with padding, under no_grad, after a warm-up.

Run: PYTHONPATH=. python bench/profile_minilm.py [--shape 32 128] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.bench_transformers import FOLDER  # noqa: E402
from bench.harness import wait_idle  # noqa: E402

_TORCH_GROUPS = {
    "aten::addmm": "gemm (weights)",
    "aten::mm": "gemm (weights)",
    "aten::linear": None,
    "aten::bmm": "gemm (attention)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (fused sdpa)",
    "aten::gelu": "gelu",
    "aten::native_layer_norm": "layer norm",
    "aten::embedding": "embedding gather",
    "aten::index_select": None,
    "aten::add": "add / residual",
    "aten::copy_": "copies / contiguous",
    "aten::clone": None,
    "aten::_softmax": "softmax",
    "aten::tanh": "other",
}


_EMBER_GROUPS = {
    "fused_softmax": "softmax",
    "fused_gelu": "gelu",
    "fused_layer_norm": "layer norm",
    # Note [Row-blocked feed-forward]: products, GELU and the norm of the block in one op
    "fused_feed_forward": "feed-forward block (gemm + gelu + norm)",
    "take": "embedding gather",
    "embedding": "embedding gather",
    "index_select": "embedding gather",
    "add": "add / residual",
    "contiguous": "copies / contiguous",
    "copy": "copies / contiguous",
    "astype": "dtype conversions",
    "cast": "dtype conversions",
    "to_dtype": "dtype conversions",
}


def _ember_category(name, arrays):
    # the table built once: the timer's own cost lands in the "python" line (~0.5 us a call
    # less than a dict made per call)
    if name in ("matmul", "linear"):
        b = arrays[1] if len(arrays) > 1 else None
        if b is not None and getattr(b, "ndim", 0) == 2:
            return "gemm (weights)"
        return "gemm (attention)"
    group = _EMBER_GROUPS.get(name)
    return "other: " + name if group is None else group


def profile_ember(model, ids, mask, rounds):
    import ember
    from ember.ops.registry import REGISTRY

    totals = collections.Counter()
    counts = collections.Counter()
    saved = {}

    def wrap(op, fn):
        def timed(xp, *arrays, **attrs):
            start = time.perf_counter()
            out = fn(xp, *arrays, **attrs)
            totals[_ember_category(op.name, arrays)] += time.perf_counter() - start
            counts[op.name] += 1
            return out

        return timed

    # Note [Packed weights]: inference products by packed weights bypass the op kernels
    from ember.backend.mkl_packed import PackedMatrix

    product = PackedMatrix.product

    def packed_product(self, x, out, accumulate=False):
        start = time.perf_counter()
        product(self, x, out, accumulate)
        totals["gemm (weights)"] += time.perf_counter() - start
        counts["linear (packed weight)"] += 1

    PackedMatrix.product = packed_product
    for op in REGISTRY.values():
        saved[op.name] = (op.forward, dict(op.kernels))
        op.forward = wrap(op, op.forward)
        for key, kernel in list(op.kernels.items()):
            op.kernels[key] = wrap(op, kernel)
    try:
        with ember.no_grad():
            for _ in range(2):  # warm-up
                model(ids, attention_mask=mask)
            # short inputs' kernels load in a background thread once (Note [Kernel-exact small
            # paths] in ember/backend/transformer_kernels.py): time after it has finished
            wait_idle(timeout_s=30.0)
            totals.clear()
            counts.clear()
            start = time.perf_counter()
            for _ in range(rounds):
                model(ids, attention_mask=mask)
            wall = (time.perf_counter() - start) / rounds
    finally:
        PackedMatrix.product = product
        for op in REGISTRY.values():
            op.forward, kernels = saved[op.name]
            op.kernels.clear()
            op.kernels.update(kernels)
    per_call = {k: v / rounds for k, v in totals.items()}
    per_call["python (modules, dispatch)"] = wall - sum(per_call.values())
    return wall, per_call, {k: v // rounds for k, v in counts.items()}


def profile_torch(model, ids, mask, rounds):
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(ids, attention_mask=mask)
        start = time.perf_counter()
        for _ in range(rounds):
            model(ids, attention_mask=mask)
        wall = (time.perf_counter() - start) / rounds
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                model(ids, attention_mask=mask)
    totals = collections.Counter()
    counts = collections.Counter()
    for event in prof.key_averages():
        group = _TORCH_GROUPS.get(event.key, "other: " + event.key)
        counts[event.key] += event.count // rounds
        if group is None:  # a wrapper whose children are counted
            continue
        totals[group] += event.self_cpu_time_total / 1e6 / rounds
    per_call = dict(totals)
    # self times of the leaf ops under the profiler (its overhead inflates the small ones)
    return wall, per_call, dict(counts)


def _table(title, wall, per_call, counts):
    print(f"\n{title}: {wall * 1e3:.1f} ms per forward (unprofiled wall)")
    for key, seconds in sorted(per_call.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<40} {seconds * 1e3:9.2f} ms  {seconds / wall * 100:5.1f}%")
    print(f"  ops per forward: {sum(counts.values())}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=2, default=[32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", action="store_true", help="print op counts per name")
    args = parser.parse_args()

    import torch
    import transformers

    import ember
    from ember import transformers as et

    ember.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    batch, length = args.shape
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (batch, length))
    mask = np.ones_like(ids)
    mask[batch // 2 :, length * 3 // 4 :] = 0
    ours = et.BertModel.from_pretrained(FOLDER).eval()
    theirs = transformers.BertModel.from_pretrained(FOLDER).eval()
    e = profile_ember(ours, ember.from_numpy(ids), ember.from_numpy(mask), args.rounds)
    t = profile_torch(theirs, torch.from_numpy(ids), torch.from_numpy(mask), args.rounds)
    _table(f"ember {batch}x{length}, {args.threads} thread(s)", *e)
    _table(f"torch {batch}x{length}, {args.threads} thread(s)", *t)
    if args.counts:
        for title, counts in (("ember", e[2]), ("torch", t[2])):
            print(f"\n{title} ops per forward:")
            for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<50} {n}")


if __name__ == "__main__":
    main()
