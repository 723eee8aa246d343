"""What a file is (sniffing by structure) and the one pickle policy of every ember loader.

Note [File sniffing]: every loader asks `sniff` (or `sniff_file`) what a file holds, and the
answer comes from the file's structure, never from one byte that happens to match:
    safetensors  an 8-byte little-endian header length N with 2 <= N <= the bytes that follow
                 and N <= 100 MiB, then '{' (and, where the file is at hand, a header that
                 ends in '}' plus padding spaces). Checked first: N's low byte may be anything,
                 0x80 included (N = 640, 896, ... once looked like a pickle).
    torch-zip    a zip (PK\\x03\\x04) whose first entry is a torch.save archive member
    zip          any other zip
    pickle       0x80 and a protocol 2..5, then for protocol 4+ a FRAME opcode (0x95)
    gzip         1f 8b 08 (deflate)
    idx          00 00, an IDX type code (08 09 0b 0c 0d 0e), 1 <= ndim <= 8
    jpeg / png / gif / bmp / webp   their magic numbers
    ember-cache  b"EMBERCACHE1\\n", the file cache of `Pipeline.cache`
A file's name is never taken as evidence on its own, except that a `.pt`/`.bin`/`.pkl` file
that matches nothing is reported as "pickle" (an old protocol 0/1 pickle has no magic).

Note [Pickle policy]: unpickling calls whatever callables the file names, so a pickle from an
untrusted source can run any code. Every place ember reads a pickle (`ember.load`, torch .bin
and .pt checkpoints, `from_pretrained`, `Pipeline.cache` files) goes through `unpickle`:
    - refused (`PickleRefusedError`) unless the caller opted in (`allow_pickle=True`);
    - opted in, a restricted unpickler in the spirit of torch's `weights_only=True`: only the
      globals of `SAFE_GLOBALS` resolve (containers, numbers, strings, NumPy arrays and dtypes,
      ember Tensors and Parameters, the torch tensor-rebuild functions the caller supplies);
      anything else raises `UnsafePickleError` naming the file and the global;
    - full pickle only when the caller names it: `allow_unsafe_pickle=True`.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import struct

__all__ = [
    "PickleRefusedError",
    "SAFE_GLOBALS",
    "UnsafePickleError",
    "sniff",
    "sniff_file",
    "unpickle",
]

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
_IDX_TYPES = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E}
CACHE_MAGIC = b"EMBERCACHE1\n"
SNIFF_BYTES = 16


def sniff(prefix: bytes, total_size: int | None = None, name: str = "") -> str:
    """What a file holds, from its first bytes (at least 16 where the file has them).

    Returns one of 'safetensors', 'torch-zip', 'zip', 'pickle', 'gzip', 'idx', 'jpeg', 'png',
    'gif', 'bmp', 'webp', 'ember-cache' or 'unknown' (Note [File sniffing]).

    Example:
        >>> import struct
        >>> header = b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
        >>> sniff(struct.pack("<Q", len(header)) + header, total_size=8 + len(header))
        'safetensors'
        >>> sniff(struct.pack("<Q", 640) + b"{", total_size=648)  # 640 = 0x280: byte 0x80 first
        'safetensors'
        >>> sniff(b"\\x80\\x04\\x95" + bytes(13))
        'pickle'
    """
    prefix = bytes(prefix[:SNIFF_BYTES])
    if total_size is None:
        total_size = len(prefix)
    if len(prefix) >= 9 and prefix[8:9] == b"{":
        (length,) = struct.unpack("<Q", prefix[:8])
        if 2 <= length <= min(MAX_SAFETENSORS_HEADER, total_size - 8):
            return "safetensors"
    if prefix.startswith(CACHE_MAGIC):
        return "ember-cache"
    if prefix[:4] == b"PK\x03\x04":
        return "zip"
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        if prefix[1] < 4 or prefix[2:3] == b"\x95":
            return "pickle"
    if prefix[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if prefix[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if prefix[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if prefix[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if prefix[:2] == b"BM" and len(prefix) >= 14:
        return "bmp"
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "webp"
    if len(prefix) >= 4 and prefix[:2] == b"\x00\x00" and prefix[2] in _IDX_TYPES:
        if 1 <= prefix[3] <= 8:
            return "idx"
    if name.lower().endswith(_PICKLE_SUFFIXES):
        return "pickle"
    return "unknown"


def sniff_file(path: str | os.PathLike) -> str:
    """`sniff` for a file on disk, with the structural checks that need more than the prefix:
    a safetensors header must end in '}' (then padding), and a zip is 'torch-zip' when it
    holds a `data.pkl`."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        total = os.fstat(file.fileno()).st_size
        prefix = file.read(SNIFF_BYTES)
        kind = sniff(prefix, total, path)
        if kind == "safetensors":
            (length,) = struct.unpack("<Q", prefix[:8])
            file.seek(8 + max(0, length - 64))
            tail = file.read(min(64, length)).rstrip(b" ")
            if not tail.endswith(b"}"):
                return "pickle" if path.lower().endswith(_PICKLE_SUFFIXES) else "unknown"
        if kind == "zip":
            import zipfile

            try:
                file.seek(0)
                names = zipfile.ZipFile(file).namelist()
            except (zipfile.BadZipFile, OSError, ValueError):
                return "zip"
            if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return "torch-zip"
    return kind


class PickleRefusedError(ValueError):
    """A loader met a pickle and was not allowed to unpickle it (Note [Pickle policy])."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the restricted unpickler's allowlist."""


# (module, name) pairs the restricted unpickler resolves: data, never behaviour.
SAFE_GLOBALS = frozenset(
    [
        ("builtins", n)
        for n in ("set", "frozenset", "complex", "slice", "bytearray", "range", "bytes")
    ]
    + [("collections", "OrderedDict"), ("_codecs", "encode")]
    + [
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("ember.tensor", "_rebuild"), ("ember.nn.parameter", "_rebuild_parameter")]
)


def _is_numpy_dtype_class(module: str, name: str) -> bool:
    # NumPy 2 pickles some dtypes through their classes (numpy.dtypes.Float32DType).
    return module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, extra: dict | None):
        super().__init__(file)
        self._source = source
        self._extra = extra or {}

    def find_class(self, module, name):
        if (module, name) in self._extra:
            return self._extra[(module, name)]
        if (module, name) in SAFE_GLOBALS or _is_numpy_dtype_class(module, name):
            return getattr(importlib.import_module(module), name)
        raise UnsafePickleError(
            f"{self._source}: the pickle asks for the global {module}.{name}, which the "
            "restricted unpickler refuses (it loads tensors, arrays, containers, numbers and "
            "strings only, as torch.load(weights_only=True) does). If you trust the file, "
            "pass allow_unsafe_pickle=True."
        )


class _FullUnpickler(pickle.Unpickler):
    def __init__(self, file, extra: dict | None):
        super().__init__(file)
        self._extra = extra or {}

    def find_class(self, module, name):
        if (module, name) in self._extra:
            return self._extra[(module, name)]
        return super().find_class(module, name)


def refuse_pickle(source: str, what: str, where: str) -> PickleRefusedError:
    """The error for a pickle met without an opt-in (Note [Pickle policy])."""
    return PickleRefusedError(
        f"{where}: refusing to load {source!r}: it is {what}. Unpickling can execute arbitrary "
        "code from the file, so ember never does it unless asked. If you trust this file, pass "
        "allow_pickle=True (a restricted unpickler: tensors, arrays, containers, numbers and "
        "strings only); better, convert it once to safetensors "
        "(ember.save(ember.load(path, allow_pickle=True), 'model.safetensors'))."
    )


def unpickle(
    file,
    source: str,
    *,
    allow_pickle: bool = False,
    allow_unsafe_pickle: bool = False,
    where: str = "ember.load",
    extra_globals: dict | None = None,
    persistent_load=None,
):
    """Read one pickled object under the pickle policy (Note [Pickle policy]).

    Args:
        file: a readable binary file object (or bytes).
        source: the file's name, for errors.
        allow_pickle: the opt-in; without it (or allow_unsafe_pickle) the pickle is refused.
        allow_unsafe_pickle: full pickle, any global: only for files you trust completely.
        where: the public function, for errors.
        extra_globals: (module, name) -> object the caller resolves itself (torch's rebuild
            functions for a torch.save zip).
        persistent_load: the unpickler's persistent_load hook (torch storages).

    Example:
        >>> import pickle
        >>> unpickle(pickle.dumps({"a": [1, 2.5, "x"]}), "demo.pkl", allow_pickle=True)
        {'a': [1, 2.5, 'x']}
    """
    if not (allow_pickle or allow_unsafe_pickle):
        raise refuse_pickle(source, "a Python pickle", where)
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(bytes(file))
    if allow_unsafe_pickle:
        unpickler = _FullUnpickler(file, extra_globals)
    else:
        unpickler = _RestrictedUnpickler(file, source, extra_globals)
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load
    try:
        return unpickler.load()
    except (UnsafePickleError, EOFError):
        raise
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as error:
        raise pickle.UnpicklingError(
            f"{where}: {source!r} is not a valid pickle ({type(error).__name__}: {error})"
        ) from error
