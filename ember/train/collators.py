"""Data collators: turn a list of examples (dicts) into one batch (a dict of ember tensors).

`default_data_collator` stacks fields that already have equal lengths; `DataCollatorWithPadding`
pads tokenized fields with the tokenizer first (the Trainer's default when it has a tokenizer).
Both rename `label` / `label_ids` to `labels`, the name HuggingFace-style models take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["DataCollatorWithPadding", "default_data_collator"]


def _as_array(values: list, key: str) -> np.ndarray:
    first = values[0]
    if hasattr(first, "numpy") and not isinstance(first, np.ndarray):
        values = [v.numpy() for v in values]
    try:
        array = np.asarray(values)
    except ValueError as error:
        raise ValueError(
            f"default_data_collator: the field {key!r} has values of different lengths across "
            f"the batch; pad them (DataCollatorWithPadding) or tokenize with padding"
        ) from error
    if array.dtype == object:
        raise ValueError(
            f"default_data_collator: the field {key!r} has values of different "
            f"lengths or types across the batch; pad them first"
        )
    if array.dtype.kind in "iu" or array.dtype.kind == "b" and key != "labels":
        array = array.astype(np.int64)
    elif array.dtype.kind == "f" and array.dtype != np.float32 and array.dtype != np.float64:
        array = array.astype(np.float32)
    return array


def _to_tensor(array: np.ndarray):
    from ember.tensor import tensor

    return tensor(array)


def default_data_collator(features: list, return_tensors: str = "pt") -> dict:
    """Stack a list of dicts into a dict of tensors; `label`/`label_ids` become `labels`.

    Strings and None values are left out (they cannot be tensors).

    Example:
        >>> batch = default_data_collator([{"x": [1, 2], "label": 0}, {"x": [3, 4], "label": 1}])
        >>> sorted(batch), tuple(batch["x"].shape)
        (['labels', 'x'], (2, 2))
    """
    if not features:
        raise ValueError("default_data_collator: got an empty batch")
    if not isinstance(features[0], Mapping):
        features = [vars(f) for f in features]
    first = features[0]
    batch = {}
    for label_key in ("label", "label_ids"):
        if label_key in first and first[label_key] is not None:
            values = [f[label_key] for f in features]
            if hasattr(values[0], "item") and getattr(values[0], "ndim", 0) == 0:
                values = [v.item() for v in values]
            array = np.asarray(values)
            if array.dtype.kind in "iub":
                array = array.astype(np.int64)
            elif array.dtype.kind == "f":
                array = array.astype(np.float32)
            batch["labels"] = _to_tensor(array)
            break
    for key, value in first.items():
        if key in ("label", "label_ids") or value is None or isinstance(value, str):
            continue
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            continue
        batch[key] = _to_tensor(_as_array([f[key] for f in features], key))
    return batch


@dataclass
class DataCollatorWithPadding:
    """Pad tokenized examples to the longest in the batch (or `max_length`) with `tokenizer.pad`.

    Example:
        >>> collator = DataCollatorWithPadding(tokenizer)  # doctest: +SKIP
        >>> batch = collator([{"input_ids": [101, 102], "label": 1},  # doctest: +SKIP
        ...                   {"input_ids": [101, 7592, 102], "label": 0}])
        >>> batch["input_ids"].shape  # doctest: +SKIP
        (2, 3)
    """

    tokenizer: object
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: list) -> dict:
        if not features:
            raise ValueError("DataCollatorWithPadding: got an empty batch")
        features = [dict(f) for f in features]
        labels = None
        for label_key in ("label", "label_ids", "labels"):
            if label_key in features[0]:
                labels = [f.pop(label_key) for f in features]
                break
        token_fields = [{k: v for k, v in f.items() if not isinstance(v, str)} for f in features]
        padded = self.tokenizer.pad(
            token_fields,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="np",
        )
        batch = {}
        for key, value in padded.items():
            array = np.asarray(value)
            if array.dtype.kind in "iub":
                array = array.astype(np.int64)
            batch[key] = _to_tensor(array)
        if labels is not None:
            batch["labels"] = default_data_collator([{"label": v} for v in labels])["labels"]
        return batch
