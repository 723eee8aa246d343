"""Movement and indexing primitives, and the composites built on them.

Primitives: reshape, permute, expand, cat, flip, roll, pad (constant), tril, triu, copy,
getitem, index_put, index_add, gather, scatter, scatter_add, argsort, nonzero, diagonal,
view_scatter.
Composites: transpose, squeeze, unsqueeze, flatten, stack, split, chunk, narrow, index_select,
masked_fill, one_hot, embedding, repeat, movedim, sort, topk, pad in reflect/replicate mode.

Note [Index specs]: an index such as `x[a, 1:3, None]` becomes a hashable spec of items
("i", int) | ("s", start, stop, step) | ("n",) for None | ("e",) for Ellipsis | ("t",) for a
tensor index, and the tensor indices become extra inputs of the op. So indexing traces into
graphs like any other op, and the spec keys caches.
"""

from __future__ import annotations

import builtins
import math
import warnings

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import (
    DTypeError,
    IndexOutOfRange,
    IndexValueOutOfRange,
    ShapeError,
    ShapeIndexError,
    ValueOutOfRange,
    at_user_line,
)
from ember.ops.registry import (
    apply,
    defop,
    int64_dtype,
    onnx_lowering,
    public,
    same_dtype,
    same_shape,
)
from ember.backend import parallel as _parallel
from ember.ops.elementwise import FLOOR_DIVIDE, LOGICAL_AND, unbroadcast, where

# --- reshape / permute / expand -----------------------------------------------------------------
# strided inputs from this size are copied on the pool (`parallel.copy_c_order`)
_PARALLEL_COPY_FROM = _parallel.threshold()


def _resolve_shape(shape, numel, op="reshape", source=None):
    shape = tuple(map(int, shape))
    if -1 not in shape:
        if (not shape or builtins.min(shape) >= 0) and math.prod(shape) == numel:
            return shape  # the common case, checked in C (the checks below give the errors)
    elif shape.count(-1) == 1 and builtins.min(shape) == -1:
        known = -math.prod(shape)  # the other dims' product
        if known > 0 and numel % known == 0:  # one -1, also checked in C
            i = shape.index(-1)
            return shape[:i] + (numel // known,) + shape[i + 1 :]
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise ShapeError(f"{op}: only one dimension can be -1, got {shape}")
    if builtins.any(s < -1 for s in shape):
        raise ShapeError(f"{op}: invalid shape {shape}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if unknown:
        if known == 0 or numel % known:
            raise ShapeError(
                f"{op}: shape {shape} is invalid for input of shape {source} ({numel} elements)"
            )
        shape = shape[: unknown[0]] + (numel // known,) + shape[unknown[0] + 1 :]
    elif known != numel:
        raise ShapeError(
            f"{op}: shape {shape} is invalid for input of shape {source} ({numel} elements)"
        )
    return shape


RESHAPE = defop(
    "reshape",
    lambda xp, x, shape: xp.reshape(x, shape),
    lambda g, y, x, shape: (g.reshape(tuple(x.shape)),),
    shape=lambda s, shape: shape,
    dtype=same_dtype,
    save_inputs=False,
    view=True,
)


def _inverse_permutation(dims):
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i
    return tuple(inverse)


PERMUTE = defop(
    "permute",
    lambda xp, x, dims: xp.transpose(x, dims),
    lambda g, y, x, dims: (g.permute(_inverse_permutation(dims)),),
    shape=lambda s, dims: tuple(s[d] for d in dims),
    dtype=same_dtype,
    save_inputs=False,
    view=True,
)


def _expand_shape(s, shape):
    if len(shape) < len(s):
        raise ShapeError(f"expand: target {shape} has fewer dims than the input {tuple(s)}")
    for n, t in zip(reversed(s), reversed(shape)):
        if n != t and n != 1:
            raise ShapeError(
                f"expand: cannot expand {tuple(s)} to {shape}: a non-singleton "
                f"dimension {n} would become {t}"
            )
    return tuple(shape)


EXPAND = defop(
    "expand",
    lambda xp, x, shape: xp.broadcast_to(x, shape),
    lambda g, y, x, shape: (unbroadcast(g, x),),
    shape=_expand_shape,
    dtype=same_dtype,
    save_inputs=False,
    view=True,
)


# ONNX lowerings of the movement ops (Note [ONNX lowerings] in ember.ops.registry)
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


@onnx_lowering("reshape")
def _reshape_onnx(b, x, shape):
    return b.op("Reshape", x, b.ints(lambda attrs: attrs["shape"], reshape_of=0))


@onnx_lowering("permute")
def _permute_onnx(b, x, dims):
    return b.op("Transpose", x, perm=list(dims))


@onnx_lowering("expand")
def _expand_onnx(b, x, shape):
    return b.op("Expand", x, b.ints(lambda attrs: attrs["shape"], expand_of=0))


@RESHAPE.def_kernel("numpy")
def _reshape_numpy(xp, x, shape):
    if x.flags.c_contiguous or x.size < _PARALLEL_COPY_FROM:
        return x.reshape(shape)  # np.reshape without its Python wrappers
    try:
        return x.reshape(shape, copy=False)  # a view where the strides allow one
    except ValueError:  # a copy (a Transformer's head merge): on the pool where it pays
        return _parallel.copy_c_order(x).reshape(shape)


@EXPAND.def_kernel("numpy")
def _expand_numpy(xp, x, shape):
    """broadcast_to's read-only view, made directly on a C-contiguous input's buffer (a third
    of broadcast_to's Python-level cost: sum's VJP expands every full reduction's gradient)."""
    lead = len(shape) - x.ndim
    if lead < 0 or not x.size or 0 in shape or not x.flags.c_contiguous:
        return xp.broadcast_to(x, shape)
    strides = [0] * lead
    for n, t, stride in zip(x.shape, shape[lead:], x.strides):
        if n == t:
            strides.append(stride)
        elif n == 1:
            strides.append(0)
        else:
            return xp.broadcast_to(x, shape)  # its error names the shapes
    out = xp.ndarray(shape, x.dtype, x, 0, tuple(strides))
    out.flags.writeable = False
    return out


COPY = defop(
    "copy",
    lambda xp, x: xp.array(x, copy=True, order="C"),
    lambda g, y, x: (g,),
    shape=lambda s: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
    doc="A contiguous copy (clone, contiguous).",
)


@onnx_lowering("copy")
def _copy_onnx(b, x):
    return b.op("Identity", x)


CONTIGUOUS = defop(
    "contiguous",
    lambda xp, x: xp.asarray(x, order="C"),
    lambda g, y, x: (g,),
    shape=lambda s: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
    doc="x in C order: a copy of a strided array, the array itself when it is C-contiguous "
    "already (Note [Contiguous in graphs] in ember/tensor.py).",
)


@onnx_lowering("contiguous")
def _contiguous_onnx(b, x):
    return b.op("Identity", x)


@CONTIGUOUS.def_kernel("numpy")
def _contiguous_numpy(xp, x):
    if x.flags.c_contiguous:
        return x
    return _parallel.copy_c_order(x)  # in chunks on the pool where it pays


# --- cat / flip / roll / pad / tril / triu -------------------------------------------------------
def _cat_shape(*shapes, dim):
    first = shapes[0]
    total = 0
    for s in shapes:
        if len(s) != len(first) or builtins.any(
            a != b for i, (a, b) in enumerate(zip(s, first)) if i != dim
        ):
            raise ShapeError(
                f"cat: tensors must have the same shape except in dim {dim}, got "
                + ", ".join(str(tuple(x)) for x in shapes)
            )
        total += s[dim]
    return first[:dim] + (total,) + first[dim + 1 :]


def _cat_vjp(g, y, *inputs, dim):
    grads, start = [], 0
    for x in inputs:
        n = x.shape[dim]
        grads.append(narrow(g, dim, start, n))
        start += n
    return tuple(grads)


CAT = defop(
    "cat",
    lambda xp, *xs, dim: xp.concatenate(xs, axis=dim),
    _cat_vjp,
    shape=_cat_shape,
    dtype=lambda *d, dim: d[0],
    promote="common",
    save_inputs=False,
)
FLIP = defop(
    "flip",
    lambda xp, x, dims: xp.flip(x, dims),
    lambda g, y, x, dims: (flip(g, dims),),
    shape=lambda s, dims: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
)
ROLL = defop(
    "roll",
    lambda xp, x, shifts, dims: xp.roll(x, shifts, dims),
    lambda g, y, x, shifts, dims: (apply(ROLL, g, shifts=tuple(-s for s in shifts), dims=dims),),
    shape=lambda s, shifts, dims: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
)


@onnx_lowering("cat")
def _cat_onnx(b, *xs, dim):
    return b.op("Concat", *xs, axis=dim)


@onnx_lowering("flip")
def _flip_onnx(b, x, dims):
    n = len(dims)
    return b.op(
        "Slice", x, b.ints([-1] * n), b.ints([_INT64_MIN] * n), b.ints(dims), b.ints([-1] * n)
    )


@onnx_lowering("roll")
def _roll_onnx(b, x, shifts, dims):
    if not dims:  # roll the flattened tensor, then restore the shape
        flat = b.op("Reshape", x, b.ints([-1]))
        rolled = _roll_onnx(b, flat, shifts, (0,))
        return b.op("Reshape", rolled, b.op("Shape", x))
    for shift, dim in zip(shifts, dims):
        if shift:  # out = cat(x[-shift:], x[:-shift]) along dim (|shift| < size)
            tail = b.op("Slice", x, b.ints([-shift]), b.ints([_INT64_MAX]), b.ints([dim]))
            head = b.op("Slice", x, b.ints([0]), b.ints([-shift]), b.ints([dim]))
            x = b.op("Concat", tail, head, axis=dim)
    return b.op("Identity", x)


def _pad_forward(xp, x, pad, value):
    crop = tuple(
        slice(-b if b < 0 else 0, (n + a) if a < 0 else n) for (b, a), n in zip(pad, x.shape)
    )
    x = x[crop]
    widths = tuple((builtins.max(b, 0), builtins.max(a, 0)) for b, a in pad)
    return xp.pad(x, widths, mode="constant", constant_values=value)


def _pad_shape(s, pad, value):
    out = tuple(n + b + a for n, (b, a) in zip(s, pad))
    if builtins.any(n < 0 for n in out):
        raise ShapeError(f"pad: padding {pad} makes a negative size from input {tuple(s)}")
    return out


PAD = defop(
    "pad",
    _pad_forward,
    lambda g, y, x, pad, value: (apply(PAD, g, pad=tuple((-b, -a) for b, a in pad), value=0),),
    shape=_pad_shape,
    dtype=same_dtype,
    save_inputs=False,
)


@onnx_lowering("pad")
def _pad_onnx(b, x, pad, value):
    pads = [before for before, _ in pad] + [after for _, after in pad]
    return b.op("Pad", x, b.ints(pads), b.const(value, b.out.dtype))


TRIL = defop(
    "tril",
    lambda xp, x, k: xp.tril(x, k),
    lambda g, y, x, k: (tril(g, k),),
    shape=lambda s, k: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
)
TRIU = defop(
    "triu",
    lambda xp, x, k: xp.triu(x, k),
    lambda g, y, x, k: (triu(g, k),),
    shape=lambda s, k: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
)


@onnx_lowering("tril")
def _tril_onnx(b, x, k):
    return b.op("Trilu", x, b.const(k, "int64"), upper=0)


@onnx_lowering("triu")
def _triu_onnx(b, x, k):
    return b.op("Trilu", x, b.const(k, "int64"), upper=1)


# --- indexing ---------------------------------------------------------------------------------
def _decode(spec, arrays):
    it = iter(arrays)
    out = []
    for item in spec:
        kind = item[0]
        if kind == "s":
            out.append(slice(item[1], item[2], item[3]))
        elif kind == "i":
            out.append(item[1])
        elif kind == "t":
            out.append(next(it))
        elif kind == "n":
            out.append(None)
        else:
            out.append(Ellipsis)
    return tuple(out)


def _is_advanced(spec):
    return builtins.any(item[0] == "t" for item in spec)


# Note [Advanced index placement]: NumPy and torch place the dims of advanced (tensor) indices
# alike, with one difference: NumPy counts an integer as an advanced index when a tensor index
# is present, torch applies integers first as basic indexing. Where the tensor indices are
# adjacent once integers are dropped but an integer sits apart from them (`x[0, :, [1, 2]]`),
# NumPy moves the indexed dims first ((2, 3) from a (2, 3, 4) tensor) and torch keeps them in
# place ((3, 2)). ember follows torch: such an index is applied in two steps on the backend's
# array, the basic part (integers) as a view, then the advanced part (`_locate`), so getitem,
# index_put, index_add and setitem agree, eager and compiled.
def _torch_two_steps(spec) -> bool:
    tensors = [i for i, item in enumerate(spec) if item[0] == "t"]
    ints = [i for i, item in enumerate(spec) if item[0] == "i"]
    if not tensors or not ints:
        return False
    group = sorted(tensors + ints)
    numpy_adjacent = group[-1] - group[0] + 1 == len(group)
    torch_adjacent = builtins.all(spec[i][0] in "ti" for i in range(tensors[0], tensors[-1] + 1))
    return torch_adjacent and not numpy_adjacent


def _locate(x, spec, arrays):
    """(array, index) such that `array[index]` is `x[spec]` with torch's placement of advanced
    dims (Note [Advanced index placement]); `array` is `x` or a view of it, so assigning
    through it writes into `x`."""
    if not _torch_two_steps(spec):
        return x, _decode(spec, arrays)
    it = iter(arrays)
    basic, advanced = [], []
    for item in spec:
        kind = item[0]
        if kind == "i":
            basic.append(item[1])
        elif kind == "t":
            a = next(it)
            dims = a.ndim if a.dtype.kind == "b" else 1
            basic.extend([slice(None)] * dims)
            advanced.append(a)
        elif kind == "s":
            basic.append(slice(item[1], item[2], item[3]))
            advanced.append(slice(None))
        elif kind == "n":
            basic.append(None)
            advanced.append(slice(None))
        else:
            basic.append(Ellipsis)
            advanced.append(Ellipsis)
    return x[tuple(basic)], tuple(advanced)


def _getitem_forward(xp, x, *index_arrays, spec):
    for a in index_arrays:
        if a.dtype.kind not in "biu":
            raise IndexError(
                f"index: tensors used as indices must be integer or bool, got {a.dtype}"
            )
    x, index = _locate(x, spec, index_arrays)
    out = x[index]
    if isinstance(out, np.generic):
        # basic indexing is a view (Note [Views and in-place] in ember/tensor.py); a trailing
        # Ellipsis makes x[0] of a vector a 0-d view instead of a NumPy scalar copy
        out = x[index + (Ellipsis,)]
    return out


def _index_shape(shape, *index_shapes, spec):
    dummies = [np.zeros(s, dtype=np.int64) for s in index_shapes]
    probe = np.broadcast_to(np.empty((), dtype=np.int8), tuple(shape))
    try:
        view, index = _locate(probe, spec, dummies)
        return view[index].shape
    except IndexError as error:
        raise IndexOutOfRange(f"index: {error} (tensor of shape {tuple(shape)})") from None


# Note [Scatter into zeros]: a gradient that lands on part of an input (getitem, gather,
# diagonal, unfold, scatter's written positions) is a scatter into zeros of the input's shape,
# and every scatter copies its base first (its forward never writes into an input). The base is
# a broadcast 0-d zero (`_zero_base`), not `new_zeros(shape)`: the copy then writes the result
# once without reading a full array. A fresh NumPy array of zeros of a few MB comes from
# calloc'd pages, and copying one faults in both: slicing an LSTM's (35, 20, 6*200) float32
# output cost 1.6 ms per slice in backward that way against 0.19 ms from the broadcast zero
# (measured on the quiet 2-core machine). index_add then makes its copy of a broadcast +0.0
# with `xp.zeros` (calloc): never slower than copying the broadcast zero (0.10 against 0.11 ms
# for 2048 x 384 float32), and for a table above glibc's mmap threshold (32 MiB; an embedding's
# gradient: MiniLM's 30522 x 384 words are 47 MB) the pages come zeroed from the kernel when
# first touched, so the scatter faults in only the rows it writes: 2.9 ms against 7.2 to make
# the table and write every 7th row, 3.2 against 12.3 ms to make it and read it all (an
# optimizer's pass; untouched pages read as the shared zero page).
def _zero_base(g, shape):
    """Zeros of `shape` (g's dtype and device) as a scatter's base (Note [Scatter into
    zeros])."""
    return g.new_zeros(()).expand(tuple(shape))


def _getitem_vjp(g, y, x, *indices, spec):
    zeros = _zero_base(g, x.shape)
    return (apply(INDEX_ADD, zeros, g, *indices, spec=spec),) + (None,) * len(indices)


GETITEM = defop(
    "getitem",
    _getitem_forward,
    _getitem_vjp,
    shape=_index_shape,
    dtype=same_dtype,
    view=True,
    save_inputs=False,
    doc="x[index] with basic, advanced and boolean indices (Note [Index specs]).",
)


def _getitem_slot(base, spec):
    """The view of the array `base` that a basic index's gradient is added into (Note [Slot
    gradients] in ember/autograd/engine.py); None for tensor indices, whose VJP accumulates
    repeated positions."""
    for item in spec:
        if item[0] == "t":
            return None
    return _getitem_forward(np, base, spec=spec)


GETITEM.slot_gradient = _getitem_slot


def _copy_of_base(xp, base):
    """A writable copy of a scatter's base; a broadcast +0.0 comes as `xp.zeros` (Note [Scatter
    into zeros])."""
    if (
        base.size
        and base.dtype.kind == "f"
        and not any(base.strides)
        and not base[(0,) * base.ndim]
        and not xp.signbit(base[(0,) * base.ndim])
    ):
        return xp.zeros(base.shape, base.dtype)
    return xp.array(base, copy=True)


def _index_add_forward(xp, base, values, *index_arrays, spec):
    out = _copy_of_base(xp, base)
    target, index = _locate(out, spec, index_arrays)
    if _is_advanced(spec):
        xp.scatter_add(target, index, values)
    else:
        target[index] += values
    return out


def _index_items(spec, ndim):
    """The spec with its ellipsis expanded and trailing dims filled: one item per input dim
    (plus the ("n",) items, which add dims)."""
    used = builtins.sum(1 for item in spec if item[0] in "sit")
    items = []
    for item in spec:
        items.extend([("s", None, None, None)] * (ndim - used) if item[0] == "e" else [item])
    used = builtins.sum(1 for item in items if item[0] in "sit")
    return items + [("s", None, None, None)] * (ndim - used)


def _slice_bounds(spec, ndim):
    """ONNX Slice starts, ends and steps for every input dim (ints as one-element slices)."""
    bounds = []
    for item in _index_items(spec, ndim):
        if item[0] == "s":
            _, start, stop, step = item
            step = 1 if step is None else step
            if start is None:
                start = 0 if step > 0 else _INT64_MAX
            if stop is None:
                stop = _INT64_MAX if step > 0 else _INT64_MIN
            bounds.append((start, stop, step))
        elif item[0] == "i":
            bounds.append((item[1], item[1] + 1 if item[1] != -1 else _INT64_MAX, 1))
        elif item[0] == "t":
            bounds.append((0, _INT64_MAX, 1))
    return bounds


@onnx_lowering("getitem")
def _getitem_onnx(b, x, *indices, spec):
    ndim = b.ins[0].ndim
    items = _index_items(spec, ndim)
    dims = [item for item in items if item[0] != "n"]
    tensor_dims = [d for d, item in enumerate(dims) if item[0] == "t"]
    if len(tensor_dims) > 1:
        b.fail("indexing with more than one tensor index is not lowered to ONNX")
    sliced = [d for d, bound in enumerate(_slice_bounds(spec, ndim)) if bound != (0, _INT64_MAX, 1)]
    if sliced:

        def part(k):
            return lambda attrs: [_slice_bounds(attrs["spec"], ndim)[d][k] for d in sliced]

        x = b.op("Slice", x, b.ints(part(0)), b.ints(part(1)), b.ints(sliced), b.ints(part(2)))
    k = 1
    if tensor_dims:
        k = b.ins[1].ndim
        x = b.op("Gather", x, indices[0], axis=tensor_dims[0])
    shift = lambda d: d + k - 1 if tensor_dims and d > tensor_dims[0] else d
    squeezed = [shift(d) for d, item in enumerate(dims) if item[0] == "i"]
    if squeezed:
        x = b.op("Squeeze", x, b.ints(squeezed))
    new_axes, position = [], 0
    for item in items:
        if item[0] == "n":
            new_axes.append(position)
        position += {"s": 1, "i": 0, "t": k, "n": 1}[item[0]]
    if new_axes:
        x = b.op("Unsqueeze", x, b.ints(new_axes))
    if position + ndim - len(dims) != len(b.out.shape) or (
        tensor_dims
        and squeezed
        and builtins.any(abs(d - tensor_dims[0]) > 1 for d in range(len(dims)) if dims[d][0] == "i")
    ):
        b.fail(
            "this mix of integer and tensor indices (NumPy moves the indexed dims first) "
            "is not lowered to ONNX"
        )
    return b.op("Identity", x) if x == b.name_of(0) else x


INDEX_ADD = defop(
    "index_add",
    _index_add_forward,
    lambda g, y, base, values, *indices, spec: (
        (g, unbroadcast(apply(GETITEM, g, *indices, spec=spec), values)) + (None,) * len(indices)
    ),
    shape=lambda s, v, *i, spec: tuple(s),
    dtype=same_dtype,
    promote=None,
    doc="out = base; out[index] += values, accumulating repeated indices.",
)


def _index_put_forward(xp, x, values, *index_arrays, spec):
    out = xp.array(x, copy=True)
    target, index = _locate(out, spec, index_arrays)
    assign(target, index, values)
    return out


def assign(target, index, values):
    """target[index] = values, refusing values whose shape does not broadcast to the indexed
    shape with torch's error class (RuntimeError; Note [Error classes])."""
    try:
        target[index] = values
    except ValueError as error:
        if getattr(values, "shape", None) is None:
            raise
        raise ShapeError(
            f"setitem: values of shape {tuple(values.shape)} do not broadcast to the indexed "
            f"shape {tuple(target[index].shape)} ({error})"
        ) from None


def _index_put_vjp(g, y, x, values, *indices, spec):
    gx = apply(INDEX_PUT, g, 0.0, *indices, spec=spec)
    gv = unbroadcast(apply(GETITEM, g, *indices, spec=spec), values)
    return (gx, gv) + (None,) * len(indices)


INDEX_PUT = defop(
    "index_put",
    _index_put_forward,
    _index_put_vjp,
    shape=lambda s, v, *i, spec: tuple(s),
    dtype=same_dtype,
    promote=None,
    save_inputs=False,
    doc="out = x; out[index] = values (x[index] = v).",
)


class _Aval:
    """Shape and dtype of a value an ONNX lowering makes itself (no graph Var at L2)."""

    def __init__(self, shape, dtype):
        self.shape, self.ndim, self.dtype = tuple(shape), len(shape), dtype


def _onnx_index_write(reduction):
    """x[index] = values (or +=): scatter into the flat x at the flat positions that the same
    index selects from an iota of x's shape (any spec getitem lowers, one Scatter)."""

    def lower(b, x, values, *indices, spec):
        x_aval, v_aval = b.ins[0], b.ins[1]
        index_avals = b.ins[2:]
        shape = b.op("Shape", x)
        count = b.op("Size", x)
        iota = b.op("Range", b.const(0, "int64"), count, b.const(1, "int64"))
        positions = b.op("Reshape", iota, shape)
        picked_shape = _index_shape(x_aval.shape, *[tuple(i.shape) for i in index_avals], spec=spec)
        picked_aval = _Aval(picked_shape, x_aval.dtype)
        with b.scoped([x_aval, *index_avals], [picked_aval], [positions, *indices]):
            picked = _getitem_onnx(b, positions, *indices, spec=spec)
        if hasattr(v_aval, "dtype") and v_aval.dtype != x_aval.dtype:
            values = b.op("Cast", values, to=b.onnx_type(x_aval.dtype))
        values = b.op("Expand", values, b.op("Shape", picked))
        flat = b.ints([-1])
        out = b.op(
            "ScatterElements",
            b.op("Reshape", x, flat),
            b.op("Reshape", picked, flat),
            b.op("Reshape", values, flat),
            axis=0,
            reduction=reduction,
        )
        return b.op("Reshape", out, shape)

    return lower


_index_put_onnx = onnx_lowering("index_put")(_onnx_index_write("none"))
_index_add_onnx = onnx_lowering("index_add")(_onnx_index_write("add"))


def _limit(x, shape, skip):
    """x[:shape[0], :shape[1], ...] except along `skip` (PyTorch's gather/scatter use only the
    leading part of the other dims)."""
    sl = tuple(
        slice(None) if d == skip or n == x.shape[d] else slice(0, n) for d, n in enumerate(shape)
    )
    return x[sl]


def _full_index(xp, index, dim):
    grids = xp.indices(index.shape, sparse=True)
    return tuple(index if d == dim else grid for d, grid in enumerate(grids))


# Note [Index ranges]: numpy wraps negative indices and takes any in-range value, so ops whose
# torch counterparts refuse an index (embedding, one_hot, index_select, gather, scatter) check
# the range on the data, in the forward kernel, wherever it runs (eager or compiled): a
# negative or too-large index raises IndexValueOutOfRange (an IndexError and a RuntimeError,
# as torch raises either) naming the op, the index and the size, never picks a row.
def _check_range(xp, index, low: int, high: int, op: str) -> None:
    if index.size == 0:
        return
    smallest, largest = int(index.min()), int(index.max())
    if smallest < low or largest >= high:
        bad = smallest if smallest < low else largest
        raise IndexValueOutOfRange(
            f"{op}: index {bad} is out of range for a dim of size {high}: expected "
            f"{low} <= index < {high}"
        )


def _check_index_forward(xp, index, low, high, caller):
    _check_range(xp, index, low, high, caller)
    return index.copy()


CHECK_INDEX = defop(
    "check_index",
    _check_index_forward,
    shape=same_shape,
    dtype=same_dtype,
    save_inputs=False,
    doc="The integer index unchanged, after checking low <= index < high (Note [Index ranges]).",
)


@onnx_lowering("check_index")
def _check_index_onnx(b, index, low, high, caller):
    # ONNX has no assertion op: the index passes through (onnxruntime's Gather rejects an
    # index out of range itself)
    return b.op("Identity", index)


def check_index(index, low: int, high: int, op: str):
    """`index`, raising IndexValueOutOfRange (naming `op`) if any value is outside [low, high)."""
    return apply(CHECK_INDEX, index, low=int(low), high=int(high), caller=op)


def _gather_forward(xp, x, index, dim):
    _check_range(xp, index, 0, x.shape[dim], "gather")
    return xp.take_along_axis(_limit(x, index.shape, dim), index, axis=dim)


def _gather_shape(s, i, dim):
    if len(s) != len(i):
        raise ShapeError(f"gather: index has {len(i)} dims but the input has {len(s)}")
    return tuple(i)


GATHER = defop(
    "gather",
    _gather_forward,
    lambda g, y, x, index, dim: (scatter_add(_zero_base(g, x.shape), dim, index, g), None),
    shape=_gather_shape,
    dtype=same_dtype,
)


@onnx_lowering("gather")
def _gather_onnx(b, x, index, dim):
    axes = [a for a in range(b.ins[1].ndim) if a != dim]
    if any(b.ins[0].shape[a] != b.ins[1].shape[a] for a in axes):
        # torch's gather reads the leading block of x that the index covers outside `dim`
        ends = b.ints_across([[s[a] for a in axes] for s in b.shapes_of(b.ins[1])])
        x = b.op("Slice", x, b.ints([0] * len(axes)), ends, b.ints(axes))
    return b.op("GatherElements", x, index, axis=dim)


def _onnx_scatter(reduction):
    def lower(b, x, index, src, dim):
        src_var = b.ins[2]
        if not hasattr(src_var, "shape") or src_var.shape != b.ins[1].shape:
            if hasattr(src_var, "shape") and src_var.ndim:
                src = b.op("Slice", src, b.ints([0] * b.ins[1].ndim), b.op("Shape", index))
            else:
                src = b.op("Expand", src, b.op("Shape", index))
        return b.op("ScatterElements", x, index, src, axis=dim, reduction=reduction)

    return lower


def _scatter_add_forward(xp, x, index, src, dim):
    _check_range(xp, index, 0, x.shape[dim], "scatter_add")
    out = xp.array(x, copy=True)
    src = _limit(src, index.shape, -1) if src.shape != index.shape else src
    xp.scatter_add(out, _full_index(xp, index, dim), src)
    return out


def _src_grad(g, index, src, dim):
    if isinstance(src, (int, float, bool)):
        return None
    gs = gather(g, dim, index)
    if tuple(gs.shape) != tuple(src.shape):
        gs = apply(PAD, gs, pad=tuple((0, n - m) for n, m in zip(src.shape, gs.shape)), value=0)
    return gs


SCATTER_ADD = defop(
    "scatter_add",
    _scatter_add_forward,
    lambda g, y, x, index, src, dim: (g, None, _src_grad(g, index, src, dim)),
    shape=lambda s, i, v, dim: tuple(s),
    dtype=same_dtype,
    promote="common_skip_index",
    save_inputs=False,
)


def _scatter_forward(xp, x, index, src, dim):
    _check_range(xp, index, 0, x.shape[dim], "scatter")
    out = xp.array(x, copy=True)
    if hasattr(src, "shape") and src.ndim:
        src = _limit(src, index.shape, -1)
    out[_full_index(xp, index, dim)] = src
    return out


SCATTER = defop(
    "scatter",
    _scatter_forward,
    lambda g, y, x, index, src, dim: (
        apply(SCATTER, g, index, 0.0, dim=dim),
        None,
        _src_grad(g, index, src, dim),
    ),
    shape=lambda s, i, v, dim: tuple(s),
    dtype=same_dtype,
    promote="common_skip_index",
    save_inputs=False,
)


def _argsort_forward(xp, x, dim, descending, stable):
    if descending:
        # stable descending order: sort the negated keys (ints and floats alike)
        keys = -x if x.dtype.kind != "b" else ~x
        order = xp.argsort(keys, axis=dim, kind="stable").astype(xp.int64, copy=False)
        if x.dtype.kind == "f":
            # torch orders nan above every number: descending puts it first (-nan is still
            # nan, which the negated sort left last); a second stable pass moves it up.
            is_number = ~xp.isnan(xp.take_along_axis(x, order, axis=dim))
            order = xp.take_along_axis(order, xp.argsort(is_number, axis=dim, kind="stable"), dim)
        return order
    return xp.argsort(x, axis=dim, kind="stable" if stable else None).astype(xp.int64, copy=False)


ARGSORT = defop("argsort", _argsort_forward, shape=lambda s, **a: tuple(s), dtype=int64_dtype)

_scatter_add_onnx = onnx_lowering("scatter_add")(_onnx_scatter("add"))
_scatter_onnx = onnx_lowering("scatter")(_onnx_scatter("none"))


@onnx_lowering("argsort")
def _argsort_onnx(b, x, dim, descending, stable):
    # TopK over the whole dim; ties may come in another order than a stable sort's
    size = b.op("Gather", b.op("Shape", x), b.ints([dim]))
    return b.op("TopK", x, size, axis=dim, largest=int(descending), sorted=1, outputs=2)[1]


NONZERO = defop(
    "nonzero",
    lambda xp, x: xp.stack(xp.nonzero(x), axis=-1).astype(xp.int64),
    shape=lambda s: (None, len(s)),
    dtype=int64_dtype,
    doc="Indices of non-zero elements, shape (n, ndim); n depends on the data.",
)


# --- wrappers -----------------------------------------------------------------------------------
def _dim(d, ndim, op):
    n = builtins.max(ndim, 1)
    if not -n <= d < n:
        raise IndexOutOfRange(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
    return d % n


@RESHAPE.public("reshape")
def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    current = tuple(x.shape)
    shape = _resolve_shape(shape, x.numel(), "reshape", current)
    if shape == current:
        return x
    return apply(RESHAPE, x, shape=shape)


@PERMUTE.public("permute")
def permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    dims = tuple(_dim(int(d), x.ndim, "permute") for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ShapeError(f"permute: dims {dims} are not a permutation of {x.ndim} dims")
    if dims == tuple(range(x.ndim)):
        return x
    return apply(PERMUTE, x, dims=dims)


@public("transpose", "swapaxes", "swapdims")
def transpose(x, dim0, dim1):
    ndim = x.ndim
    if ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return x
    dims = list(range(ndim))
    a, b = _dim(dim0, ndim, "transpose"), _dim(dim1, ndim, "transpose")
    if a == b:
        return x
    dims[a], dims[b] = dims[b], dims[a]
    return apply(PERMUTE, x, dims=tuple(dims))  # a valid permutation: no permute() checks


@public("movedim")
def movedim(x, source, destination):
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [_dim(s, x.ndim, "movedim") for s in src]
    dst = [_dim(d, x.ndim, "movedim") for d in dst]
    order = [d for d in range(x.ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute(x, order)


@EXPAND.public("expand", function=False)
def expand(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    shape = tuple(int(s) for s in shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ShapeError(f"expand: target {shape} has fewer dims than the input {tuple(x.shape)}")
    shape = tuple(x.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape))
    if shape == tuple(x.shape):
        return x
    return apply(EXPAND, x, shape=shape)


@public("squeeze")
def squeeze(x, dim=None):
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        dims = {_dim(d, x.ndim, "squeeze") for d in dims}
        shape = tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1))
    return reshape(x, shape)


@public("unsqueeze")
def unsqueeze(x, dim):
    d = _dim(dim, x.ndim + 1, "unsqueeze")
    shape = tuple(x.shape)
    return reshape(x, shape[:d] + (1,) + shape[d:])


@public("flatten")
def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, (1,))
    s = _dim(start_dim, x.ndim, "flatten")
    e = _dim(end_dim, x.ndim, "flatten")
    shape = tuple(x.shape)
    n = 1
    for k in shape[s : e + 1]:
        n *= k
    return reshape(x, shape[:s] + (n,) + shape[e + 1 :])


@public("unflatten")
def unflatten(x, dim, sizes):
    d = _dim(dim, x.ndim, "unflatten")
    shape = tuple(x.shape)
    sizes = _resolve_shape(sizes, shape[d], "unflatten", shape)
    return reshape(x, shape[:d] + sizes + shape[d + 1 :])


@CAT.public("cat", "concat", "concatenate", method=False)
def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    # PyTorch skips 1-D empty tensors in cat (legacy behaviour kept by many programs)
    nonempty = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    d = _dim(dim, nonempty[0].ndim, "cat")
    if len(nonempty) == 1:
        return nonempty[0]
    return apply(CAT, *nonempty, dim=d)


concat = concatenate = cat


@public("stack", method=False)
def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    first = tuple(tensors[0].shape)
    for t in tensors:
        if tuple(t.shape) != first:
            raise ShapeError(
                "stack: expects each tensor to be equal size, got "
                + ", ".join(str(tuple(t.shape)) for t in tensors)
            )
    d = _dim(dim, len(first) + 1, "stack")
    return apply(CAT, *[unsqueeze(t, d) for t in tensors], dim=d)


@public("narrow")
def narrow(x, dim, start, length):
    d = _dim(dim, x.ndim, "narrow")
    size = x.shape[d]
    start, length = int(start), int(length)
    if not -size <= start <= size:
        raise IndexOutOfRange(
            f"narrow: start {start} is out of range for dim {d} of size {size} "
            f"(expected {-size} <= start <= {size})"
        )
    start %= builtins.max(size, 1) if start < 0 else size + 1
    if length < 0 or start + length > size:  # torch: RuntimeError (IndexError stays too)
        raise IndexValueOutOfRange(
            f"narrow: start ({start}) + length ({length}) exceeds dim {d} of size {size}"
            if length >= 0
            else f"narrow: length must be non-negative, got {length}"
        )
    index = [("s", None, None, None)] * d + [("s", start, start + length, None)]
    return apply(GETITEM, x, spec=tuple(index))


@public("split")
def split(x, split_size_or_sections, dim=0):
    d = _dim(dim, x.ndim, "split")
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        sizes = [builtins.min(size, n - i) for i in range(0, n, size)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ShapeError(f"split: sections {sizes} do not sum to dim {d}'s size {n}")
    out, start = [], 0
    for s in sizes:
        out.append(narrow(x, d, start, s))
        start += s
    return tuple(out)


@public("chunk")
def chunk(x, chunks, dim=0):
    d = _dim(dim, x.ndim, "chunk")
    if int(chunks) <= 0:
        raise ValueOutOfRange(f"chunk: chunks must be greater than 0, got {chunks}")
    size = -(-x.shape[d] // chunks)
    return split(x, builtins.max(size, 1), d)


@public("unbind")
def unbind(x, dim=0):
    d = _dim(dim, x.ndim, "unbind")
    return tuple(squeeze(narrow(x, d, i, 1), d) for i in range(x.shape[d]))


@FLIP.public("flip")
def flip(x, dims, *more_dims):
    """x with the order of its elements reversed along `dims` (`x.flip(0, 1)`, as torch's
    method, or `flip(x, (0, 1))`)."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = tuple(sorted(_dim(d, x.ndim, "flip") for d in dims + tuple(more_dims)))
    if len(set(dims)) != len(dims):
        raise ShapeError(f"flip: a dim appears more than once in {dims}")
    return apply(FLIP, x, dims=dims)


@ROLL.public("roll")
def roll(x, shifts, dims=None):
    if dims is None:
        return reshape(roll(flatten(x), shifts, 0), tuple(x.shape))
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} differ in length")
    return apply(
        ROLL,
        x,
        shifts=tuple(int(s) for s in shifts),
        dims=tuple(_dim(d, x.ndim, "roll") for d in dims),
    )


@TRIL.public("tril")
def tril(x, diagonal=0):
    if x.ndim < 2:
        raise ShapeError(f"tril: input must have at least 2 dims, got shape {tuple(x.shape)}")
    return apply(TRIL, x, k=int(diagonal))


@TRIU.public("triu")
def triu(x, diagonal=0):
    if x.ndim < 2:
        raise ShapeError(f"triu: input must have at least 2 dims, got shape {tuple(x.shape)}")
    return apply(TRIU, x, k=int(diagonal))


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad: `pad` lists (before, after) pairs starting from the last dim; a
    negative amount crops. reflect and replicate pad from the whole input and then crop;
    circular crops first and wraps what is left (Note [Padding modes])."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ShapeError(f"pad: padding {pad} must have an even length of at most 2*{x.ndim}")
    pairs = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        pairs[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        for d, (before, after) in enumerate(pairs):
            if x.shape[d] + before + after < 0:
                raise ShapeError(
                    f"pad: padding ({before}, {after}) of dim {d} (size {x.shape[d]}) makes a "
                    f"negative size {x.shape[d] + before + after}"
                )
        return apply(PAD, x, pad=tuple(pairs), value=value if value is not None else 0.0)
    if mode not in ("reflect", "replicate", "circular"):
        raise ValueError(
            f"pad: mode must be constant, reflect, replicate or circular, got {mode!r}"
        )
    padded = len(pad) // 2
    if padded not in (1, 2, 3) or x.ndim not in (padded + 1, padded + 2):
        raise NotImplementedError(
            f"pad: padding size {len(pad)} is not supported for a {x.ndim}-D input in {mode} "
            "mode; supported: 2-D or 3-D input with 2 pads (the last dim), 3-D or 4-D with 4 "
            "(the last 2 dims), 4-D or 5-D with 6 (the last 3 dims), as in torch"
        )
    for d, (before, after) in enumerate(pairs):
        if before == after == 0:
            continue
        x = (_pad_circular if mode == "circular" else _pad_edge)(x, d, before, after, mode)
    return x


# Note [Padding modes]: torch's non-constant padding with negative amounts (cropping), which
# ember matches: reflect and replicate pad the whole input and then crop the negative sides
# (F.pad(x, (-2, 4), "reflect") reflects 4 off the uncropped right edge); the output must
# keep at least one element, and a reflect pad must be smaller than the input. Circular crops
# first and wraps the cropped input (F.pad(arange(5), (-1, 2), "circular") = [1 2 3 4 1 2]);
# a pad may not exceed the input size (wrapping more than once) and the output may be empty.
# Where torch's circular kernel reads past a cropped input (a pad wider than what is left),
# ember keeps wrapping it.
def _pad_edge(x, d, before, after, mode):
    n = x.shape[d]
    if mode == "reflect" and (before >= n or after >= n):
        raise ShapeError(
            f"pad: reflect padding ({before}, {after}) must be smaller than the input size "
            f"{n} of dim {d} (input shape {tuple(x.shape)})"
        )
    if n + before + after <= 0:
        raise ShapeError(
            f"pad: input size {n} of dim {d} is too small for {mode} padding ({before}, "
            f"{after}): the output size would be {n + before + after}"
        )
    pieces = []
    if before > 0:
        if mode == "reflect":
            pieces.append(flip(narrow(x, d, 1, before), d))
        else:
            pieces.append(expand_dim(narrow(x, d, 0, 1), d, before))
    pieces.append(x)
    if after > 0:
        if mode == "reflect":
            pieces.append(flip(narrow(x, d, n - 1 - after, after), d))
        else:
            pieces.append(expand_dim(narrow(x, d, n - 1, 1), d, after))
    out = cat(pieces, d) if len(pieces) > 1 else x
    start = -before if before < 0 else 0
    return narrow(out, d, start, out.shape[d] - start + builtins.min(after, 0))


def _pad_circular(x, d, before, after, mode):
    n = x.shape[d]
    if before > n or after > n:
        raise ShapeError(
            f"pad: circular padding ({before}, {after}) wraps around more than once: it must "
            f"be at most the input size {n} of dim {d} (input shape {tuple(x.shape)})"
        )
    kept = n + builtins.min(before, 0) + builtins.min(after, 0)
    if n + before + after < 0:
        raise ShapeError(
            f"pad: negative circular padding ({before}, {after}) is larger than dim {d}'s size "
            f"{n}: the output size would be {n + before + after}"
        )
    if kept <= 0:
        if n + before + after == 0:
            return narrow(x, d, 0, 0)
        raise ShapeError(
            f"pad: negative circular padding ({before}, {after}) crops all {n} elements of "
            f"dim {d}, leaving nothing to wrap"
        )
    x = narrow(x, d, -before if before < 0 else 0, kept)
    wide = builtins.max(before, after, 0)
    tiled = cat([x] * -(-wide // kept), d) if wide > kept else x
    m = tiled.shape[d]
    pieces = [narrow(tiled, d, m - before, before)] if before > 0 else []
    pieces.append(x)
    if after > 0:
        pieces.append(narrow(tiled, d, 0, after))
    return cat(pieces, d) if len(pieces) > 1 else x


def expand_dim(x, dim, size):
    shape = list(x.shape)
    shape[dim] = size
    return expand(x, tuple(shape))


@public("repeat", function=False)
def repeat(x, *sizes):
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < x.ndim:
        raise ShapeError(f"repeat: {len(sizes)} repeat sizes for a tensor with {x.ndim} dims")
    x = reshape(x, (1,) * (len(sizes) - x.ndim) + tuple(x.shape))
    inter = []
    target = []
    for s, n in zip(sizes, x.shape):
        inter += [1, n]
        target += [s, n]
    out = expand(reshape(x, tuple(inter)), tuple(target))
    return reshape(out, tuple(s * n for s, n in zip(sizes, x.shape)))


def encode_index(x, index):
    """Turn a Python index into (spec, index tensors) (Note [Index specs])."""
    Tensor = type(x).__mro__[-2] if type(x).__name__ != "Tensor" else type(x)

    def make_tensor(value):
        arr = np.asarray(value)
        return x.new_tensor(arr, dtype=_dt.bool_ if arr.dtype.kind == "b" else _dt.int64)

    if not isinstance(index, tuple):
        if _sequence_as_tuple(index, Tensor):
            warnings.warn(
                at_user_line(
                    "index: a list holding tensors, sequences, slices, None or Ellipsis is read "
                    "as a tuple of indices, as torch reads it (torch deprecates this); write "
                    "x[tuple(seq)] for that, or x[tensor(seq)] for one advanced index"
                ),
                UserWarning,
                stacklevel=3,
            )
            index = tuple(index)
        else:
            index = (index,)
    spec, tensors = [], []
    for item in index:
        if isinstance(item, slice):
            spec.append(
                ("s", _int_or_none(item.start), _int_or_none(item.stop), _int_or_none(item.step))
            )
        elif item is None:
            spec.append(("n",))
        elif item is Ellipsis:
            spec.append(("e",))
        elif isinstance(item, Tensor):
            if item.ndim == 0 and not item.dtype.is_floating_point and item.dtype is not _dt.bool_:
                spec.append(("i", int(item.item())))
            else:
                spec.append(("t",))
                tensors.append(item)
        elif isinstance(item, bool):
            spec.append(("t",))
            tensors.append(make_tensor(item))
        elif isinstance(item, (int, np.integer)):
            spec.append(("i", int(item)))
        elif isinstance(item, (list, tuple, np.ndarray)):  # a tuple inside an index is a list
            spec.append(("t",))
            tensors.append(make_tensor(item))
        else:
            raise IndexError(
                f"index: unsupported index element {item!r} of type {type(item).__name__}"
            )
    return tuple(spec), tensors


def _int_or_none(v):
    return None if v is None else int(v)


def _sequence_as_tuple(index, Tensor) -> bool:
    """torch's (and old NumPy's) reading of a list index: `x[[0, [1, 2]]]`, `x[[t, None]]` are
    `x[0, [1, 2]]`, `x[t, None]` when the list is short (< 32) and holds a tensor, a sequence,
    a slice, None or Ellipsis; a list of plain integers stays one advanced index."""
    if not isinstance(index, list) or len(index) >= 32:
        return False
    return builtins.any(
        isinstance(item, (Tensor, list, tuple, slice, np.ndarray))
        or item is None
        or item is Ellipsis
        for item in index
    )


def getitem(x, index):
    spec, tensors = encode_index(x, index)
    return apply(GETITEM, x, *tensors, spec=spec)


@public("index_select")
def index_select(x, dim, index):
    d = _dim(dim, x.ndim, "index_select")
    if index.ndim > 1:
        raise ShapeError(f"index_select: index must be 0-D or 1-D, got shape {tuple(index.shape)}")
    if index.dtype.is_floating_point or index.dtype is _dt.bool_:
        raise DTypeError(f"index_select: index must be an integer tensor, got {index.dtype}")
    spec = (("s", None, None, None),) * d + (("t",),)
    index = check_index(index.reshape(-1), 0, x.shape[d] if x.ndim else 1, "index_select")
    return apply(GETITEM, x, index, spec=spec)


def _check_index_tensor(x, index, op):
    """torch's refusals of a gather/scatter index: a float or bool index, or an index whose
    number of dims differs from the input's (RuntimeErrors; Note [Error classes])."""
    if index.dtype.is_floating_point or index.dtype is _dt.bool_:
        raise DTypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    if index.ndim != x.ndim and not (x.ndim <= 1 and index.ndim <= 1):
        raise ShapeError(
            f"{op}: index must have the same number of dims as the input, got index of shape "
            f"{tuple(index.shape)} for input of shape {tuple(x.shape)}"
        )


@GATHER.public("gather")
def gather(x, dim, index):
    _check_index_tensor(x, index, "gather")
    return apply(GATHER, x, index, dim=_dim(dim, x.ndim, "gather"))


@SCATTER.public("scatter")
def scatter(x, dim, index, src=None, value=None, *, reduce=None):
    if reduce is not None:  # torch's scatter(..., reduce="add" | "multiply")
        return _scatter_with_reduce(x, dim, index, src, value, reduce)
    if src is None:
        src = value
    _check_index_tensor(x, index, "scatter")
    return apply(SCATTER, x, index, src, dim=_dim(dim, x.ndim, "scatter"))


@SCATTER_ADD.public("scatter_add")
def scatter_add(x, dim, index, src):
    _check_index_tensor(x, index, "scatter_add")
    return apply(SCATTER_ADD, x, index, src, dim=_dim(dim, x.ndim, "scatter_add"))


@public("masked_fill")
def masked_fill(x, mask, value):
    if mask.dtype is not _dt.bool_:
        raise DTypeError(f"masked_fill: mask must be a bool tensor, got {mask.dtype}")
    if hasattr(value, "shape"):
        value = value.to(x.dtype)
    if hasattr(value, "shape"):
        return where(mask, value, x)
    return where(mask, _scalar_like(value, x), x)


def _scalar_like(value, x):
    if x.dtype.is_floating_point:
        return float(value)
    if x.dtype is _dt.bool_:
        return bool(value)
    return int(value)


def one_hot(index, num_classes=-1):
    if index.dtype.is_floating_point or index.dtype is _dt.bool_:
        raise TypeError(f"one_hot: index must be an integer tensor, got {index.dtype}")
    if num_classes < 0:
        if index.numel() and int(index.min().item()) < 0:
            raise IndexValueOutOfRange(
                f"one_hot: class values must be non-negative, got {int(index.min().item())}"
            )
        num_classes = int(index.max().item()) + 1 if index.numel() else 0
    else:
        index = check_index(index, 0, num_classes, "one_hot")
    classes = index.new_tensor(np.arange(num_classes), dtype=_dt.int64)
    return (unsqueeze(index, -1) == classes).to(_dt.int64)


def embedding(index, weight, padding_idx=None, scale_grad_by_freq=False, sparse=False):
    """Rows of `weight` (num_embeddings, dim) picked by the integer tensor `index`.

    `padding_idx`'s row receives no gradient; with `scale_grad_by_freq` each gradient row is
    divided by how often its index occurs in `index`. (`max_norm`, which rewrites `weight` in
    place, is `ember.nn.functional.embedding`'s.)
    """
    if index.dtype.is_floating_point:
        raise DTypeError(f"embedding: indices must be integer, got {index.dtype}")
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be 2-D, got shape {tuple(weight.shape)}")
    if sparse:
        raise NotImplementedError(
            at_user_line(
                "embedding: the sparse gradient of sparse=True is ember.nn.functional."
                "embedding's (an autograd Function, above the ops layer); call that"
            )
        )
    num_embeddings = weight.shape[0]
    if padding_idx is not None:
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"embedding: padding_idx {padding_idx} must be within "
                f"num_embeddings {num_embeddings}"
            )
        padding_idx %= num_embeddings
    index = check_index(index, 0, num_embeddings, "embedding")
    out = apply(GETITEM, weight, index, spec=(("t",),))
    # `out`, not `weight`: under no_grad the rows record nothing and need no padding select
    # (a pass over the (batch, seq, dim) rows: 4 ms of a MiniLM 32 x 128 forward)
    if out.requires_grad:
        if padding_idx is not None:
            # PyTorch: the padding row receives no gradient
            keep = unsqueeze(index != padding_idx, -1)
            out = where(keep, out, out.detach())
        if scale_grad_by_freq:
            counts = apply(
                INDEX_ADD,
                weight.new_zeros((num_embeddings,)),
                weight.new_ones(tuple(index.shape)),
                index,
                spec=(("t",),),
            )
            out = _scale_gradient(
                out, unsqueeze(1.0 / apply(GETITEM, counts, index, spec=(("t",),)), -1)
            )
    return out


def _scale_gradient(x, scale):
    """x unchanged, with gradient g * scale: x_detached + (x - x_detached) * scale adds an exact
    zero forward; non-finite entries (where x - x is not zero) pass through untouched."""
    frozen = x.detach()
    zero = x - frozen
    return where(frozen.isfinite(), frozen + zero * scale, x)


@ARGSORT.public("argsort")
def argsort(x, dim=-1, descending=False, stable=False):
    return apply(
        ARGSORT,
        x,
        dim=_dim(dim, x.ndim, "argsort"),
        descending=bool(descending),
        stable=bool(stable),
    )


@public("sort")
def sort(x, dim=-1, descending=False, stable=False):
    from ember.ops.reduce import _ValuesIndices

    idx = argsort(x, dim, descending, stable)
    return _ValuesIndices((gather(x, _dim(dim, x.ndim, "sort"), idx), idx))


@public("topk")
def topk(x, k, dim=-1, largest=True, sorted=True):
    from ember.ops.reduce import _ValuesIndices

    d = _dim(dim, x.ndim, "topk")
    size = x.shape[d] if x.ndim else 1
    if not 0 <= k <= size:
        raise ShapeError(f"topk: k={k} is out of range for dim {d} of size {size}")
    if x.ndim == 0:  # a 0-d tensor is its own top-1, as in torch
        values, idx = topk(x.reshape(1), k, 0, largest, sorted)
        return _ValuesIndices((values.reshape(()), idx.reshape(())) if k else (values, idx))
    idx = narrow(argsort(x, d, descending=largest, stable=True), d, 0, k)
    return _ValuesIndices((gather(x, d, idx), idx))


@NONZERO.public("nonzero")
def nonzero(x, as_tuple=False):
    idx = apply(NONZERO, x)
    if as_tuple:
        return tuple(idx[:, i] for i in range(x.ndim))
    return idx


@public("masked_select")
def masked_select(x, mask):
    x, mask = (
        x.expand(broadcast_pair(x.shape, mask.shape)),
        mask.expand(broadcast_pair(x.shape, mask.shape)),
    )
    return apply(GETITEM, x, mask, spec=(("t",),))


def broadcast_pair(a, b):
    from ember.ops.registry import broadcast_shapes

    return broadcast_shapes(tuple(a), tuple(b))


# --- diagonal and writing through views (Note [Views and in-place] in ember/tensor.py) ----------
def _diagonal_forward(xp, x, offset, dim1, dim2):
    d = xp.diagonal(x, offset, dim1, dim2)
    if isinstance(d, np.ndarray) and not d.flags.writeable and x.flags.writeable:
        d.flags.writeable = True  # NumPy's diagonal view is read-only; PyTorch's can be written
    return d


def _diagonal_shape(s, offset, dim1, dim2):
    rows, cols = s[dim1], s[dim2]
    n = builtins.max(
        0, builtins.min(rows, cols - offset) if offset >= 0 else builtins.min(rows + offset, cols)
    )
    return tuple(k for i, k in enumerate(s) if i not in (dim1, dim2)) + (n,)


DIAGONAL = defop(
    "diagonal",
    _diagonal_forward,
    lambda g, y, x, offset, dim1, dim2: (
        apply(
            VIEW_SCATTER,
            _zero_base(g, x.shape),
            g,
            steps=(("diagonal", (("offset", offset), ("dim1", dim1), ("dim2", dim2))),),
        ),
    ),
    shape=_diagonal_shape,
    dtype=same_dtype,
    save_inputs=False,
    view=True,
    doc="The diagonal (offset, dim1, dim2) as the last dim; a view, as in PyTorch.",
)


@onnx_lowering("diagonal")
def _diagonal_onnx(b, x, offset, dim1, dim2):
    # move dim1, dim2 last, then GatherND picks (i, i + offset) in each trailing matrix
    ndim = b.ins[0].ndim
    rest = [d for d in range(ndim) if d not in (dim1, dim2)]
    x = b.op("Transpose", x, perm=rest + [dim1, dim2])
    length = b.out.shape[-1]
    if len({s[-1] for s in b.shapes_of(b.outs[0])}) > 1:
        b.fail("a diagonal whose length follows a dynamic axis is not lowered to ONNX")
    rows = np.arange(length, dtype=np.int64) + builtins.max(-offset, 0)
    pairs = b.const(np.stack([rows, rows + offset], axis=-1))
    if rest:
        lead = b.op("Slice", b.op("Shape", x), b.ints([0]), b.ints([len(rest)]))
        pairs = b.op("Expand", pairs, b.op("Concat", lead, b.ints([length, 2]), axis=0))
    return b.op("GatherND", x, pairs, batch_dims=len(rest))


def view_steps_forward(xp, x, steps):
    """Replay view steps ((op name, attrs items), ...) on an array with the ops' forwards."""
    from ember.ops.registry import REGISTRY

    for name, attrs in steps:
        x = REGISTRY[name].forward(xp, x, **dict(attrs))
    return x


def replay_view(x, steps):
    """Replay view steps on a Tensor with ember ops (differentiable, traceable)."""
    from ember.ops.registry import REGISTRY

    for name, attrs in steps:
        x = apply(REGISTRY[name], x, **dict(attrs))
    return x


def _view_scatter_forward(xp, base, src, steps):
    out = xp.array(base, copy=True)
    region = view_steps_forward(xp, out, steps)
    if isinstance(out, np.ndarray) and region.size and not np.may_share_memory(region, out):
        # a step copied (a reshape NumPy could not do as a view of the fresh copy): write
        # through flat positions instead
        positions = view_steps_forward(xp, xp.arange(out.size).reshape(out.shape), steps)
        out.reshape(-1)[positions] = src
        return out
    region[...] = src
    return out


def _view_scatter_shape(s, v, steps):
    from ember.ops.registry import REGISTRY

    region = tuple(s)
    for name, attrs in steps:
        region = tuple(REGISTRY[name].shape(region, **dict(attrs)))
    try:
        broadcast = np.broadcast_shapes(tuple(v), region)
    except ValueError:
        broadcast = None
    if broadcast != region:
        raise ShapeError(
            f"view_scatter: the source of shape {tuple(v)} does not fit the view of shape {region}"
        )
    return tuple(s)


def _view_scatter_vjp(g, y, base, src, steps):
    g_base = apply(VIEW_SCATTER, g, 0.0, steps=steps)
    g_src = None if isinstance(src, (int, float, bool)) else unbroadcast(replay_view(g, steps), src)
    return g_base, g_src


VIEW_SCATTER = defop(
    "view_scatter",
    _view_scatter_forward,
    _view_scatter_vjp,
    shape=_view_scatter_shape,
    dtype=same_dtype,
    save_inputs=False,
    doc="out = base with the view `steps` of it replaced by src (PyTorch's CopySlices; "
    "slice_scatter, diagonal_scatter and select_scatter are cases of it).",
)


@onnx_lowering("view_scatter")
def _view_scatter_onnx(b, base, src, steps):
    """The view's flat positions in the base, found by replaying its steps on an arange of the
    base's shape, then ScatterElements of the (broadcast) source into the flattened base.
    The positions are a constant, so a view whose positions follow a dynamic axis is refused."""
    shapes = b.shapes_of(b.ins[0])
    positions = []
    for shape in shapes:
        plane = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        positions.append(np.asarray(view_steps_forward(np, plane, steps)))
    first = positions[0]
    if any(p.shape != first.shape or not np.array_equal(p, first) for p in positions[1:]):
        b.fail("an in-place write through a view whose positions follow a dynamic axis")
    flat = b.const([-1], "int64")
    updates = b.op("Expand", src, b.const(list(first.shape), "int64"))
    scattered = b.op(
        "ScatterElements",
        b.op("Reshape", base, flat),
        b.const(first.reshape(-1)),
        b.op("Reshape", updates, flat),
        axis=0,
    )
    return b.op("Reshape", scattered, b.op("Shape", base))


@DIAGONAL.public("diagonal")
def diagonal(x, offset=0, dim1=0, dim2=1):
    """The diagonal of dims (dim1, dim2), shifted by `offset`, as the last dim: a view.

    Example:
        >>> import ember
        >>> x = ember.zeros(3, 3)
        >>> x.diagonal().fill_(1.0)
        tensor([1., 1., 1.])
        >>> x.diagonal(1).tolist()
        [0.0, 0.0]
    """
    if x.ndim < 2:  # torch: IndexError "Dimension out of range"
        raise ShapeIndexError(
            f"diagonal: input must have at least 2 dims, got shape {tuple(x.shape)} "
            f"(dim1={dim1}, dim2={dim2} are out of range)"
        )
    d1, d2 = _dim(dim1, x.ndim, "diagonal"), _dim(dim2, x.ndim, "diagonal")
    if d1 == d2:
        raise ShapeError(f"diagonal: dim1 and dim2 cannot be the same dim ({dim1}, {dim2})")
    return apply(DIAGONAL, x, offset=int(offset), dim1=d1, dim2=d2)


@public("diagonal_scatter", method=False)
def diagonal_scatter(x, src, offset=0, dim1=0, dim2=1):
    """A copy of x with its diagonal (offset, dim1, dim2) replaced by src.

    Example:
        >>> import ember
        >>> ember.diagonal_scatter(ember.zeros(2, 2), ember.ones(2)).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    d1, d2 = _dim(dim1, x.ndim, "diagonal_scatter"), _dim(dim2, x.ndim, "diagonal_scatter")
    steps = (("diagonal", (("offset", int(offset)), ("dim1", d1), ("dim2", d2))),)
    return apply(VIEW_SCATTER, x, src, steps=steps)


@public("slice_scatter", method=False)
def slice_scatter(x, src, dim=0, start=None, end=None, step=1):
    """A copy of x with x[..., start:end:step, ...] (along dim) replaced by src.

    Example:
        >>> import ember
        >>> ember.slice_scatter(ember.zeros(4), ember.ones(2), 0, 1, 3).tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    d = _dim(dim, x.ndim, "slice_scatter")
    spec = (("s", None, None, None),) * d + (("s", start, end, step),)
    return apply(VIEW_SCATTER, x, src, steps=(("getitem", (("spec", spec),)),))


# --- assignment and device transfer -------------------------------------------------------------
ASSIGN = defop(
    "assign",
    lambda xp, x, src: xp.array(xp.broadcast_to(src, x.shape), dtype=x.dtype, copy=True),
    lambda g, y, x, src: (g.new_zeros(tuple(g.shape)), unbroadcast(g, src)),
    shape=lambda s, v: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
    doc="assign(x, src): src broadcast to x's shape and dtype (x.copy_(src)); x's old value "
    "gets a zero gradient (as PyTorch's copy_ and fill_).",
)


def _to_device_forward(xp, x, device):
    from ember.backend import backend_of, get_backend

    target = get_backend(device)
    source = backend_of(x)
    if target is source:
        return x
    return target.asarray(source.to_numpy(x), device=device)


TO_DEVICE = defop(
    "to_device",
    _to_device_forward,
    lambda g, y, x, device: (apply(TO_DEVICE, g, device=x.device),),
    shape=lambda s, device: tuple(s),
    dtype=same_dtype,
    save_inputs=False,
    doc="Copy to another device; the gradient is copied back to the input's device.",
)


@onnx_lowering("to_device")
def _to_device_onnx(b, x, device):
    return b.op("Identity", x)  # an ONNX file has no devices: the runtime places tensors


# --- issue 18: scatter_reduce, diag, repeat_interleave, Tensor.unfold, meshgrid -----------------
_SCATTER_REDUCTIONS = {"sum": "add", "prod": "multiply", "amax": "maximum", "amin": "minimum"}


def _reduction_identity(xp, dtype, reduce):
    if reduce in ("sum", "prod"):
        return 0 if reduce == "sum" else 1
    if dtype.kind == "f":
        return -np.inf if reduce == "amax" else np.inf
    if dtype.kind == "b":
        return reduce == "amin"
    info = np.iinfo(dtype)
    return info.min if reduce == "amax" else info.max


def _scatter_reduce_forward(xp, x, index, src, dim, reduce, include_self):
    _check_range(xp, index, 0, x.shape[dim], "scatter_reduce")
    out = xp.array(x, copy=True)
    where_to = _full_index(xp, index, dim)
    if not include_self:  # the positions written start from the reduction's identity
        out[where_to] = _reduction_identity(xp, out.dtype, reduce)
    getattr(xp, _SCATTER_REDUCTIONS[reduce]).at(out, where_to, src)
    return out


def _scatter_reduce_vjp(g, y, x, index, src, dim, reduce, include_self):
    # torch's scatter_reduce_backward, written with ember ops
    def again(base, values):
        return apply(
            SCATTER_REDUCE, base, index, values, dim=dim, reduce=reduce, include_self=include_self
        )

    if reduce == "sum":
        gx, gsrc = g, gather(g, dim, index)
    elif reduce == "prod":
        zero_self = x == 0
        masked_self = where(zero_self, 1.0, x)
        gx = g * again(masked_self, src) / masked_self
        src_zero = src == 0
        zeros = scatter_add(_zero_base(g, x.shape), dim, index, src_zero.to(g.dtype))
        single_zero = apply(LOGICAL_AND, src_zero, gather(zeros, dim, index) == 1)
        without_zero = again(x, where(single_zero, 1.0, src))
        gsrc = where(
            single_zero,
            gather(g * without_zero, dim, index),
            gather(g * y, dim, index) / where(src_zero, 1.0, src),
        )
    else:  # amax, amin: ties share the gradient evenly
        value = gather(y, dim, index)
        self_is = (x == y).to(g.dtype)
        src_is = (src == value).to(g.dtype)
        share = g / scatter_add(self_is, dim, index, src_is)
        gx = self_is * share
        gsrc = src_is * gather(share, dim, index)
    if not include_self:  # self's values at the written positions were not used
        written = apply(SCATTER, _zero_base(g, x.shape), index, 1.0, dim=dim)
        gx = where(written > 0, 0.0, gx)
    return gx, None, gsrc


SCATTER_REDUCE = defop(
    "scatter_reduce",
    _scatter_reduce_forward,
    _scatter_reduce_vjp,
    shape=lambda s, i, v, dim, reduce, include_self: tuple(s),
    dtype=same_dtype,
    promote="common_skip_index",
    save_output=True,
    doc="scatter_reduce(x, index, src, dim, reduce, include_self): src reduced into x at index "
    "along dim with sum, prod, amax or amin (mean is a composite of sum and a count).",
)


@onnx_lowering("scatter_reduce")
def _scatter_reduce_onnx(b, x, index, src, dim, reduce, include_self):
    if not include_self:
        identity = _reduction_identity(np, b.out.dtype, reduce)
        fill = b.op("Expand", b.const(identity, b.out.dtype), b.op("Shape", index))
        x = b.op("ScatterElements", x, index, fill, axis=dim)
    reduction = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}[reduce]
    return b.op("ScatterElements", x, index, src, axis=dim, reduction=reduction)


@public("scatter_reduce")
def scatter_reduce(x, dim, index, src, reduce, *, include_self=True):
    """x with src reduced into it at `index` along `dim`, as `torch.scatter_reduce`: reduce is
    "sum", "prod", "mean", "amax" or "amin"; include_self=False leaves x's own values at the
    written positions out of the reduction. Differentiable in x and src.

    Example:
        >>> import ember
        >>> x = ember.tensor([1.0, 2.0, 3.0])
        >>> index = ember.tensor([0, 0, 2])
        >>> x.scatter_reduce(0, index, ember.tensor([5.0, 7.0, 1.0]), "amax").tolist()
        [7.0, 2.0, 3.0]
        >>> x.scatter_reduce(0, index, ember.tensor([5.0, 7.0, 1.0]), "mean",
        ...                  include_self=False).tolist()
        [6.0, 2.0, 1.0]
    """
    if reduce not in ("sum", "prod", "mean", "amax", "amin"):
        raise ValueError(
            at_user_line(
                f"scatter_reduce: reduce must be 'sum', 'prod', 'mean', 'amax' or 'amin', "
                f"got {reduce!r}"
            )
        )
    d = _dim(dim, x.ndim, "scatter_reduce")
    if index.dtype.is_floating_point or index.dtype is _dt.bool_:
        raise TypeError(
            at_user_line(f"scatter_reduce: index must be an int64 tensor, got {index.dtype}")
        )
    if index.ndim != x.ndim or src.ndim != index.ndim:
        raise ShapeError(
            f"scatter_reduce: index and src must have as many dims as the input ({x.ndim}), got "
            f"index {tuple(index.shape)} and src {tuple(src.shape)}"
        )
    for i, (n, m) in enumerate(zip(index.shape, src.shape)):
        if m < n or (i != d and x.shape[i] < n):
            raise ShapeError(
                f"scatter_reduce: index {tuple(index.shape)} is larger than src "
                f"{tuple(src.shape)} or than the input {tuple(x.shape)} in dim {i}"
            )
    if tuple(src.shape) != tuple(index.shape):  # torch reads the leading block of src
        src = src[tuple(slice(0, n) for n in index.shape)]
    include_self = bool(include_self)
    if reduce != "mean":
        return apply(SCATTER_REDUCE, x, index, src, dim=d, reduce=reduce, include_self=include_self)
    total = apply(SCATTER_REDUCE, x, index, src, dim=d, reduce="sum", include_self=include_self)
    start = x.new_ones(tuple(x.shape)) if include_self else x.new_zeros(tuple(x.shape))
    count = scatter_add(start, d, index, x.new_ones(tuple(index.shape)))
    count = where(count == 0, 1, count)
    if x.dtype.is_floating_point:
        return total / count
    return apply(FLOOR_DIVIDE, total, count)


@public("scatter_reduce_", function=False)
def scatter_reduce_(x, dim, index, src, reduce, *, include_self=True):
    """In-place `scatter_reduce`."""
    return x.copy_(scatter_reduce(x, dim, index, src, reduce, include_self=include_self))


def _scatter_with_reduce(x, dim, index, src, value, reduce):
    """torch's scatter(..., reduce='add' | 'multiply') (a scalar value or a tensor src)."""
    if reduce not in ("add", "multiply"):
        raise ValueError(
            at_user_line(f"scatter: reduce must be 'add' or 'multiply', got {reduce!r}")
        )
    values = src if src is not None else value
    if not hasattr(values, "shape"):
        values = x.new_full(tuple(index.shape), values)
    return scatter_reduce(x, dim, index, values, "sum" if reduce == "add" else "prod")


def cumsum_(x, dim):
    from ember.ops.reduce import cumsum

    return cumsum(x, dim)


_diagonal_view = diagonal  # `diag`'s argument is called `diagonal`, as torch's


@public("diag")
def diag(x, diagonal=0):
    """A 1-D tensor as a square matrix with it on the `diagonal` (0: the main one, > 0 above,
    < 0 below); of a 2-D tensor, that diagonal as a new 1-D tensor, as `torch.diag`.

    Example:
        >>> import ember
        >>> ember.diag(ember.tensor([1, 2]), 1).tolist()
        [[0, 1, 0], [0, 0, 2], [0, 0, 0]]
        >>> ember.diag(ember.tensor([[1, 2], [3, 4]])).tolist()
        [1, 4]
    """
    k = int(diagonal)
    if x.ndim == 2:
        return apply(COPY, _diagonal_view(x, k))
    if x.ndim != 1:
        raise ShapeError(f"diag: input must be 1-D or 2-D, got shape {tuple(x.shape)}")
    m = x.shape[0]
    # [v | 0 ... 0] row by row, read m * m at a time: v lands on the main diagonal exactly
    rows = cat([x.reshape(m, 1), x.new_zeros((m, m))], 1).reshape(-1)
    square = rows[: m * m].reshape(m, m)
    if k == 0:
        return square
    a = builtins.abs(k)
    return apply(PAD, square, pad=((0, a), (a, 0)) if k > 0 else ((a, 0), (0, a)), value=0)


@public("repeat_interleave")
def repeat_interleave(x, repeats=None, dim=None, *, output_size=None):
    """Each element repeated `repeats` times along `dim` (the flattened input for dim=None);
    `repeats` an int or a tensor with one count per element, as `torch.repeat_interleave`.
    With a tensor only, `repeat_interleave(counts)` repeats 0, 1, 2, ... counts[i] times.

    Example:
        >>> import ember
        >>> ember.tensor([[1, 2], [3, 4]]).repeat_interleave(2, dim=0).tolist()
        [[1, 2], [1, 2], [3, 4], [3, 4]]
        >>> ember.repeat_interleave(ember.tensor([1, 2]), ember.tensor([1, 2])).tolist()
        [1, 2, 2]
    """
    if repeats is None:  # repeat_interleave(counts)
        if x.ndim > 1 or x.dtype.is_floating_point:
            raise ShapeError(
                f"repeat_interleave: counts must be a 1-D integer tensor, got shape "
                f"{tuple(x.shape)} {x.dtype}"
            )
        counts = x.reshape(-1)
        return repeat_interleave(
            x.new_tensor(np.arange(counts.shape[0]), dtype=_dt.int64),
            counts,
            0,
            output_size=output_size,
        )
    if dim is None:
        x, d = x.reshape(-1), 0
    else:
        d = _dim(dim, x.ndim, "repeat_interleave")
        if x.ndim == 0:
            x = x.reshape(1)
    n = x.shape[d]
    if hasattr(repeats, "shape") and output_size is not None:
        # the output's size is given: the picks come from the counts with ops alone (so this
        # traces and exports, as torch's output_size is for): a 1 where each element's copies
        # start, summed from the left, is the element index at every output position
        if repeats.dtype.is_floating_point or repeats.dtype is _dt.bool_:
            raise TypeError(
                at_user_line(f"repeat_interleave: repeats must be integers, got {repeats.dtype}")
            )
        counts = repeats.reshape(-1)
        if counts.shape[0] not in (1, n):
            raise ShapeError(
                f"repeat_interleave: repeats has {counts.shape[0]} counts but dim {d} of the "
                f"input has size {n}"
            )
        size = int(output_size)
        if n == 0 or size == 0:
            return index_select(x, d, x.new_zeros((0,), dtype=_dt.int64))
        ends = cumsum_(counts.expand(n) if counts.shape[0] == 1 else counts, 0).to(_dt.int64)
        # torch refuses an output_size other than the sum ("allocated size does not match")
        check_index(ends[-1:], size, size + 1, "repeat_interleave: output_size != sum(repeats)")
        starts = x.new_zeros((size + 1,), dtype=_dt.int64)
        if n > 1:
            starts = scatter_add(starts, 0, ends[:-1], x.new_ones((n - 1,), dtype=_dt.int64))
        picks = cumsum_(starts, 0)[:size]
        return index_select(x, d, picks)
    if hasattr(repeats, "shape"):
        if repeats.dtype.is_floating_point or repeats.dtype is _dt.bool_:
            raise TypeError(
                at_user_line(f"repeat_interleave: repeats must be integers, got {repeats.dtype}")
            )
        if repeats.ndim > 1:
            raise ShapeError(
                f"repeat_interleave: repeats must be 0-D or 1-D, got shape {tuple(repeats.shape)}"
            )
        counts = np.asarray(repeats.detach().cpu().numpy()).reshape(-1).astype(np.int64)
        if counts.size == 1:
            repeats = int(counts[0])
        elif counts.size != n:
            raise ShapeError(
                f"repeat_interleave: repeats has {counts.size} counts but dim {d} of the input "
                f"has size {n}"
            )
    if isinstance(repeats, (int, np.integer)):
        counts = None
        if repeats < 0:
            raise ValueError(
                at_user_line(f"repeat_interleave: repeats must be non-negative, got {repeats}")
            )
        total = n * int(repeats)
    else:
        if (counts < 0).any():
            raise ValueError(
                at_user_line(f"repeat_interleave: repeats must be non-negative, got {counts}")
            )
        total = int(counts.sum())
    if output_size is not None and int(output_size) != total:
        raise ShapeError(
            f"repeat_interleave: output_size is {output_size} but the repeats give {total}"
        )
    if counts is None:  # each element r times: a new axis after d, expanded and merged
        shape = tuple(x.shape)
        grown = shape[: d + 1] + (int(repeats),) + shape[d + 1 :]
        merged = shape[:d] + (total,) + shape[d + 1 :]
        return x.unsqueeze(d + 1).expand(grown).reshape(merged)
    picks = x.new_tensor(np.repeat(np.arange(n), counts), dtype=_dt.int64)
    return index_select(x, d, picks)


def _unfold_count(length, size, step):
    return (length - size) // step + 1


def _unfold_shape(s, dim, size, step):
    s = tuple(s)
    if not s:
        return (size,)
    return s[:dim] + (_unfold_count(s[dim], size, step),) + s[dim + 1 :] + (size,)


def _unfold_forward(xp, x, dim, size, step):
    # Note [Unfold views]: the windows are a strided view of x (no copy), as torch's: window
    # w, element k of dim `dim` is x[..., w * step + k, ...], a new last dim of stride
    # x.strides[dim]; overlapping windows share memory
    if x.ndim == 0:
        return x.reshape(1)
    shape = _unfold_shape(x.shape, dim, size, step)
    strides = x.strides[:dim] + (x.strides[dim] * step,) + x.strides[dim + 1 :] + (x.strides[dim],)
    if isinstance(x, np.ndarray):
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=x.flags.writeable)
    starts = xp.arange(shape[dim])[:, None] * step + xp.arange(size)[None, :]
    picked = xp.take(x, starts.reshape(-1), axis=dim).reshape(
        x.shape[:dim] + (shape[dim], size) + x.shape[dim + 1 :]
    )
    return xp.moveaxis(picked, dim + 1, -1)


def _unfold_window_index(length, size, step):
    count = _unfold_count(length, size, step)
    return (np.arange(count)[:, None] * step + np.arange(size)[None, :]).reshape(-1)


def _unfold_vjp(g, y, x, dim, size, step):
    # each window's gradient lands back on the elements it viewed (summed where they overlap)
    if not x.shape:
        return (g.reshape(()),)
    shape = tuple(x.shape)
    count = _unfold_count(shape[dim], size, step)
    flat = movedim(g, -1, dim + 1).reshape(shape[:dim] + (count * size,) + shape[dim + 1 :])
    index = g.new_tensor(_unfold_window_index(shape[dim], size, step), dtype=_dt.int64)
    spec = (("s", None, None, None),) * dim + (("t",),)
    return (apply(INDEX_ADD, _zero_base(g, shape), flat, index, spec=spec),)


UNFOLD = defop(
    "unfold",
    _unfold_forward,
    _unfold_vjp,
    shape=lambda s, dim, size, step: _unfold_shape(s, dim, size, step),
    dtype=same_dtype,
    view=True,
    doc="Tensor.unfold(dim, size, step): every window of `size` elements `step` apart along "
    "dim as a new last dim; a view (Note [Unfold views]).",
)


@onnx_lowering("unfold")
def _unfold_onnx(b, x, dim, size, step):
    shape = b.ins[0].shape
    if not shape:
        return b.op("Reshape", x, b.ints([1]))
    count = _unfold_count(shape[dim], size, step)
    index = b.const(_unfold_window_index(shape[dim], size, step).reshape(count, size), "int64")
    picked = b.op("Gather", x, index, axis=dim)  # (..., count, size, ...)
    rank = len(shape) + 1
    perm = [a for a in range(rank) if a != dim + 1] + [dim + 1]
    return b.op("Transpose", picked, perm=perm)


@UNFOLD.public("unfold", function=False)
def unfold(x, dimension, size, step):
    """Every window of `size` elements along `dimension`, `step` apart, as a new last dim
    (`Tensor.unfold`): a view of x, as torch's, and differentiable.

    Example:
        >>> import ember
        >>> ember.arange(5).unfold(0, 2, 2).tolist()
        [[0, 1], [2, 3]]
    """
    d = _dim(dimension, x.ndim, "unfold")
    length = x.shape[d] if x.ndim else 1
    if step <= 0:
        raise ShapeError(f"unfold: step is {step} but must be > 0")
    if size < 0 or size > length:
        raise ShapeError(f"unfold: maximum size for dimension {d} is {length} but size is {size}")
    return apply(UNFOLD, x, dim=d, size=int(size), step=int(step))


@public("meshgrid", method=False)
def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-D tensors, as `torch.meshgrid`: indexing="ij" (matrix, torch's
    default) gives grids of shape (len(t0), len(t1), ...), "xy" (Cartesian) swaps the first
    two. The grids are expanded views.

    Example:
        >>> import ember
        >>> gx, gy = ember.meshgrid(ember.tensor([1, 2, 3]), ember.tensor([4, 5]), indexing="xy")
        >>> gx.tolist(), gy.tolist()
        ([[1, 2, 3], [1, 2, 3]], [[4, 4, 4], [5, 5, 5]])
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(at_user_line(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}"))
    if not tensors:
        raise ValueError(at_user_line("meshgrid: expects at least one tensor"))
    for t in tensors:
        if t.ndim > 1:
            raise ShapeError(f"meshgrid: expects 0-D or 1-D tensors, got shape {tuple(t.shape)}")
        if t.dtype is not tensors[0].dtype:
            raise TypeError(
                at_user_line(
                    f"meshgrid: expects all tensors to have the same dtype, got {tensors[0].dtype} "
                    f"and {t.dtype}"
                )
            )
    swap = indexing == "xy" and len(tensors) >= 2
    order = list(tensors)
    if swap:
        order[0], order[1] = order[1], order[0]
    shape = tuple(t.numel() for t in order)
    grids = []
    for i, t in enumerate(order):
        view = [1] * len(order)
        view[i] = shape[i]
        grids.append(t.reshape(tuple(view)).expand(shape))
    if swap:
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)
