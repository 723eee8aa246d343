"""Where MiniLM's forward spends its time, ember against PyTorch, op category by op category.

ember: every registered kernel is wrapped with a timer (keyed by op name and, for matmul, by
the kind of product: a weight GEMM (..., K) @ (K, N) or a batched attention product), so the
table shows each category's milliseconds and share of the forward; what is left of the wall
time is Python: module calls, dispatch, autograd bookkeeping. PyTorch: `torch.profiler` with
the same grouping of aten ops. Both run at the thread count given (default 1) on the same
random batch with padding, under no_grad, after a warm-up.

`--train` profiles eager training steps instead (BertForSequenceClassification, dropout on,
a loss from random labels; the Trainer bench's shape is `--shape 16 64`), at each count of
`--threads` in one process, phase by phase. forward+loss: each side's ops grouped as above.
backward: ember's products split by role (input gradients g @ W, weight gradients g.T @ x,
bias gradients ones @ g, attention's batched products), its other kernels by op name, the
engine's in-place gradient adds and `.grad` accumulation, and the rest of the wall (the
engine's walk, dispatch, VJP code); PyTorch's `mm` calls split by their shapes the same way,
its other aten ops by name (profiled self times).

Run: PYTHONPATH=. python bench/profile_minilm.py [--shape 32 128] [--threads 1] [--rounds 3]
     PYTHONPATH=. python bench/profile_minilm.py --train --shape 16 64 --threads 2 1
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.bench_transformers import FOLDER  # noqa: E402
from bench.harness import padded_batch, wait_idle  # noqa: E402

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


@contextlib.contextmanager
def ember_kernel_timers(totals, counts, category=_ember_category):
    """Inside the block every registered kernel (and the packed-weight product) adds its
    seconds to `totals[category(op name, arrays)]` and its calls to `counts[op name]`."""
    from ember.backend.mkl_packed import PackedMatrix
    from ember.ops.registry import REGISTRY

    saved = {}

    def wrap(op, fn):
        def timed(xp, *arrays, **attrs):
            start = time.perf_counter()
            out = fn(xp, *arrays, **attrs)
            totals[category(op.name, arrays)] += time.perf_counter() - start
            counts[op.name] += 1
            return out

        return timed

    # Note [Packed weights]: inference products by packed weights bypass the op kernels
    product = PackedMatrix.product

    def packed_product(self, x, out, *args, **kwargs):  # accumulate=, bias=
        start = time.perf_counter()
        product(self, x, out, *args, **kwargs)
        totals["gemm (weights)"] += time.perf_counter() - start
        counts["linear (packed weight)"] += 1

    PackedMatrix.product = packed_product
    for op in REGISTRY.values():
        saved[op.name] = (op.forward, dict(op.kernels))
        op.forward = wrap(op, op.forward)
        for key, kernel in list(op.kernels.items()):
            op.kernels[key] = wrap(op, kernel)
    try:
        yield
    finally:
        PackedMatrix.product = product
        for op in REGISTRY.values():
            op.forward, kernels = saved[op.name]
            op.kernels.clear()
            op.kernels.update(kernels)


def profile_ember(model, ids, mask, rounds):
    import ember

    totals = collections.Counter()
    counts = collections.Counter()
    with ember_kernel_timers(totals, counts), ember.no_grad():
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


# --- the training step's backward (--train) -----------------------------------------------
def _ember_backward_category(name, arrays):
    """The backward's products by role (the weight GEMMs of `_ember_category` split into input
    gradients g @ W, weight gradients g.T @ x and bias gradients ones @ g), other ops by name."""
    if name in ("matmul", "linear"):
        a, b = arrays[0], arrays[1] if len(arrays) > 1 else None
        if name == "linear" or b is None or getattr(b, "ndim", 0) != 2:
            return _ember_category(name, arrays)
        if a.ndim == 1:
            return "bias gradients (ones @ g)"
        if a.ndim == 2 and a.strides[0] == a.itemsize and a.shape[0] > 1:  # g2.mT
            return "weight-gradient GEMMs (g.T @ x)"
        return "input-gradient GEMMs (g @ W)"
    return "op: " + name


def _torch_backward_category(key, shapes, rows):
    if key == "aten::mm" and len(shapes) == 2 and len(shapes[0]) == 2:
        if shapes[0][1] == rows:
            return "weight-gradient GEMMs (g.T @ x)"
        return "input-gradient GEMMs (g @ W)"
    if key == "aten::sum":
        return "bias gradients (sum)"
    if key.startswith("autograd::") or "Backward" in key:
        return "autograd engine (wrappers' self time)"
    return "op: " + key


def profile_ember_step(model, ids, mask, labels, rounds):
    """Forward+loss and backward walls of eager training steps, and the backward's kernels by
    category, with the engine's in-place gradient adds and .grad accumulation named."""
    from ember.autograd import engine

    totals = collections.Counter()
    counts = collections.Counter()
    saved = (
        engine._add_into_buffer,
        engine._accumulate_into,
        engine._BUFFER_REFS,
        engine._TENSOR_REFS,
    )

    def adds(buffer, g, view=None):
        start = time.perf_counter()
        out = saved[0](buffer, g, view)
        totals["engine: gradient adds in place"] += time.perf_counter() - start
        return out

    def accumulate(t, g, create_graph):
        start = time.perf_counter()
        saved[1](t, g, create_graph)
        totals["engine: .grad accumulation"] += time.perf_counter() - start

    # the wrappers' own locals hold one more reference to the buffer and to the gradient, which
    # the engine's exclusivity checks count (without this they would copy and add out of place)
    engine._add_into_buffer, engine._accumulate_into = adds, accumulate
    engine._BUFFER_REFS, engine._TENSOR_REFS = saved[2] + 1, saved[3] + 1
    model.train()
    forward_wall = backward_wall = 0.0
    step_totals, step_counts = collections.Counter(), collections.Counter()
    forward_totals, forward_counts = collections.Counter(), collections.Counter()
    try:
        with ember_kernel_timers(totals, counts, _ember_backward_category):
            for step in range(rounds + 2):  # two warm-up steps
                for p in model.parameters():
                    p.grad = None
                totals.clear()
                counts.clear()
                start = time.perf_counter()
                loss = model(ids, attention_mask=mask, labels=labels).loss
                middle = time.perf_counter()
                if step >= 2:
                    forward_wall += middle - start
                    forward_totals += totals
                    forward_counts = collections.Counter(counts)
                totals.clear()
                counts.clear()
                loss.backward()
                if step >= 2:
                    backward_wall += time.perf_counter() - middle
                    step_totals += totals
                    step_counts = collections.Counter(counts)
    finally:
        (engine._add_into_buffer, engine._accumulate_into, engine._BUFFER_REFS,
         engine._TENSOR_REFS) = saved  # fmt: skip
    per_call = {k: v / rounds for k, v in step_totals.items()}
    wall = backward_wall / rounds
    per_call["python (engine walk, dispatch, VJP code)"] = wall - sum(per_call.values())
    forward = {k: v / rounds for k, v in forward_totals.items()}
    forward_wall /= rounds
    forward["python (modules, dispatch, recording)"] = forward_wall - sum(forward.values())
    return (forward_wall, forward, dict(forward_counts)), (wall, per_call, dict(step_counts))


def profile_torch_step(model, ids, mask, labels, rounds):
    from torch.profiler import ProfilerActivity, profile

    model.train()
    rows = ids.numel()
    walls = [0.0, 0.0]  # forward+loss, backward
    totals = [collections.Counter(), collections.Counter()]
    counts = [collections.Counter(), collections.Counter()]

    def profiled(phase, fn):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            out = fn()
        for event in prof.key_averages(group_by_input_shape=True):
            if phase:
                group = _torch_backward_category(event.key, event.input_shapes, rows)
            else:
                group = _TORCH_GROUPS.get(event.key, "op: " + event.key)
                if group is None:  # a wrapper whose children are counted
                    continue
            totals[phase][group] += event.self_cpu_time_total / 1e6 / rounds
            counts[phase][event.key] += event.count // rounds
        return out

    for step in range(2 * rounds + 2):  # two warm-up steps, then timed and profiled ones
        model.zero_grad(set_to_none=True)
        if step < rounds + 2:
            start = time.perf_counter()
            loss = model(ids, attention_mask=mask, labels=labels).loss
            middle = time.perf_counter()
            loss.backward()
            if step >= 2:
                walls[0] += middle - start
                walls[1] += time.perf_counter() - middle
        else:
            loss = profiled(0, lambda: model(ids, attention_mask=mask, labels=labels).loss)
            profiled(1, loss.backward)
    return tuple((walls[i] / rounds, dict(totals[i]), dict(counts[i])) for i in (0, 1))


def train_main(args):
    import torch
    import transformers

    import ember
    from ember import transformers as et

    batch, length = args.shape
    rng = np.random.default_rng(0)
    ids, mask = padded_batch(rng, batch, length)
    labels = rng.integers(0, 2, (batch,))
    ours = et.BertForSequenceClassification.from_pretrained(FOLDER, num_labels=2)
    theirs = transformers.BertForSequenceClassification.from_pretrained(FOLDER, num_labels=2)
    results = []
    for threads in args.threads_list:
        ember.set_num_threads(threads)
        torch.set_num_threads(threads)
        e = profile_ember_step(
            ours, *(ember.from_numpy(a) for a in (ids, mask, labels)), args.rounds
        )
        wait_idle(timeout_s=5.0)
        t = profile_torch_step(
            theirs, *(torch.from_numpy(a) for a in (ids, mask, labels)), args.rounds
        )
        wait_idle(timeout_s=5.0)
        results.append((threads, e, t))
    for threads, e, t in results:
        print(
            f"\n== training step {batch}x{length}, {threads} thread(s): forward+loss ember "
            f"{e[0][0] * 1e3:.1f} ms, torch {t[0][0] * 1e3:.1f} ms; backward ember "
            f"{e[1][0] * 1e3:.1f} ms, torch {t[1][0] * 1e3:.1f} ms"
        )
        for i, phase in enumerate(("forward+loss", "backward")):
            title = f"{phase} {batch}x{length}, {threads} thread(s)"
            _table(f"ember {title}", *e[i], unit="step")
            _table(f"torch {title} (profiled self times)", *t[i], unit="step")


def _table(title, wall, per_call, counts, unit="forward"):
    print(f"\n{title}: {wall * 1e3:.1f} ms per {unit} (unprofiled wall)")
    for key, seconds in sorted(per_call.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<40} {seconds * 1e3:9.2f} ms  {seconds / wall * 100:5.1f}%")
    print(f"  ops per {unit}: {sum(counts.values())}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=2, default=[32, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", action="store_true", help="print op counts per name")
    parser.add_argument(
        "--train",
        action="store_true",
        help="profile eager training steps (sequence classification, dropout on), their "
        "forward+loss and backward, instead of the inference forward; --threads takes "
        "several counts",
    )
    args = parser.parse_args()
    if args.train:
        args.threads_list = args.threads
        return train_main(args)
    args.threads = args.threads[0]

    import torch
    import transformers

    import ember
    from ember import transformers as et

    ember.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    batch, length = args.shape
    rng = np.random.default_rng(0)
    ids, mask = padded_batch(rng, batch, length)
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
