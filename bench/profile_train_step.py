"""Where a MiniLM training step spends its time, ember against PyTorch, op by op and phase by
phase (forward + loss, backward).

The step is the Trainer's (bench/bench_trainer.py): BertForSequenceClassification on a batch
of 16 x 64 tokens (the last quarter of half the rows padded), train mode (dropout on),
cross-entropy loss, backward. ember: every registered kernel is wrapped with a timer keyed by
phase and op name (matmul split into products by a 2-d weight and batched products); what is
left of a phase's wall time is Python (modules, dispatch, recording, the engine's walk) and the
engine's own gradient sums and `.grad` stores (not wrapped: a wrapper's references would
defeat its in-place reuse of gradients that only it holds, Note [Autograd graph]).
PyTorch: `torch.profiler`, each aten op's self time assigned to the phase whose range holds it.
Both run at the thread count given on the same batch, after a warm-up.

Run: PYTHONPATH=. python bench/profile_train_step.py [--threads 2] [--rounds 5] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ember  # noqa: E402, F401, I001  (before NumPy's BLAS starts: Note [BLAS spin])

from _rotten_tomatoes import minilm_folder  # noqa: E402

from bench.harness import wait_idle  # noqa: E402

BATCH, LENGTH = 16, 64
PHASES = ("forward+loss", "backward")


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (BATCH, LENGTH))
    mask = np.ones_like(ids)
    mask[BATCH // 2 :, LENGTH * 3 // 4 :] = 0
    labels = rng.integers(0, 2, (BATCH,))
    return ids, mask, labels


def _ember_key(name, arrays):
    if name == "matmul":
        b = arrays[1] if len(arrays) > 1 else None
        return "matmul (2-d weight)" if getattr(b, "ndim", 0) == 2 else "matmul (batched)"
    return name


def profile_ember(rounds):
    import ember
    from ember.ops.registry import REGISTRY
    from ember.transformers import BertForSequenceClassification

    ids, mask, labels = _batch()
    model = BertForSequenceClassification.from_pretrained(minilm_folder(), num_labels=2).train()
    inputs = dict(
        input_ids=ember.from_numpy(ids),
        attention_mask=ember.from_numpy(mask),
        labels=ember.from_numpy(labels),
    )
    totals = collections.Counter()
    counts = collections.Counter()
    phase = [PHASES[0]]

    def timer(key_of, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            key = (phase[0], key_of(args))
            totals[key] += time.perf_counter() - start
            counts[key] += 1
            return out

        return timed

    saved = {}
    for op in REGISTRY.values():
        saved[op.name] = (op.forward, dict(op.kernels))

        def key_of(args, name=op.name):
            return _ember_key(name, args[1:])

        op.forward = timer(key_of, op.forward)
        for backend, kernel in list(op.kernels.items()):
            op.kernels[backend] = timer(key_of, kernel)

    walls = collections.Counter()

    def step():
        phase[0] = PHASES[0]
        start = time.perf_counter()
        loss = model(**inputs).loss
        middle = time.perf_counter()
        phase[0] = PHASES[1]
        loss.backward()
        end = time.perf_counter()
        for p in model.parameters():
            p.grad = None
        return middle - start, end - middle

    try:
        for _ in range(2):
            step()
        wait_idle(timeout_s=30.0)
        totals.clear()
        counts.clear()
        for _ in range(rounds):
            forward, backward = step()
            walls[PHASES[0]] += forward
            walls[PHASES[1]] += backward
    finally:
        for op in REGISTRY.values():
            op.forward, kernels = saved[op.name]
            op.kernels.clear()
            op.kernels.update(kernels)
    return _per_step(walls, totals, counts, rounds, "python (modules, dispatch, engine)")


def profile_torch(rounds):
    import torch
    import transformers
    from torch.profiler import ProfilerActivity, profile, record_function

    ids, mask, labels = _batch()
    transformers.set_seed(42)
    model = transformers.BertForSequenceClassification.from_pretrained(
        minilm_folder(), num_labels=2
    ).train()
    inputs = dict(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        labels=torch.from_numpy(labels),
    )

    def step(walls=None):
        start = time.perf_counter()
        with record_function(PHASES[0]):
            loss = model(**inputs).loss
        middle = time.perf_counter()
        with record_function(PHASES[1]):
            loss.backward()
        end = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if walls is not None:
            walls[PHASES[0]] += middle - start
            walls[PHASES[1]] += end - middle

    for _ in range(2):
        step()
    wait_idle(timeout_s=30.0)
    walls = collections.Counter()
    for _ in range(rounds):
        step(walls)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            step()
    events = list(prof.events())
    ranges = [(e.time_range.start, e.time_range.end, e.name) for e in events if e.name in PHASES]
    totals = collections.Counter()
    counts = collections.Counter()
    for e in events:
        if not e.name.startswith("aten::") or e.self_cpu_time_total <= 0:
            continue
        for start, end, name in ranges:
            if start <= e.time_range.start <= end:
                totals[(name, e.name)] += e.self_cpu_time_total / 1e6
                counts[(name, e.name)] += 1
                break
    # (profiled self times: the profiler's overhead inflates the small ops)
    return _per_step(walls, totals, counts, rounds, "python and the rest (unprofiled wall - ops)")


def _per_step(walls, totals, counts, rounds, rest_name):
    table = {}
    for name in PHASES:
        ops = {k[1]: v / rounds for k, v in totals.items() if k[0] == name}
        wall = walls[name] / rounds
        ops[rest_name] = wall - sum(ops.values())
        n = {k[1]: c // rounds for k, c in counts.items() if k[0] == name}
        table[name] = (wall, ops, n)
    return table


def _print(title, table, top):
    for name, (wall, ops, n) in table.items():
        print(f"\n{title}, {name}: {wall * 1e3:.1f} ms per step (unprofiled wall)")
        for key, seconds in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            calls = n.get(key, "")
            print(f"  {key:<46} {seconds * 1e3:8.2f} ms {seconds / wall * 100:5.1f}%  {calls}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--only", choices=("ember", "torch"), default=None)
    args = parser.parse_args()
    import torch

    ember.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    if args.only != "torch":
        _print(f"ember {args.threads} thread(s)", profile_ember(args.rounds), args.top)
    if args.only != "ember":
        _print(f"torch {args.threads} thread(s)", profile_torch(args.rounds), args.top)


if __name__ == "__main__":
    main()
