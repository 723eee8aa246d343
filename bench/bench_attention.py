"""Scaled-dot-product attention alone: ember's one-op path (`fused_attention`, Note
[Attention blocks]) and its decomposition (matmul, scale + mask + softmax, matmul) against
PyTorch's `scaled_dot_product_attention` (its CPU flash attention), in interleaved rounds at 1
and 2 threads. Shapes: MiniLM's layer (heads 12, head dim 32) at 32 x 128 (contiguous q, k, v,
and the strided heads of one joined product, as MiniLM's inference passes them) and 1 x 16
with a key-padding mask, a causal GPT-2-sized prefill, and the forward + backward of the 16 x 128
fine-tuning shape and of the Trainer's (16 x 64, attention-probs dropout 0.1, the heads as
views of the projections' (batch, seq, heads, dim) outputs, as the encoder layers pass them).
Prints min / median per call and the ratios ember / torch (below 1 is
faster), and one JSON line per workload.

    PYTHONPATH=. python bench/bench_attention.py [--rounds 7] [--threads 1 2] [--only NAME ...]
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

import ember  # noqa: E402
from ember.ops import nn as N  # noqa: E402

from harness import set_threads, wait_idle  # noqa: E402

# (name, batch, heads, queries, keys, head dim, mask kind, backward, layout, dropout): layout
# "joined" gives both sides q, k, v as MiniLM's eager inference passes them, strided heads of
# one (B, L, 3, H, d) product (Note [Joined projections] in ember/autograd/packed.py); "views"
# (batch, heads, seq, dim) views of (batch, seq, heads, dim) arrays, as split_heads hands them
# to the op in training; "contiguous" contiguous arrays
WORKLOADS = [
    ("minilm 32x128", 32, 12, 128, 128, 32, "padding", False, "contiguous", 0.0),
    ("minilm 32x128 joined heads", 32, 12, 128, 128, 32, "padding", False, "joined", 0.0),
    ("minilm 1x16", 1, 12, 16, 16, 32, "padding", False, "contiguous", 0.0),
    ("gpt2 prefill 4x256 causal", 4, 12, 256, 256, 64, "causal", False, "contiguous", 0.0),
    ("minilm 16x128 fwd+bwd", 16, 12, 128, 128, 32, "padding", True, "contiguous", 0.0),
    ("minilm 16x64 fwd+bwd drop", 16, 12, 64, 64, 32, "padding", True, "views", 0.1),
]


def _per_call(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _case(torch, batch, heads, queries, keys, dim, kind, backward, layout, dropout):
    rng = np.random.default_rng(0)
    if layout == "joined":  # self-attention: as many keys as queries
        product = rng.standard_normal((batch, queries, 3 * heads * dim), dtype=np.float32)
        q, k, v = product.reshape(batch, queries, 3, heads, dim).transpose(2, 0, 3, 1, 4)
    else:
        q, k, v = (
            rng.standard_normal((batch, n, heads, dim), dtype=np.float32).transpose(0, 2, 1, 3)
            if layout == "views"
            else rng.standard_normal((batch, heads, n, dim), dtype=np.float32)
            for n in (queries, keys, keys)
        )
    mask = None
    if kind == "padding":  # the last quarter of each row's keys is padding (additive, BERT's)
        mask = np.zeros((batch, 1, 1, keys), np.float32)
        mask[..., keys - keys // 4 :] = np.finfo(np.float32).min
    causal = kind == "causal"
    grad = rng.standard_normal((batch, heads, queries, dim), dtype=np.float32)

    def ember_side(fn):
        eq, ek, ev = (ember.from_numpy(a).requires_grad_(backward) for a in (q, k, v))
        em = None if mask is None else ember.from_numpy(mask)
        eg = ember.from_numpy(grad)

        def run():
            if not backward:
                with ember.no_grad():
                    return fn(eq, ek, ev, attn_mask=em, is_causal=causal)
            out = fn(eq, ek, ev, attn_mask=em, dropout_p=dropout, is_causal=causal)
            return ember.autograd.grad((out * eg).sum(), [eq, ek, ev])

        return run

    tq, tk, tv = (torch.from_numpy(a).requires_grad_(backward) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask)
    tg = torch.from_numpy(grad)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def torch_side():
        if not backward:
            with torch.no_grad():
                return sdpa(tq, tk, tv, attn_mask=tm, is_causal=causal)
        out = sdpa(tq, tk, tv, attn_mask=tm, dropout_p=dropout, is_causal=causal)
        return torch.autograd.grad((out * tg).sum(), [tq, tk, tv])

    return {
        "ember": ember_side(N.scaled_dot_product_attention),
        "decomposed": ember_side(N.scaled_dot_product_attention_reference),
        "torch": torch_side,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    names = [w[0] for w in WORKLOADS]
    parser.add_argument("--only", nargs="*", choices=names, default=names, metavar="NAME",
                        help=f"workloads to run, of {names}")  # fmt: skip
    args = parser.parse_args()
    import torch

    for threads in args.threads:
        set_threads(threads)
        for name, *shape in WORKLOADS:
            if name not in args.only:
                continue
            fns = _case(torch, *shape)
            for fn in fns.values():  # warm-up: kernels compiled or loaded
                fn()
            start = time.perf_counter()
            fns["ember"]()
            reps = max(1, min(200, int(0.05 / max(time.perf_counter() - start, 1e-6))))
            times: dict = {key: [] for key in fns}
            for _ in range(args.rounds):
                for key, fn in fns.items():
                    wait_idle()
                    times[key].append(_per_call(fn, reps))
            line = {"workload": f"attention {name}", "threads": threads}
            for key, ts in times.items():
                line[f"{key}_min_ms"] = round(min(ts) * 1e3, 3)
                line[f"{key}_median_ms"] = round(statistics.median(ts) * 1e3, 3)
                line[f"{key}_max_ms"] = round(max(ts) * 1e3, 3)
            for key in ("ember", "decomposed"):
                line[f"{key}_vs_torch_min"] = round(min(times[key]) / min(times["torch"]), 2)
                line[f"{key}_vs_torch_median"] = round(
                    statistics.median(times[key]) / statistics.median(times["torch"]), 2
                )
            print(
                f"{threads}T {name:27s} ember {line['ember_min_ms']:8.3f} / "
                f"{line['ember_median_ms']:8.3f} ms  decomposed {line['decomposed_min_ms']:8.3f}"
                f" / {line['decomposed_median_ms']:8.3f}  torch {line['torch_min_ms']:8.3f} / "
                f"{line['torch_median_ms']:8.3f}  ember/torch {line['ember_vs_torch_median']:.2f}"
                f"  decomposed/torch {line['decomposed_vs_torch_median']:.2f}"
            )
            print(json.dumps(line))


if __name__ == "__main__":
    main()
