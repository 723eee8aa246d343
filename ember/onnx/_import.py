"""`ember.onnx.load`: an ONNX file as an ember program, run eagerly or compiled, with no
onnxruntime.

Note [ONNX import]: each ONNX node maps to a handler written with ember ops, so a loaded
program runs eagerly, traces into an ember graph (`program.trace(...)`, `program.compile()`)
and differentiates like any ember code. ONNX files compute shapes at run time (Shape, Gather,
Concat feeding Reshape); ember graphs have static shapes, so a value is *static* when it comes
from an initializer, a Constant, a Shape of anything, or a node whose inputs are all static.
Static nodes run eagerly even while tracing (the tracer is set aside for them), so a Reshape's
target is a known tuple and compiling retraces per input shape as `ember.compile` does. Nodes
whose inputs are all initializers are folded once at load time. Unknown ops stop `load` with
their names.
"""

from __future__ import annotations

import os

import numpy as np

from ember import dtypes as _dt
from ember import ops as _ops
from ember.ops import nn as _nn
from ember.backend import host_values
from ember.tensor import Tensor, from_numpy

__all__ = ["load", "OnnxProgram", "OnnxImportError"]

_INT64_MAX = 2**63 - 1


class OnnxImportError(RuntimeError):
    """An ONNX file cannot be read or run by ember (names the node and op)."""


def _eager():
    """Run ops eagerly even inside a trace (static values, Note [ONNX import])."""
    from ember.backend import unstaged

    return unstaged()


def _np(t) -> np.ndarray:
    return t.numpy() if isinstance(t, Tensor) else np.asarray(t)


def _ints(t) -> list:
    try:
        return [int(v) for v in _np(t).reshape(-1)]
    except TypeError as error:
        raise OnnxImportError(
            f"a shape-like input is computed from the traced inputs' values, which a compiled "
            f"ember graph cannot know ({error})"
        ) from None


def _ember_dtype(onnx_elem_type: int):
    from onnx import helper

    return _dt.from_numpy_dtype(np.dtype(helper.tensor_dtype_to_np_dtype(onnx_elem_type)))


def _const(array) -> Tensor:
    array = np.asarray(array)
    # ascontiguousarray makes a 0-d array 1-d: keep the shape (a Constant scalar index)
    return from_numpy(np.ascontiguousarray(array).reshape(array.shape))


# --- handlers: fn(attrs, *inputs) -> Tensor or list of Tensors -----------------------------------
H: dict = {}


def _handler(*names):
    def register(fn):
        for n in names:
            H[n] = fn
        return fn

    return register


def _unary(name, fn):
    H[name] = lambda attrs, x: fn(x)


for _name, _fn in {
    "Neg": _ops.elementwise.neg,
    "Abs": _ops.elementwise.abs,
    "Sign": _ops.elementwise.sign,
    "Exp": _ops.elementwise.exp,
    "Log": _ops.elementwise.log,
    "Sqrt": _ops.elementwise.sqrt,
    "Reciprocal": lambda x: 1.0 / x if x.dtype.is_floating_point else 1 // x,
    "Sin": _ops.elementwise.sin,
    "Cos": _ops.elementwise.cos,
    "Tanh": _ops.elementwise.tanh,
    "Erf": _ops.elementwise.erf,
    "Sigmoid": _ops.elementwise.sigmoid,
    "Relu": _ops.elementwise.relu,
    "Not": _ops.elementwise.logical_not,
    "IsNaN": _ops.elementwise.isnan,
    "Floor": _ops.elementwise.floor,
    "Ceil": _ops.elementwise.ceil,
    "Round": _ops.elementwise.round,
    "Identity": lambda x: x,
    "Softplus": lambda x: _ops.elementwise.log1p(_ops.elementwise.exp(-x.abs())) + x.clamp(0),
}.items():
    _unary(_name, _fn)

_BINARY = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Pow": lambda a, b: a**b,
    "Equal": lambda a, b: a == b,
    "Less": lambda a, b: a < b,
    "LessOrEqual": lambda a, b: a <= b,
    "Greater": lambda a, b: a > b,
    "GreaterOrEqual": lambda a, b: a >= b,
    "And": _ops.elementwise.logical_and,
    "Or": _ops.elementwise.logical_or,
    "Xor": _ops.elementwise.logical_xor,
}
for _name, _fn in _BINARY.items():
    H[_name] = (lambda f: lambda attrs, a, b: f(a, b))(_fn)


@_handler("Div")
def _div(attrs, a, b):
    if a.dtype.is_floating_point:
        return a / b
    q = a // b  # ONNX's integer division truncates toward zero
    fix = _ops.elementwise.logical_and(a % b != 0, (a < 0) != (b < 0))
    return _ops.elementwise.where(fix, q + 1, q)


@_handler("Mod")
def _mod(attrs, a, b):
    if attrs.get("fmod", 0):
        return a - (a / b).trunc().to(a.dtype) * b
    return a % b


@_handler("Max", "Min", "Sum", "Mean")
def _variadic(attrs, *xs, op_type):
    fn = {
        "Max": _ops.elementwise.maximum,
        "Min": _ops.elementwise.minimum,
        "Sum": lambda a, b: a + b,
        "Mean": lambda a, b: a + b,
    }[op_type]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out / len(xs) if op_type == "Mean" else out


@_handler("IsInf")
def _isinf(attrs, x):
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    inf = _ops.elementwise.isinf(x)
    if pos and neg:
        return inf
    return _ops.elementwise.logical_and(inf, x > 0 if pos else x < 0)


@_handler("Where")
def _where(attrs, c, a, b):
    return _ops.elementwise.where(c, a, b)


@_handler("Clip")
def _clip(attrs, x, low=None, high=None):
    if low is not None:
        x = _ops.elementwise.maximum(x, low.to(x.dtype))
    if high is not None:
        x = _ops.elementwise.minimum(x, high.to(x.dtype))
    return x


@_handler("LeakyRelu")
def _leaky_relu(attrs, x):
    return _ops.elementwise.where(x >= 0, x, x * attrs.get("alpha", 0.01))


@_handler("Cast")
def _cast(attrs, x):
    return x.to(_ember_dtype(attrs["to"]))


@_handler("CastLike")
def _cast_like(attrs, x, like):
    return x.to(like.dtype)


@_handler("Constant")
def _constant(attrs):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            value = attrs[key]
            if key in ("value_float", "value_floats"):
                value = np.asarray(value, np.float32)
            elif key in ("value_int", "value_ints"):
                value = np.asarray(value, np.int64)
            return _const(value)
    raise OnnxImportError(f"Constant: unsupported attributes {sorted(attrs)}")


@_handler("ConstantOfShape")
def _constant_of_shape(attrs, shape):
    value = attrs.get("value", np.zeros(1, np.float32))
    return _const(np.full(_ints(shape), value.reshape(-1)[0], value.dtype))


@_handler("Shape")
def _shape(attrs, x):
    shape = list(x.shape)
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return _const(np.asarray(shape[start:end], np.int64))


@_handler("Size")
def _size(attrs, x):
    return _const(np.asarray(x.numel(), np.int64))


@_handler("Reshape")
def _reshape(attrs, x, shape):
    target = _ints(shape)
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(tuple(target))


@_handler("Transpose")
def _transpose(attrs, x):
    perm = attrs.get("perm") or list(reversed(range(x.ndim)))
    return x.permute(*perm)


@_handler("Expand")
def _expand(attrs, x, shape):
    target = _ints(shape)
    ndim = max(len(target), x.ndim)
    src = [1] * (ndim - x.ndim) + list(x.shape)
    tgt = [1] * (ndim - len(target)) + target
    out = tuple(s if t == 1 else t for s, t in zip(src, tgt))
    if x.ndim < ndim:
        x = x.reshape(tuple(src))
    return x.expand(*out)


@_handler("Concat")
def _concat(attrs, *xs):
    return _ops.shape.cat([x for x in xs if x is not None], attrs["axis"])


def _slice_index(ndim, shape, starts, ends, axes, steps):
    index = [slice(None)] * ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + ndim if a < 0 else a
        n = shape[a]
        if s < 0:
            s += n
        if e < 0:
            e += n
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, -1), n - 1), min(max(e, -1), n - 1)
            if e < 0:
                e = None
            if s < 0:
                s, e = 0, 0  # empty
        index[a] = slice(s, e, st)
    return tuple(index)


@_handler("Slice")
def _slice(attrs, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    return x[_slice_index(x.ndim, tuple(x.shape), starts, ends, axes, steps)]


@_handler("Gather")
def _gather(attrs, x, index):
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    if index.ndim == 0:
        if host_values(index.array) is not None:  # a concrete index (Note [Staging backends])
            return x[(slice(None),) * axis + (_ints(index)[0],)]
        out = x[(slice(None),) * axis + (index.reshape(1),)]  # a traced scalar index
        return out.reshape(tuple(n for i, n in enumerate(out.shape) if i != axis))
    return x[(slice(None),) * axis + (index,)]


@_handler("GatherElements")
def _gather_elements(attrs, x, index):
    axis = attrs.get("axis", 0)
    n = x.shape[axis]
    index = _ops.elementwise.where(index < 0, index + n, index)
    return _ops.shape.gather(x, axis, index)


@_handler("GatherND")
def _gather_nd(attrs, x, index):
    batch = attrs.get("batch_dims", 0)
    k = index.shape[-1]
    parts = []
    lead = tuple(index.shape[:-1])
    for d in range(batch):  # the batch dims index themselves
        shape = [1] * len(lead)
        shape[d] = lead[d]
        parts.append(_const(np.arange(lead[d], dtype=np.int64).reshape(shape)))
    for j in range(k):
        idx = index[..., j]
        n = x.shape[batch + j]
        parts.append(_ops.elementwise.where(idx < 0, idx + n, idx))
    return x[tuple(parts)]


@_handler("ScatterElements")
def _scatter_elements(attrs, x, index, updates):
    reduction = attrs.get("reduction", "none")
    axis = attrs.get("axis", 0)
    if reduction == "add":
        return _ops.shape.scatter_add(x, axis, index, updates)
    if reduction in ("mul", "max", "min"):
        reduce = {"mul": "prod", "max": "amax", "min": "amin"}[reduction]
        return _ops.shape.scatter_reduce(x, axis, index, updates, reduce)
    if reduction != "none":
        raise OnnxImportError(f"ScatterElements: reduction {reduction!r} is not supported")
    return _ops.shape.scatter(x, axis, index, updates)


@_handler("Squeeze")
def _squeeze(attrs, x, axes=None):
    axes = _ints(axes) if axes is not None else attrs.get("axes")
    if axes is None:
        axes = [i for i, n in enumerate(x.shape) if n == 1]
    axes = sorted(a + x.ndim if a < 0 else a for a in axes)
    return x.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))


@_handler("Unsqueeze")
def _unsqueeze(attrs, x, axes=None):
    axes = _ints(axes) if axes is not None else attrs["axes"]
    ndim = x.ndim + len(axes)
    axes = sorted(a + ndim if a < 0 else a for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return x.reshape(tuple(shape))


@_handler("Flatten")
def _flatten(attrs, x):
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape((lead, -1))


def _reduce_axes(attrs, x, axes):
    if axes is not None:
        axes = _ints(axes)
    else:
        axes = attrs.get("axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(x.ndim))
    return tuple(sorted(a + x.ndim if a < 0 else a for a in axes))


def _reduction(fn):
    def handle(attrs, x, axes=None):
        dims = _reduce_axes(attrs, x, axes)
        if dims is None:
            return x
        return fn(x, dims, bool(attrs.get("keepdims", 1)))

    return handle


H["ReduceSum"] = _reduction(lambda x, d, k: _ops.reduce.sum(x, d, k).to(x.dtype))
H["ReduceMean"] = _reduction(lambda x, d, k: _ops.reduce.mean(x, d, k))
H["ReduceMax"] = _reduction(lambda x, d, k: _ops.reduce.amax(x, d, k))
H["ReduceMin"] = _reduction(lambda x, d, k: _ops.reduce.amin(x, d, k))


def _prod(x, dims, keepdim):
    """ember's prod takes one dim: reduce the dims one by one, last first."""
    out = x
    for d in sorted(dims, reverse=True):
        out = _ops.reduce.prod(out, d, keepdim)
    return out.to(x.dtype)


H["ReduceProd"] = _reduction(_prod)


@_handler("ArgMax", "ArgMin")
def _arg(attrs, x, op_type):
    fn = _ops.reduce.argmax if op_type == "ArgMax" else _ops.reduce.argmin
    if attrs.get("select_last_index", 0):
        raise OnnxImportError(f"{op_type}: select_last_index=1 is not supported")
    return fn(x, attrs.get("axis", 0), bool(attrs.get("keepdims", 1)))


@_handler("CumSum")
def _cumsum(attrs, x, axis):
    (d,) = _ints(axis)
    if attrs.get("reverse", 0):
        x = _ops.shape.flip(x, (d,))
    out = _ops.reduce.cumsum(x, d).to(x.dtype)
    if attrs.get("exclusive", 0):
        out = out - x
    if attrs.get("reverse", 0):
        out = _ops.shape.flip(out, (d,))
    return out


@_handler("MatMul")
def _matmul(attrs, a, b):
    return _ops.linalg.matmul(a, b)


@_handler("Gemm")
def _gemm(attrs, a, b, c=None):
    if attrs.get("transA", 0):
        a = a.mT
    if attrs.get("transB", 0):
        b = b.mT
    out = _ops.linalg.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if c is not None:
        out = out + (c * beta if beta != 1.0 else c)
    return out


@_handler("Einsum")
def _einsum(attrs, *xs):
    return _ops.linalg.einsum(attrs["equation"], *xs)


@_handler("Det")
def _det(attrs, x):
    return _ops.linalg_ext.det(x)


def _symmetric_pads(op, pads, nd):
    pads = list(pads or [0] * (2 * nd))
    if pads[:nd] != pads[nd:]:
        raise OnnxImportError(f"{op}: asymmetric pads {pads} are not supported")
    return tuple(pads[:nd])


def _check_auto_pad(op, attrs):
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise OnnxImportError(f"{op}: auto_pad={attrs['auto_pad']!r} is not supported")


@_handler("Conv")
def _conv(attrs, x, w, bias=None):
    _check_auto_pad("Conv", attrs)
    if x.ndim != 4:
        raise OnnxImportError(f"Conv: only 2-D convolutions are supported, got input {x.shape}")
    return _ops.conv.conv2d(
        x,
        w,
        bias,
        stride=tuple(attrs.get("strides", [1, 1])),
        padding=_symmetric_pads("Conv", attrs.get("pads"), 2),
        dilation=tuple(attrs.get("dilations", [1, 1])),
        groups=attrs.get("group", 1),
    )


@_handler("MaxPool")
def _max_pool(attrs, x, n_outputs=1):
    """1-D to 3-D; the optional Indices output is flat over the whole (N, C, *spatial)
    tensor (ember's max_pool_indices are per (N, C) plane, so the plane offsets are added)."""
    _check_auto_pad("MaxPool", attrs)
    kernel = tuple(attrs["kernel_shape"])
    nd = len(kernel)
    if attrs.get("storage_order", 0):
        raise OnnxImportError("MaxPool: storage_order=1 (column-major indices) is not supported")
    options = dict(
        stride=tuple(attrs.get("strides", [1] * nd)),
        padding=_symmetric_pads("MaxPool", attrs.get("pads"), nd),
        dilation=tuple(attrs.get("dilations", [1] * nd)),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )
    if nd == 2 and n_outputs == 1:
        return _ops.conv.max_pool2d(x, kernel, **options)
    index = _ops.registry.apply(_ops.conv.MAX_POOL_INDICES, x, kernel=kernel, **options)
    values = _ops.conv._gather_planes(x, index, tuple(index.shape))
    if n_outputs == 1:
        return values
    n, c = int(x.shape[0]), int(x.shape[1])
    plane = int(np.prod(x.shape[2:]))
    offsets = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * nd) * plane
    return [values, index + _const(offsets)]


@_handler("AveragePool")
def _avg_pool(attrs, x):
    _check_auto_pad("AveragePool", attrs)
    kernel = tuple(attrs["kernel_shape"])
    if len(kernel) != 2:
        raise OnnxImportError(f"AveragePool: only 2-D pooling is supported, got {kernel}")
    return _ops.conv.avg_pool2d(
        x,
        kernel,
        stride=tuple(attrs.get("strides", kernel)),
        padding=_symmetric_pads("AveragePool", attrs.get("pads"), 2),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        count_include_pad=bool(attrs.get("count_include_pad", 0)),
    )


@_handler("GlobalAveragePool")
def _global_avg_pool(attrs, x):
    return _ops.reduce.mean(x, tuple(range(2, x.ndim)), True)


@_handler("BatchNormalization")
def _batch_norm(attrs, x, scale, bias, mean, var):
    if attrs.get("training_mode", 0):
        raise OnnxImportError("BatchNormalization: training_mode=1 is not supported")
    return _nn.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))


@_handler("LayerNormalization")
def _layer_norm(attrs, x, scale, bias=None):
    axis = attrs.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    eps = attrs.get("epsilon", 1e-5)
    return _nn.layer_norm(x, tuple(x.shape[axis:]), scale, bias, eps)


@_handler("Softmax", "LogSoftmax")
def _softmax(attrs, x, op_type):
    fn = _nn.softmax if op_type == "Softmax" else _nn.log_softmax
    return fn(x, attrs.get("axis", -1))


@_handler("Gelu")
def _gelu(attrs, x):
    return _nn.gelu(x, attrs.get("approximate", "none"))


@_handler("Range")
def _range(attrs, start, limit, delta):
    from ember.tensor import arange

    s, e, d = (_np(v).reshape(()).item() for v in (start, limit, delta))
    return arange(s, e, d, dtype=start.dtype)


@_handler("Trilu")
def _trilu(attrs, x, k=None):
    k = _ints(k)[0] if k is not None else 0
    return _ops.shape.triu(x, k) if attrs.get("upper", 1) else _ops.shape.tril(x, k)


@_handler("Pad")
def _pad(attrs, x, pads, value=None, axes=None):
    if attrs.get("mode", "constant") != "constant":
        raise OnnxImportError(f"Pad: mode {attrs['mode']!r} is not supported")
    pads = _ints(pads)
    axes = _ints(axes) if axes is not None else list(range(x.ndim))
    n = len(axes)
    pairs = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        pairs[a + x.ndim if a < 0 else a] = (pads[i], pads[i + n])
    torch_style = []
    for before, after in reversed(pairs):
        torch_style += [before, after]
    fill = float(_np(value).reshape(-1)[0]) if value is not None else 0.0
    return _ops.shape.pad(x, torch_style, value=fill)


@_handler("TopK")
def _topk(attrs, x, k):
    values, indices = _ops.shape.topk(
        x, _ints(k)[0], attrs.get("axis", -1), bool(attrs.get("largest", 1)), True
    )
    return [values, indices]


@_handler("Split")
def _split(attrs, x, split=None, n_outputs=1):
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    if split is not None:
        sizes = _ints(split)
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        count = attrs.get("num_outputs", n_outputs)
        chunk = -(-x.shape[axis] // count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    out, start = [], 0
    for s in sizes:
        out.append(x.narrow(axis, start, s))
        start += s
    return out


@_handler("Tile")
def _tile(attrs, x, repeats):
    return x.repeat(*_ints(repeats))


@_handler("Dropout")
def _dropout(attrs, x, ratio=None, training=None):
    return [x, _const(np.ones(tuple(x.shape), bool))]


# inverse and hyperbolic trig and the bitwise ops (issue 18)
for _name in ("Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh"):
    _unary(_name, getattr(_ops.elementwise, _name.lower()))
_unary("BitwiseNot", _ops.elementwise.bitwise_not)
for _name, _fn in {
    "BitwiseAnd": _ops.elementwise.bitwise_and,
    "BitwiseOr": _ops.elementwise.bitwise_or,
    "BitwiseXor": _ops.elementwise.bitwise_xor,
}.items():
    H[_name] = (lambda f: lambda attrs, a, b: f(a, b))(_fn)


_NEEDS_OP_TYPE = {"Max", "Min", "Sum", "Mean", "ArgMax", "ArgMin", "Softmax", "LogSoftmax"}
_NEEDS_N_OUTPUTS = {"Split", "MaxPool", "LSTM", "GRU", "RNN"}


# --- recurrent layers (what PyTorch's TorchScript exporter writes for nn.LSTM/GRU/RNN) ---------
# ONNX's gate blocks are LSTM (i, o, f, c), GRU (z, r, h); ember's recurrences take PyTorch's
# (i, f, g, o) and (r, z, n) (Note [Fused recurrence] in ember/ops/rnn.py).
_GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}  # fmt: skip


def _regate(t, op_type, axis):
    """Reorder the gate blocks of `t` along `axis` from ONNX's order to PyTorch's."""
    order = _GATE_ORDER[op_type]
    size = t.shape[axis] // len(order)
    blocks = [t.narrow(axis, k * size, size) for k in order]
    return blocks[0] if len(blocks) == 1 else _ops.shape.cat(blocks, axis)


def _recurrent(op_type):
    def handle(attrs, x, w, r, b=None, lengths=None, h0=None, c0=None, p=None, n_outputs=1):
        from ember.ops import rnn as _rnn

        name = op_type
        direction = attrs.get("direction", "forward")
        dirs = 2 if direction == "bidirectional" else 1
        hidden = int(attrs["hidden_size"])
        activations = [a if isinstance(a, str) else a.decode() for a in
                       attrs.get("activations", _DEFAULT_ACTIVATIONS[op_type] * dirs)]  # fmt: skip
        per_dir = len(activations) // dirs
        nonlinearity = "tanh"
        if op_type == "RNN" and all(a == "Relu" for a in activations):
            nonlinearity = "relu"
        elif activations != _DEFAULT_ACTIVATIONS[op_type][:per_dir] * dirs:
            raise OnnxImportError(f"{name}: activations {activations} are not supported")
        for unsupported in ("clip", "activation_alpha", "activation_beta"):
            if unsupported in attrs:
                raise OnnxImportError(f"{name}: the {unsupported} attribute is not supported")
        if attrs.get("input_forget", 0) or p is not None:
            raise OnnxImportError(f"{name}: input_forget and peepholes are not supported")
        if op_type == "GRU" and not attrs.get("linear_before_reset", 0):
            raise OnnxImportError(
                "GRU: linear_before_reset=0 (the reset gate applied before the hidden "
                "projection) is not supported; PyTorch's GRU is linear_before_reset=1"
            )
        batch_first = bool(attrs.get("layout", 0))
        if batch_first:
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        steps, batch = int(x.shape[0]), int(x.shape[1])
        seq = None
        if lengths is not None:
            values = host_values(lengths.array)
            if values is None:
                raise OnnxImportError(
                    f"{name}: sequence_lens computed from the traced inputs cannot be compiled"
                )
            seq = [int(v) for v in values.reshape(-1)]
            if all(v == steps for v in seq):
                seq = None
        zeros = x.new_zeros((dirs, batch, hidden))
        h0 = zeros if h0 is None else h0
        c0 = zeros if c0 is None else c0
        ys, hs, cs = [], [], []
        for d in range(dirs):
            reverse = direction == "reverse" or d == 1
            w_ih = _regate(w[d], op_type, 0)
            w_hh = _regate(r[d], op_type, 0)
            b_ih = b_hh = None
            if b is not None:
                b_ih = _regate(b[d, : b.shape[1] // 2], op_type, 0)
                b_hh = _regate(b[d, b.shape[1] // 2 :], op_type, 0)
            if op_type == "LSTM":
                y, h, c = _rnn.lstm_layer(x, h0[d], c0[d], w_ih, w_hh, b_ih, b_hh,
                                          reverse=reverse, lengths=seq)  # fmt: skip
                cs.append(c)
            elif op_type == "GRU":
                y, h = _rnn.gru_layer(x, h0[d], w_ih, w_hh, b_ih, b_hh, reverse=reverse,
                                      lengths=seq)  # fmt: skip
            else:
                y, h = _rnn.rnn_layer(x, h0[d], w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity,
                                      reverse=reverse, lengths=seq)  # fmt: skip
            ys.append(y)
            hs.append(h)
        y = _ops.shape.stack(ys, 1)  # (seq, dirs, batch, hidden)
        h = _ops.shape.stack(hs, 0)
        outs = [y, h] + ([_ops.shape.stack(cs, 0)] if op_type == "LSTM" else [])
        if batch_first:
            outs = [outs[0].permute(2, 0, 1, 3)] + [o.transpose(0, 1) for o in outs[1:]]
        return outs[:n_outputs]

    return handle


for _name in ("LSTM", "GRU", "RNN"):
    H[_name] = _recurrent(_name)


@_handler("Scan")
def _scan_placeholder(attrs, *xs):  # pragma: no cover - OnnxProgram runs Scan itself
    raise OnnxImportError("Scan runs through its program (it reads outer values)")


def _all_op_types(graph) -> set:
    """Op types of a graph and of the bodies of its nodes (Scan, Loop, If)."""
    from onnx import helper

    types = set()
    for n in graph.node:
        types.add((n.domain, n.op_type))
        for a in n.attribute:
            value = helper.get_attribute_value(a)
            bodies = [value] if hasattr(value, "node") else (
                list(value) if isinstance(value, list) and value and hasattr(value[0], "node")
                else []
            )  # fmt: skip
            for body in bodies:
                types |= _all_op_types(body)
    return types


def _attributes(node) -> dict:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif hasattr(value, "dims") and hasattr(value, "data_type"):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[a.name] = value
    return out


class _Node:
    __slots__ = ("op_type", "name", "inputs", "outputs", "attrs", "handler")

    def __init__(self, node):
        self.op_type = node.op_type
        self.name = node.name or f"{node.op_type}->{node.output[0]}"
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = _attributes(node)
        fn = H[node.op_type]
        if node.op_type in _NEEDS_OP_TYPE:
            op_type = node.op_type
            self.handler = lambda attrs, *xs: fn(attrs, *xs, op_type=op_type)
        elif node.op_type in _NEEDS_N_OUTPUTS:
            n = len(node.output)
            self.handler = lambda attrs, *xs: fn(attrs, *xs, n_outputs=n)
        else:
            self.handler = fn


class OnnxProgram:
    """An ONNX graph as ember code (Note [ONNX import]): call it with tensors (or NumPy
    arrays) by position or by input name; it returns a tuple of tensors, one per graph output
    (`output_names`). `compile()` gives an `ember.compile`d version, `trace(...)` the ember
    graph for given example inputs."""

    def __init__(self, model, path=None):
        graph = model.graph
        self.path = path
        self.opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
        )
        types = _all_op_types(graph)
        others = sorted({d for d, _ in types if d not in ("", "ai.onnx")})
        unknown = sorted({t for _, t in types if t not in H})
        if unknown or others:
            where = f" in {path}" if path else ""
            parts = []
            if unknown:
                parts.append("ops ember cannot run: " + ", ".join(unknown))
            if others:
                parts.append("custom op domains: " + ", ".join(others))
            raise OnnxImportError(f"ember.onnx.load{where}: " + "; ".join(parts))
        from onnx import numpy_helper

        self.initializers: dict = {
            t.name: from_numpy(np.array(numpy_helper.to_array(t))) for t in graph.initializer
        }
        self.input_names = [i.name for i in graph.input if i.name not in self.initializers]
        self.input_types = {}
        for i in graph.input:
            if i.name in self.initializers:
                continue
            t = i.type.tensor_type
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                    for d in t.shape.dim]  # fmt: skip
            self.input_types[i.name] = (_ember_dtype(t.elem_type), dims)
        self.output_names = [o.name for o in graph.output]
        self.nodes = [_Node(n) for n in graph.node]
        self._fold_initializers()

    def _fold_initializers(self) -> None:
        """Run the nodes whose inputs are all initializers once, now."""
        known = dict(self.initializers)
        kept = []
        for node in self.nodes:
            ins = [i for i in node.inputs if i]
            if node.op_type != "Dropout" and all(i in known for i in ins):
                try:
                    with _eager():
                        outs = self._run_node(node, known)
                except Exception:  # leave it to run (and fail with its name) at call time
                    kept.append(node)
                    continue
                known.update(outs)
                continue
            kept.append(node)
        self.nodes = kept
        self.initializers = known

    def _run_node(self, node, values) -> dict:
        if node.op_type == "Scan":
            return self._run_scan(node, values)
        args = [values[i] if i else None for i in node.inputs]
        while args and args[-1] is None:
            args.pop()
        result = node.handler(node.attrs, *args)
        results = result if isinstance(result, list) else [result]
        return {n: r for n, r in zip(node.outputs, results) if n}

    def _run_scan(self, node, values) -> dict:
        """ONNX Scan (opset 9+): the body runs once per step over the scan inputs' slices,
        reading outer values by name; per-step outputs are stacked (reversed where their
        direction is 1, so each lands at its own step)."""
        from ember.ops import shape as _shape

        body = node.attrs["body"]
        nodes = [_Node(n) for n in body.node]
        m = int(node.attrs["num_scan_inputs"])
        inputs = [values[i] if i else None for i in node.inputs]
        n_states = len(inputs) - m
        states, scans = inputs[:n_states], inputs[n_states:]
        in_dirs = list(node.attrs.get("scan_input_directions", [0] * m))
        in_axes = [a % scans[k].ndim for k, a in
                   enumerate(node.attrs.get("scan_input_axes", [0] * m))]  # fmt: skip
        n_out = len(body.output) - n_states
        out_dirs = list(node.attrs.get("scan_output_directions", [0] * n_out))
        out_axes = list(node.attrs.get("scan_output_axes", [0] * n_out))
        steps = int(scans[0].shape[in_axes[0]]) if scans else 0
        if steps == 0:
            raise OnnxImportError("Scan over zero steps (its outputs' shapes are unknown)")
        body_in = [i.name for i in body.input]
        body_out = [o.name for o in body.output]
        collected: list = [[] for _ in range(n_out)]
        for t in range(steps):
            local = dict(values)
            local.update(zip(body_in[:n_states], states))
            for k, x in enumerate(scans):
                index = steps - 1 - t if in_dirs[k] else t
                local[body_in[n_states + k]] = x[(slice(None),) * in_axes[k] + (index,)]
            self._run_nodes(nodes, local, set())
            states = [local[n] for n in body_out[:n_states]]
            for k in range(n_out):
                collected[k].append(local[body_out[n_states + k]])
        outs = list(states)
        for k in range(n_out):
            items = collected[k][::-1] if out_dirs[k] else collected[k]
            axis = out_axes[k] % (items[0].ndim + 1)
            outs.append(_shape.stack(items, axis))
        return {n: r for n, r in zip(node.outputs, outs) if n}

    def _feed(self, args, kwargs) -> dict:
        if len(args) > len(self.input_names):
            raise OnnxImportError(
                f"{self._label()}: {len(args)} inputs given, the graph takes "
                f"{len(self.input_names)} ({self.input_names})"
            )
        feed = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise OnnxImportError(
                    f"{self._label()}: no input named {k!r}; inputs: {self.input_names}"
                )
            feed[k] = v
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise OnnxImportError(f"{self._label()}: missing inputs {missing}")
        for name, value in feed.items():
            if not isinstance(value, Tensor):
                value = from_numpy(np.asarray(value))
            dtype, dims = self.input_types[name]
            if value.dtype != dtype:
                raise OnnxImportError(
                    f"{self._label()}: input {name!r} must be {dtype.name}, got {value.dtype.name}"
                )
            if len(dims) != value.ndim or any(
                isinstance(d, int) and d != n for d, n in zip(dims, value.shape)
            ):
                raise OnnxImportError(
                    f"{self._label()}: input {name!r} must have shape {dims}, got "
                    f"{tuple(value.shape)}"
                )
            feed[name] = value
        return feed

    def _label(self) -> str:
        return f"ONNX program {os.path.basename(self.path)}" if self.path else "ONNX program"

    def __call__(self, *args, **kwargs):
        feed = self._feed(args, kwargs)
        values = dict(self.initializers)
        values.update(feed)
        self._run_nodes(self.nodes, values, set(self.initializers))
        return tuple(values[n] for n in self.output_names)

    def _run_nodes(self, nodes, values, static) -> None:
        """Run `nodes` in order, adding their outputs to `values` (Note [ONNX import])."""
        for node in nodes:
            ins = [i for i in node.inputs if i]
            try:
                if node.op_type in ("Shape", "Size", "Constant") or all(i in static for i in ins):
                    with _eager():
                        outs = self._run_node(node, values)
                    static.update(outs)
                else:
                    outs = self._run_node(node, values)
            except OnnxImportError as error:
                raise OnnxImportError(f"node {node.name} ({node.op_type}): {error}") from None
            except Exception as error:
                shapes = [tuple(values[i].shape) if i in values else None for i in ins]
                raise OnnxImportError(
                    f"node {node.name} ({node.op_type}) with inputs of shapes {shapes} failed: "
                    f"{type(error).__name__}: {error}"
                ) from error
            values.update(outs)

    def compile(self, **options):
        """This program as an `ember.compile`d function (one graph per input signature)."""
        from ember.graph.compile import compile as _compile

        return _compile(self.__call__, name=options.pop("name", "onnx_program"), **options)

    def trace(self, *args, **kwargs):
        """The optimised ember graph of this program for these example inputs."""
        return self.compile().trace(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<ember.onnx program{' ' + repr(self.path) if self.path else ''}: "
            f"{len(self.nodes)} nodes, inputs {self.input_names}, outputs {self.output_names}>"
        )


def load(path_or_model) -> OnnxProgram:
    """Read an ONNX file (a path, bytes or an onnx.ModelProto) as an ember program.

    Example:
        >>> program = ember.onnx.load("model.onnx")  # doctest: +SKIP
        >>> (logits,) = program(input_ids=ids, attention_mask=mask)  # doctest: +SKIP
    """
    import onnx

    path = None
    if isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        if not os.path.isfile(path):
            raise OnnxImportError(f"ember.onnx.load: no file at {path}")
        try:
            model = onnx.load(path)
        except Exception as error:
            raise OnnxImportError(
                f"ember.onnx.load: {path} is not an ONNX model: {error}"
            ) from error
    elif isinstance(path_or_model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(path_or_model))
    else:
        model = path_or_model
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    return OnnxProgram(model, path)
