"""Reading GGUF files (llama.cpp's single-file format: metadata, tokenizer and tensors).

Note [GGUF reading]: the `gguf` package (llama.cpp's own pure-Python reader, the `gguf` extra)
does the byte-level work; it is imported on first use, never by `import ember`. A `GGUFFile`
gives
- `metadata`: every key-value field as plain Python values (str, int, float, bool, lists);
- the tensors by their GGUF names (`token_embd.weight`, `blk.0.attn_q.weight`, ...), with
  shapes in NumPy's row-major order (GGUF lists dimensions innermost first: a (576, 49152)
  in the file is the (49152, 576) matrix), each dequantized on request to float32 by the
  package's reference kernels (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants...).
The file is memory-mapped: reading one tensor touches only its bytes, so a loader can copy
tensors into a model one at a time. Model-specific renaming (GGUF names -> HuggingFace names,
llama.cpp's rotary row order) is the transformers layer's business, not this file's.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["GGUFFile", "require_gguf", "gguf_path"]


def gguf_path(folder: str, gguf_file, where: str) -> str:
    """The GGUF file's path: `gguf_file` inside `folder` (or an absolute path); a missing one
    is an error naming `where` and the GGUF files that are there."""
    path = os.path.join(folder, os.fspath(gguf_file))
    if not os.path.isfile(path):
        found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
        raise FileNotFoundError(
            f"{where}: no GGUF file {os.fspath(gguf_file)!r} in {folder!r}; GGUF files there: "
            f"{found}"
        )
    return path


def require_gguf():
    """The `gguf` module, or an error saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "reading GGUF files needs llama.cpp's `gguf` package: pip install 'ember[llm]' "
            "(or pip install gguf)"
        ) from None
    return gguf


def _plain(value):
    """A field's contents as plain Python values (NumPy scalars -> int/float/bool)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# The package parses every metadata array element in Python (seconds for a 49k-token
# vocabulary), and a model folder is opened twice (tokenizer, then model): the last few
# parses are kept, keyed by the file's identity. A parse holds a read-only memory map only.
_READERS: dict[tuple, object] = {}
_READERS_KEPT = 2


def _open_reader(path: str):
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    reader = _READERS.pop(key, None)
    if reader is None:
        gguf = require_gguf()
        try:
            reader = gguf.GGUFReader(path, "r")
        except Exception as error:  # the package raises ValueError/struct.error/IndexError
            raise ValueError(f"GGUFFile: cannot read {path!r}: {error}") from None
    _READERS[key] = reader  # most recently used last
    while len(_READERS) > _READERS_KEPT:
        _READERS.pop(next(iter(_READERS)))
    return reader


class GGUFFile:
    """One GGUF file: its metadata and its tensors, dequantized to float32 on request.

    Example:
        >>> gguf_file = GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")   # doctest: +SKIP
        >>> gguf_file.metadata["general.architecture"]                 # doctest: +SKIP
        'llama'
        >>> gguf_file.shape("token_embd.weight")                       # doctest: +SKIP
        (49152, 576)
        >>> gguf_file.get("token_embd.weight").dtype                   # doctest: +SKIP
        dtype('float32')
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"GGUFFile: {self.path!r} is not a file")
        with open(self.path, "rb") as file:
            magic = file.read(4)
        if magic != b"GGUF":
            raise ValueError(
                f"GGUFFile: {self.path!r} is not a GGUF file: it starts with {magic!r}, "
                "expected b'GGUF'"
            )
        self._reader = _open_reader(self.path)
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        self._metadata: dict | None = None

    @property
    def metadata(self) -> dict:
        """Every key-value field, as plain Python values (read once, then kept)."""
        if self._metadata is None:
            self._metadata = {
                name: _plain(field.contents()) for name, field in self._reader.fields.items()
            }
        return self._metadata

    def field(self, name: str, default=None):
        """One metadata value without reading the others (the vocabulary is large)."""
        if self._metadata is not None:
            return self._metadata.get(name, default)
        field = self._reader.fields.get(name)
        return default if field is None else _plain(field.contents())

    def keys(self) -> list[str]:
        """The tensor names, in file order."""
        return list(self._tensors)

    def _tensor(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(
                f"GGUFFile: no tensor {name!r} in {self.path!r}; it holds "
                f"{len(self._tensors)} tensors, e.g. {self.keys()[:4]}"
            ) from None

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in NumPy order (the reverse of the file's dimension list)."""
        return tuple(int(d) for d in reversed(self._tensor(name).shape.tolist()))

    def quantization(self, name: str) -> str:
        """The tensor's storage type as GGML names it ('F32', 'Q4_1', 'Q8_0', ...)."""
        return self._tensor(name).tensor_type.name

    def get(self, name: str) -> np.ndarray:
        """The tensor as a float32 array (quantized types are dequantized)."""
        from gguf import quants

        tensor = self._tensor(name)
        try:
            array = quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise NotImplementedError(
                f"GGUFFile: tensor {name!r} of {self.path!r} is stored as "
                f"{tensor.tensor_type.name}, which the installed gguf package cannot dequantize"
            ) from None
        array = np.asarray(array)
        if array.dtype != np.float32 and array.dtype.kind == "f":
            array = array.astype(np.float32)
        return array.reshape(self.shape(name))

    def close(self, forget: bool = False) -> None:
        """Drop this handle; with `forget`, also the kept parse of the file, so that its memory
        map (whose touched pages count as resident memory) goes once nothing else holds it.
        Tensors already read stay valid: they are copies or are kept alive by their owner."""
        self._tensors = {}
        self._reader = None
        if forget:
            for key in [k for k in _READERS if k[0] == os.path.realpath(self.path)]:
                del _READERS[key]

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, tensors={len(self._tensors)})"
