"""Packing a dataset's large Python lists for forked DataLoader workers.

Note [Copy-on-read]: a forked worker shares the parent's memory pages until either process
writes one. CPython writes to an object whenever it is read (its reference count), so a worker
that reads a list of a million strings writes to every page the strings live on and ends up
with a private copy of all of them: with shuffling, each worker copies the whole list within
an epoch (PyTorch's "copy-on-read" memory growth; measured here at 2.2x the memory of
`num_workers=0` for two workers). The garbage collector does the same to every container it
traverses (it writes `gc_refs` into each object's header).

What the DataLoader does about it, before forking its workers (fork start method only):

1. `pack_dataset` walks the dataset's instance attributes (and those of datasets it holds,
   such as `Subset.dataset` or `ConcatDataset.datasets`) and packs each list or tuple of at
   least `PACK_MIN_LENGTH` elements that are all `str`, all `bytes`, all `int` (64-bit), all
   `float`, all `bool`, or all tuples of such (`ImageFolder.samples`) into a `PackedColumn`:
   NumPy buffers with no per-element objects. Each worker swaps its (copy-on-write) view of
   the attribute for the packed column and keeps the original alive, so the original list is
   never read, never freed, and its pages are never written in the worker. The parent's
   dataset is untouched. A packed column is a read-only sequence that gives back the same
   Python values (`column[i]`, slices, index lists, iteration, `len`, `in`, `index`); a
   dataset that needs the list itself in its workers turns packing off with
   `DataLoader(..., pack_dataset=False)`. Packing costs one pass over the list each time
   workers start (about 0.3 s per million strings) and the packed bytes, shared by all
   workers.
2. `gc.freeze()` around the fork: every object that exists then is moved to the collector's
   permanent generation in the children, so their collections never traverse (and write to)
   the parent's containers. The parent unfreezes right after the fork.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["PACK_MIN_LENGTH", "PackedColumn", "pack_dataset", "pack_sequence"]

PACK_MIN_LENGTH = 4096

_SCALAR_DTYPES = {int: np.int64, float: np.float64, bool: np.bool_}


class PackedColumn:
    """A read-only sequence of Python scalars (str, bytes, int, float, bool) or fixed-arity
    tuples of them, held in NumPy buffers (see Note [Copy-on-read]).

    Example:
        >>> column = PackedColumn.pack(["cat", "dog", "émeu"])
        >>> len(column), column[2], column[[0, 1]], column[-1:]
        (3, 'émeu', ['cat', 'dog'], ['émeu'])
    """

    def __init__(self, kind, length: int, data=None, offsets=None, fields=None):
        self.kind = kind  # a type, or "tuple"
        self.length = length
        self.data = data
        self.offsets = offsets
        self.fields = fields

    @classmethod
    def pack(cls, values) -> PackedColumn:
        packed = pack_sequence(values, min_length=0)
        if packed is None:
            raise TypeError(
                "PackedColumn.pack: expected a list of str, bytes, int, float or bool (all "
                "of one type) or of equally long tuples of them"
            )
        return packed

    def __len__(self) -> int:
        return self.length

    def _one(self, index: int):
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"PackedColumn: index {index} out of range for length {self.length}")
        kind = self.kind
        if kind == "tuple":
            return tuple(field._one(index) for field in self.fields)
        if kind is str or kind is bytes:
            raw = self.data[self.offsets[index] : self.offsets[index + 1]].tobytes()
            return raw.decode("utf-8") if kind is str else raw
        return kind(self.data[index])

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._one(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(self.length))
        return [self._one(int(i)) for i in index]

    def __iter__(self):
        for index in range(self.length):
            yield self._one(index)

    def __contains__(self, value) -> bool:
        return any(item == value for item in self)

    def index(self, value) -> int:
        for position, item in enumerate(self):
            if item == value:
                return position
        raise ValueError(f"PackedColumn.index: {value!r} is not in the column")

    def count(self, value) -> int:
        return sum(1 for item in self if item == value)

    @property
    def nbytes(self) -> int:
        if self.kind == "tuple":
            return sum(field.nbytes for field in self.fields)
        return self.data.nbytes + (0 if self.offsets is None else self.offsets.nbytes)

    def __repr__(self) -> str:
        name = "tuple" if self.kind == "tuple" else self.kind.__name__
        return f"PackedColumn({name}, len={self.length}, bytes={self.nbytes})"


def _pack_text(values: list, kind) -> PackedColumn:
    if kind is str:
        joined = "".join(values)
        if joined.isascii():  # one byte per character: lengths are the str lengths
            data = joined.encode("ascii")
            lengths = np.fromiter(map(len, values), np.int64, len(values))
        else:
            data = joined.encode("utf-8")
            lengths = np.fromiter((len(v.encode("utf-8")) for v in values), np.int64, len(values))
        del joined
    else:
        data = b"".join(values)
        lengths = np.fromiter(map(len, values), np.int64, len(values))
    offset_type = np.int32 if len(data) < 2**31 - 1 else np.int64
    offsets = np.zeros(len(values) + 1, offset_type)
    np.cumsum(lengths, out=offsets[1:])
    return PackedColumn(kind, len(values), np.frombuffer(data, np.uint8), offsets)


def pack_sequence(values, min_length: int = PACK_MIN_LENGTH) -> PackedColumn | None:
    """`values` packed, or None when it is not a list/tuple of one packable element type
    (or is shorter than `min_length`)."""
    if type(values) is not list and type(values) is not tuple:
        return None
    if len(values) < max(min_length, 1):
        return None
    kind = type(values[0])
    if any(type(v) is not kind for v in values):
        return None
    if kind is str or kind is bytes:
        return _pack_text(values, kind)
    if kind in _SCALAR_DTYPES:
        try:
            data = np.array(values, dtype=_SCALAR_DTYPES[kind])
        except OverflowError:  # ints beyond 64 bits stay a list
            return None
        return PackedColumn(kind, len(values), data)
    if kind is tuple:
        arity = len(values[0])
        if arity == 0 or any(len(v) != arity for v in values):
            return None
        fields = []
        for position in range(arity):
            field = pack_sequence([v[position] for v in values], min_length=0)
            if field is None:
                return None
            fields.append(field)
        return PackedColumn("tuple", len(values), fields=fields)
    return None


def _children(value) -> Iterable:
    from ember.data.dataset import Dataset

    if isinstance(value, Dataset):
        yield value
    elif (type(value) is list or type(value) is tuple) and len(value) <= 64:
        # a handful of datasets (ConcatDataset.datasets), not a data column
        for item in value:
            if isinstance(item, Dataset):
                yield item


def pack_dataset(dataset, min_length: int = PACK_MIN_LENGTH) -> list[tuple]:
    """(holder, attribute, packed) for every packable list held by the dataset or the
    datasets inside it (Note [Copy-on-read]). Nothing is modified."""
    found: list[tuple] = []
    seen: set[int] = set()
    pending = [dataset]
    while pending:
        holder = pending.pop()
        if id(holder) in seen:
            continue
        seen.add(id(holder))
        attributes = getattr(holder, "__dict__", None)
        if not isinstance(attributes, dict):
            continue
        for name, value in list(attributes.items()):
            packed = pack_sequence(value, min_length)
            if packed is not None:
                found.append((holder, name, packed))
            else:
                pending.extend(_children(value))
    return found


_KEPT_ALIVE: list = []


def install_packed(found: list[tuple]) -> None:
    """In a worker: swap each packed attribute in. The original stays referenced here, so
    the worker never drops (and so never walks and writes) the parent's list."""
    for holder, name, packed in found:
        _KEPT_ALIVE.append(holder.__dict__[name])
        holder.__dict__[name] = packed
