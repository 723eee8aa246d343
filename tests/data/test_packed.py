"""Copy-on-read-safe columns of a dataset's large lists for forked workers (Note
[Copy-on-read] and Note [Borrowed reads] in ember/data/_packed.py)."""

import enum
import os
import sys

import numpy as np
import pytest

from ember import data
from ember.data import _packed
from ember.data._packed import (
    BorrowedColumn,
    PackedColumn,
    borrowing_supported,
    pack_sequence,
    share_sequence,
)

needs_borrowing = pytest.mark.skipif(
    not borrowing_supported(),
    reason="this interpreter's object layout cannot be read in place (columns are packed)",
)

CASES = [
    ["cat", "dog", "émeu", "", "x" * 300],
    [b"a", b"", b"\x00\xff", b"long" * 50],
    [0, -1, 2**62, 7],
    [0.5, -1e300, float("inf"), 3.0],
    [True, False, True],
    [("a.jpg", 0), ("b.jpg", 1), ("ç.jpg", 2)],
]


COLUMNS = [
    pytest.param(PackedColumn.pack, id="packed"),
    pytest.param(BorrowedColumn, id="borrowed", marks=needs_borrowing),
]


@pytest.mark.parametrize("make", COLUMNS)
@pytest.mark.parametrize("values", CASES, ids=lambda v: type(v[0]).__name__)
def test_columns_give_back_the_same_values(values, make):
    column = make(values)
    name = type(column).__name__
    assert len(column) == len(values)
    assert list(column) == values
    for i in range(-len(values), len(values)):
        got = column[i]
        assert got == values[i] and type(got) is type(values[i])
    assert column[1:] == values[1:] and column[::-1] == values[::-1]
    assert column[[2, 0]] == [values[2], values[0]]
    assert column[np.array([1, 1])] == [values[1], values[1]]
    assert values[1] in column and column.index(values[1]) == values.index(values[1])
    with pytest.raises(IndexError, match=f"{name}: index"):
        column[len(values)]
    if name == "PackedColumn":
        with pytest.raises(TypeError):
            column[0] = values[0]  # packed copies are read-only


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


ODD_VALUES = [
    "ascii", "latin-1 é", "ÿ", "UCS-2 Ā 日本語", "UCS-4 \U0001f600", "lone \ud800 surrogate",
    "pair written apart \ud83d\ude00", "\U0010ffff\udfff", "", "z" * 5000,
    b"", b"\x00\x01", bytes(range(256)) * 20,
    0, 1, -1, 2**30 - 1, 2**30, -(2**30), 2**63 - 1, -(2**63), 2**64, 10**100, -(7**300),
    0.0, -0.0, 1e-320, float("inf"), float("-inf"), 3.141592653589793,
    True, False, None, (), ("a", (1, (2.5, (b"x", (None, "deep"))))),
    {"a": 1}, [1, 2], Colour.RED, Name("subclass"), object, 1j, bytearray(b"ba"),
]  # fmt: skip


@needs_borrowing
def test_borrowed_column_reads_every_kind_and_falls_back_for_the_rest():
    values = ODD_VALUES + [f"made-{i}" for i in range(5)] + [i * 0.75 for i in range(5)]
    for container in (values, tuple(values)):
        column = BorrowedColumn(container)
        for i, want in enumerate(container):
            got = column[i]
            assert type(got) is type(want), (i, want, got)
            if isinstance(want, float):
                assert repr(got) == repr(want)
            else:
                assert got == want, (i, want, got)
        # values it reads itself are fresh copies; the rest are the originals
        assert column[values.index({"a": 1})] is container[values.index({"a": 1})]


@needs_borrowing
def test_borrowed_reads_survive_cached_utf8_copies(monkeypatch):
    """A shared string such as the interned "\xe9" gains a cached UTF-8 copy once C code asks
    for it (tokenizers do), and sys.getsizeof then counts that copy: the reader's header
    offsets must not come from such a string."""
    import ctypes

    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8
    as_utf8.argtypes, as_utf8.restype = (ctypes.py_object,), ctypes.c_char_p
    for shared in ("\xe9", "\xff", "\u0100"):
        as_utf8(shared)
    monkeypatch.setattr(_packed, "_supported", None)
    monkeypatch.setattr(_packed, "_read", None)
    assert _packed.borrowing_supported()
    values = ["\xe9", "caf\xe9", "\u65e5\u672c", "\U0001f600 ok"]
    assert list(BorrowedColumn(values)) == values


def test_borrowed_reads_do_not_touch_the_objects():
    """The point of borrowing: reading leaves every element's reference count (and so the
    memory page it lives on) unwritten."""
    values = [f"s-{i}-é" for i in range(100)] + [b"b" * i for i in range(100)]
    values += [10**i + 1000 for i in range(100)] + [i / 3 for i in range(100)]  # no cached ints
    values += [(f"t{i}", i * 7919, (i / 7,)) for i in range(100)]
    before = [sys.getrefcount(v) for v in values]
    column = BorrowedColumn(values)
    copies = [column[i] for i in range(len(values))]
    assert copies == values
    assert [sys.getrefcount(v) for v in values] == before
    assert all(c is not v for c, v in zip(copies, values) if not isinstance(v, tuple))


@needs_borrowing
def test_borrowed_column_follows_changes_to_the_list():
    values = ["a", "b", "c"]
    column = BorrowedColumn(values)
    values[1] = "changed"
    assert column[1] == "changed"
    values.extend(["d"] * 1000)  # reallocated and longer
    assert column[0] == "a" and column[1002] == "d" and len(column) == 1003
    del values[3:]
    assert len(column) == 3 and list(column) == ["a", "changed", "c"]
    with pytest.raises(IndexError):
        column[3]


@needs_borrowing
def test_borrowed_column_is_otherwise_the_list():
    """Writes, list methods and operators go to the list itself (a worker's dataset may
    change its own list, e.g. to cache items)."""
    values = [f"v{i}" for i in range(10)]
    column = BorrowedColumn(values)
    column[0] = "first"
    column.append("appended")
    column += ["added"]
    del column[1]
    column.sort(key=len)
    assert values == sorted(
        ["first"] + [f"v{i}" for i in range(2, 10)] + ["appended", "added"], key=len
    )
    assert list(column) == values and column == values and column.copy() == values
    assert column + ["x"] == values + ["x"] and ["x"] + column == ["x"] + values
    assert column * 2 == values * 2 and column.count("first") == 1
    frozen = BorrowedColumn(tuple(values))
    frozen += ("more",)
    assert frozen[-1] == "more" and len(frozen) == len(values) + 1
    with pytest.raises(TypeError):
        frozen[0] = "no"  # a tuple stays immutable


def test_borrowed_column_refuses_what_it_cannot_view():
    with pytest.raises(TypeError, match="BorrowedColumn: expected a list or tuple, got dict"):
        BorrowedColumn({"a": 1})


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


@pytest.fixture(params=["borrowed", "packed"])
def column_kind(request, monkeypatch):
    """Each loader test runs with borrowed columns and with the packed fallback."""
    if request.param == "borrowed":  # DataLoader(pack_dataset="borrow")
        if not borrowing_supported():
            pytest.skip("this interpreter's object layout cannot be read in place")
        original = _packed.pack_dataset
        monkeypatch.setattr(
            _packed, "pack_dataset", lambda dataset, *a, **k: original(dataset, borrow=True)
        )
        return "BorrowedColumn"
    monkeypatch.setattr(_packed, "_supported", False)
    return "PackedColumn"


def test_pack_dataset_finds_nested_lists_and_changes_nothing(column_kind):
    names = [f"n{i}" for i in range(5000)]
    inner = Names(names, list(range(5000)))
    outer = data.ConcatDataset([data.Subset(inner, list(range(10))), inner])
    found = _packed.pack_dataset(outer)
    packed = {name: value for holder, name, value in found if holder is inner}
    assert set(packed) == {"names", "labels"}  # `small` is below the threshold
    assert {type(value).__name__ for value in packed.values()} == {column_kind}
    assert inner.names is names and type(inner.labels) is list
    # Subset.indices (a list of 10) and ConcatDataset's own lists stay as they are
    assert all(holder is inner for holder, _, _ in found)


@pytest.mark.parametrize("pack", [True, False])
def test_workers_read_columns_with_the_same_results(pack, column_kind):
    names = [f"name-{i}-é" for i in range(5000)]
    dataset = Names(names, list(range(5000)))
    plain = list(data.DataLoader(dataset, batch_size=500, num_workers=0))
    loader = data.DataLoader(dataset, batch_size=500, num_workers=2, pack_dataset=pack)
    batches = list(loader)
    for ours, theirs in zip(batches, plain):
        assert list(ours[0]) == list(theirs[0])
        assert np.array_equal(np.asarray(ours[1]), np.asarray(theirs[1]))
    kinds = {kind for batch in batches for kind in batch[2]}
    assert kinds == ({column_kind} if pack else {"list"})
    assert type(dataset.names) is list  # the parent's dataset is untouched


class Cache(data.Dataset):
    """Fills a list slot per item in the worker: the list must stay writable there."""

    def __init__(self, n):
        self.items = [None] * n

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if self.items[index] is None:
            self.items[index] = f"item-{index}"
        return self.items[index], type(self.items).__name__


def test_workers_may_change_their_lists(column_kind):
    loader = data.DataLoader(Cache(5000), batch_size=1000, num_workers=2)
    got = [name for names, _ in loader for name in names]
    assert got == [f"item-{i}" for i in range(5000)]
    kinds = {kind for _, kinds in loader for kind in kinds}
    # the packed fallback cannot be written to, so a list of None (not packable) stays a list
    assert kinds == ({"BorrowedColumn"} if column_kind == "BorrowedColumn" else {"list"})


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
def test_reading_every_string_does_not_copy_the_list_into_workers(column_kind):
    """A worker that reads all 300k strings of a list (about 29 MB of objects) copies the
    pages they live on; with packing it holds the packed column (11.5 MB) instead, and with
    borrowing nothing at all."""
    strings = [f"sample-{i:07d}-" + "x" * (i % 40) for i in range(300_000)]
    private = {}
    for pack in (True, False):
        loader = data.DataLoader(
            _Reader(strings), batch_size=30_000, num_workers=1, pack_dataset=pack
        )
        private[pack] = max(int(np.asarray(batch).max()) for batch in loader) / 1024
    print(f"worker private dirty MB: {column_kind} {private[True]:.1f}, list {private[False]:.1f}")
    assert private[False] - private[True] > (8 if column_kind == "PackedColumn" else 20), private


def test_packing_is_the_default_and_borrowing_an_opt_in():
    """Note [Copy-on-read]: reading interpreter memory in place is never the silent default."""
    names = [f"n{i}" for i in range(5000)]
    assert type(share_sequence(names)).__name__ == "PackedColumn"
    if borrowing_supported():
        assert type(share_sequence(names, borrow=True)).__name__ == "BorrowedColumn"
    assert data.DataLoader(Names(names, names)).pack_dataset is True
    assert data.DataLoader(Names(names, names), pack_dataset="borrow").pack_dataset == "borrow"
    with pytest.raises(ValueError, match="pack_dataset must be True, False or 'borrow'"):
        data.DataLoader(Names(names, names), pack_dataset="yes")
