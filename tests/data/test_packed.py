"""Packing a dataset's large lists for forked workers (Note [Copy-on-read] in _packed.py)."""

import os

import numpy as np
import pytest

from ember import data
from ember.data._packed import PackedColumn, pack_dataset, pack_sequence

CASES = [
    ["cat", "dog", "émeu", "", "x" * 300],
    [b"a", b"", b"\x00\xff", b"long" * 50],
    [0, -1, 2**62, 7],
    [0.5, -1e300, float("inf"), 3.0],
    [True, False, True],
    [("a.jpg", 0), ("b.jpg", 1), ("ç.jpg", 2)],
]


@pytest.mark.parametrize("values", CASES, ids=lambda v: type(v[0]).__name__)
def test_packed_column_gives_back_the_same_values(values):
    column = PackedColumn.pack(values)
    assert len(column) == len(values)
    assert list(column) == values
    for i in range(-len(values), len(values)):
        got = column[i]
        assert got == values[i] and type(got) is type(values[i])
    assert column[1:] == values[1:] and column[::-1] == values[::-1]
    assert column[[2, 0]] == [values[2], values[0]]
    assert column[np.array([1, 1])] == [values[1], values[1]]
    assert values[1] in column and column.index(values[1]) == values.index(values[1])
    with pytest.raises(IndexError, match="PackedColumn: index"):
        column[len(values)]


def test_only_uniform_long_sequences_are_packed():
    assert pack_sequence(["a"] * 10, min_length=100) is None  # short: left alone
    assert pack_sequence(["a", 1] * 100, min_length=1) is None  # mixed types
    assert pack_sequence([1, True] * 100, min_length=1) is None  # bool is not int
    assert pack_sequence([2**70] * 100, min_length=1) is None  # beyond int64
    assert pack_sequence([("a", 1), ("b",)] * 100, min_length=1) is None  # ragged tuples
    assert pack_sequence([[1], [2]] * 100, min_length=1) is None  # lists of lists
    assert pack_sequence(np.arange(10), min_length=1) is None  # arrays are fine as they are
    with pytest.raises(TypeError, match="PackedColumn.pack"):
        PackedColumn.pack([object()])


class Names(data.Dataset):
    def __init__(self, names, labels):
        self.names = names
        self.labels = labels
        self.small = ["a", "b"]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        worker = data.get_worker_info()
        return self.names[index], self.labels[index], type(self.names).__name__, worker is None


def test_pack_dataset_finds_nested_lists_and_changes_nothing():
    names = [f"n{i}" for i in range(5000)]
    inner = Names(names, list(range(5000)))
    outer = data.ConcatDataset([data.Subset(inner, list(range(10))), inner])
    found = pack_dataset(outer)
    packed = {name: value for holder, name, value in found if holder is inner}
    assert set(packed) == {"names", "labels"}  # `small` is below the threshold
    assert inner.names is names and type(inner.labels) is list
    # Subset.indices (a list of 10) and ConcatDataset's own lists stay as they are
    assert all(holder is inner for holder, _, _ in found)


@pytest.mark.parametrize("pack", [True, False])
def test_workers_read_packed_columns_with_the_same_results(pack):
    names = [f"name-{i}-é" for i in range(5000)]
    dataset = Names(names, list(range(5000)))
    plain = list(data.DataLoader(dataset, batch_size=500, num_workers=0))
    loader = data.DataLoader(dataset, batch_size=500, num_workers=2, pack_dataset=pack)
    batches = list(loader)
    for ours, theirs in zip(batches, plain):
        assert list(ours[0]) == list(theirs[0])
        assert np.array_equal(np.asarray(ours[1]), np.asarray(theirs[1]))
    kinds = {kind for batch in batches for kind in batch[2]}
    assert kinds == ({"PackedColumn"} if pack else {"list"})
    assert type(dataset.names) is list  # the parent's dataset is untouched


def _private_dirty_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    raise AssertionError("no Private_Dirty line")


class _Reader(data.Dataset):
    def __init__(self, strings):
        self.strings = strings

    def __len__(self):
        return len(self.strings)

    def __getitems__(self, indices):
        picked = [self.strings[i] for i in indices]
        return [_private_dirty_kb(os.getpid())] * len(picked)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux smaps")
def test_reading_every_string_does_not_copy_the_list_into_workers():
    """A worker that reads all 300k strings of a list (about 29 MB of objects) copies the
    pages they live on; with packing it holds the packed column (11.5 MB) instead."""
    strings = [f"sample-{i:07d}-" + "x" * (i % 40) for i in range(300_000)]
    private = {}
    for pack in (True, False):
        loader = data.DataLoader(
            _Reader(strings), batch_size=30_000, num_workers=1, pack_dataset=pack
        )
        private[pack] = max(int(np.asarray(batch).max()) for batch in loader) / 1024
    print(f"worker private dirty MB: packed {private[True]:.1f}, list {private[False]:.1f}")
    assert private[False] - private[True] > 8, private
