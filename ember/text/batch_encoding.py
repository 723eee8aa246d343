"""`BatchEncoding`: what a tokenizer call returns (a dict of model inputs, plus helpers)."""

from __future__ import annotations

import numpy as np

__all__ = ["BatchEncoding", "convert_to_tensors"]

# 'pt' and 'tf' give ember tensors: ported code keeps its return_tensors="pt" unchanged.
_EMBER_NAMES = ("ember", "pt", "tf")


def convert_to_tensors(data: dict, return_tensors, where: str = "tokenizer") -> dict:
    """Turn lists of ids into int64 arrays ('np') or ember tensors ('ember', 'pt', 'tf')."""
    if return_tensors is None:
        return data
    name = getattr(return_tensors, "value", return_tensors)
    if name not in (*_EMBER_NAMES, "np", "numpy"):
        raise ValueError(
            f"{where}: return_tensors should be 'ember', 'pt', 'np' or None, got {return_tensors!r}"
        )
    out = {}
    for key, value in data.items():
        if hasattr(value, "shape") and not isinstance(value, (list, tuple)):
            array = np.asarray(value)
        else:
            lengths = (
                {len(row) for row in value}
                if value and isinstance(value[0], (list, tuple))
                else set()
            )
            if len(lengths) > 1:
                if name in _EMBER_NAMES:
                    raise ValueError(
                        f"{where}: cannot make a tensor of '{key}': its sequences have different "
                        f"lengths {sorted(lengths)}. Pass padding=True (and truncation=True to "
                        "cap long inputs) so that every sequence has the same length"
                    )
                # NumPy, as in HuggingFace: a ragged batch is an object array of rows
                ragged = np.empty(len(value), dtype=object)
                ragged[:] = [np.asarray(row, dtype=np.int64) for row in value]
                out[key] = ragged
                continue
            array = np.asarray(value)
        if array.dtype.kind in "iub":  # ids, masks and offsets are int64, as in HuggingFace
            array = array.astype(np.int64, copy=False)
        out[key] = array
    if name in _EMBER_NAMES:
        from ember.tensor import from_numpy

        out = {key: from_numpy(np.ascontiguousarray(array)) for key, array in out.items()}
    return out


class BatchEncoding(dict):
    """A dict of model inputs (`input_ids`, `attention_mask`, ...) with attribute access.

    Also keeps the engine's `Encoding` objects, for `tokens()`, `word_ids()` and
    `sequence_ids()`.

    Example:
        >>> encoding = BatchEncoding({"input_ids": [[101, 102]]})
        >>> encoding.input_ids
        [[101, 102]]
    """

    def __init__(
        self,
        data: dict | None = None,
        encodings=None,
        tensor_type=None,
        n_sequences: int | None = None,
    ):
        super().__init__(convert_to_tensors(dict(data or {}), tensor_type))
        self._encodings = encodings
        self._n_sequences = n_sequences

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"BatchEncoding has no key {name!r}; it holds {list(self.keys())}"
            ) from None

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        if isinstance(key, int) and self._encodings is not None:
            return self._encodings[key]
        if isinstance(key, slice):
            return {k: v[key] for k, v in self.items()}
        raise KeyError(
            f"BatchEncoding: no key {key!r}; use a name such as 'input_ids' or "
            "an int (the engine's Encoding of that batch item)"
        )

    def __getstate__(self):
        return {"data": dict(self), "encodings": self._encodings, "n_sequences": self._n_sequences}

    def __setstate__(self, state):
        self.update(state["data"])
        self._encodings = state["encodings"]
        self._n_sequences = state["n_sequences"]

    def __reduce__(self):
        return (self.__class__, (), self.__getstate__())

    @property
    def encodings(self):
        """The engine's `tokenizers.Encoding` per batch item (None when built from a dict)."""
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self):
        return self._n_sequences

    def _encoding(self, batch_index: int, what: str):
        if self._encodings is None:
            raise ValueError(
                f"BatchEncoding.{what}() needs the engine's encodings; this one was "
                "built from a plain dict"
            )
        return self._encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The tokens (strings) of one batch item."""
        return self._encoding(batch_index, "tokens").tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it came from (None for special tokens)."""
        return self._encoding(batch_index, "word_ids").word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 or 1 for the first or second sequence (None for special tokens)."""
        return self._encoding(batch_index, "sequence_ids").sequence_ids

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ):
        """The token holding a character of the input (None if it is a space)."""
        if char_index is None:
            batch_index, char_index = 0, batch_or_char_index
        else:
            batch_index = batch_or_char_index
        return self._encoding(batch_index, "char_to_token").char_to_token(
            char_index, sequence_index
        )

    def convert_to_tensors(self, tensor_type) -> BatchEncoding:
        converted = convert_to_tensors(dict(self), tensor_type)
        self.clear()
        self.update(converted)
        return self

    def to(self, device) -> BatchEncoding:
        """Move tensors to `device` (NumPy arrays and lists stay as they are)."""
        for key, value in list(self.items()):
            if hasattr(value, "to") and not isinstance(value, np.ndarray):
                dict.__setitem__(self, key, value.to(device))
        return self

    def __repr__(self) -> str:
        return f"BatchEncoding({dict.__repr__(self)})"
