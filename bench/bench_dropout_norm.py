"""BERT's post-norm residual, layer_norm(dropout(dense(h)) + residual), as one op
(`fused_dropout_add_layer_norm`, Note [Dropout, add and norm in one pass] in
ember/backend/dropout_norm_kernels.py) against the separate ops it replaces (the bias add,
fused_dropout, the residual layer norm) and against PyTorch (F.dropout, add, F.layer_norm),
forward + backward at MiniLM's fine-tuning shape (16 x 128 x 384, p = 0.1), at 1 and 2
threads, interleaved rounds; then whole fine-tuning steps of MiniLM 16 x 128 with the blocks
fused and with the modules one after another (ember only, same process, alternating).
Prints min / median / max per side and the ratios (below 1 is faster), one JSON line each.

    PYTHONPATH=. python bench/bench_dropout_norm.py [--rounds 15] [--threads 1 2] [--no-step]
        [--no-op] [--length 128] [--step-rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ember  # noqa: E402
from ember.nn import functional as F  # noqa: E402

from harness import set_threads, wait_idle  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _report(name, threads, times: dict, base: str):
    line = f"{name:<34} x{threads}"
    result = {"workload": name, "threads": threads}
    for side, ts in times.items():
        line += (
            f"  {side} {min(ts) * 1e3:7.2f} {statistics.median(ts) * 1e3:7.2f} {max(ts) * 1e3:7.2f}"
        )
        result[f"{side}_min_ms"] = min(ts) * 1e3
        result[f"{side}_median_ms"] = statistics.median(ts) * 1e3
        result[f"{side}_max_ms"] = max(ts) * 1e3
    for side, ts in times.items():
        if side != base:
            ratios = [a / b for a, b in zip(times[base], ts)]
            result[f"{base}/{side}"] = statistics.median(ratios)
            line += f"  {base}/{side} med {statistics.median(ratios):.2f}"
    print(line + "  (ms: min med max)", flush=True)
    print(json.dumps(result), flush=True)


def _op_sides(torch, rows=16 * 128, d=384, p=0.1):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(rows, d)] * 2 + [(d,)] * 3]
    cot = rng.standard_normal((rows, d)).astype(np.float32)
    ex, er, ew, eb, edb = (ember.from_numpy(a).requires_grad_() for a in arrays)
    ecot = ember.from_numpy(cot)
    leaves = [ex, er, ew, eb, edb]

    def fused():
        out = F.dropout_add_layer_norm(ex, er, d, ew, eb, p, True, 1e-12, input_bias=edb)
        return ember.autograd.grad((out * ecot).sum(), leaves)

    def separate():
        out = F.residual_layer_norm(F.dropout(ex + edb, p), er, d, ew, eb, 1e-12)
        return ember.autograd.grad((out * ecot).sum(), leaves)

    tx, tr, tw, tb, tdb = (torch.from_numpy(a).requires_grad_() for a in arrays)
    tcot = torch.from_numpy(cot)
    tf = torch.nn.functional

    def reference():
        out = tf.layer_norm(tf.dropout(tx + tdb, p) + tr, (d,), tw, tb, 1e-12)
        return torch.autograd.grad((out * tcot).sum(), [tx, tr, tw, tb, tdb])

    return {"fused": fused, "separate": separate, "torch": reference}


def _step_sides(length: int = 128):
    from bench_transformers import FOLDER

    from ember import transformers as et
    from ember.transformers import encoder_heads
    from ember.transformers.bert import modeling_bert

    rng = np.random.default_rng(0)
    ember.manual_seed(0)
    model = et.BertForSequenceClassification.from_pretrained(FOLDER, num_labels=2).train()
    ids = ember.from_numpy(rng.integers(1000, 20000, (16, length)))
    labels = ember.from_numpy(rng.integers(0, 2, 16))
    opt = ember.optim.AdamW(model.parameters(), lr=2e-5)

    def modules(dense, dropout, layer_norm, hidden, residual):
        return encoder_heads.add_and_norm(layer_norm, dropout(dense(hidden)), residual)

    def with_blocks(fn):
        def step():
            modeling_bert.dense_dropout_add_norm = fn
            try:
                opt.zero_grad()
                model(ids, labels=labels).loss.backward()
                opt.step()
            finally:
                modeling_bert.dense_dropout_add_norm = encoder_heads.dense_dropout_add_norm

        return step

    return {
        "fused": with_blocks(encoder_heads.dense_dropout_add_norm),
        "separate": with_blocks(modules),
    }


def _interleaved(sides: dict, rounds: int) -> dict:
    for fn in sides.values():  # warm-up: kernels compiled or loaded
        fn()
        fn()
    times = {side: [] for side in sides}
    for _ in range(rounds):
        for side, fn in sides.items():
            wait_idle()
            times[side].append(_timed(fn))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-step", action="store_true", help="the op alone")
    parser.add_argument("--step-rounds", type=int, default=7)
    parser.add_argument("--length", type=int, default=128, help="the steps' sequence length")
    parser.add_argument("--no-op", action="store_true", help="the steps alone")
    args = parser.parse_args()
    import torch

    ops = None if args.no_op else _op_sides(torch)
    step = None if args.no_step else _step_sides(args.length)
    for threads in args.threads:
        set_threads(threads)
        torch.set_num_threads(threads)
        if ops is not None:
            times = _interleaved(ops, args.rounds)
            _report("dropout+add+layer_norm fwd+bwd", threads, times, "fused")
        if step is not None:
            _report(
                f"minilm fine-tune step 16x{args.length}",
                threads,
                _interleaved(step, args.step_rounds),
                "fused",
            )


if __name__ == "__main__":
    main()
