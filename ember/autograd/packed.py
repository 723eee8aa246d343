"""Eager inference through packed weights: the Tensor side of Note [Packed weights].

`linear(x, weight, bias)` (installed into ember.ops.linalg as its inference path) answers an
eager product that records no backward (grad mode off, or nothing requires grad) by a float32
weight through that weight's MKL pack for its row count (ember/backend/mkl_packed.py), and
returns None wherever that does not apply, so the caller dispatches the LINEAR op as always.

Note [Pack validity]: a pack is kept per weight Tensor (`_entries`, by id, dropped with the
Tensor) and used only while all of these hold, else it is rebuilt (or refused):
- the Tensor still holds the same array (`w.data = ...`, `w.array = ...`, `module.to(...)`,
  `load_state_dict(assign=True)` rebind it);
- its version counter is the same list at the same count: in-place ops, `copy_`,
  `load_state_dict`, the optimizers, `nn.init`, gradient clipping and the collectives bump it,
  and its views and `detach()` share it;
- the pack generation has not moved (`mkl_packed.generation()`): compiled graphs that update
  captured parameters in place and TF1 variable writes bump no counter, so they move it;
  handing the weight's memory to user code (`.numpy()`, `np.asarray`) moves it too, and such
  memory is never packed again while it lives (`mkl_packed.note_exposed`), as writes through
  it reach no counter.
Graph tracing never takes this path (staging backends see the LINEAR op as always).
"""

from __future__ import annotations

import weakref

import numpy as np

from ember.autograd.grad_mode import _state
from ember.backend import _staging, blas, mkl_packed
from ember.ops import linalg as _linalg

_NDARRAY = np.ndarray
_FLOAT32 = np.dtype(np.float32)
_MIN_ROWS, _MIN_WORK = blas.MKL_MIN_ROWS, blas.MKL_MIN_WORK  # Note [Small GEMMs]
# (most rows, rows the pack is made for) of the two buckets (Note [Packed weights])
(_SMALL_MOST, _SMALL_ROWS), (_LARGE_MOST, _LARGE_ROWS) = mkl_packed._BUCKETS
_MANY_ROWS = mkl_packed.MANY_ROWS


class _Entry:
    """The packs of one weight Tensor and what they were made from (Note [Pack validity])."""

    __slots__ = ("holder", "array", "version", "count", "generation", "packs")

    def __init__(self, holder, array, version, generation):
        self.holder = holder  # a weak reference to the weight, whose callback drops the entry
        self.array = array
        self.version = version
        self.count = version[0]
        self.generation = generation
        # rows the pack is made for -> PackedMatrix or _REFUSED
        self.packs: dict = {}


_entries: dict = {}  # id(weight Tensor) -> _Entry
_REFUSED = "refused"  # a pack that may not be made (exposed memory, the memory limit)


def _forget(key):
    return lambda _: _entries.pop(key, None)


def _pack_for(weight, wd, rows, parts):
    """The weight's valid pack for products of about `rows` rows, made if needed, or None."""
    key = id(weight)
    entry = _entries.get(key)
    version = weight._version
    generation = mkl_packed._generation[0]
    if (
        entry is None
        or entry.array is not wd
        or entry.version is not version
        or entry.count != version[0]
        or entry.generation != generation
    ):
        if version is None:  # no view or detach() shares a counter yet: start one
            version = weight._version = [0, None]
        holder = weakref.ref(weight, _forget(key)) if entry is None else entry.holder
        _entries[key] = entry = _Entry(holder, wd, version, generation)
    pack = entry.packs.get(rows)
    if pack is None or (pack is not _REFUSED and pack.parts != parts):
        pack = mkl_packed.PackedMatrix.create(wd, rows, parts)
        entry.packs[rows] = _REFUSED if pack is None else pack
    return None if pack is _REFUSED else pack


def linear(x, weight, bias=None):
    """x @ weight.T + bias through the weight's MKL pack, or None where that does not apply
    (Note [Packed weights]). The tests run cheapest first: every eager product asks here,
    most tiny ones are answered None within ~0.4 us (Note [Eager inference overhead])."""
    if _staging:
        return None
    try:
        xd, wd = x._data, weight._data
        bd = None if bias is None else bias._data
        if _state.enabled and (
            x._requires_grad or weight._requires_grad or (bias is not None and bias._requires_grad)
        ):
            return None
    except AttributeError:  # not Tensors
        return None
    if type(wd) is not _NDARRAY or type(xd) is not _NDARRAY:
        return None
    wshape, shape = wd.shape, xd.shape
    if len(wshape) != 2 or len(shape) < 2:
        return None
    n, k = wshape
    m = xd.size // k if k else 0
    if (
        m < _MIN_ROWS
        or m * n * (k if k > 16 else 16) < _MIN_WORK
        or shape[-1] != k
        or xd.dtype is not _FLOAT32
        or wd.dtype is not _FLOAT32
    ):
        return None
    if bd is not None and (
        type(bd) is not _NDARRAY or bd.dtype is not _FLOAT32 or bd.shape != (n,)
    ):
        return None
    if not (mkl_packed._functions or mkl_packed.available()):
        return None
    if m <= _SMALL_MOST:
        pack = _pack_for(weight, wd, _SMALL_ROWS, mkl_packed.split_parts(_SMALL_MOST, k, n))
    elif m <= _LARGE_MOST:
        pack = _pack_for(weight, wd, _LARGE_ROWS, mkl_packed.split_parts(_LARGE_MOST, k, n))
    else:  # one pack that the threads share (Note [Shared packs])
        pack = _pack_for(weight, wd, _MANY_ROWS, 1)
    if pack is None:
        return None
    x2 = xd.reshape(m, k)
    if not x2.flags.c_contiguous and blas._layout(x2) is None:  # the flag: ~0.3 us less
        x2 = np.ascontiguousarray(x2)
    out = np.empty((m, n), _FLOAT32)
    pack.product(x2, out, bias=bd)
    return _wrap(out.reshape(shape[:-1] + (n,)))


# Note [Joined projections]: the query, key and value projections of a self-attention read
# the same input, so in inference they can run as one product by their weights joined row
# after row ([Wq; Wk; Wv], (3 * out, in)) and their biases joined alike: one GEMM (at few
# rows one MKL pack, Note [Packed weights]) instead of three, whose (rows, 3 * out) result
# the attention reads as three strided views (encoder_heads.self_attention). The model keeps
# its three Parameters (state_dict keys, loading, optimizers unchanged); `joined_rows` keeps
# the joined copy per tuple of parts and rebuilds it whenever a part may have changed, by the
# rules of Note [Pack validity]: a part holding another array, a version counter replaced or
# moved (optimizers, `load_state_dict`, in-place ops, `nn.init`), or the pack generation
# moved (compiled graphs and TF1 writes; `.numpy()` of a part's memory, registered through
# `mkl_packed.note_derived`). A part whose memory was handed to user code is never joined.
# Products that record a backward never take the joined copy: gradients reach the three
# Parameters through the three products as before. Memory: the joined copy holds the parts'
# bytes once more while they live (MiniLM: 6 x 1.8 MB).
class _Joined:
    """The joined copy of some parts and what it was made from (Note [Joined projections])."""

    __slots__ = ("arrays", "versions", "counts", "generation", "tensor", "holders", "__weakref__")

    def __init__(self, parts, arrays, generation, tensor, holders):
        self.arrays = arrays
        self.versions = tuple(p._version for p in parts)
        self.counts = tuple(v[0] for v in self.versions)
        self.generation = generation
        self.tensor = tensor
        self.holders = holders  # weak references whose callbacks drop the entry


_joined: dict = {}  # tuple of the parts' ids -> _Joined


def _valid(entry, parts) -> bool:
    if entry.generation != mkl_packed._generation[0]:
        return False
    for part, array, version, count in zip(parts, entry.arrays, entry.versions, entry.counts):
        if part._data is not array or part._version is not version or version[0] != count:
            return False
    return True


def joined_rows(parts):
    """The arrays of `parts` (Tensors of one NumPy float dtype, equal but for dim 0) joined
    along dim 0 into one Tensor, cached while every part stays unchanged, or None where that
    does not apply: graph tracing, a part recording gradients, other arrays or dtypes, memory
    handed to user code (Note [Joined projections])."""
    if _staging:
        return None
    key = tuple(map(id, parts))
    entry = _joined.get(key)
    if entry is not None and _valid(entry, parts):
        # the parts are the cached ones, unchanged (so Tensors); only the grad mode may differ
        if _state.enabled and any(p._requires_grad for p in parts):
            return None
        return entry.tensor
    try:
        if _state.enabled and any(p._requires_grad for p in parts):
            return None  # a constant copy would cut the parts off the backward
        arrays = tuple(p._data for p in parts)
    except AttributeError:  # not Tensors
        return None
    first = arrays[0]
    if any(
        type(a) is not _NDARRAY
        or a.dtype is not first.dtype
        or a.dtype.kind != "f"
        or a.ndim == 0
        or a.shape[1:] != first.shape[1:]
        or mkl_packed.is_exposed(a)
        for a in arrays
    ):
        return None
    for p in parts:
        if p._version is None:  # no view or detach() shares a counter yet: start one
            p._version = [0, None]
    drop = lambda _, key=key: _joined.pop(key, None)  # noqa: E731
    holders = tuple(weakref.ref(p, drop) for p in parts)
    joined = _Joined(
        parts, arrays, mkl_packed._generation[0], _wrap(np.concatenate(arrays)), holders
    )
    for a in arrays:
        mkl_packed.note_derived(a, joined)
    _joined[key] = joined
    return joined.tensor


from ember.tensor import _wrap  # noqa: E402  (tensor.py imports this module's package)

_linalg.set_inference_linear(linear)
