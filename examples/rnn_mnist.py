"""Recurrent layers on real MNIST, written as PyTorch code with only the imports changed:
each 28x28 image is read as a sequence of 28 rows by a 2-layer LSTM (batch_first), whose last
hidden state a Linear layer classifies; then the same data through a GRU fed as packed
sequences of different lengths (each image cropped to its last non-empty row), to show
pack_padded_sequence and an LSTMCell stepped by hand.

    python examples/rnn_mnist.py                          # 1 epoch on 6,000 images
    python examples/rnn_mnist.py --limit 60000 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import ember as torch
import ember.nn as nn
from ember.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))
from _mnist import load_mnist, normalized


class RowLSTM(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.rnn = nn.LSTM(28, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        out, (h_n, c_n) = self.rnn(x)  # out (N, 28, hidden); h_n (2, N, hidden)
        return self.fc(h_n[-1])


class PackedGRU(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.rnn = nn.GRU(28, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, 10)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # (2, N, hidden): each direction's state at its last row
        return self.fc(torch.cat([h_n[0], h_n[1]], dim=1))


def row_lengths(images: np.ndarray) -> np.ndarray:
    """1 + the index of each image's last row with any ink (at least 1)."""
    inked = images.reshape(len(images), 28, 28).max(axis=2) > 0
    last = 27 - np.argmax(inked[:, ::-1], axis=1)
    return np.maximum(last + 1, 1)


def train(model, x, y, lengths, epochs, batch, packed):
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        start, total, batches = time.perf_counter(), 0.0, 0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb, yb = torch.tensor(x[idx]), torch.tensor(y[idx])
            logits = model(xb, lengths[idx].tolist()) if packed else model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
            batches += 1
        print(
            f"  epoch {epoch + 1}: mean loss {total / batches:.4f} "
            f"({time.perf_counter() - start:.1f} s)"
        )


def accuracy(model, x, y, lengths, packed) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            xb = torch.tensor(x[i : i + 1000])
            logits = model(xb, lengths[i : i + 1000].tolist()) if packed else model(xb)
            correct += int((logits.argmax(1).numpy() == y[i : i + 1000]).sum())
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=6000, help="training images used")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x = normalized(images[: args.limit]).reshape(-1, 28, 28)
    y = labels[: args.limit]
    xt = normalized(test_images[:2000]).reshape(-1, 28, 28)
    yt = test_labels[:2000]
    lengths, test_lengths = row_lengths(images[: args.limit]), row_lengths(test_images[:2000])

    print(f"LSTM over image rows: {len(x)} training images, {args.epochs} epoch(s)")
    lstm = RowLSTM()
    train(lstm, x, y, lengths, args.epochs, args.batch, packed=False)
    print(f"  test accuracy (2,000 images): {accuracy(lstm, xt, yt, test_lengths, False):.2%}")

    print(f"bidirectional GRU over packed rows (lengths {lengths.min()}..{lengths.max()})")
    gru = PackedGRU()
    train(gru, x, y, lengths, args.epochs, args.batch, packed=True)
    print(f"  test accuracy (2,000 images): {accuracy(gru, xt, yt, test_lengths, True):.2%}")

    # an LSTMCell stepped by hand gives the layer's result (the layer's first layer weights)
    cell = nn.LSTMCell(28, 64)
    layer = lstm.rnn
    cell.load_state_dict(
        {
            "weight_ih": layer.weight_ih_l0,
            "weight_hh": layer.weight_hh_l0,
            "bias_ih": layer.bias_ih_l0,
            "bias_hh": layer.bias_hh_l0,
        }
    )
    layer.eval()
    with torch.no_grad():
        sample = torch.tensor(xt[:8])
        h = c = torch.zeros(8, 64)
        for t in range(28):
            h, c = cell(sample[:, t], (h, c))
        single = nn.LSTM(28, 64, batch_first=True)
        single.load_state_dict({k: v for k, v in layer.state_dict().items() if "_l0" in k})
        _, (h_n, _) = single(sample)
    print(f"LSTMCell loop vs LSTM layer: max difference {float((h - h_n[0]).abs().max()):.2e}")


if __name__ == "__main__":
    main()
