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
unless the caller passes `allow_pickle=True` (Note [Pickle refusal]).
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
_TAGS = (
    "__tensor__",
    "__ndarray__",
    "__tuple__",
    "__items__",
    "__float__",
    "__bytes__",
    "__dtype__",
)


class PickleRefusedError(ValueError):
    """`ember.load` met a pickle file and was not allowed to unpickle it."""


# --------------------------------------------------------------------------- saving


class _Encoder:
    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}
        self._names_by_id: dict[int, str] = {}
        self._keep_alive: list = []  # ids stay unique while we hold the objects

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
        raise TypeError(
            f"ember.save: cannot save a {type(value).__name__} at {_show(path)}; a checkpoint "
            "holds tensors, NumPy arrays, dicts, lists, tuples, str, int, float, bool, None, "
            "bytes and dtypes (save an object's state_dict() rather than the object)"
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
    plain safetensors file that PyTorch reads with `safetensors.torch.load_file`.

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
        "ember.checkpoint": _LAYOUT_VERSION,
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
    def __init__(self, get_array, framework: str, source: str):
        self._get_array = get_array
        self._framework = framework
        self._source = source
        self._made: dict[str, object] = {}

    def _tensor(self, name: str, as_numpy: bool):
        key = (name, as_numpy)
        if key not in self._made:
            array = self._get_array(name)
            self._made[key] = array if as_numpy else from_numpy(array, self._framework)
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
        return {k: self.decode(v) for k, v in node.items()}


def _hashable(key):
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


# Note [Pickle refusal]: unpickling calls whatever callables the file names, so a pickle from
# an untrusted source can run any code. `load` recognises pickles by their first bytes (the
# protocol-2+ opcode 0x80, or the zip container of torch.save) and refuses them unless the
# caller passes allow_pickle=True. Then a zip written by torch.save is read without torch: its
# tensors are rebuilt as NumPy arrays from the zip's storage records.
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _sniff(prefix: bytes, name: str) -> str:
    if prefix[:4] == b"PK\x03\x04":
        return "zip"
    if prefix[:1] == b"\x80" and prefix[1:2] in {bytes([p]) for p in range(2, 6)}:
        return "pickle"
    if len(prefix) >= 8 and prefix[8:9] == b"{":
        return "safetensors"
    if name.lower().endswith(_PICKLE_SUFFIXES):
        return "pickle"
    return "unknown"


def load(
    f,
    map_location=None,
    *,
    allow_pickle: bool = False,
    framework: str = "ember",
    weights_only: bool | None = None,
):
    """Load what `ember.save` wrote (or any safetensors file), without running code from it.

    Args:
        f: a path or a readable binary file object.
        map_location: a device for the loaded tensors (accepted for PyTorch compatibility).
        allow_pickle: load pickle files (and torch.save zips) too. Unpickling can execute
            arbitrary code: pass True only for files you trust.
        framework: 'ember' for ember Tensors, 'np' for NumPy arrays.
        weights_only: PyTorch's flag; accepted and ignored (ember never unpickles by default).

    Example:
        >>> import ember, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
        >>> ember.io.save({"w": ember.tensor([[1, 2]])}, path)
        >>> tuple(ember.io.load(path)["w"].shape)
        (1, 2)
    """
    del weights_only
    if hasattr(f, "read"):
        data = f.read()
        name = getattr(f, "name", "<file object>")
        kind = _sniff(data[:16], str(name))
        if kind in ("zip", "pickle"):
            _refuse_or(kind, name, allow_pickle)
            return _load_pickle(io.BytesIO(data), kind, framework, name)
        tensors = deserialize(data, framework="np")

        length = _read_header_length(data[:8], len(data), str(name))
        _, metadata = _parse_header(bytes(data[8 : 8 + length]), len(data) - 8 - length, str(name))
        result = _build(metadata, tensors.__getitem__, framework, str(name), list(tensors))
        return _to_device(result, map_location)
    path = os.fspath(f)
    if os.path.isdir(path):
        raise IsADirectoryError(f"ember.load: {path!r} is a folder; expected a checkpoint file")
    with open(path, "rb") as file:
        prefix = file.read(16)
    kind = _sniff(prefix, path)
    if kind in ("zip", "pickle"):
        _refuse_or(kind, path, allow_pickle)
        with open(path, "rb") as file:
            return _to_device(_load_pickle(file, kind, framework, path), map_location)
    with safe_open(path, framework="np") as handle:
        result = _build(handle.metadata(), handle.get_tensor, framework, path, handle.keys())
    return _to_device(result, map_location)


def _build(metadata, get_array, framework, source, names):
    decoder = _Decoder(get_array, framework, source)
    if metadata and metadata.get("format") == "ember" and "ember.tree" in metadata:
        version = metadata.get("ember.checkpoint")
        if version != _LAYOUT_VERSION:
            raise ValueError(
                f"ember.load: {source!r} uses checkpoint layout {version!r}; this "
                f"ember reads layout {_LAYOUT_VERSION!r}"
            )
        try:
            tree = json.loads(metadata["ember.tree"])
        except json.JSONDecodeError as error:
            raise ValueError(
                f"ember.load: {source!r}: the 'ember.tree' metadata is not valid "
                f"JSON ({error}); the file is damaged"
            ) from None
        try:
            return decoder.decode(tree)
        except KeyError as error:
            raise ValueError(
                f"ember.load: {source!r}: the tree names tensor {error} which the "
                "file does not hold; the file is damaged"
            ) from None
    # A plain safetensors file (e.g. saved by PyTorch): a flat dict of tensors.
    return {name: decoder.decode({"__tensor__": name}) for name in names}


def _to_device(obj, map_location):
    if map_location is None or str(map_location) == "cpu" or callable(map_location):
        return obj
    if is_tensor(obj):
        return obj.to(map_location)
    if isinstance(obj, dict):
        return {k: _to_device(v, map_location) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, map_location) for v in obj)
    return obj


def _refuse_or(kind: str, source, allow_pickle: bool) -> None:
    if allow_pickle:
        return
    what = (
        "a PyTorch zip checkpoint (torch.save), which stores its objects as a pickle"
        if kind == "zip"
        else "a Python pickle"
    )
    raise PickleRefusedError(
        f"ember.load: refusing to load {str(source)!r}: it is {what}. Unpickling can execute "
        "arbitrary code from the file, so ember never does it unless asked. If you trust this "
        "file, call ember.load(path, allow_pickle=True); better, convert it once to "
        "safetensors (ember.save(ember.load(path, allow_pickle=True), 'model.safetensors'))."
    )


def _load_pickle(file, kind: str, framework: str, source):
    import pickle

    if kind == "pickle":
        # The caller passed allow_pickle=True (Note [Pickle refusal]): plain unpickling.
        return pickle.load(file)
    return _load_torch_zip(file, framework, source)


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


def _load_torch_zip(file, framework: str, source):
    """Read a torch.save zip without torch: storages from the zip, tensors as strided views."""
    import pickle
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

    class _TorchUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return _rebuild_tensor
            if module == "torch._utils" and name == "_rebuild_parameter_with_state":
                return lambda data, requires_grad, hooks, state: data
            if module == "torch._utils" and name == "_rebuild_parameter":
                return lambda data, requires_grad, hooks: data
            if module == "torch" and name in _TORCH_STORAGE_DTYPES:
                return _StorageType(_TORCH_STORAGE_DTYPES[name])
            if module == "torch" and name in _TORCH_DTYPE_NAMES:
                return _StorageType(_TORCH_DTYPE_NAMES[name])
            return super().find_class(module, name)  # allowed by the caller's allow_pickle

        def persistent_load(self, saved_id):
            _, storage_type, key, _location, numel = saved_id
            if key not in storages:
                raw = archive.read(f"{root}data/{key}")
                dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.uint8
                if dtype == "bfloat16":
                    bits = np.frombuffer(raw, "<u2", count=numel)
                    storages[key] = (bits.astype(np.uint32) << 16).view(np.float32)
                else:
                    storages[key] = np.frombuffer(
                        raw, np.dtype(dtype).newbyteorder("<"), count=numel
                    ).astype(np.dtype(dtype))
            return storages[key]

    def _rebuild_tensor(storage, offset, size, stride, *args):
        itemsize = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        )
        return from_numpy(np.array(view, copy=True), framework)

    with archive.open(pickles[0]) as data:
        return _TorchUnpickler(data).load()
