"""The safetensors format, read and written by ember itself (no `safetensors` package).

Note [safetensors layout]: a file is
    8 bytes   N, the header length, unsigned little-endian
    N bytes   a UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [2, 3],
              "data_offsets": [begin, end]}, ..., "__metadata__": {"str": "str"}}
              padded with spaces so that the data starts at an 8-byte boundary
    the rest  the data buffer: each tensor's bytes, C order, little-endian, at
              [begin, end) counted from the start of the buffer
The buffer must be covered exactly: no gaps, no overlaps, nothing after the last tensor.
ember writes tensors widest dtype first (then by name), so each one starts at a multiple of
its item size. Reading checks every one of these rules and names the file and the rule when
one is broken. BF16 tensors (which ember has no dtype for) are read as float32, exactly: a
bfloat16 is the top half of a float32.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys

import numpy as np

from ember.io._arrays import from_numpy, to_numpy
from ember.io.atomic import atomic_write
from ember.io.formats import MAX_SAFETENSORS_HEADER

__all__ = ["deserialize", "load_file", "read_metadata", "safe_open", "save_file", "serialize"]

# safetensors dtype code <-> NumPy dtype (little-endian).
_CODE_TO_NUMPY = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("uint8"),
    "I8": np.dtype("int8"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on read
}
_NUMPY_TO_CODE = {
    np.dtype(k): v
    for k, v in [
        ("bool", "BOOL"),
        ("uint8", "U8"),
        ("int8", "I8"),
        ("int16", "I16"),
        ("int32", "I32"),
        ("int64", "I64"),
        ("float16", "F16"),
        ("float32", "F32"),
        ("float64", "F64"),
        ("uint16", "U16"),
        ("uint32", "U32"),
        ("uint64", "U64"),
    ]
}
_WRITE_RANK = {
    code: rank
    for rank, code in enumerate(
        ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
    )
}
_MAX_HEADER = MAX_SAFETENSORS_HEADER  # the reference implementation's limit
_LITTLE = sys.byteorder == "little"


class SafetensorsError(ValueError):
    """A safetensors file or buffer that breaks the format (Note [safetensors layout])."""


# --------------------------------------------------------------------------- writing


def _prepare(tensors, metadata, where: str):
    if not isinstance(tensors, dict):
        raise TypeError(f"{where}: expected a dict of name -> tensor, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise ValueError(f"{where}: '__metadata__' is reserved and cannot name a tensor")
        array = to_numpy(value, f"{where} ({name!r})")
        if array.dtype.byteorder not in ("=", "|"):  # e.g. '>i4': make it native first
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (ember.bfloat16): BF16 bits
            _NUMPY_TO_CODE.setdefault(array.dtype, "BF16")
        if array.dtype not in _NUMPY_TO_CODE:
            raise TypeError(
                f"{where}: tensor {name!r} has dtype {array.dtype}, which safetensors "
                f"cannot hold; supported: {sorted(set(_NUMPY_TO_CODE.values()))}"
            )
        arrays[name] = array
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError(f"{where}: metadata must be a dict of str -> str, got {metadata!r}")
    # Widest first (in the reference writer's dtype order), then by name: every tensor then
    # starts at a multiple of its item size, and the bytes equal the reference's.
    order = sorted(arrays, key=lambda n: (-_WRITE_RANK[_NUMPY_TO_CODE[arrays[n].dtype]], n))
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": _NUMPY_TO_CODE[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-(len(header_bytes) + 8) % 8)
    return header_bytes, [arrays[name] for name in order]


def _little_endian_bytes(array: np.ndarray):
    """A buffer of the array's bytes, C order, little-endian (a view when already so)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not _LITTLE):
        array = array.astype(array.dtype.newbyteorder("<"))
    array = np.ascontiguousarray(array)
    return memoryview(array.reshape(-1).view(np.uint8)) if array.size else b""


def _write(file, header_bytes: bytes, arrays) -> None:
    file.write(struct.pack("<Q", len(header_bytes)))
    file.write(header_bytes)
    for array in arrays:
        file.write(_little_endian_bytes(array))


def serialize(tensors: dict, metadata: dict | None = None) -> bytes:
    """The safetensors bytes of a dict of tensors (ember Tensors or NumPy arrays).

    Example:
        >>> import numpy as np
        >>> blob = serialize({"w": np.ones((2, 2), np.float32)})
        >>> float(deserialize(blob, framework="np")["w"].sum())
        4.0
    """
    import io

    header_bytes, arrays = _prepare(tensors, metadata, "ember.io.serialize")
    buffer = io.BytesIO()
    _write(buffer, header_bytes, arrays)
    return buffer.getvalue()


def save_file(tensors: dict, filename: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a dict of tensors to a safetensors file, atomically (Note [Atomic writes]).

    Args:
        tensors: name -> ember Tensor or NumPy array (bool, uint8, int8..int64, float16..64).
        filename: where to write; an existing file is replaced only once the new one is whole.
        metadata: optional str -> str pairs stored in the header's `__metadata__`.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> save_file({"bias": np.zeros(3, np.float32)}, path, metadata={"format": "np"})
        >>> load_file(path, framework="np")["bias"].shape
        (3,)
    """
    header_bytes, arrays = _prepare(tensors, metadata, "ember.io.save_file")
    with atomic_write(filename, "wb") as file:
        _write(file, header_bytes, arrays)


# --------------------------------------------------------------------------- reading


def _parse_header(raw: bytes, data_size: int, source: str):
    """Validate a header against the layout rules; return (entries, metadata)."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise SafetensorsError(
            f"{source}: the header is not valid UTF-8 JSON ({error}); the file "
            "is damaged or not a safetensors file"
        ) from None
    if not isinstance(header, dict):
        raise SafetensorsError(
            f"{source}: the header should be a JSON object, got {type(header).__name__}"
        )
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise SafetensorsError(f"{source}: '__metadata__' should map str to str, got {metadata!r}")
    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise SafetensorsError(
                f"{source}: tensor {name!r} should have dtype, shape and data_offsets, got {info!r}"
            )
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if code not in _CODE_TO_NUMPY:
            raise SafetensorsError(
                f"{source}: tensor {name!r} has dtype {code!r}, which ember "
                f"cannot read; supported: {sorted(_CODE_TO_NUMPY)}"
            )
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise SafetensorsError(
                f"{source}: tensor {name!r} has shape {shape!r}; expected a "
                "list of non-negative integers"
            )
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise SafetensorsError(
                f"{source}: tensor {name!r} has data_offsets {offsets!r}; "
                "expected [begin, end] with 0 <= begin <= end"
            )
        nbytes = math.prod(shape) * _CODE_TO_NUMPY[code].itemsize  # exact: no int64 wrap
        if offsets[1] - offsets[0] != nbytes:
            raise SafetensorsError(
                f"{source}: tensor {name!r} ({code}, shape {shape}) needs {nbytes} bytes but its "
                f"data_offsets {offsets} span {offsets[1] - offsets[0]}"
            )
        entries[name] = (code, tuple(shape), offsets[0], offsets[1])
    # The buffer must be covered exactly once, in order.
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise SafetensorsError(
                f"{source}: tensor {name!r} at bytes [{begin}, {end}) {what} "
                f"(expected it to start at {position})"
            )
        position = end
    if position != data_size:
        if position > data_size:
            raise SafetensorsError(
                f"{source}: truncated: the header describes {position} bytes of tensor data but "
                f"only {data_size} follow the header"
            )
        raise SafetensorsError(
            f"{source}: {data_size - position} bytes after the last tensor; "
            "the file is damaged or not a safetensors file"
        )
    return entries, metadata


def _read_header_length(prefix: bytes, total: int, source: str) -> int:
    if len(prefix) < 8:
        raise SafetensorsError(
            f"{source}: truncated: a safetensors file starts with an 8-byte "
            f"header length, but it has only {total} bytes"
        )
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > _MAX_HEADER:
        raise SafetensorsError(
            f"{source}: the header length field says {length} bytes (limit "
            f"{_MAX_HEADER}); the file is damaged or not a safetensors file"
        )
    if 8 + length > total:
        raise SafetensorsError(
            f"{source}: truncated: the header needs {length} bytes but the "
            f"file has only {total - 8} after the length field"
        )
    return length


def _decode(buffer, code: str, shape, begin: int, end: int, base: int) -> np.ndarray:
    """A fresh native-endian array with one tensor's data (copied out of `buffer`)."""
    dtype = _CODE_TO_NUMPY[code]
    count = (end - begin) // dtype.itemsize
    if count == 0:
        array = np.empty(shape, dtype.newbyteorder("="))
    else:
        view = np.frombuffer(buffer, dtype=dtype, count=count, offset=base + begin)
        array = view.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
        del view
    if code == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _wrap(array: np.ndarray, framework: str, source: str, name: str):
    """from_numpy, with an error naming the file and tensor for a dtype ember lacks (U16...)."""
    try:
        return from_numpy(array, framework)
    except TypeError as error:
        raise TypeError(
            f"{source}: tensor {name!r}: {error}; read it with framework='np' to get the "
            "NumPy array"
        ) from None


def deserialize(data: bytes, framework: str = "ember") -> dict:
    """Tensors from safetensors bytes: name -> ember Tensor (or NumPy array for 'np')."""
    source = "ember.io.deserialize"
    length = _read_header_length(data[:8], len(data), source)
    entries, _ = _parse_header(bytes(data[8 : 8 + length]), len(data) - 8 - length, source)
    return {
        name: _wrap(_decode(data, *entry, base=8 + length), framework, source, name)
        for name, entry in entries.items()
    }


class safe_open:
    """Lazy access to a safetensors file through a memory map: only the tensors asked for are read.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save_file({"a": np.arange(6, dtype=np.int64).reshape(2, 3)}, path)
        >>> with safe_open(path, framework="np") as f:
        ...     print(f.keys(), f.get_slice("a")[1:, :2].tolist())
        ['a'] [[3, 4]]
    """

    def __init__(self, filename: str | os.PathLike, framework: str = "ember", device: str = "cpu"):
        self.filename = os.fspath(filename)
        self.framework = framework
        self.device = device
        source = f"safetensors file {self.filename!r}"
        self._source = source
        with open(self.filename, "rb") as file:
            total = os.fstat(file.fileno()).st_size
            length = _read_header_length(file.read(8), total, source)
            raw = file.read(length)
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if total else b""
        self._base = 8 + length
        self._entries, self._metadata = _parse_header(raw, total - self._base, source)

    def keys(self) -> list[str]:
        return list(self._entries)

    def metadata(self) -> dict | None:
        return None if self._metadata is None else dict(self._metadata)

    def _entry(self, name: str):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"{self._source} has no tensor {name!r}; it holds "
                f"{len(self._entries)} tensors, e.g. {self.keys()[:5]}"
            ) from None

    def get_tensor(self, name: str):
        """Read one tensor (a copy; the file can change or close afterwards)."""
        if self._map is None:
            raise ValueError(f"{self._source} is closed")
        array = _decode(self._map, *self._entry(name), base=self._base)
        tensor = _wrap(array, self.framework, self._source, name)
        if self.device not in ("cpu", None) and self.framework not in ("np", "numpy"):
            return tensor.to(self.device)
        return tensor

    def get_slice(self, name: str) -> _LazySlice:
        """A handle whose `[...]` reads only the indexed part, e.g. one shard of a weight."""
        return _LazySlice(self, name)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            try:
                self._map.close()
            except BufferError:
                # A view of the map is still alive (an exception's traceback may hold one):
                # the map closes when it goes. Raising here would hide the real error.
                pass
        self._map = None

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


class _LazySlice:
    def __init__(self, handle: safe_open, name: str):
        self._handle, self._name = handle, name
        code, self.shape, _, _ = handle._entry(name)
        self.dtype = code

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def get_dtype(self) -> str:
        return self.dtype

    def __getitem__(self, index):
        handle = self._handle
        code, shape, begin, end = handle._entry(self._name)
        dtype = _CODE_TO_NUMPY[code]
        if begin == end:
            part = np.empty(shape, dtype)[index]
        else:
            view = np.frombuffer(
                handle._map,
                dtype=dtype,
                count=(end - begin) // dtype.itemsize,
                offset=handle._base + begin,
            ).reshape(shape)
            part = view[index].astype(dtype.newbyteorder("="), copy=True)
            del view
        if code == "BF16":
            part = (part.astype(np.uint32) << 16).view(np.float32)
        return _wrap(np.asarray(part), handle.framework, handle._source, self._name)


def load_file(filename: str | os.PathLike, framework: str = "ember", device: str = "cpu") -> dict:
    """Read every tensor of a safetensors file: name -> ember Tensor (NumPy array for 'np').

    Each tensor is copied out of a memory map once, so loading needs about one times the
    file's size in memory.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save_file({"w": np.eye(2, dtype=np.float16)}, path)
        >>> load_file(path, framework="np")["w"].dtype
        dtype('float16')
    """
    with safe_open(filename, framework=framework, device=device) as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def read_metadata(filename: str | os.PathLike) -> dict | None:
    """The `__metadata__` of a safetensors file (reads the header only)."""
    with safe_open(filename, framework="np") as handle:
        return handle.metadata()
