"""The one bridge between the data layer's NumPy arrays and ember Tensors.

Note [Arrays in the data layer]: workers, collation and pipelines move NumPy arrays (they
pickle, stack and share memory cheaply); a value becomes an ember Tensor only where a user
receives it (a collated batch, a pipeline element, `ToTensor`). `to_tensor` wraps without a
copy (`ember.from_numpy` semantics), `to_numpy` unwraps without a copy, so crossing the bridge
costs a Python object, never a buffer copy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_tensor", "tensor_type", "to_numpy", "to_tensor"]

_TENSOR_TYPE = None
_FROM_NUMPY = None


def tensor_type():
    """ember's Tensor class, or None while the core is not importable."""
    global _TENSOR_TYPE, _FROM_NUMPY
    if _TENSOR_TYPE is None:
        try:
            from ember.tensor import Tensor, from_numpy
        except ImportError:  # the core has not landed yet
            return None
        _TENSOR_TYPE, _FROM_NUMPY = Tensor, from_numpy
    return _TENSOR_TYPE


def is_tensor(value) -> bool:
    cls = tensor_type()
    return cls is not None and isinstance(value, cls)


def to_tensor(array):
    """Wrap a NumPy array (or scalar) as an ember Tensor sharing its memory."""
    if type(array) is np.ndarray and _FROM_NUMPY is not None:  # the per-element fast path
        return _FROM_NUMPY(array)
    cls = tensor_type()
    if cls is None:
        return np.asarray(array)
    if isinstance(array, cls):
        return array
    return _FROM_NUMPY(np.asarray(array))


def to_numpy(value):
    """The NumPy array behind a Tensor (no copy); other values go through `np.asarray`."""
    if is_tensor(value):
        return value.numpy()
    return np.asarray(value)
