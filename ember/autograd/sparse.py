"""Row-sparse gradients: what `nn.Embedding(sparse=True)` gives its weight, as torch's sparse
COO gradient does.

Note [Sparse gradients]: a `SparseRowTensor` is torch's sparse COO layout with one sparse dim:
`indices` (1, nnz) int64 row numbers and `values` (nnz, *row shape), possibly repeated rows
(uncoalesced, as torch's embedding backward leaves them; `coalesce()` sums repeats and sorts).
It is a gradient container, not a general tensor: it answers what torch code asks of a sparse
`.grad` (`is_sparse`, `_indices()`, `_values()`, `indices()`/`values()` once coalesced,
`coalesce()`, `to_dense()`, `_nnz()`, `sparse_dim()`, `dense_dim()`, `shape`, `dtype`, in-place
`mul_`/`div_`/`zero_` for gradient clipping and `zero_grad(set_to_none=False)`).
The engine (ember/autograd/engine.py) accumulates sparse into sparse by concatenating, sparse
into dense by adding the rows, and turns a sparse gradient dense when it flows on into a node
rather than into a leaf. Optimizers read the layout (`is_sparse`): `SparseAdam` takes only
sparse gradients, SGD and Adagrad take them as their dense equivalent (the same update), and
the others refuse them with torch's RuntimeError.
"""

from __future__ import annotations

import numpy as np

from ember._util.errors import EmberError

__all__ = ["SparseRowTensor", "add_gradients"]


class SparseError(EmberError, RuntimeError):
    """A sparse gradient met an operation that needs it coalesced or dense (torch:
    RuntimeError)."""


class SparseRowTensor:
    """A gradient sparse in its first dim (Note [Sparse gradients]).

    Example:
        >>> import ember
        >>> from ember.autograd.sparse import SparseRowTensor
        >>> g = SparseRowTensor(ember.tensor([[2, 0, 2]]), ember.ones(3, 2), (4, 2))
        >>> g.coalesce().indices().tolist(), g.coalesce().values().tolist()
        ([[0, 2]], [[1.0, 1.0], [2.0, 2.0]])
        >>> g.to_dense().tolist()
        [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]
    """

    is_sparse = True
    layout = "sparse_coo"
    requires_grad = False
    grad_fn = None

    def __init__(self, indices, values, size, *, coalesced: bool = False):
        size = tuple(int(s) for s in size)
        if tuple(indices.shape) != (1, values.shape[0]) or tuple(values.shape[1:]) != size[1:]:
            raise SparseError(
                f"SparseRowTensor: indices {tuple(indices.shape)} and values "
                f"{tuple(values.shape)} do not fit size {size} (expected (1, nnz) and "
                f"(nnz, {', '.join(map(str, size[1:]))}))"
            )
        self._idx = indices.detach()
        self._vals = values.detach()
        self._size = size
        self._coalesced = coalesced

    # --- what torch code reads ----------------------------------------------------------------
    @property
    def shape(self):
        from ember.tensor import Size

        return Size(self._size)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self._size[dim]

    @property
    def dtype(self):
        return self._vals.dtype

    @property
    def device(self):
        return self._vals.device

    @property
    def ndim(self) -> int:
        return len(self._size)

    def dim(self) -> int:
        return len(self._size)

    def numel(self) -> int:
        return int(np.prod(self._size))

    def sparse_dim(self) -> int:
        return 1

    def dense_dim(self) -> int:
        return len(self._size) - 1

    def _nnz(self) -> int:
        return int(self._vals.shape[0])

    def _indices(self):
        return self._idx

    def _values(self):
        return self._vals

    def is_coalesced(self) -> bool:
        return self._coalesced

    def indices(self):
        self._need_coalesced("indices")
        return self._idx

    def values(self):
        self._need_coalesced("values")
        return self._vals

    def _need_coalesced(self, what):
        if not self._coalesced:
            raise SparseError(
                f"SparseRowTensor.{what}(): cannot get {what} of an uncoalesced sparse tensor; "
                "call .coalesce() first (or ._" + what + "() for the raw ones)"
            )

    # --- conversions ----------------------------------------------------------------------------
    def coalesce(self) -> SparseRowTensor:
        """Each row once, in increasing order, its values summed."""
        if self._coalesced:
            return self
        rows = self._idx.numpy().reshape(-1)
        unique, inverse = np.unique(rows, return_inverse=True)
        values = np.zeros((len(unique),) + self._size[1:], dtype=self._vals.numpy().dtype)
        np.add.at(values, inverse, self._vals.numpy())
        return SparseRowTensor(
            self._idx.new_tensor(unique.reshape(1, -1)),
            self._vals.new_tensor(values),
            self._size,
            coalesced=True,
        )

    def to_dense(self):
        """The dense tensor of `size`: the rows' values summed into zeros."""
        from ember.ops.shape import INDEX_ADD
        from ember.tensor import apply

        zeros = self._vals.new_zeros(self._size)
        return apply(INDEX_ADD, zeros, self._vals, self._idx.reshape(-1), spec=(("t",),))

    def detach(self) -> SparseRowTensor:
        return self

    def clone(self) -> SparseRowTensor:
        return SparseRowTensor(
            self._idx.clone(), self._vals.clone(), self._size, coalesced=self._coalesced
        )

    # --- in place, for clipping and zero_grad ----------------------------------------------------
    def mul_(self, other) -> SparseRowTensor:
        self._vals.mul_(other)
        return self

    def div_(self, other) -> SparseRowTensor:
        self._vals.div_(other)
        return self

    def zero_(self) -> SparseRowTensor:
        self._idx = self._idx.new_zeros((1, 0))
        self._vals = self._vals.new_zeros((0,) + self._size[1:])
        self._coalesced = True
        return self

    def __add__(self, other):
        return add_gradients(self, other)

    __radd__ = __add__

    def __repr__(self) -> str:
        return (
            f"SparseRowTensor(indices={self._idx.tolist()},\n       values={self._vals!r},\n"
            f"       size={self._size}, nnz={self._nnz()}, layout=sparse_coo)"
        )


def add_gradients(a, b):
    """a + b for gradients either of which may be sparse (Note [Sparse gradients]): sparse +
    sparse concatenates the rows; sparse + dense is dense."""
    a_sparse, b_sparse = getattr(a, "is_sparse", False), getattr(b, "is_sparse", False)
    if a_sparse and b_sparse:
        if a._size != b._size:
            raise SparseError(
                f"adding sparse gradients of sizes {a._size} and {b._size}: they must match"
            )
        from ember.ops.shape import cat

        return SparseRowTensor(cat([a._idx, b._idx], 1), cat([a._vals, b._vals], 0), a._size)
    if a_sparse:
        a, b = b, a
    if b_sparse:
        return a + b.to_dense()
    return a + b
