"""`ember.save` / `ember.load`: checkpoints as one safetensors file, never pickle.

Note [Checkpoint layout]: `save(obj, path)` writes a single safetensors file
(Note [safetensors layout]). Every tensor in `obj` becomes one tensor of the file, named by
its path in the tree ("model.fc1.weight", "optimizer.state.0.exp_avg"); the rest of the tree
is JSON in the header's `__metadata__`:
    "format":           "ember"
    "ember.checkpoint": "1"                       (the layout version)
    "ember.tree":       the object as JSON, with each tensor replaced by {"__tensor__": name}
So a flat state dict (str -> tensor) is an ordinary safetensors file whose tensor names are
its keys: PyTorch's `safetensors.torch.load_file` reads it, and a safetensors file written by
anyone loads back as a dict of tensors. JSON cannot say everything Python can; these tags
carry the rest, each a one-key object:
    {"__tensor__": name}        an ember Tensor ({"__ndarray__": name} for a NumPy array)
    {"__tuple__": [...]}        a tuple
    {"__items__": [[k, v]...]}  a dict whose keys are not all str (optimizer state: int keys),
                                or that has a key which looks like one of these tags
    {"__float__": "nan"}        nan, inf and -inf, which JSON lacks
    {"__bytes__": base64}       bytes
    {"__dtype__": "float32"}    an ember dtype
A tensor that appears twice in the tree (tied weights) is stored once and comes back as one
object. Nothing on the loading path can run code from the file: pickle files are refused
unless the caller passes `allow_pickle=True` (Note [Pickle policy]). A tree holding whole
Modules uses layout "2", with the tags of Note [Whole-module checkpoints].
"""

from __future__ import annotations

import base64
import io
import json
import math
import os

import numpy as np

from ember.io._arrays import from_numpy, is_tensor, to_numpy
from ember.io.atomic import atomic_write
from ember.io.formats import (
    SNIFF_BYTES,
    PickleRefusedError,
    refuse_pickle,
    sniff,
    sniff_file,
    unpickle,
)
from ember.io.serialization import ModuleDecoder, ModuleEncoder, UnsafeClassError
from ember.io.safetensors import (
    _parse_header,
    _prepare,
    _read_header_length,
    _write,
    deserialize,
    safe_open,
)

__all__ = ["PickleRefusedError", "load", "save"]

_LAYOUT_VERSION = "1"
_MODULE_LAYOUT_VERSION = "2"  # the tree holds whole Modules (Note [Whole-module checkpoints])
_TAGS = (
    "__tensor__",
    "__ndarray__",
    "__tuple__",
    "__items__",
    "__float__",
    "__bytes__",
    "__dtype__",
    "__module__",
    "__module_ref__",
    "__function__",
    "__config__",
    "__parameter__",
)


# --------------------------------------------------------------------------- saving


class _Encoder:
    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}
        self._names_by_id: dict[int, str] = {}
        self._keep_alive: list = []  # ids stay unique while we hold the objects
        self.modules = ModuleEncoder(self.encode)

    def _tensor_name(self, value, path: str) -> str:
        known = self._names_by_id.get(id(value))
        if known is not None:
            return known
        name = path or "tensor"
        if name in self.tensors or name == "__metadata__":
            suffix = 1
            while f"{name}#{suffix}" in self.tensors:
                suffix += 1
            name = f"{name}#{suffix}"
        self.tensors[name] = to_numpy(value, "ember.save")
        self._names_by_id[id(value)] = name
        self._keep_alive.append(value)
        return name

    def encode(self, value, path: str):
        if is_tensor(value):
            return {"__tensor__": self._tensor_name(value, path)}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": self._tensor_name(value, path)}
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            return {"__float__": repr(float(value))}
        if isinstance(value, np.generic):  # NumPy scalars become Python numbers
            return self.encode(value.item(), path)
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, list):
            return [self.encode(v, _join(path, i)) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, _join(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
                return {k: self.encode(v, _join(path, k)) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool, tuple)) and k is not None:
                    raise TypeError(
                        f"ember.save: dict key {k!r} at {_show(path)} has type "
                        f"{type(k).__name__}; keys must be str, int, float, bool, "
                        "None or tuples of them"
                    )
                items.append([self.encode(k, path), self.encode(v, _join(path, k))])
            return {"__items__": items}
        dtype_name = _dtype_name(value)
        if dtype_name is not None:
            return {"__dtype__": dtype_name}
        node = self.modules.encode_other(value, path)
        if node is not None:
            return node
        raise TypeError(
            f"ember.save: cannot save a {type(value).__name__} at {_show(path)}; a checkpoint "
            "holds tensors, NumPy arrays, dicts, lists, tuples, str, int, float, bool, None, "
            "bytes, dtypes and ember.nn Modules (save an object's state_dict() rather than the "
            "object)"
        )


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(path: str) -> str:
    return f"'{path}'" if path else "the top level"


def _dtype_name(value):
    from ember.dtypes import DType

    return value.name if isinstance(value, DType) else None


def save(obj, f, *, metadata: dict | None = None) -> None:
    """Save tensors, state dicts or nested checkpoints to one safetensors file, atomically.

    `obj` may be an ember Tensor or any nest of dicts, lists and tuples holding tensors, NumPy
    arrays and plain Python values (Note [Checkpoint layout]). A flat dict of tensors is a
    plain safetensors file that PyTorch reads with `safetensors.torch.load_file`. An
    `ember.nn.Module` (the whole model, or one inside the tree) is saved as its class path,
    plain attributes and tensors, and `load` rebuilds it for allowed classes (Note
    [Whole-module checkpoints], ember/io/serialization.py).

    Args:
        obj: what to save.
        f: a path (written atomically: Note [Atomic writes]) or a writable binary file object.
        metadata: extra str -> str pairs for the header.

    Example:
        >>> import ember, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
        >>> ember.io.save({"step": 3, "w": ember.tensor([1.0, 2.0])}, path)
        >>> ember.io.load(path)["step"]
        3
    """
    encoder = _Encoder()
    tree = encoder.encode(obj, "")
    header_metadata = {
        "format": "ember",
        "ember.checkpoint": _MODULE_LAYOUT_VERSION if encoder.modules.used else _LAYOUT_VERSION,
        "ember.tree": json.dumps(tree, separators=(",", ":"), allow_nan=False),
    }
    if metadata:
        for key in metadata:
            if key in header_metadata:
                raise ValueError(f"ember.save: metadata key {key!r} is reserved for the layout")
        header_metadata.update(metadata)
    header_bytes, arrays = _prepare(encoder.tensors, header_metadata, "ember.save")
    if hasattr(f, "write"):
        _write(f, header_bytes, arrays)
        return
    with atomic_write(f, "wb") as file:
        _write(file, header_bytes, arrays)


# --------------------------------------------------------------------------- loading


class _Decoder:
    def __init__(
        self, get_array, framework: str, source: str, modules: bool = False, trusted: bool = False
    ):
        self._get_array = get_array
        self._framework = framework
        self._source = source
        self._made: dict[str, object] = {}
        self._modules = ModuleDecoder(self.decode, source, trusted) if modules else None

    def _tensor(self, name: str, as_numpy: bool):
        key = (name, as_numpy)
        if key not in self._made:
            array = self._get_array(name)
            if as_numpy:
                self._made[key] = array
            else:
                try:
                    self._made[key] = from_numpy(array, self._framework)
                except TypeError as error:  # a dtype ember lacks (uint16, uint32, uint64)
                    raise TypeError(
                        f"ember.load: {self._source!r}: tensor {name!r}: {error}; pass "
                        "framework='np' to get the NumPy array"
                    ) from None
        return self._made[key]

    def decode(self, node):
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((tag, payload),) = node.items()
            if tag == "__tensor__":
                return self._tensor(payload, self._framework in ("np", "numpy"))
            if tag == "__ndarray__":
                return self._tensor(payload, True)
            if tag == "__tuple__":
                return tuple(self.decode(v) for v in payload)
            if tag == "__items__":
                return {_hashable(self.decode(k)): self.decode(v) for k, v in payload}
            if tag == "__float__":
                return float(payload)
            if tag == "__bytes__":
                return base64.b64decode(payload)
            if tag == "__dtype__":
                from ember.dtypes import as_dtype

                return as_dtype(payload)
            if self._modules is not None:
                made = self._modules.decode_tag(tag, payload)
                if made is not NotImplemented:
                    return made
        return {k: self.decode(v) for k, v in node.items()}


def _hashable(key):
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


# Note [Pickle refusal]: see Note [Pickle policy] (ember/io/formats.py): a pickle, or the zip of
# torch.save, loads only with allow_pickle=True, and then through a restricted unpickler
# (tensors, arrays, containers, numbers, strings); full pickle needs allow_unsafe_pickle=True.
# A torch.save zip is read without torch: its tensors are rebuilt as NumPy arrays from the
# zip's storage records. What a file is comes from its structure (Note [File sniffing]).


def load(
    f,
    map_location=None,
    *,
    allow_pickle: bool = False,
    framework: str = "ember",
    weights_only: bool | None = None,
    allow_unsafe_pickle: bool = False,
):
    """Load what `ember.save` wrote (or any safetensors file), without running code from it.

    Args:
        f: a path or a readable binary file object.
        map_location: a device for the loaded tensors (accepted for PyTorch compatibility).
        allow_pickle: load pickle files (and torch.save zips) too, through a restricted
            unpickler that builds only tensors, arrays, containers, numbers and strings (as
            torch.load(weights_only=True) does; Note [Pickle policy]).
        framework: 'ember' for ember Tensors, 'np' for NumPy arrays.
        weights_only: PyTorch's flag. For pickles it never widens what loads: ember's opt-in
            is always the restricted unpickler. A whole-Module file (`ember.save(model)`)
            loads by default with its classes checked against the allow-list; False trusts
            the file and imports the classes it names (Note [Whole-module checkpoints]);
            True refuses it, as torch 2.6+ does.
        allow_unsafe_pickle: full unpickling, which can execute arbitrary code from the file:
            only for files you trust completely.

    Example:
        >>> import ember, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
        >>> ember.io.save({"w": ember.tensor([[1, 2]])}, path)
        >>> tuple(ember.io.load(path)["w"].shape)
        (1, 2)
    """
    opted_in = allow_pickle or allow_unsafe_pickle
    if hasattr(f, "read"):
        data = f.read()
        name = str(getattr(f, "name", "<file object>"))
        kind = sniff(data[:SNIFF_BYTES], len(data), name)
        if kind == "zip" and _is_torch_zip(io.BytesIO(data)):
            kind = "torch-zip"
        if kind in ("zip", "torch-zip", "pickle"):
            _refuse_or(kind, name, opted_in)
            return _load_pickle(io.BytesIO(data), kind, framework, name, allow_unsafe_pickle)
        _check_safetensors(kind, name)
        tensors = deserialize(data, framework="np")

        length = _read_header_length(data[:8], len(data), name)
        _, metadata = _parse_header(bytes(data[8 : 8 + length]), len(data) - 8 - length, name)
        result = _build(metadata, tensors.__getitem__, framework, name, list(tensors), weights_only)
        return _to_device(result, map_location)
    path = os.fspath(f)
    if os.path.isdir(path):
        raise IsADirectoryError(f"ember.load: {path!r} is a folder; expected a checkpoint file")
    kind = sniff_file(path)
    if kind in ("zip", "torch-zip", "pickle"):
        _refuse_or(kind, path, opted_in)
        with open(path, "rb") as file:
            result = _load_pickle(file, kind, framework, path, allow_unsafe_pickle)
        return _to_device(result, map_location)
    _check_safetensors(kind, path)
    with safe_open(path, framework="np") as handle:
        result = _build(
            handle.metadata(), handle.get_tensor, framework, path, handle.keys(), weights_only
        )
    return _to_device(result, map_location)


def _is_torch_zip(file) -> bool:
    import zipfile

    try:
        names = zipfile.ZipFile(file).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _check_safetensors(kind: str, source: str) -> None:
    if kind in ("safetensors", "unknown"):
        return  # 'unknown' goes to the safetensors reader, whose errors say what is wrong
    raise ValueError(
        f"ember.load: {source!r} is a {kind} file, not a checkpoint (ember.load reads "
        "safetensors files, and pickles or torch.save zips with allow_pickle=True)"
    )


def _build(metadata, get_array, framework, source, names, weights_only=None):
    decoder = _Decoder(get_array, framework, source)
    if metadata and metadata.get("format") == "ember" and "ember.tree" in metadata:
        version = metadata.get("ember.checkpoint")
        if version not in (_LAYOUT_VERSION, _MODULE_LAYOUT_VERSION):
            raise ValueError(
                f"ember.load: {source!r} uses checkpoint layout {version!r}; this "
                f"ember reads layouts {_LAYOUT_VERSION!r} and {_MODULE_LAYOUT_VERSION!r}"
            )
        if version == _MODULE_LAYOUT_VERSION:
            if weights_only:
                raise UnsafeClassError(
                    f"ember.load: {source!r} holds a whole Module (saved by "
                    "ember.save(model)), and weights_only=True loads only tensors and plain "
                    "containers. If you trust the file, pass weights_only=False (which imports "
                    "the Module classes it names), or save model.state_dict() instead"
                )
            if framework != "ember":
                raise ValueError(
                    f"ember.load: {source!r} holds a whole Module, whose tensors are ember "
                    f"Tensors; framework={framework!r} cannot rebuild it (use framework='ember')"
                )
            # weights_only=False: the caller trusts the file (Note [Whole-module checkpoints])
            decoder = _Decoder(
                get_array, framework, source, modules=True, trusted=weights_only is False
            )
        try:
            tree = json.loads(metadata["ember.tree"])
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(
                f"ember.load: {source!r}: the 'ember.tree' metadata is not valid "
                f"JSON ({error}); the file is damaged"
            ) from None
        try:
            return decoder.decode(tree)
        except UnsafeClassError:
            raise
        except KeyError as error:
            raise ValueError(
                f"ember.load: {source!r}: the tree names tensor {error} which the "
                "file does not hold (or a module node lacks that field); the file is damaged"
            ) from None
        except (TypeError, ValueError, AttributeError, RecursionError) as error:
            # a tag with a payload of the wrong kind ({"__tuple__": 3}, {"__float__": "x"},
            # {"__bytes__": "!"}, nesting too deep...): the file is damaged, and says where
            raise ValueError(
                f"ember.load: {source!r}: the 'ember.tree' metadata is malformed "
                f"({type(error).__name__}: {error}); the file is damaged"
            ) from None
    # A plain safetensors file (e.g. saved by PyTorch): a flat dict of tensors.
    return {name: decoder.decode({"__tensor__": name}) for name in names}


def _to_device(obj, map_location):
    if map_location is None or str(map_location) == "cpu" or callable(map_location):
        return obj
    if is_tensor(obj) or _is_module(obj):
        return obj.to(map_location)
    if isinstance(obj, dict):
        return {k: _to_device(v, map_location) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, map_location) for v in obj)
    return obj


def _is_module(obj) -> bool:
    import sys

    nn = sys.modules.get("ember.nn")
    return nn is not None and isinstance(obj, nn.Module)


def _refuse_or(kind: str, source, allowed: bool) -> None:
    if allowed:
        return
    what = {
        "torch-zip": "a PyTorch zip checkpoint (torch.save), which stores its objects as a pickle",
        "zip": "a zip archive (not a safetensors file)",
    }.get(kind, "a Python pickle")
    raise refuse_pickle(str(source), what, "ember.load")


def _load_pickle(file, kind: str, framework: str, source, allow_unsafe_pickle: bool):
    if kind == "pickle":
        return unpickle(
            file, str(source), allow_pickle=True, allow_unsafe_pickle=allow_unsafe_pickle
        )
    if kind == "zip":
        raise ValueError(
            f"ember.load: {str(source)!r} is a zip but holds no data.pkl; it is not "
            "a torch.save checkpoint"
        )
    return _load_torch_zip(file, framework, source, allow_unsafe_pickle)


_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}
_TORCH_DTYPE_NAMES = {
    "float32": np.float32,
    "float": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "float16": np.float16,
    "half": np.float16,
    "int64": np.int64,
    "long": np.int64,
    "int32": np.int32,
    "int": np.int32,
    "int16": np.int16,
    "short": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "bfloat16": "bfloat16",
}


def _load_torch_zip(file, framework: str, source, allow_unsafe_pickle: bool = False):
    """Read a torch.save zip without torch: storages from the zip, tensors as strided views."""
    import zipfile

    archive = zipfile.ZipFile(file)
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
        raise ValueError(
            f"ember.load: {str(source)!r} is a zip but holds no data.pkl; it is not "
            "a torch.save checkpoint"
        )
    root = pickles[0][: -len("data.pkl")]
    storages: dict = {}

    class _StorageType:
        def __init__(self, dtype):
            self.dtype = dtype

    def persistent_load(saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"):
            raise ValueError(f"unexpected persistent id {saved_id!r}")
        _, storage_type, key, _location, numel = saved_id
        if key not in storages:
            dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.uint8
            info = archive.getinfo(f"{root}data/{key}")
            needed = int(numel) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
            # torch stores its storages uncompressed; a compressed one is held to deflate's
            # best ratio, so a small file cannot claim gigabytes (a decompression bomb).
            if info.file_size < needed or (
                info.compress_type != zipfile.ZIP_STORED
                and info.file_size > 1100 * max(info.compress_size, 1)
            ):
                raise ValueError(
                    f"storage {key!r} holds {info.file_size} bytes "
                    f"({info.compress_size} compressed) but the tensor needs {needed}"
                )
            raw = archive.read(info)
            if dtype == "bfloat16":
                bits = np.frombuffer(raw, "<u2", count=numel)
                storages[key] = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                storages[key] = np.frombuffer(
                    raw, np.dtype(dtype).newbyteorder("<"), count=numel
                ).astype(np.dtype(dtype))
        return storages[key]

    def _rebuild_tensor(storage, offset, size, stride, *args):
        # A hostile file may name any size and stride: as_strided would then read memory
        # outside the storage, so the extent is checked first.
        if not (
            isinstance(storage, np.ndarray)
            and isinstance(offset, int)
            and all(isinstance(n, int) and n >= 0 for n in (*size, *stride))
            and len(size) == len(stride)
            and offset >= 0
        ):
            raise ValueError(f"tensor record ({offset}, {size}, {stride}) is malformed")
        if any(n == 0 for n in size):
            return from_numpy(np.empty(tuple(size), storage.dtype), framework)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise ValueError(
                f"tensor of size {tuple(size)}, stride {tuple(stride)} at offset {offset} "
                f"reaches element {last} of a storage of {storage.size}"
            )
        itemsize = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        )
        return from_numpy(np.array(view, copy=True), framework)

    torch_globals = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter_with_state"): (
            lambda data, requires_grad, hooks, state: data
        ),
        ("torch._utils", "_rebuild_parameter"): lambda data, requires_grad, hooks: data,
    }
    for name, dtype in {**_TORCH_STORAGE_DTYPES, **_TORCH_DTYPE_NAMES}.items():
        torch_globals[("torch", name)] = _StorageType(dtype)
    with archive.open(pickles[0]) as data:
        return unpickle(
            data,
            str(source),
            allow_pickle=True,
            allow_unsafe_pickle=allow_unsafe_pickle,
            extra_globals=torch_globals,
            persistent_load=persistent_load,
        )
