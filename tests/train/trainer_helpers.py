"""Small models and data sets for the Trainer tests (HuggingFace-style outputs)."""

from __future__ import annotations

import numpy as np

import ember
import ember.nn.functional as F
from ember import nn


class Classifier(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Dropout -> Linear, returning {"loss", "logits"}."""

    def __init__(self, n_in=6, hidden=12, n_classes=3, dropout=0.1, dtype=None):
        super().__init__()
        self.dense = nn.Linear(n_in, hidden, dtype=dtype)
        self.LayerNorm = nn.LayerNorm(hidden, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes, dtype=dtype)

    def forward(self, x, labels=None):
        logits = self.classifier(self.dropout(self.LayerNorm(self.dense(x)).relu()))
        out = {"logits": logits}
        if labels is not None:
            out = {"loss": F.cross_entropy(logits, labels), "logits": logits}
        return out


class TokenTagger(nn.Module):
    """Per-token classes with -100 for ignored positions (the loss averages the others)."""

    def __init__(self, n_in=4, n_classes=3, dtype=None):
        super().__init__()
        self.proj = nn.Linear(n_in, n_classes, dtype=dtype)

    def forward(self, x, labels=None):
        logits = self.proj(x)
        if labels is None:
            return {"logits": logits}
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100)
        return {"loss": loss, "logits": logits}


def classification_data(n=40, n_in=6, seed=0, dtype=np.float32, extra_field=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype(dtype)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    rows = [{"x": x[i], "label": int(y[i])} for i in range(n)]
    if extra_field:
        for i, row in enumerate(rows):
            row["text"] = f"example {i}"
            row["index"] = i
    return rows


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def weights(model) -> dict:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def make_model(seed=0, **kwargs):
    ember.manual_seed(seed)
    return Classifier(**kwargs)
