"""Datasets: the map-style `Dataset` (index -> sample) and the iterable `IterableDataset`,
with the standard compositions (TensorDataset, ConcatDataset, ChainDataset, Subset,
random_split) and `StringArray`, a packed string column that forked workers share for free.

Note [Batched fetching]: a map-style dataset may define `__getitems__(indices) -> list` to
fetch a whole batch at once; the DataLoader calls it instead of one `__getitem__` per index.
Array-backed datasets here (TensorDataset, Subset of one, StringArray) implement it with one
fancy-index per column, which is what makes small samples cheap.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np

from ember.data._arrays import is_tensor, to_numpy, to_tensor

__all__ = [
    "ChainDataset",
    "ConcatDataset",
    "Dataset",
    "IterableDataset",
    "StringArray",
    "Subset",
    "TensorDataset",
    "random_split",
]

T_co = TypeVar("T_co", covariant=True)


class Dataset(Generic[T_co]):
    """A map-style dataset: subclasses define `__getitem__(index)` and usually `__len__`.

    Example:
        >>> class Squares(Dataset):
        ...     def __len__(self): return 4
        ...     def __getitem__(self, i): return i * i
        >>> [Squares()[i] for i in range(4)]
        [0, 1, 4, 9]
    """

    def __getitem__(self, index) -> T_co:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class IterableDataset(Dataset[T_co]):
    """A dataset that is a stream: subclasses define `__iter__`.

    With `num_workers > 0` every worker iterates its own copy; use `get_worker_info()` inside
    `__iter__` to give each worker its share, or samples are repeated once per worker (as in
    PyTorch).
    """

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __add__(self, other):
        return ChainDataset([self, other])


def _column_length(column) -> int:
    return int(column.shape[0]) if hasattr(column, "shape") else len(column)


class TensorDataset(Dataset):
    """Samples are rows of equally long tensors/arrays: `dataset[i] == (t0[i], t1[i], ...)`.

    Example:
        >>> import numpy as np
        >>> ds = TensorDataset(np.arange(6).reshape(3, 2), np.array([0, 1, 0]))
        >>> len(ds), [int(v) for v in ds[1][0]], int(ds[1][1])
        (3, [2, 3], 1)
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        sizes = [_column_length(t) for t in tensors]
        if any(size != sizes[0] for size in sizes):
            raise ValueError(f"TensorDataset: size mismatch between tensors: first dims {sizes}")
        self.tensors = tensors
        # Index the NumPy views: a row of a Tensor column comes back as a Tensor (see
        # Note [Arrays in the data layer]).
        self._columns = [to_numpy(t) if is_tensor(t) else t for t in tensors]
        self._wrap = [is_tensor(t) for t in tensors]

    def __len__(self) -> int:
        return _column_length(self.tensors[0])

    def __getitem__(self, index):
        return tuple(
            to_tensor(column[index]) if wrap else column[index]
            for column, wrap in zip(self._columns, self._wrap)
        )

    def __getitems__(self, indices):
        index = np.asarray(indices, dtype=np.int64)
        columns = [
            column[index]
            if isinstance(column, (np.ndarray, StringArray))
            else [column[i] for i in indices]
            for column in self._columns
        ]
        rows = []
        for position in range(len(index)):
            rows.append(
                tuple(
                    to_tensor(column[position]) if wrap else column[position]
                    for column, wrap in zip(columns, self._wrap)
                )
            )
        return rows


class ConcatDataset(Dataset):
    """The concatenation of map-style datasets."""

    def __init__(self, datasets: Iterable[Dataset]):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for dataset in self.datasets:
            if isinstance(dataset, IterableDataset):
                raise TypeError("ConcatDataset does not support IterableDataset; use ChainDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        if index < 0:
            if -index > len(self):
                raise IndexError(
                    f"ConcatDataset: index {index} out of range for length {len(self)}"
                )
            index += len(self)
        dataset_index = bisect.bisect_right(self.cumulative_sizes, index)
        if dataset_index >= len(self.datasets):
            raise IndexError(f"ConcatDataset: index {index} out of range for length {len(self)}")
        start = self.cumulative_sizes[dataset_index - 1] if dataset_index else 0
        return self.datasets[dataset_index][index - start]


class ChainDataset(IterableDataset):
    """The concatenation of iterable datasets, chained lazily."""

    def __init__(self, datasets: Iterable[Dataset]):
        self.datasets = list(datasets)

    def __iter__(self):
        for dataset in self.datasets:
            if not isinstance(dataset, IterableDataset):
                raise TypeError("ChainDataset only supports IterableDataset")
            yield from dataset

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index):
        if isinstance(index, (list, tuple, np.ndarray)):
            return [self.dataset[self.indices[i]] for i in index]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices):
        mapped = [int(self.indices[i]) for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return getitems(mapped)
        return [self.dataset[i] for i in mapped]

    def __len__(self) -> int:
        return len(self.indices)


class StringArray:
    """An immutable column of strings packed into two NumPy arrays (UTF-8 bytes + offsets).

    A Python list of a million strings is a million objects whose reference counts change
    whenever they are read, so every forked DataLoader worker ends up copying the pages they
    live on (PyTorch's "copy-on-read" memory growth). A StringArray has no per-string objects:
    workers read the parent's pages without writing them, so memory stays flat.

    Example:
        >>> names = StringArray(["cat", "dog", "émeu"])
        >>> len(names), names[2], names[[0, 1]]
        (3, 'émeu', ['cat', 'dog'])
    """

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8") for s in strings]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _one(self, index: int) -> str:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"StringArray: index {index} out of range for length {len(self)}")
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self.data[start:stop].tobytes().decode("utf-8")

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._one(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        return [self._one(int(i)) for i in index]

    def __iter__(self):
        for index in range(len(self)):
            yield self._one(index)

    def __repr__(self) -> str:
        return f"StringArray(len={len(self)}, bytes={self.data.nbytes})"


def random_split(dataset: Dataset, lengths: Sequence[float], generator=None) -> list[Subset]:
    """Split `dataset` into non-overlapping random Subsets of the given lengths.

    `lengths` are counts summing to `len(dataset)`, or fractions summing to 1 (remainders
    are dealt round-robin, as in PyTorch).
    """
    from ember.data.sampler import _generator_rng

    total = len(dataset)
    if math.isclose(sum(lengths), 1.0) and sum(lengths) <= 1:
        counts = [math.floor(total * fraction) for fraction in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != total:
        raise ValueError(
            f"random_split: sum of input lengths ({sum(lengths)}) does not equal "
            f"the length of the input dataset ({total})"
        )
    permutation = _generator_rng(generator).permutation(total).tolist()
    subsets = []
    for offset, length in zip(itertools.accumulate(lengths), lengths):
        subsets.append(Subset(dataset, permutation[offset - length : offset]))
    return subsets
