"""The one place where ember.io turns tensors into NumPy arrays and back.

Everything else in `ember.io` works on NumPy arrays; only these two helpers know about
`ember.Tensor`. They import the tensor module lazily so that `import ember.io` stays cheap.
"""

from __future__ import annotations

import numpy as np


def tensor_class():
    """`ember.Tensor`, or None while the core is absent."""
    try:
        from ember.tensor import Tensor
    except ImportError:  # pragma: no cover - only before the core lands
        return None
    return Tensor


def is_tensor(value) -> bool:
    cls = tensor_class()
    return cls is not None and isinstance(value, cls)


def to_numpy(value, where: str) -> np.ndarray:
    """A host NumPy array holding `value` (an ember Tensor or a NumPy array)."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        return np.asarray(value.detach().numpy() if hasattr(value, "detach") else value.numpy())
    if isinstance(value, np.generic):
        return np.asarray(value)
    raise TypeError(f"{where}: expected an ember Tensor or a NumPy array, got "
                    f"{type(value).__name__}")


def from_numpy(array: np.ndarray, framework: str = "ember"):
    """Wrap a loaded array for the caller: an ember Tensor, or the array itself for 'np'."""
    if framework in ("np", "numpy"):
        return array
    if framework not in ("ember", "pt"):
        raise ValueError(f"framework: expected 'ember' or 'np', got {framework!r}")
    cls = tensor_class()
    if cls is None:  # pragma: no cover - only before the core lands
        return array
    import ember

    return ember.from_numpy(array)
