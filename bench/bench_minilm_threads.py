"""MiniLM on 1 and 2 threads, ember against PyTorch + transformers, interleaved rounds.

The workloads of issue 21: forward 32 x 128 (throughput) and 1 x 16 (latency), and one
fine-tuning step (forward, loss, backward, AdamW) of BertForSequenceClassification at
16 x 128; on request (`--only latency8 latency5x12`) the short inputs 1 x 8 and 5 x 12 (Note
[Packed weights] in ember/backend/mkl_packed.py). For each thread count both frameworks get
the same `set_num_threads`; each round times one call of ember then one of torch, so load
from other processes on a shared machine hits both sides alike, each once the other's idle
threads have stopped spinning (`harness.wait_idle`, Note [Quiet side] in bench/harness.py).
Prints min / median / max per side and the median of the per-round ratios (ember / torch;
below 1 is faster), and one JSON line per workload.

`--ember-only` times ember alone, in a process without PyTorch (what the second core gives
ember by itself).

Run: PYTHONPATH=. python bench/bench_minilm_threads.py [--rounds 7] [--threads 1 2]
[--ember-only]

It imports ember before NumPy, as a script that starts with `import ember` does, so OpenBLAS's
idle workers spin ~30 us (Note [BLAS spin] in ember/backend/threads.py);
OPENBLAS_THREAD_TIMEOUT=28 in the environment gives OpenBLAS's default, as in a script that
imports NumPy first. The setting in effect is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ember  # noqa: E402, I001

import numpy as np  # noqa: E402

from bench.bench_transformers import FOLDER, finetune_pair  # noqa: E402
from bench.harness import padded_batch, wait_idle  # noqa: E402


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(name, ember_fn, torch_fn, rounds, threads):
    """Rounds of one ember call then one torch call (`torch_fn` None: ember alone)."""
    ember_fn()  # warm-up (kernels compiled or loaded, buffers touched)
    if torch_fn is not None:
        torch_fn()
    te, tt, ratios = [], [], []
    for _ in range(rounds):
        wait_idle()
        te.append(_once(ember_fn))
        if torch_fn is not None:
            wait_idle()
            tt.append(_once(torch_fn))
            ratios.append(te[-1] / tt[-1])
    result = {
        "workload": name,
        "threads": threads,
        "ember_min_s": min(te),
        "ember_median_s": statistics.median(te),
        "ember_max_s": max(te),
    }
    line = (
        f"{name:<26} x{threads}  ember min/med/max {min(te) * 1e3:6.1f} "
        f"{statistics.median(te) * 1e3:6.1f} {max(te) * 1e3:6.1f} ms"
    )
    if tt:
        result.update(
            {
                "torch_min_s": min(tt),
                "torch_median_s": statistics.median(tt),
                "torch_max_s": max(tt),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratio_of_mins": min(te) / min(tt),
            }
        )
        line += (
            f"  torch {min(tt) * 1e3:6.1f} {statistics.median(tt) * 1e3:6.1f} "
            f"{max(tt) * 1e3:6.1f}  ratio med {result['ratio_median']:.2f} "
            f"(min {result['ratio_min']:.2f}, max {result['ratio_max']:.2f}, of mins "
            f"{result['ratio_of_mins']:.2f})"
        )
    print(line, flush=True)
    print(json.dumps(result), flush=True)
    return result


def _ember_finetune_step(rng, batch: int = 16, length: int = 128):
    """The ember half of bench_transformers.finetune_pair (same model, batch drawn alike), for a
    process without PyTorch."""
    import ember
    from ember import transformers as et

    ember.manual_seed(0)
    model = et.BertForSequenceClassification.from_pretrained(FOLDER, num_labels=2).train()
    ids = ember.from_numpy(rng.integers(1000, 20000, (batch, length)))
    labels = ember.from_numpy(rng.integers(0, 2, batch))
    optimizer = ember.optim.AdamW(model.parameters(), lr=2e-5)

    def step():
        optimizer.zero_grad()
        model(ids, labels=labels).loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--only",
        nargs="+",
        default=["forward", "latency", "finetune"],
        choices=["forward", "latency", "latency8", "latency5x12", "finetune"],
    )
    parser.add_argument("--ember-only", action="store_true", help="no PyTorch in the process")
    args = parser.parse_args()

    from ember import transformers as et

    print(f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}")
    torch = None
    if not args.ember_only:
        import torch
        import transformers

        torch.manual_seed(0)
    ember.manual_seed(0)
    rng = np.random.default_rng(0)
    ours = et.BertModel.from_pretrained(FOLDER).eval()
    if torch is not None:
        theirs = transformers.BertModel.from_pretrained(FOLDER).eval()

    def forward_pair(batch, length):
        ids, mask = padded_batch(rng, batch, length)
        e_ids, e_mask = ember.from_numpy(ids), ember.from_numpy(mask)

        def run_ember():
            with ember.no_grad():
                ours(e_ids, attention_mask=e_mask)

        if torch is None:
            return run_ember, None
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

        def run_torch():
            with torch.no_grad():
                theirs(t_ids, attention_mask=t_mask)

        return run_ember, run_torch

    step_ember = step_torch = None
    if "finetune" in args.only:  # built only when asked for (a second model in memory)
        if torch is None:
            step_ember, step_torch = _ember_finetune_step(rng), None
        else:
            step_ember, step_torch = finetune_pair(rng)

    workloads = {
        "forward": ("minilm forward 32x128", *forward_pair(32, 128), 1),
        "latency": ("minilm forward 1x16", *forward_pair(1, 16), 10),
        # more short inputs (Note [Packed weights]): 8 tokens, and 5 requests of 12 batched
        "latency8": ("minilm forward 1x8", *forward_pair(1, 8), 10),
        "latency5x12": ("minilm forward 5x12", *forward_pair(5, 12), 10),
        "finetune": ("bert-cls fine-tune 16x128", step_ember, step_torch, 1),
    }
    for threads in args.threads:
        ember.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        for key in args.only:
            name, e, t, inner = workloads[key]
            if inner > 1:  # short calls: time a few per round

                def many(fn, k=inner):
                    return None if fn is None else lambda: [fn() for _ in range(k)]

                e, t = many(e), many(t)
            rounds = args.rounds if key != "finetune" else max(3, args.rounds - 2)
            interleaved(name, e, t, rounds, threads)


if __name__ == "__main__":
    main()
