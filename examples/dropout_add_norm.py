"""BERT's residual blocks as one op each: `F.dropout_add_layer_norm` (Note [Dropout, add and
norm in one pass] in ember/backend/dropout_norm_kernels.py).

Fine-tunes the bundled MiniLM for a few steps on Rotten Tomatoes reviews (sentiment labels)
twice from the same weights and seed: once with BertSelfOutput / BertOutput as one op
(layer_norm(dropout(dense(h)) + residual), the default) and once with their modules one after
another (the bias add, dropout, residual layer norm). It checks that the two runs give the
same losses and weights bit for bit (the same dropout masks, the same float32 operations) and
prints the time per step of each at the thread count ember uses (times move with the load).

    python examples/dropout_add_norm.py [--steps 4] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))

from _rotten_tomatoes import load_reviews, minilm_folder  # noqa: E402

import ember  # noqa: E402
from ember.text import AutoTokenizer  # noqa: E402
from ember.transformers import BertForSequenceClassification, encoder_heads  # noqa: E402
from ember.transformers.bert import modeling_bert  # noqa: E402


def modules_one_after_another(dense, dropout, layer_norm, hidden, residual):
    return encoder_heads.add_and_norm(layer_norm, dropout(dense(hidden)), residual)


def fine_tune(batches, blocks):
    """Losses, final weights and the median seconds per step with `blocks` as the blocks."""
    modeling_bert.dense_dropout_add_norm = blocks
    try:
        ember.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(minilm_folder(), num_labels=2)
        model.train()
        opt = ember.optim.AdamW(model.parameters(), lr=2e-5)
        losses, times = [], []
        for batch in batches:
            start = time.perf_counter()
            opt.zero_grad()
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
            losses.append(float(loss.item()))
        weights = [p.detach().numpy().copy() for p in model.parameters()]
        return losses, weights, float(np.median(times[1:] or times))
    finally:
        modeling_bert.dense_dropout_add_norm = encoder_heads.dense_dropout_add_norm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    train, _ = load_reviews()
    batches = []
    for k in range(args.steps):
        rows = train[k * args.batch : (k + 1) * args.batch]
        enc = tokenizer(
            [text for text, _ in rows],
            padding="max_length",
            truncation=True,
            max_length=128,
            return_tensors="np",
        )
        batch = {key: ember.from_numpy(np.asarray(enc[key])) for key in enc}
        batch["labels"] = ember.tensor(np.array([label for _, label in rows], np.int64))
        batches.append(batch)
    print(
        f"{args.steps} fine-tuning steps of MiniLM on {args.batch} x 128 review tokens, "
        f"{ember.get_num_threads()} threads"
    )
    fused = fine_tune(batches, encoder_heads.dense_dropout_add_norm)
    separate = fine_tune(batches, modules_one_after_another)
    print(f"  blocks as one op:      losses {[round(x, 4) for x in fused[0]]}")
    print(f"  modules one by one:    losses {[round(x, 4) for x in separate[0]]}")
    same = fused[0] == separate[0] and all(
        np.array_equal(a, b) for a, b in zip(fused[1], separate[1])
    )
    print(f"  same losses and weights bit for bit: {same}")
    print(
        f"  median step: one op {fused[2] * 1e3:.0f} ms, modules {separate[2] * 1e3:.0f} ms "
        "(times move with the machine's load)"
    )
    if not same:
        raise SystemExit("the fused blocks changed the training run")


if __name__ == "__main__":
    main()
