"""The rest of the TF1 face over ember/graph/tf1.py: image ops, scopes, shared variables, layers.

tf.nn's image ops (`conv2d`, `max_pool`, `avg_pool`, `bias_add`) in TensorFlow's NHWC layout
with its SAME/VALID padding (Note [SAME padding]), `dropout` with TF1's `keep_prob` (or
`rate`), `l2_loss`; the reductions with TF1's `reduction_indices=` / `keep_dims=`;
`name_scope`, `variable_scope` and `get_variable` with TF1's sharing rules (Note [TF1 variable
scopes]); initializers; `tf.layers.dense` / `conv2d`; `InteractiveSession` and `app.run`.
Each function records a deferred call of ember's own ops, as tf1.py does (Note [TF1 graphs]).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

import ember
from ember import dtypes as _dt
from ember.graph import tf1 as _tf1
from ember.graph import tf1_flags as _flags
from ember.graph.tf1 import Tensor, Variable, _op
from ember.ops import conv as _conv
from ember.ops.shape import pad as _pad

# --- reductions with TF1's argument names -----------------------------------------------------


def _reduction_axis(op, axis, reduction_indices):
    if axis is not None and reduction_indices is not None:
        raise ValueError(f"{op}: cannot specify both 'axis' and 'reduction_indices'")
    return axis if reduction_indices is None else reduction_indices


def _reduction(op, fn, default):
    def reduce(
        input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None
    ):
        dims = _tf1._axis(_reduction_axis(op, axis, reduction_indices))
        keep = bool(keepdims or keep_dims)
        return _op(lambda x: fn(x, dims, keep), input_tensor, name=name or default)

    reduce.__name__ = op
    reduce.__doc__ = f"tf.{op}: reduce over `axis` (TF1: `reduction_indices`), all by default."
    return reduce


def _all_dims(fn):
    def call(x, dims, keep):
        if dims is None:
            dims = tuple(range(x.ndim))
        return fn(x, dims, keep)

    return call


reduce_sum = _reduction("reduce_sum", lambda x, d, k: ember.sum(x, dim=d, keepdim=k), "Sum")
reduce_mean = _reduction("reduce_mean", lambda x, d, k: ember.mean(x, dim=d, keepdim=k), "Mean")
reduce_max = _reduction("reduce_max", lambda x, d, k: ember.amax(x, dim=d, keepdim=k), "Max")
reduce_min = _reduction("reduce_min", lambda x, d, k: ember.amin(x, dim=d, keepdim=k), "Min")
reduce_prod = _reduction(
    "reduce_prod",
    _all_dims(lambda x, d, k: _prod_dims(x, d, k)),
    "Prod",
)
reduce_logsumexp = _reduction(
    "reduce_logsumexp",
    _all_dims(lambda x, d, k: ember.logsumexp(x, dim=d, keepdim=k)),
    "ReduceLogSumExp",
)


def _prod_dims(x, dims, keep):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    for d in sorted((d % x.ndim for d in dims), reverse=True):
        x = ember.prod(x, dim=d, keepdim=keep)
    return x


# --- tf.nn image ops (NHWC) -------------------------------------------------------------------
# Note [SAME padding]: TensorFlow's SAME gives an output of ceil(in / stride) positions and pads
# max((out - 1) * stride + window - in, 0) in all, the smaller half before and the larger after
# (so an even window pads one more on the bottom/right, which PyTorch's symmetric `padding=`
# cannot say). The pad is therefore written out with `pad` before a VALID op: zeros for conv2d,
# -inf for max_pool (a padded element never wins), and avg_pool divides by the number of real
# elements in each window, as TensorFlow does.


def _four(op, value, what, data_format):
    """A spatial pair (h, w) from TF's int / [h, w] / [1, h, w, 1] forms."""
    if isinstance(value, int):
        return (value, value)
    value = [int(v) for v in value]
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) == 2:
        return tuple(value)
    if len(value) == 4:
        lead = (value[0], value[3]) if data_format == "NHWC" else (value[0], value[1])
        if lead != (1, 1):
            raise ValueError(
                f"{op}: {what} over the batch and channel dimensions must be 1, got {value}"
            )
        return (value[1], value[2]) if data_format == "NHWC" else (value[2], value[3])
    raise ValueError(f"{op}: {what} must be an int or a list of 1, 2 or 4 ints, got {value}")


def _check_format(op, data_format):
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"{op}: data_format must be 'NHWC' or 'NCHW', got {data_format!r}")


def _same_pads(size, window, stride, dilation=1):
    effective = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _explicit_pads(op, padding, x_hw, windows, strides, dilations, data_format):
    """((top, bottom), (left, right)) for SAME, VALID or TF's explicit [[0,0],[t,b],[l,r],[0,0]]."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode == "SAME":
            return tuple(
                _same_pads(n, k, s, d) for n, k, s, d in zip(x_hw, windows, strides, dilations)
            )
    elif isinstance(padding, (list, tuple)) and len(padding) == 4:
        pairs = [tuple(int(v) for v in p) for p in padding]
        spatial = (pairs[1], pairs[2]) if data_format == "NHWC" else (pairs[2], pairs[3])
        rest = (pairs[0], pairs[3]) if data_format == "NHWC" else (pairs[0], pairs[1])
        if rest != ((0, 0), (0, 0)):
            raise ValueError(f"{op}: explicit padding of the batch and channels must be 0")
        return spatial
    raise ValueError(
        f"{op}: padding must be 'SAME', 'VALID' or [[0, 0], [top, bottom], [left, right], "
        f"[0, 0]], got {padding!r}"
    )


def _check_padding(op, padding, data_format):
    """Refuse a bad padding while the graph is built, as TensorFlow does."""
    _explicit_pads(op, padding, (1, 1), (1, 1), (1, 1), (1, 1), data_format)


def _to_nchw(x, data_format):
    return x.permute(0, 3, 1, 2) if data_format == "NHWC" else x


def _from_nchw(x, data_format):
    return x.permute(0, 2, 3, 1) if data_format == "NHWC" else x


def _hw(x, data_format):
    return tuple(x.shape[1:3]) if data_format == "NHWC" else tuple(x.shape[2:4])


def _check_rank(op, x, name="input"):
    if x.ndim != 4:
        raise ValueError(
            f"{op}: {name} must be 4-D (batch, height, width, channels), got shape {tuple(x.shape)}"
        )


def _conv2d(x, w, strides, padding, data_format, dilations):
    op = "conv2d"
    _check_rank(op, x)
    if w.ndim != 4:
        raise ValueError(
            f"{op}: filter must be 4-D (height, width, in_channels, out_channels), got shape "
            f"{tuple(w.shape)}"
        )
    channels = x.shape[3] if data_format == "NHWC" else x.shape[1]
    if w.shape[2] == 0 or channels % w.shape[2]:
        raise ValueError(
            f"{op}: the input has {channels} channels, which the filter's in_channels "
            f"({w.shape[2]}) must divide; filter shape {tuple(w.shape)}"
        )
    pads = _explicit_pads(
        op, padding, _hw(x, data_format), tuple(w.shape[:2]), strides, dilations, data_format
    )
    x = _to_nchw(x, data_format)
    if any(p for pair in pads for p in pair):
        x = _pad(x, (*pads[1], *pads[0]))
    y = _conv.conv2d(
        x,
        w.permute(3, 2, 0, 1),
        stride=strides,
        dilation=dilations,
        groups=channels // w.shape[2],
    )
    return _from_nchw(y, data_format)


def conv2d(
    input=None,  # noqa: A002  (TensorFlow's argument name)
    filter=None,  # noqa: A002
    strides=None,
    padding=None,
    use_cudnn_on_gpu=True,
    data_format="NHWC",
    dilations=(1, 1, 1, 1),
    name=None,
    filters=None,
):
    """tf.nn.conv2d: input [batch, h, w, in], filter [kh, kw, in, out], SAME/VALID padding."""
    _check_format("conv2d", data_format)
    kernel = filter if filter is not None else filters
    if input is None or kernel is None or strides is None or padding is None:
        raise TypeError("conv2d: input, filter, strides and padding are required")
    s = _four("conv2d", strides, "strides", data_format)
    d = _four("conv2d", dilations, "dilations", data_format)
    _check_padding("conv2d", padding, data_format)
    return _op(
        lambda x, w: _conv2d(x, w, s, padding, data_format, d),
        input,
        kernel,
        name=name or "Conv2D",
    )


def _pool(op, x, ksize, strides, padding, data_format, reduce):
    _check_rank(op, x)
    pads = _explicit_pads(op, padding, _hw(x, data_format), ksize, strides, (1, 1), data_format)
    x = _to_nchw(x, data_format)
    padded = any(p for pair in pads for p in pair)
    if reduce == "max":
        if padded:
            x = _pad(x, (*pads[1], *pads[0]), value=-math.inf)
        y = _conv.max_pool2d(x, ksize, stride=strides)
    else:
        y = _conv.avg_pool2d(_pad(x, (*pads[1], *pads[0])) if padded else x, ksize, stride=strides)
        if padded:  # divide by the real elements of each window, not the window's size
            ones = np.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype.numpy)
            ones = np.pad(ones, ((0, 0), (0, 0)) + tuple(pads))
            count = _conv.avg_pool2d(ember.tensor(ones), ksize, stride=strides)
            y = y / count
    return _from_nchw(y, data_format)


def _pool_op(op, reduce, default):
    def pool(
        value=None,
        ksize=None,
        strides=None,
        padding=None,
        data_format="NHWC",
        name=None,
        input=None,  # noqa: A002
    ):
        _check_format(op, data_format)
        x = value if value is not None else input
        if x is None or ksize is None or strides is None or padding is None:
            raise TypeError(f"{op}: value, ksize, strides and padding are required")
        k = _four(op, ksize, "ksize", data_format)
        s = _four(op, strides, "strides", data_format)
        _check_padding(op, padding, data_format)
        return _op(
            lambda x: _pool(op, x, k, s, padding, data_format, reduce), x, name=name or default
        )

    pool.__name__ = op
    pool.__doc__ = (
        f"tf.nn.{op}: {reduce} pooling of an NHWC input with TF's SAME/VALID padding "
        f"(Note [SAME padding])."
    )
    return pool


max_pool = _pool_op("max_pool", "max", "MaxPool")
avg_pool = _pool_op("avg_pool", "avg", "AvgPool")


def _bias_add(x, b, data_format):
    if b.ndim != 1:
        raise ValueError(f"bias_add: bias must be 1-D, got shape {tuple(b.shape)}")
    axis = 1 if data_format is not None and data_format.startswith("NC") else x.ndim - 1
    if x.ndim < 2 or x.shape[axis] != b.shape[0]:
        raise ValueError(
            f"bias_add: bias of shape {tuple(b.shape)} must match the channel dimension "
            f"({'first' if axis == 1 else 'last'}) of the value, shape {tuple(x.shape)}"
        )
    if axis == 1:
        b = b.reshape((-1,) + (1,) * (x.ndim - 2))
    return x + b


def bias_add(value, bias, data_format=None, name=None):
    """tf.nn.bias_add: add a 1-D bias along the channel dimension (last, or 1 for 'NC...')."""
    return _op(lambda x, b: _bias_add(x, b, data_format), value, bias, name=name or "BiasAdd")


def l2_loss(t, name=None):
    """tf.nn.l2_loss: sum(t ** 2) / 2."""
    return _op(lambda x: (x * x).sum() * 0.5, t, name=name or "L2Loss")


def _dropout(x, keep, noise_shape):
    shape = tuple(x.shape) if noise_shape is None else tuple(int(d) for d in noise_shape)
    kept = ember.rand(shape, dtype=x.dtype) < keep
    return ember.where(kept, x / keep, 0.0)


def dropout(x, keep_prob=None, noise_shape=None, seed=None, name=None, rate=None):
    """tf.nn.dropout (TF1): keep each element with probability keep_prob (or 1 - rate) and
    scale the kept ones by 1 / keep_prob. keep_prob may be a placeholder fed at each run."""
    if (keep_prob is None) == (rate is None):
        raise ValueError("dropout: give exactly one of keep_prob and rate")
    for what, v in (("keep_prob", keep_prob), ("rate", rate)):
        if isinstance(v, (int, float)) and not (0 < v <= 1 if what == "keep_prob" else 0 <= v < 1):
            bounds = "(0, 1]" if what == "keep_prob" else "[0, 1)"
            raise ValueError(f"dropout: {what} must be a scalar in {bounds}, got {v}")
    keep = keep_prob if rate is None else (1.0 - rate if isinstance(rate, (int, float)) else None)
    if keep is None:  # a rate tensor
        keep = _op(lambda r: 1.0 - r, rate, name="sub")
    if isinstance(keep, (int, float)) and keep == 1:
        return _op(lambda v: v, x, name=name or "Identity")
    node = _op(lambda v, k: _dropout(v, k, noise_shape), x, keep, name=name or "dropout")
    if isinstance(x, Tensor):
        node._like = x  # x's static shape and dtype, whatever keep_prob's shape (unknown)
    return node


# --- scopes and shared variables --------------------------------------------------------------
# Note [TF1 variable scopes]: `name_scope` prefixes the names of the ops and tf.Variables made
# inside it ("conv1/Relu", "conv1/Variable"); entering a name a second time gives "conv1_1".
# `variable_scope` prefixes the names `get_variable` gives ("layer/w") and opens a name scope
# too. `get_variable` ignores name scopes. A name is created once: asking for it again raises
# ValueError unless the scope (or an enclosing one) has reuse=True, which then returns the
# same Variable (with the shape checked) and refuses names that do not exist; reuse=AUTO_REUSE
# creates what is missing and shares what exists. The store lives on the Graph.

AUTO_REUSE = "AUTO_REUSE"


class _VarScope:
    def __init__(self, name, reuse, initializer, dtype):
        self.name, self.reuse, self.initializer, self.dtype = name, reuse, initializer, dtype

    def reuse_variables(self):
        self.reuse = True


def _var_store(graph):
    store = graph.__dict__.get("_tf1_variables")
    if store is None:
        store = graph._tf1_variables = {}
        graph._tf1_var_scopes = [_VarScope("", False, None, None)]
        graph._tf1_scope_counts = {}
    return store


def _current_var_scope(graph=None):
    graph = graph or _tf1.get_default_graph()
    _var_store(graph)
    return graph._tf1_var_scopes[-1]


@contextlib.contextmanager
def name_scope(name, default_name=None, values=None):
    """tf.name_scope: prefix the ops and Variables made inside with 'name/' (made unique)."""
    graph = _tf1.get_default_graph()
    name = name or default_name
    outer = graph.name_scope
    if not name:
        scope = ""
    elif name.endswith("/"):  # an absolute scope, as a name_scope yields
        scope = name
    else:
        graph.name_scope = ""
        try:
            scope = graph.unique_name(outer + name) + "/"
        finally:
            graph.name_scope = outer
    graph.name_scope = scope
    try:
        yield scope
    finally:
        graph.name_scope = outer


@contextlib.contextmanager
def variable_scope(
    name_or_scope,
    default_name=None,
    values=None,
    initializer=None,
    regularizer=None,
    caching_device=None,
    partitioner=None,
    custom_getter=None,
    reuse=None,
    dtype=None,
    **kwargs,
):
    """tf.variable_scope: prefix get_variable's names and share them under reuse
    (Note [TF1 variable scopes])."""
    graph = _tf1.get_default_graph()
    _var_store(graph)
    outer = graph._tf1_var_scopes[-1]
    if isinstance(name_or_scope, _VarScope):
        full = name_or_scope.name
        base = full.rsplit("/", 1)[-1]
    elif name_or_scope:
        base = str(name_or_scope)
        full = f"{outer.name}/{base}" if outer.name else base
    elif default_name:
        prefix = f"{outer.name}/{default_name}" if outer.name else default_name
        n = graph._tf1_scope_counts.get(prefix, 0)
        graph._tf1_scope_counts[prefix] = n + 1
        full = prefix if n == 0 else f"{prefix}_{n}"
        base = full.rsplit("/", 1)[-1]
    else:
        raise ValueError("variable_scope: give name_or_scope or default_name")
    if reuse is False:
        reuse = None
    inherited = outer.reuse if reuse is None else reuse
    if outer.reuse is True:
        inherited = True
    scope = _VarScope(
        full,
        inherited or False,
        initializer if initializer is not None else outer.initializer,
        dtype if dtype is not None else outer.dtype,
    )
    graph._tf1_var_scopes.append(scope)
    try:
        with name_scope(base):
            yield scope
    finally:
        graph._tf1_var_scopes.pop()


def get_variable_scope():
    """The innermost open variable scope (with `.name`, `.reuse`, `.reuse_variables()`)."""
    return _current_var_scope()


def _initial_value(name, shape, dtype, initializer):
    if initializer is None:
        if dtype.is_floating_point:
            initializer = glorot_uniform_initializer()
        elif dtype in (_dt.bool_,) or dtype.name.startswith(("int", "uint")):
            initializer = zeros_initializer()
        else:
            raise ValueError(f"get_variable: {name} of dtype {dtype.name} needs an initializer")
    if isinstance(initializer, Tensor):
        if shape is not None:
            raise ValueError(
                f"get_variable: {name}: if initializer is a constant, do not specify shape"
            )
        return initializer
    if callable(initializer):
        if shape is None:
            raise ValueError(f"get_variable: {name}: shape of a new variable must be given")
        return initializer(list(shape), dtype=dtype)
    value = np.asarray(initializer, dtype=dtype.numpy)
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"get_variable: {name}: if initializer is a constant, do not specify "
            f"shape (got {list(shape)} and a value of shape {list(value.shape)})"
        )
    return value


def get_variable(
    name,
    shape=None,
    dtype=None,
    initializer=None,
    regularizer=None,
    trainable=True,
    collections=None,
    **kwargs,
):
    """tf.get_variable: create or share the variable 'scope/name' (Note [TF1 variable scopes])."""
    graph = _tf1.get_default_graph()
    store = _var_store(graph)
    scope = graph._tf1_var_scopes[-1]
    full = f"{scope.name}/{name}" if scope.name else name
    shape = None if shape is None else tuple(int(d) for d in shape)
    existing = store.get(full)
    if existing is not None:
        if scope.reuse is not True and scope.reuse != AUTO_REUSE:
            raise ValueError(
                f"Variable {full} already exists, disallowed. Did you mean to set reuse=True "
                f"or reuse=tf.AUTO_REUSE in VarScope?"
            )
        if shape is not None and tuple(existing._shape) != shape:
            raise ValueError(
                f"Trying to share variable {full}, but specified shape {shape} and found "
                f"shape {tuple(existing._shape)}."
            )
        if dtype is not None and _dt.as_dtype(dtype) is not existing.dtype:
            raise ValueError(
                f"Trying to share variable {full}, but specified dtype "
                f"{_dt.as_dtype(dtype).name} and found dtype {existing.dtype.name}."
            )
        return existing
    if scope.reuse is True:
        raise ValueError(
            f"Variable {full} does not exist, or was not created with tf.get_variable(). Did "
            f"you mean to set reuse=tf.AUTO_REUSE in VarScope?"
        )
    dtype = _dt.as_dtype(dtype or scope.dtype or _dt.float32)
    outer = graph.name_scope
    graph.name_scope = ""  # get_variable names ignore name scopes
    try:
        init = _initial_value(
            full, shape, dtype, initializer if initializer is not None else scope.initializer
        )
        var = Variable(init, dtype=dtype, name=full, trainable=trainable)
    finally:
        graph.name_scope = outer
    store[full] = var
    return var


# --- initializers (callables of a shape, returning the graph node of an initial value) --------
class _Initializer:
    def __init__(self, dtype=_dt.float32, seed=None):
        self.dtype, self.seed = dtype, seed

    def _value(self, shape, dtype):
        raise NotImplementedError

    def __call__(self, shape, dtype=None, partition_info=None):
        return self._value(tuple(shape), _dt.as_dtype(dtype or self.dtype))


class zeros_initializer(_Initializer):  # noqa: N801  (TensorFlow's name)
    """Zeros."""

    def _value(self, shape, dtype):
        return _tf1.zeros(shape, dtype=dtype)


class ones_initializer(_Initializer):  # noqa: N801
    """Ones."""

    def _value(self, shape, dtype):
        return _tf1.ones(shape, dtype=dtype)


class constant_initializer(_Initializer):  # noqa: N801
    """A constant (a scalar broadcast, or a value of the variable's shape)."""

    def __init__(self, value=0, dtype=_dt.float32, verify_shape=False):
        super().__init__(dtype)
        self.value = value

    def _value(self, shape, dtype):
        return _tf1.constant(self.value, dtype=dtype, shape=shape)


class random_normal_initializer(_Initializer):  # noqa: N801
    """Normal(mean, stddev)."""

    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype=_dt.float32):
        super().__init__(dtype, seed)
        self.mean, self.stddev = mean, stddev

    def _value(self, shape, dtype):
        return _tf1._random_normal(shape, self.mean, self.stddev, dtype=dtype)


class truncated_normal_initializer(random_normal_initializer):  # noqa: N801
    """Normal(mean, stddev) redrawn outside two standard deviations."""

    def _value(self, shape, dtype):
        return _tf1._truncated_normal(shape, self.mean, self.stddev, dtype=dtype)


class random_uniform_initializer(_Initializer):  # noqa: N801
    """Uniform[minval, maxval)."""

    def __init__(self, minval=0.0, maxval=None, seed=None, dtype=_dt.float32):
        super().__init__(dtype, seed)
        self.minval, self.maxval = minval, 1.0 if maxval is None else maxval

    def _value(self, shape, dtype):
        return _tf1._random_uniform(shape, self.minval, self.maxval, dtype=dtype)


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


class glorot_uniform_initializer(_Initializer):  # noqa: N801
    """Uniform(-l, l), l = sqrt(6 / (fan_in + fan_out)): get_variable's default."""

    def _value(self, shape, dtype):
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / max(fan_in + fan_out, 1))
        return _tf1._random_uniform(shape, -limit, limit, dtype=dtype)


class glorot_normal_initializer(_Initializer):  # noqa: N801
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out)) / 0.8796 (TF's correction)."""

    def _value(self, shape, dtype):
        fan_in, fan_out = _fans(shape)
        stddev = math.sqrt(2.0 / max(fan_in + fan_out, 1)) / 0.87962566103423978
        return _tf1._truncated_normal(shape, 0.0, stddev, dtype=dtype)


# --- tf.layers --------------------------------------------------------------------------------
def _static_shape(op, x):
    """The static shape of a graph tensor: its recorded one, or found by running its graph
    once on placeholders filled with ones (unknown dimensions as 1, a placeholder of unknown
    shape, such as a keep_prob, as a scalar)."""
    if isinstance(x, Tensor) and x._shape is not None and None not in x._shape:
        return tuple(x._shape)
    env = {}
    for node in _tf1._walk([x]):
        if node._kind == "placeholder":
            shape = () if node._shape is None else tuple(1 if d is None else d for d in node._shape)
            env[node] = ember.ones(shape, dtype=node.dtype)
    try:
        with ember.no_grad():
            value = _tf1._eval(x, env, {})
    except Exception as error:
        raise ValueError(
            f"{op}: the shape of the inputs must be known to make the layer's variables; "
            f"running {x!r} on placeholders of ones (unknown dimensions as 1) failed: {error}"
        ) from error
    return tuple(value.shape)


def _layer_scope(name, default, reuse):
    return variable_scope(name, default_name=default, reuse=reuse)


def _activate(y, activation):
    return y if activation is None else activation(y)


def dense(
    inputs,
    units,
    activation=None,
    use_bias=True,
    kernel_initializer=None,
    bias_initializer=None,
    kernel_regularizer=None,
    bias_regularizer=None,
    activity_regularizer=None,
    kernel_constraint=None,
    bias_constraint=None,
    trainable=True,
    name=None,
    reuse=None,
):
    """tf.layers.dense: inputs @ kernel + bias under variable scope 'dense' ('dense_1', ...)."""
    shape = _static_shape("dense", inputs)
    if not shape or shape[-1] is None:
        raise ValueError(f"dense: the last dimension of the inputs must be known, got {shape}")
    with _layer_scope(name, "dense", reuse):
        kernel = get_variable(
            "kernel", [shape[-1], int(units)], initializer=kernel_initializer, trainable=trainable
        )
        y = (
            _tf1.matmul(inputs, kernel)
            if len(shape) == 2
            else _op(lambda x, w: x @ w, inputs, kernel, name="Tensordot")
        )
        if use_bias:
            bias = get_variable(
                "bias",
                [int(units)],
                initializer=bias_initializer or zeros_initializer(),
                trainable=trainable,
            )
            y = bias_add(y, bias)
        return _activate(y, activation)


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(d) for d in v)


def _channels_format(op, data_format):
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"{op}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
        )
    return "NHWC" if data_format == "channels_last" else "NCHW"


def _layer_padding(op, padding):
    if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
        raise ValueError(f"{op}: padding must be 'same' or 'valid', got {padding!r}")
    return padding.upper()


def conv2d_layer(
    inputs,
    filters,
    kernel_size,
    strides=(1, 1),
    padding="valid",
    data_format="channels_last",
    dilation_rate=(1, 1),
    activation=None,
    use_bias=True,
    kernel_initializer=None,
    bias_initializer=None,
    trainable=True,
    name=None,
    reuse=None,
    **kwargs,
):
    """tf.layers.conv2d: a 2-D convolution with kernel [kh, kw, in, filters] and a bias."""
    fmt = _channels_format("conv2d", data_format)
    pad = _layer_padding("conv2d", padding)
    shape = _static_shape("conv2d", inputs)
    if len(shape) != 4:
        raise ValueError(f"conv2d: inputs must be 4-D, got shape {shape}")
    channels = shape[3] if fmt == "NHWC" else shape[1]
    kh, kw = _pair(kernel_size)
    with _layer_scope(name, "conv2d", reuse):
        kernel = get_variable(
            "kernel",
            [kh, kw, channels, int(filters)],
            initializer=kernel_initializer,
            trainable=trainable,
        )
        y = conv2d(
            inputs,
            kernel,
            strides=_pair(strides),
            padding=pad,
            data_format=fmt,
            dilations=_pair(dilation_rate),
        )
        if use_bias:
            bias = get_variable(
                "bias",
                [int(filters)],
                initializer=bias_initializer or zeros_initializer(),
                trainable=trainable,
            )
            y = bias_add(y, bias, data_format=fmt)
        return _activate(y, activation)


def _pooling_layer(op, fn):
    def layer(inputs, pool_size, strides, padding="valid", data_format="channels_last", name=None):
        fmt = _channels_format(op, data_format)
        return fn(
            inputs,
            _pair(pool_size),
            _pair(strides),
            _layer_padding(op, padding),
            data_format=fmt,
            name=name,
        )

    layer.__name__ = op
    layer.__doc__ = f"tf.layers.{op}: tf.nn's pooling with Keras-style arguments."
    return layer


def flatten(inputs, name=None, data_format="channels_last"):
    """tf.layers.flatten: keep the batch dimension, flatten the rest."""
    return _op(lambda x: x.reshape((x.shape[0], -1)), inputs, name=name or "Reshape")


def dropout_layer(inputs, rate=0.5, noise_shape=None, seed=None, training=False, name=None):
    """tf.layers.dropout: dropout at `rate` when `training` (a bool or a bool placeholder)."""
    if isinstance(training, Tensor):
        return _op(
            lambda x, t, r: ember.where(t, _dropout(x, 1.0 - r, noise_shape), x),
            inputs,
            training,
            rate,
            name=name or "dropout",
        )
    return dropout(inputs, rate=rate, noise_shape=noise_shape, name=name) if training else inputs


class layers:  # noqa: N801  (tf.layers namespace)
    dense = staticmethod(dense)
    conv2d = staticmethod(conv2d_layer)
    max_pooling2d = staticmethod(_pooling_layer("max_pooling2d", max_pool))
    average_pooling2d = staticmethod(_pooling_layer("average_pooling2d", avg_pool))
    flatten = staticmethod(flatten)
    dropout = staticmethod(dropout_layer)


# --- sessions and programs --------------------------------------------------------------------
class InteractiveSession(_tf1.Session):
    """A Session that makes itself the default when made (for `t.eval()` / `op.run()` in a
    shell); `close()` stops that."""

    def __init__(self, target="", graph=None, config=None):
        super().__init__(target, graph, config)
        _tf1._sessions.append(self)

    def close(self) -> None:
        if self in _tf1._sessions:
            _tf1._sessions.remove(self)
        super().close()


class app:  # noqa: N801  (tf.app namespace)
    """tf.app: `run` parses the flags (ember/graph/tf1_flags.py), then calls main."""

    run = staticmethod(_flags.run)
    flags = _flags


def initialize_all_variables():
    """The deprecated TF1 name of global_variables_initializer."""
    return _tf1.global_variables_initializer()


def disable_eager_execution():
    """Graph mode is the TF1 face's only mode: nothing to disable."""


disable_v2_behavior = disable_eager_execution


class nn(_tf1.nn):  # noqa: N801  (tf.nn namespace: tf1.py's functions and the ones above)
    conv2d = staticmethod(conv2d)
    max_pool = staticmethod(max_pool)
    avg_pool = staticmethod(avg_pool)
    bias_add = staticmethod(bias_add)
    l2_loss = staticmethod(l2_loss)
    dropout = staticmethod(dropout)
