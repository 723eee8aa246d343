"""Collation: turning a list of samples into one batch (PyTorch's `default_collate` rules).

| sample element              | batch                                              |
|-----------------------------|----------------------------------------------------|
| Tensor / NumPy array        | Tensor stacked along a new first dim               |
| NumPy scalar                | Tensor of shape [batch]                            |
| float / int / bool          | float64 / int64 / bool Tensor                      |
| str / bytes                 | list, unchanged                                    |
| Mapping                     | same mapping type, each key collated               |
| namedtuple                  | same namedtuple, each field collated               |
| tuple                       | list of collated fields (PyTorch's quirk, kept)    |
| other Sequence              | same type when it can be built, else list          |

Note [Collating into shared memory]: inside a DataLoader worker, `stack` allocates its output
through the worker's shared-memory arena (`set_array_allocator`), so a batch is written once,
straight into the segment that the main process maps; no extra copy on the way back.
"""

from __future__ import annotations

import collections.abc
import copy
import re
from collections.abc import Callable

import numpy as np

from ember.data._arrays import is_tensor, tensor_type, to_numpy, to_tensor

__all__ = ["collate", "default_collate", "default_collate_fn_map", "default_convert"]

_STRING_OR_OBJECT = re.compile(r"[SaUO]")
_allocate: Callable = np.empty

_ERROR = (
    "default_collate: batch must contain tensors, NumPy arrays, numbers, dicts or lists; found {}"
)


def set_array_allocator(allocator: Callable | None) -> None:
    """Route the output buffers of collated arrays (Note [Collating into shared memory])."""
    global _allocate
    _allocate = np.empty if allocator is None else allocator


def _stack(arrays: list) -> np.ndarray:
    first = arrays[0]
    for position, array in enumerate(arrays):
        if array.shape != first.shape:
            raise RuntimeError(
                f"default_collate: stack expects each array to be equal size, but got "
                f"{list(first.shape)} at entry 0 and {list(array.shape)} at entry {position}"
            )
    dtype = np.result_type(*arrays) if len({a.dtype for a in arrays}) > 1 else first.dtype
    out = _allocate((len(arrays),) + first.shape, dtype)
    np.stack(arrays, out=out)
    return out


def collate_tensor_fn(batch, *, collate_fn_map=None):
    return to_tensor(_stack([to_numpy(t) for t in batch]))


def collate_numpy_array_fn(batch, *, collate_fn_map=None):
    if _STRING_OR_OBJECT.search(batch[0].dtype.str) is not None:
        raise TypeError(_ERROR.format(batch[0].dtype))
    return to_tensor(_stack(batch))


def collate_numpy_scalar_fn(batch, *, collate_fn_map=None):
    return to_tensor(np.asarray(batch))


def collate_float_fn(batch, *, collate_fn_map=None):
    return to_tensor(np.asarray(batch, dtype=np.float64))


def collate_int_fn(batch, *, collate_fn_map=None):
    if all(type(value) is bool for value in batch):
        return to_tensor(np.asarray(batch, dtype=np.bool_))
    return to_tensor(np.asarray(batch, dtype=np.int64))


def collate_str_fn(batch, *, collate_fn_map=None):
    return batch


default_collate_fn_map: dict = {
    np.ndarray: collate_numpy_array_fn,
    (np.bool_, np.number, np.object_): collate_numpy_scalar_fn,
    float: collate_float_fn,
    int: collate_int_fn,
    str: collate_str_fn,
    bytes: collate_str_fn,
}


def collate(batch, *, collate_fn_map: dict | None = None):
    """Collate `batch` with per-type functions from `collate_fn_map` (exact type first, then
    the first isinstance match in insertion order), recursing into containers."""
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if is_tensor(elem):
            return collate_tensor_fn(batch)
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type in collate_fn_map:
            if isinstance(elem, collate_type):
                return collate_fn_map[collate_type](batch, collate_fn_map=collate_fn_map)
    if isinstance(elem, collections.abc.Mapping):
        collated = {
            key: collate([d[key] for d in batch], collate_fn_map=collate_fn_map) for key in elem
        }
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)
                clone.update(collated)
                return clone
            return elem_type(collated)
        except TypeError:
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(
            *(collate(samples, collate_fn_map=collate_fn_map) for samples in zip(*batch))
        )
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError(
                "default_collate: each element in list of batch should be of equal size"
            )
        fields = [collate(samples, collate_fn_map=collate_fn_map) for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return fields
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for position, field in enumerate(fields):
                    clone[position] = field
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    raise TypeError(_ERROR.format(elem_type))


def default_collate(batch):
    """Stack a list of samples into a batch, recursing into tuples, lists and dicts.

    Example:
        >>> import numpy as np
        >>> batch = default_collate([(np.zeros(2), 0), (np.ones(2), 1)])
        >>> [tuple(b.shape) for b in batch]
        [(2, 2), (2,)]
    """
    return collate(batch, collate_fn_map=default_collate_fn_map)


def default_convert(data):
    """With automatic batching off: NumPy arrays become Tensors, containers are walked."""
    if is_tensor(data):
        return data
    if isinstance(data, np.ndarray):
        if _STRING_OR_OBJECT.search(data.dtype.str) is not None:
            return data
        return to_tensor(data)
    if isinstance(data, (np.bool_, np.number)):
        return to_tensor(np.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        converted = {key: default_convert(data[key]) for key in data}
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update(converted)
                return clone
            return type(data)(converted)
        except TypeError:
            return converted
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        converted = [default_convert(d) for d in data]
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    return data


_ = tensor_type  # re-exported for collate functions registered by users
