"""Copy-on-read-safe views of a dataset's large Python lists for forked DataLoader workers.

Note [Copy-on-read]: a forked worker shares the parent's memory pages until either process
writes one. CPython writes to an object whenever it is read (its reference count), so a worker
that reads a list of a million strings writes to every page the strings live on and ends up
with a private copy of all of them: with shuffling, each worker copies the whole list within
an epoch (PyTorch's "copy-on-read" memory growth; measured here at 2.2x the memory of
`num_workers=0` for two workers). The garbage collector does the same to every container it
traverses (it writes `gc_refs` into each object's header).

What the DataLoader does about it, before forking its workers (fork start method only):

1. `pack_dataset` walks the dataset's instance attributes (and those of datasets it holds,
   such as `Subset.dataset` or `ConcatDataset.datasets`) and finds each list or tuple of at
   least `PACK_MIN_LENGTH` elements. Each worker swaps its (copy-on-write) view of such an
   attribute for a column that gives back the same values, and keeps the original alive, so
   the original is never freed (never walked, never written) in the worker. The parent's
   dataset is untouched. A dataset that needs the list object itself in its workers (an
   `isinstance(x, list)` check, or writes to a packed column) turns this off with
   `DataLoader(..., pack_dataset=False)`.
2. The column is a `PackedColumn`: lists of str, bytes, int, float, bool or tuples of them are
   packed into NumPy buffers in the parent (one pass over the list, about 0.3 s per million
   strings, and the packed bytes, about a quarter of the list's memory for short strings),
   which the forked workers share and never write; other lists are left as they are. With
   `DataLoader(pack_dataset="borrow")` it is instead, on CPython, a `BorrowedColumn`, which
   reads the shared objects' memory in place (Note [Borrowed reads]): nothing is copied or
   packed up front, at the price of reading interpreter memory directly, so it is an opt-in.
3. `gc.freeze()` around the fork: every object that exists then is moved to the collector's
   permanent generation in the children, so their collections never traverse (and write to)
   the parent's containers. The parent unfreezes right after the fork.

Note [Borrowed reads] (opt-in: `pack_dataset="borrow"`): CPython's immutable scalars have a
fixed layout: a header (reference count, type pointer) and then their value (a str's length,
state bits and characters; a bytes' size and bytes; an int's digits; a float's double; a
tuple's item pointers). A memoryview over the process's address space (`_memory()`) reads those
fields with `struct.unpack_from` and `str(view, codec)` without creating a reference to the
object, so its reference count (and the page it lives on) is not written. Every read starts
from the live container (its size and item array are read again at each access) and checks the
element's type pointer, so only objects that exist are read. Elements of other types (dicts,
lists, subclasses, non-compact strings) are read the ordinary way, which is correct and only
costs their pages. The layout is checked once per process against probe values of every
supported kind (`borrowing_supported`); any mismatch turns borrowing off in favour of packing.
Not thread-safe against another thread of the worker mutating the same list while it is read
(the worker's dataset holds the column, not the list, so that takes a second reference to the
list).
Why it is safe enough to offer, and why it is not the default: the reader never writes, reads
only through addresses it took from a live container in this same process an instant before,
and checks each type pointer against the probe-verified types, so a wrong read can only come
from a layout change that the probe missed or from another thread mutating the list mid-read;
either would return wrong values rather than crash in most cases, but nothing in Python
guarantees it, so the packed columns (plain NumPy memory) are the default.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "PACK_MIN_LENGTH",
    "BorrowedColumn",
    "PackedColumn",
    "borrowing_supported",
    "pack_dataset",
    "pack_sequence",
    "share_sequence",
]

PACK_MIN_LENGTH = 4096

_SCALAR_DTYPES = {int: np.int64, float: np.float64, bool: np.bool_}


class _Column(Sequence):
    """A read-only sequence over `_one(index)`: ints, slices and index lists or arrays."""

    length: int

    def _one(self, index: int):
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    def _check(self, index: int) -> int:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(
                f"{type(self).__name__}: index {index} out of range for length {self.length}"
            )
        return index

    def __getitem__(self, index):
        if type(index) is int and 0 <= index < self.length:  # the common case, first
            return self._one(index)
        if isinstance(index, (int, np.integer)):
            return self._one(self._check(int(index)))
        if isinstance(index, slice):
            index = range(*index.indices(self.length))
        return [self._one(self._check(int(i))) for i in index]

    def __iter__(self):
        for index in range(self.length):
            yield self._one(index)

    def index(self, value, start: int = 0, stop: int | None = None) -> int:
        stop = self.length if stop is None else stop
        for position in range(*slice(start, stop).indices(self.length)):
            if self._one(position) == value:
                return position
        raise ValueError(f"{type(self).__name__}.index: {value!r} is not in the column")


class PackedColumn(_Column):
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

    def _one(self, index: int):
        kind = self.kind
        if kind == "tuple":
            return tuple(field._one(index) for field in self.fields)
        if kind is str or kind is bytes:
            raw = self.data[self.offsets[index] : self.offsets[index + 1]].tobytes()
            return raw.decode("utf-8") if kind is str else raw
        return kind(self.data[index])

    @property
    def nbytes(self) -> int:
        if self.kind == "tuple":
            return sum(field.nbytes for field in self.fields)
        return self.data.nbytes + (0 if self.offsets is None else self.offsets.nbytes)

    def __repr__(self) -> str:
        name = "tuple" if self.kind == "tuple" else self.kind.__name__
        return f"PackedColumn({name}, len={self.length}, bytes={self.nbytes})"


# Note [Borrowed reads] ---------------------------------------------------------------------

_MEMORY_START = 1 << 12  # no object lives in the first page
_MEMORY_STOP = 1 << 57  # beyond any user-space address (5-level paging included)
_MISSING = object()
_TUPLE_DEPTH = 4
_memory_view = None
_supported: bool | None = None


def _memory():
    """A read-only memoryview over the user address space (Note [Borrowed reads]): offset
    `address - _MEMORY_START`. Only the fields of live objects are ever read through it."""
    global _memory_view
    if _memory_view is None:
        import ctypes

        from_memory = ctypes.pythonapi.PyMemoryView_FromMemory
        from_memory.restype = ctypes.py_object
        from_memory.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
        _memory_view = from_memory(_MEMORY_START, _MEMORY_STOP - _MEMORY_START, 0x100)
    return _memory_view


_UNPACK_QQ = struct.Struct("<qQ").unpack_from
_UNPACK_Q = struct.Struct("<Q").unpack_from


def _make_reader():
    """`read(address)`: the value of the object at `address`, built without touching the
    object, or _MISSING for a kind it does not handle (Note [Borrowed reads]). The field
    offsets come from this interpreter's object sizes; `borrowing_supported` checks them."""
    memory = _memory()
    start = _MEMORY_START
    ascii_header = sys.getsizeof("") - 1  # PyASCIIObject, then the characters
    # PyCompactUnicodeObject, measured on a string made here: getsizeof also counts a cached
    # UTF-8 copy, which a shared string such as the interned "\xe9" gains once any C code
    # (a tokenizer, a file write) asks for its UTF-8 form.
    compact_header = sys.getsizeof(chr(0xE9) * 2) - 3
    bytes_header = sys.getsizeof(b"") - 1
    int_tagged = sys.version_info >= (3, 12)  # lv_tag instead of a signed ob_size
    str_type, bytes_type, int_type = id(str), id(bytes), id(int)
    float_type, tuple_type = id(float), id(tuple)
    singletons = {id(None): None, id(True): True, id(False): False}
    unpack_type_size = struct.Struct("<Qq").unpack_from  # ob_type, then a size or length
    unpack_state = struct.Struct("<B").unpack_from  # a str's state bits, after its hash
    unpack_digit = struct.Struct("<I").unpack_from
    unpack_double = struct.Struct("<d").unpack_from
    missing = _MISSING

    def read(address: int, depth: int = 0):
        at = address - start
        kind, size = unpack_type_size(memory, at + 8)
        if kind == str_type:
            state = unpack_state(memory, at + 32)[0]
            if state & 0x40:  # compact ASCII: one byte per character after the header
                return str(memory[at + ascii_header : at + ascii_header + size], "ascii")
            if not state & 0x20:  # not compact: the characters are elsewhere
                return missing
            width = (state >> 2) & 7
            raw = memory[at + compact_header : at + compact_header + size * width]
            if width == 1:
                return str(raw, "latin-1")
            # UCS-2/UCS-4 code points, lone surrogates included: widen to UCS-4 and decode
            units = np.frombuffer(raw, np.uint16 if width == 2 else np.uint32)
            return str(units.astype("<u4").tobytes(), "utf-32-le", "surrogatepass")
        if kind == int_type:
            if int_tagged:
                count, sign = size >> 3, 1 - (size & 3)
            else:
                count, sign = abs(size), (size > 0) - (size < 0)
            if count == 1:
                return sign * unpack_digit(memory, at + 24)[0]
            value = 0
            for digit in reversed(struct.unpack_from(f"<{count}I", memory, at + 24)):
                value = (value << 30) | digit
            return sign * value
        if kind == float_type:
            return unpack_double(memory, at + 16)[0]
        if kind == bytes_type:
            return bytes(memory[at + bytes_header : at + bytes_header + size])
        if kind == tuple_type and depth < _TUPLE_DEPTH:
            items = []
            for item in struct.unpack_from(f"<{size}Q", memory, at + 24):
                value = read(item, depth + 1)
                if value is missing:
                    return missing
                items.append(value)
            return tuple(items)
        return singletons.get(address, missing)

    return read


_read = None


_PROBES = (
    "", "abc", "é", "ÿx", "\u0100x", "日本語", "\U0001f600 ok", "\ud800", "a\ud83d\ude00b",
    "\U0010ffff\ud800", "x" * 1000,
    b"", b"\x00\xff", b"y" * 1000,
    0, 1, -1, 7, 2**30 - 1, 2**30, 2**62, -(2**63), 2**200, -(3**90),
    0.0, -0.0, 1.5, -1e300, float("inf"),
    True, False, None,
    ("a", 1, (2.5, b"x", None), ()),
)  # fmt: skip


def borrowing_supported() -> bool:
    """Whether this interpreter's objects can be read in place (Note [Borrowed reads])."""
    global _supported, _read
    if _supported is None:
        _supported = False
        import sysconfig

        if (
            sys.implementation.name == "cpython"
            and sys.byteorder == "little"
            and struct.calcsize("P") == 8
            and not sysconfig.get_config_var("Py_GIL_DISABLED")  # free-threaded: other headers
        ):
            try:
                _read = _make_reader()
                probes = (
                    list(_PROBES)
                    + [chr(200) + str(n) for n in range(3)]
                    + [n * 1.25 for n in range(3)]
                )
                _supported = all(_same(_read(id(value)), value) for value in probes)
            except Exception:  # any surprise means: do not borrow
                _supported = False
    return _supported


def _same(got, want) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, tuple):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, float):
        return struct.pack("<d", got) == struct.pack("<d", want)
    return got == want


class BorrowedColumn(_Column):
    """A view of a list or tuple whose str, bytes, int, float, bool, None and tuple elements
    are read from the shared objects without writing to them (Note [Borrowed reads]); other
    elements are read the ordinary way. Made in the parent, read in forked workers. Everything
    else (assignment, `append`, `sort`, `+`, ...) goes to the list itself, so a dataset that
    changes its list in a worker still can (the pages it writes are then copied, as usual).

    Example:
        >>> values = ["cat", 3, (b"x", 0.5), {"d": 1}]
        >>> column = BorrowedColumn(values)
        >>> column[0], column[1], column[2], column[-1], len(column)
        ('cat', 3, (b'x', 0.5), {'d': 1}, 4)
    """

    def __init__(self, values):
        if type(values) is not list and type(values) is not tuple:
            raise TypeError(
                f"BorrowedColumn: expected a list or tuple, got {type(values).__name__}"
            )
        if not borrowing_supported():
            raise RuntimeError("BorrowedColumn: this interpreter's objects cannot be read in place")
        self._bind(values)

    def _bind(self, values) -> None:
        self.values = values
        self._address = id(values) - _MEMORY_START
        self._inline = type(values) is tuple  # a tuple's item pointers follow its header

    @property
    def length(self) -> int:
        return len(self.values)

    def _one(self, index: int):
        memory = _memory_view
        if self._inline:
            items = self._address + 24
        else:  # a list's size and item array, read together (the list may have changed)
            size, items = _UNPACK_QQ(memory, self._address + 16)
            if index >= size:
                return self.values[index]  # the ordinary error
            items -= _MEMORY_START
        value = _read(_UNPACK_Q(memory, items + 8 * index)[0])
        return self.values[index] if value is _MISSING else value

    # -- the rest is the list's ------------------------------------------------------------
    def __getattr__(self, name):
        if name in ("values", "_address", "_inline"):  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.values, name)

    def __setitem__(self, index, value):
        self.values[index] = value

    def __delitem__(self, index):
        del self.values[index]

    def __iadd__(self, other):
        if self._inline:
            self._bind(self.values + tuple(other))
        else:
            self.values += other
        return self

    def __add__(self, other):
        return self.values + (other.values if isinstance(other, BorrowedColumn) else other)

    def __radd__(self, other):
        return other + self.values

    def __mul__(self, count):
        return self.values * count

    __rmul__ = __mul__

    def __eq__(self, other):
        return self.values == (other.values if isinstance(other, BorrowedColumn) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"BorrowedColumn({type(self.values).__name__}, len={self.length})"


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


def share_sequence(
    values, min_length: int = PACK_MIN_LENGTH, borrow: bool = False
) -> _Column | None:
    """The column a forked worker reads instead of `values` (Note [Copy-on-read]): packed, or
    with `borrow` read in place where the interpreter allows it (Note [Borrowed reads]); None
    for what is left as it is (not a list or tuple, shorter than `min_length`, or not
    packable)."""
    if type(values) is not list and type(values) is not tuple:
        return None
    if len(values) < max(min_length, 1):
        return None
    if borrow and borrowing_supported():
        return BorrowedColumn(values)
    return pack_sequence(values, min_length)


def pack_dataset(dataset, min_length: int = PACK_MIN_LENGTH, borrow: bool = False) -> list[tuple]:
    """(holder, attribute, column) for every long list or tuple held by the dataset or the
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
            column = share_sequence(value, min_length, borrow)
            if column is not None:
                found.append((holder, name, column))
            else:
                pending.extend(_children(value))
    return found


_KEPT_ALIVE: list = []


def install_packed(found: list[tuple]) -> None:
    """In a worker: swap each column in for its attribute. The original stays referenced here, so
    the worker never drops (and so never walks and writes) the parent's list."""
    for holder, name, packed in found:
        _KEPT_ALIVE.append(holder.__dict__[name])
        holder.__dict__[name] = packed
