"""`Parameter`: a Tensor that a Module registers as trainable (requires_grad=True by default).

A Parameter shares memory with the tensor it is made from, as in PyTorch, so
`nn.Parameter(t)` never copies.
"""

from __future__ import annotations

from ember.tensor import Tensor, empty


class Parameter(Tensor):
    """A Tensor that is a module parameter: assigning one to a Module attribute registers it.

    Example:
        >>> import ember, ember.nn as nn
        >>> w = nn.Parameter(ember.zeros(2, 3))
        >>> w.requires_grad, tuple(w.shape)
        (True, (2, 3))
    """

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a Tensor, got {type(data).__name__}")
        p = object.__new__(cls)
        p.array = data.array
        p._requires_grad = False
        p.grad = None
        p._node = None
        p._version = data._version
        p._view = None
        p._hooks = None
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        pass  # everything happens in __new__ (Tensor.__init__ would copy)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        import numpy as np

        return (_rebuild_parameter, (np.asarray(self).copy(), self._requires_grad))


def _rebuild_parameter(array, requires_grad):

    return Parameter(Tensor.from_array(array), requires_grad)


class Buffer(Tensor):
    """Marker type: assigning `Buffer(t)` to a Module attribute registers a (persistent) buffer."""

    def __new__(cls, data: Tensor, persistent: bool = True):
        b = object.__new__(cls)
        b.array = data.array
        b._requires_grad = False
        b.grad = None
        b._node = None
        b._version = data._version
        b._view = None
        b._hooks = None
        b.persistent = persistent
        return b

    def __init__(self, data: Tensor, persistent: bool = True):
        pass
