"""The one place where ember.io turns tensors into NumPy arrays and back.

Everything else in `ember.io` works on NumPy arrays; only these two helpers know about
`ember.Tensor`. They import the tensor module lazily so that `import ember.io` stays cheap.
"""

from __future__ import annotations

import numpy as np


def tensor_class():
    """`ember.Tensor` (imported on first use)."""
    from ember.tensor import Tensor

    return Tensor


def is_tensor(value) -> bool:
    return isinstance(value, tensor_class())


def to_numpy(value, where: str) -> np.ndarray:
    """A host NumPy array holding `value` (an ember Tensor or a NumPy array)."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        # detach: saving never needs the graph; force: copy a device tensor to the host
        return np.asarray(value.detach().numpy(force=True))
    if isinstance(value, np.generic):
        return np.asarray(value)
    raise TypeError(
        f"{where}: expected an ember Tensor or a NumPy array, got {type(value).__name__}"
    )


def from_numpy(array: np.ndarray, framework: str = "ember"):
    """Wrap a loaded array for the caller: an ember Tensor, or the array itself for 'np'."""
    if framework in ("np", "numpy"):
        return array
    if framework not in ("ember", "pt"):
        raise ValueError(f"framework: expected 'ember' or 'np', got {framework!r}")
    from ember.tensor import from_numpy as tensor_from_numpy

    return tensor_from_numpy(array)
