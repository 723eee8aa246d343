"""`make demo` step (issue 18, Saving): train a small CNN with BatchNorm on real MNIST, save
the whole module with `ember.save(model, path)` (no pickle: class paths, plain attributes and
tensors in one safetensors file), load it back and check it predicts the same; show what the
class allow-list refuses and how `ember.serialization.safe_globals` opts in.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.io import read_metadata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))
from _mnist import load_mnist, normalized


class SmallCNN(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(4)
        )
        self.head = nn.Linear(width * 7 * 7, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def main() -> None:
    ember.manual_seed(0)
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x = normalized(images[:3000]).reshape(-1, 1, 28, 28)
    y = labels[:3000].astype(np.int64)
    tx = ember.tensor(normalized(test_images[:1000]).reshape(-1, 1, 28, 28))
    model = SmallCNN()
    optimizer = ember.optim.Adam(model.parameters(), lr=3e-3)
    for start in range(0, len(x), 100):
        loss = F.cross_entropy(
            model(ember.tensor(x[start : start + 100])), ember.tensor(y[start : start + 100])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with ember.no_grad():
        before = model(tx).numpy()
    print(f"trained SmallCNN, test accuracy {np.mean(before.argmax(1) == test_labels[:1000]):.3f}")

    path = os.path.join(tempfile.mkdtemp(), "small_cnn.safetensors")
    ember.save(model, path)
    meta = read_metadata(path)
    print(f"saved {os.path.getsize(path)} bytes, layout {meta['ember.checkpoint']}, no pickle")
    try:
        ember.load(path)
    except ember.serialization.UnsafeClassError as error:
        print(f"without the allow-list: {str(error).split(' ', 2)[2][:150]}...")
    try:
        ember.load(path, weights_only=True)
    except ember.serialization.UnsafeClassError as error:
        print(f"weights_only=True: {str(error).split(', and ', 1)[1][:110]}...")
    with ember.serialization.safe_globals([SmallCNN]):
        loaded = ember.load(path)
    with ember.no_grad():
        after = loaded(tx).numpy()
    print(
        f"loaded {type(loaded).__name__} (training={loaded.training}): max |logit diff| "
        f"{np.abs(after - before).max():.1e}, same predictions: "
        f"{bool((after.argmax(1) == before.argmax(1)).all())}"
    )


if __name__ == "__main__":
    main()
