"""The TF1 graph API over ember's compiler: Graph, placeholder, Variable, Session, optimizers.

Note [TF1 graphs]: building a TF1 graph records deferred calls of ember's own functions
(`tf.Tensor` nodes: an ember function, its arguments, which may be other nodes). Nothing is
written twice: `Session.run(fetches, feed_dict)` replays the nodes the fetches need as one
Python function of the fed tensors and compiles it with `ember.compile` (cached per fetch set
and feed signature), so the thousandth `sess.run(train, feed)` runs one compiled graph.
`optimizer.minimize(loss)` is a node that differentiates (ember.autograd.grad, traced) and
updates the variables in place; a fetch of it returns None, as in TensorFlow. Variable values
live in the Variable (one value shared by sessions, unlike TF's per-session values), and each
Session tracks which variables it has initialised.
"""

from __future__ import annotations

import contextlib
import operator

import numpy as np

import ember
from ember import dtypes as _dt
from ember._util.pytree import flatten, unflatten
from ember.tensor import Tensor as _ETensor


# --- errors -----------------------------------------------------------------------------------
class OpError(Exception):
    """Base of the errors a Session.run raises (tf.errors.OpError)."""


class InvalidArgumentError(OpError, ValueError):
    pass


class FailedPreconditionError(OpError, RuntimeError):
    pass


class NotFoundError(OpError, LookupError):
    pass


class errors:  # noqa: N801  (tf.errors namespace)
    OpError = OpError
    InvalidArgumentError = InvalidArgumentError
    FailedPreconditionError = FailedPreconditionError
    NotFoundError = NotFoundError


# --- graphs -------------------------------------------------------------------------------------
class Graph:
    """A TF1 graph: the nodes built while it is the default graph."""

    def __init__(self):
        self.variables: list = []
        self.trainable: list = []
        self._names: dict = {}
        self.operations: list = []  # every node, in the order built (tf.summary's add_graph)
        self.collections: dict = {}  # tf.add_to_collection's lists (tf.summary's "summaries")

    def get_operations(self):
        return list(self.operations)

    name_scope = ""  # "outer/inner/" while tf.name_scope blocks are open (ember/graph/tf1_nn.py)

    def unique_name(self, base: str) -> str:
        """`scope/base`, or `scope/base_n` when taken; as in TensorFlow, names that differ
        only in case count as taken ('train/Mean' makes a later 'train/mean' 'train/mean_1')."""
        name = self.name_scope + base
        key = name.lower()
        i = self._names.get(key, 0)
        self._names[key] = i + 1
        if i == 0:
            return name
        base_key = key
        while key in self._names:  # TensorFlow's Graph.unique_name, step for step
            key = f"{base_key}_{i}"
            i += 1
        self._names[key] = 1
        return f"{name}_{i - 1}"

    @contextlib.contextmanager
    def as_default(self):
        _stack.append(self)
        try:
            yield self
        finally:
            _stack.pop()

    def get_collection(self, key):
        if key in ("variables", "global_variables"):
            return list(self.variables)
        if key == "trainable_variables":
            return list(self.trainable)
        return list(self.collections.get(key, []))

    def add_to_collection(self, name, value) -> None:
        self.collections.setdefault(name, []).append(value)


_stack: list = [Graph()]


def get_default_graph() -> Graph:
    return _stack[-1]


def reset_default_graph() -> None:
    _stack[0] = Graph()


def add_to_collection(name, value) -> None:
    get_default_graph().add_to_collection(name, value)


def get_collection(key, scope=None):
    items = get_default_graph().get_collection(key)
    if scope is not None:
        items = [v for v in items if getattr(v, "op_name", "").startswith(scope)]
    return items


class GraphKeys:
    """tf.GraphKeys: the standard collection names."""

    GLOBAL_VARIABLES = "variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    SUMMARIES = "summaries"


# --- nodes --------------------------------------------------------------------------------------
def _as_dtype(dtype):
    return None if dtype is None else _dt.as_dtype(dtype)


class TensorShape(tuple):
    """A static shape (tf.TensorShape): a tuple of dimensions, None where a dimension is
    unknown; `TensorShape(None)` is a shape whose rank is unknown too (Note [Static shapes])."""

    def __new__(cls, dims=None):
        if dims is None:
            shape = super().__new__(cls, ())
            shape._unknown_rank = True
            return shape
        if isinstance(dims, int):
            dims = (dims,)
        shape = super().__new__(cls, (None if d is None else int(d) for d in dims))
        shape._unknown_rank = False
        return shape

    @property
    def ndims(self):
        return None if self._unknown_rank else len(self)

    rank = ndims

    @property
    def dims(self):
        return None if self._unknown_rank else list(self)

    def as_list(self):
        if self._unknown_rank:
            raise ValueError("as_list() is not defined on an unknown TensorShape.")
        return list(self)

    def is_fully_defined(self) -> bool:
        return not self._unknown_rank and all(d is not None for d in self)

    def num_elements(self):
        return int(np.prod(self)) if self.is_fully_defined() else None

    def is_compatible_with(self, other) -> bool:
        other = other if isinstance(other, TensorShape) else TensorShape(other)
        if self._unknown_rank or other._unknown_rank:
            return True
        return len(self) == len(other) and all(
            a is None or b is None or a == b for a, b in zip(self, other)
        )

    def merge_with(self, other) -> TensorShape:
        other = other if isinstance(other, TensorShape) else TensorShape(other)
        if not self.is_compatible_with(other):
            raise ValueError(f"Shapes {self._text()} and {other._text()} are not compatible")
        if self._unknown_rank:
            return other
        if other._unknown_rank:
            return self
        return TensorShape(a if a is not None else b for a, b in zip(self, other))

    def _text(self) -> str:
        if self._unknown_rank:
            return "<unknown>"
        dims = ", ".join("None" if d is None else str(d) for d in self)
        return f"({dims}{',' if len(self) == 1 else ''})"

    def __repr__(self):
        return "TensorShape(None)" if self._unknown_rank else f"TensorShape({list(self)})"

    def __str__(self):
        return self._text()


# Note [Static shapes]: TF1 code reads `t.shape` / `t.get_shape()` while building a graph
# (layer sizes, reshapes). Placeholders, constants and variables record theirs; an op node's
# shape and dtype are found on first use by tracing its ember function (the graph backend,
# Note [Tracing]: no data, no compute) on symbolic inputs of its inputs' static shapes, twice,
# with the unknown dimensions set to two different sizes: a result dimension that is the
# same both times is known, one that differs is None. A function that cannot be traced (or
# whose inputs' ranks are unknown) gives an unknown shape, never an error. `set_shape` merges
# what the caller knows into it; `tf.shape(t)` is the dynamic shape, a tensor.
_UNKNOWN_FILLS = (12, 60)  # two sizes for unknown dimensions (even, divisible by 2, 3, 4, 6)


def _trace_static(node):
    """(shape with None for unknown dimensions, dtype) of an op node, or None."""
    from ember.graph.trace import Tracer, tracing

    inputs = []

    def note(x):
        if isinstance(x, Tensor):
            if x._kind == "variable":
                return None
            shape, dtype = x._static()
            if dtype is None:
                raise _NoStaticShape
            inputs.append((x, shape, dtype))
            return None
        if isinstance(x, (list, tuple)):
            for a in x:
                note(a)
        return None

    try:
        note(node.args)
        note(list(node.kwargs.values()))
    except _NoStaticShape:
        return None
    # an input of unknown rank is traced as a scalar: the dtype holds, the shape is unknown
    rank_unknown = any(shape is None for _, shape, _ in inputs)
    results = []
    for fill in _UNKNOWN_FILLS[:1] if rank_unknown else _UNKNOWN_FILLS:
        tracer = Tracer("static_shape")
        values = {}
        try:
            with tracing(tracer), ember.no_grad():
                for x, shape, dtype in inputs:
                    dims = () if shape is None else tuple(fill if d is None else d for d in shape)
                    values[id(x)] = tracer.new_input(dims, dtype.numpy)

                def value_of(x, values=values):
                    if isinstance(x, Tensor):
                        return x.tensor if x._kind == "variable" else values[id(x)]
                    if isinstance(x, (list, tuple)):
                        return type(x)(value_of(a) for a in x)
                    return x

                args = value_of(node.args)
                kwargs = {k: value_of(v) for k, v in node.kwargs.items()}
                out = node.fn(*args, **kwargs)
        except Exception:  # noqa: BLE001  (an untraceable function: its shape stays unknown)
            return None
        finally:
            tracer.finish([])
        if not isinstance(out, _ETensor):
            return None
        results.append((tuple(out.shape), out.dtype))
    if rank_unknown:
        return None, results[0][1]
    (first, dtype), (second, _) = results
    if len(first) != len(second):
        return None, dtype
    return tuple(a if a == b else None for a, b in zip(first, second)), dtype


class _NoStaticShape(Exception):
    pass


class Tensor:
    """A node of a TF1 graph (tf.Tensor): a deferred call of an ember function."""

    _kind = "op"

    def __init__(self, fn, args=(), kwargs=None, name="Op", dtype=None, shape=None):
        self.graph = get_default_graph()
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.op_name = self.graph.unique_name(name)
        self.graph.operations.append(self)
        self.dtype = _as_dtype(dtype)
        self._shape = shape
        self._inferred = False

    @property
    def name(self) -> str:
        """TensorFlow's tensor name, 'scope/op:0' (an Operation's is its op name)."""
        return self.op_name if self._kind == "operation" else f"{self.op_name}:0"

    @property
    def dtype(self):
        if self._dtype is None and not self._inferred:
            self._static()
        return self._dtype

    @dtype.setter
    def dtype(self, value):
        self._dtype = value

    def _static(self):
        """(static shape or None, dtype or None), inferred once for op nodes (Note [Static
        shapes]); inputs first, without recursion, so long chains do not overflow."""
        known = self._shape is not None and self._dtype is not None
        if not self._inferred and not known and self._kind == "op" and callable(self.fn):
            pending, stack, seen = [], [(self, False)], set()
            while stack:  # post-order: every input before the nodes that read it
                x, expanded = stack.pop()
                if expanded:
                    pending.append(x)
                    continue
                if isinstance(x, (list, tuple)):
                    stack.extend((a, False) for a in x)
                    continue
                if not isinstance(x, Tensor) or x._inferred or x._kind != "op" or id(x) in seen:
                    continue
                seen.add(id(x))
                stack.append((x, True))
                like = getattr(x, "_like", None)
                deps = (like,) if like is not None else (*x.args, *x.kwargs.values())
                stack.extend((a, False) for a in deps)
            for x in pending:
                x._inferred = True
                if x._shape is not None and x._dtype is not None:
                    continue
                if not callable(x.fn) or isinstance(x.fn, (_HostOp, _Gradients)):
                    continue
                like = getattr(x, "_like", None)
                if like is not None:
                    found = like._static()
                else:
                    found = _trace_static(x)
                if found is not None:
                    shape, dtype = found
                    if x._shape is None:
                        x._shape = shape
                    elif shape is not None:  # set_shape before: keep what both know
                        x._shape = tuple(TensorShape(x._shape).merge_with(shape))
                    if x._dtype is None:
                        x._dtype = dtype
        self._inferred = True
        return self._shape, self._dtype

    @property
    def shape(self) -> TensorShape:
        """The static shape: known dimensions as ints, None for unknown (Note [Static shapes])."""
        shape, _ = self._static()
        return TensorShape(shape)

    def get_shape(self) -> TensorShape:
        return self.shape

    def set_shape(self, shape) -> None:
        """Merge `shape` into this tensor's static shape (ValueError if they disagree)."""
        merged = self.shape.merge_with(TensorShape(shape))
        self._shape = None if merged.ndims is None else tuple(merged)

    def __repr__(self):
        dt = f", dtype={self._dtype.name}" if self._dtype is not None else ""
        shape = f", shape={TensorShape(self._shape)._text()}" if self._shape is not None else ""
        return f"<tf.Tensor '{self.name}'{shape}{dt}>"

    __hash__ = object.__hash__

    # operators record ember's operators
    def __add__(self, o):
        return _op(operator.add, self, o, name="add")

    def __radd__(self, o):
        return _op(operator.add, o, self, name="add")

    def __sub__(self, o):
        return _op(operator.sub, self, o, name="sub")

    def __rsub__(self, o):
        return _op(operator.sub, o, self, name="sub")

    def __mul__(self, o):
        return _op(operator.mul, self, o, name="mul")

    def __rmul__(self, o):
        return _op(operator.mul, o, self, name="mul")

    def __truediv__(self, o):
        return _op(operator.truediv, self, o, name="truediv")

    def __rtruediv__(self, o):
        return _op(operator.truediv, o, self, name="truediv")

    def __pow__(self, o):
        return _op(operator.pow, self, o, name="pow")

    def __matmul__(self, o):
        return _op(operator.matmul, self, o, name="MatMul")

    def __neg__(self):
        return _op(operator.neg, self, name="Neg")

    def __lt__(self, o):
        return _op(operator.lt, self, o, name="Less")

    def __le__(self, o):
        return _op(operator.le, self, o, name="LessEqual")

    def __gt__(self, o):
        return _op(operator.gt, self, o, name="Greater")

    def __ge__(self, o):
        return _op(operator.ge, self, o, name="GreaterEqual")

    def __getitem__(self, index):
        return _op(operator.getitem, self, index, name="strided_slice")

    def eval(self, feed_dict=None, session=None):
        return (session or _default_session()).run(self, feed_dict)


def _op(fn, *args, name="Op", dtype=None, **kwargs) -> Tensor:
    return Tensor(fn, args, kwargs, name=name, dtype=dtype)


class Operation(Tensor):
    """A node run for its effect (train ops, initialisers); fetching it gives None."""

    _kind = "operation"

    def run(self, feed_dict=None, session=None):
        """Run this op in `session` or the default session (TF's Operation.run)."""
        (session or _default_session()).run(self, feed_dict)


class Placeholder(Tensor):
    _kind = "placeholder"

    def __init__(self, dtype, shape=None, name=None):
        super().__init__(
            None,
            (),
            None,
            name=name or "Placeholder",
            dtype=dtype,
            shape=None
            if shape is None
            else tuple(None if d is None or d == -1 else int(d) for d in shape),
        )
        if self.dtype is None:
            raise TypeError("placeholder: a dtype is required (e.g. tf.float32)")

    def __repr__(self):
        return super().__repr__().replace("tf.Tensor", "tf.Tensor placeholder")


class Variable(Tensor):
    """A graph variable: an ember tensor updated in place by training ops."""

    _kind = "variable"

    def __init__(self, initial_value, dtype=None, name=None, trainable=True, shape=None):
        dtype = _as_dtype(dtype)
        if isinstance(initial_value, Tensor):
            value = _evaluate_eagerly(initial_value)
            self._initializer = initial_value
        else:
            value = ember.tensor(
                np.asarray(initial_value), dtype=dtype or _infer_tf_dtype(initial_value)
            )
            self._initializer = value.detach().clone()
        if dtype is not None and value.dtype is not dtype:
            value = value.to(dtype)
        super().__init__(
            None, (), None, name=name or "Variable", dtype=value.dtype, shape=tuple(value.shape)
        )
        self.tensor = value.detach().clone()
        self.trainable = trainable
        if trainable and self.tensor.is_floating_point():
            self.tensor.requires_grad_(True)
        self.graph.variables.append(self)
        if trainable:
            self.graph.trainable.append(self)

    def initial_value_array(self):
        init = self._initializer
        value = _evaluate_eagerly(init) if isinstance(init, Tensor) else init
        return np.asarray(value.detach()).astype(self.tensor.dtype.numpy, copy=False)

    @property
    def initializer(self):
        return Operation(_Init([self]), name="Assign")

    def assign(self, value):
        return Operation(_Assign(self, value), name="Assign")

    def assign_add(self, value):
        return Operation(_Assign(self, value, operator.add), name="AssignAdd")

    def assign_sub(self, value):
        return Operation(_Assign(self, value, operator.sub), name="AssignSub")


def _infer_tf_dtype(value):
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return _dt.float32  # TF's default float
    if arr.dtype.kind in "iu":
        return _dt.int32
    if arr.dtype.kind == "b":
        return _dt.bool_
    return _dt.from_numpy_dtype(arr.dtype)


class _Init:
    """Initialise variables (run eagerly by the Session, not compiled)."""

    def __init__(self, variables):
        self.variables = variables


class _Assign:
    def __init__(self, var, value, combine=None):
        self.var, self.value, self.combine = var, value, combine

    def __call__(self, env, memo):
        value = _eval(self.value, env, memo)
        target = self.var.tensor
        with ember.no_grad():
            if not isinstance(value, _ETensor):
                value = ember.tensor(value, dtype=target.dtype)
            if self.combine is not None:
                value = self.combine(target, value)
            target.copy_(value)
        return None


# --- evaluation ---------------------------------------------------------------------------------
def _eval(x, env, memo):
    if isinstance(x, Tensor):
        key = id(x)
        if key in memo:
            return memo[key]
        kind = x._kind
        if kind == "placeholder":
            if x not in env:
                raise InvalidArgumentError(
                    f"You must feed a value for placeholder tensor '{x.op_name}' with dtype "
                    f"{x.dtype.name}" + (f" and shape {list(x._shape)}" if x._shape else "")
                )
            value = env[x]
        elif kind == "variable":
            value = x.tensor
        elif isinstance(x.fn, (_Assign, _Minimize)):
            value = x.fn(env, memo)
        elif isinstance(x.fn, _Init):
            value = None
        elif isinstance(x.fn, _Group):
            for dep in x.fn.deps:
                _eval(dep, env, memo)
            value = None
        else:
            args = [_eval(a, env, memo) for a in x.args]
            kwargs = {k: _eval(v, env, memo) for k, v in x.kwargs.items()}
            value = x.fn(*args, **kwargs)
        targets = memo.get(_GRAD_TARGETS)
        if (
            targets is not None
            and key in targets
            and isinstance(value, _ETensor)
            and value.is_floating_point()
            and not value.requires_grad
        ):  # Note [Gradients of intermediate tensors]
            value = value.detach().requires_grad_(True)
        memo[key] = value
        return value
    if isinstance(x, (list, tuple)):
        return type(x)(_eval(a, env, memo) for a in x)
    return x


def _evaluate_eagerly(node):
    return _eval(node, {}, {})


def _walk(nodes):
    """All nodes the given ones depend on (for placeholders and variables a run needs)."""
    seen, stack, out = set(), list(nodes), []
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
            continue
        if isinstance(x, dict):
            stack.extend(x.values())
            continue
        if not isinstance(x, Tensor) or id(x) in seen:
            continue
        seen.add(id(x))
        out.append(x)
        stack.extend(x.args)
        stack.extend(x.kwargs.values())
        fn = x.fn
        if isinstance(fn, _Minimize):
            stack.append(fn.loss)
            stack.extend(fn.var_list)
        elif isinstance(fn, _Assign):
            stack.extend([fn.var, fn.value])
        elif isinstance(fn, _Group):
            stack.extend(fn.deps)
        elif isinstance(fn, _Gradients):
            stack.extend(fn.ys)
            stack.extend(fn.xs)
        elif isinstance(fn, _HostOp):
            stack.extend(fn.inputs)
    return out


# Note [Host ops]: a few TF1 ops make Python values from fetched arrays (tf.summary's
# serialized Summary protos): they are `_HostOp` nodes, which the compiled graph never sees.
# Session.run fetches their `inputs` together with the other fetches and calls `finish` with
# the inputs' NumPy values.
class _HostOp:
    """A node function run on the host after the graph (Note [Host ops])."""

    def __init__(self, inputs):
        self.inputs = list(inputs)

    def finish(self, values):
        raise NotImplementedError

    def __call__(self, *args):
        raise TypeError(
            "a host op (tf.summary) is fetched with Session.run, not used as another op's input"
        )


class _Group:
    def __init__(self, deps):
        self.deps = deps


def group(*inputs, name=None):
    return Operation(_Group(list(inputs)), name=name or "group_deps")


class _Gradients:
    def __init__(self, ys, xs, grad_ys=None):
        self.ys, self.xs, self.grad_ys = ys, xs, grad_ys

    def __call__(self, *values):
        n = len(self.ys)
        ys, xs = values[:n], values[n : n + len(self.xs)]
        weights = values[n + len(self.xs) :] if self.grad_ys is not None else [None] * n
        total = None
        for y, w in zip(ys, weights):
            term = y.sum() if w is None else (y * w).sum()
            total = term if total is None else total + term
        # retain_graph: other tf.gradients fetched in the same run differentiate it again
        return ember.autograd.grad(total, list(xs), retain_graph=True, allow_unused=True)


# Note [Gradients of intermediate tensors]: tf.gradients(ys, xs) may name any node as an x: a
# placeholder, a variable or an op's output. A run that fetches such gradients marks each x's
# value as a differentiation target when it is computed (`_eval` looks the node up in
# memo[_GRAD_TARGETS]): a value that does not already require grad becomes a fresh leaf that
# does (nothing upstream of it is differentiated then, so detaching it loses nothing), and
# `ember.autograd.grad` gives d(sum ys)/dx with the rest of the graph held fixed, as
# TensorFlow's partial derivative does. An x that no y depends on gets None when the graph is
# built, as in TensorFlow.
_GRAD_TARGETS = object()


def _depends_on(ys, x) -> bool:
    return any(n is x for n in _walk(list(ys)))


def gradients(ys, xs, grad_ys=None, name=None, stop_gradients=None):
    """Symbolic gradients of sum(ys) (weighted by `grad_ys`) with respect to each of xs: a
    list with None where an x does not affect the ys (Note [Gradients of intermediate
    tensors])."""
    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    xs = [xs] if not isinstance(xs, (list, tuple)) else list(xs)
    for x in xs:
        if not isinstance(x, Tensor) or x._kind == "operation":
            raise TypeError(f"gradients: each x must be a graph tensor, got {x!r}")
    if grad_ys is not None:
        grad_ys = list(grad_ys) if isinstance(grad_ys, (list, tuple)) else [grad_ys]
        if len(grad_ys) != len(ys):
            raise ValueError(
                f"gradients: grad_ys has {len(grad_ys)} tensors for {len(ys)} ys; they must match"
            )
    connected = [_depends_on(ys, x) for x in xs]
    if not any(connected):
        return [None] * len(xs)
    extra = tuple(grad_ys) if grad_ys is not None else ()
    linked_xs = [x for x, linked in zip(xs, connected) if linked]  # only these are evaluated
    grads = Tensor(
        _Gradients(ys, linked_xs, grad_ys),
        tuple(ys) + tuple(linked_xs) + extra,
        name=name or "gradients",
    )
    out, i = [], 0
    for x, linked in zip(xs, connected):
        if not linked:
            out.append(None)
            continue
        g = _op(operator.getitem, grads, i, name="gradients")
        i += 1
        g._like = x  # a gradient has its x's shape and dtype (Note [Static shapes])
        out.append(g)
    return out


# --- optimizers ---------------------------------------------------------------------------------
class _Minimize:
    def __init__(self, optimizer, loss, var_list):
        self.optimizer, self.loss, self.var_list = optimizer, loss, var_list

    def __call__(self, env, memo):
        loss = _eval(self.loss, env, memo)
        tensors = [v.tensor for v in self.var_list]
        grads = ember.autograd.grad(loss.sum() if loss.ndim else loss, tensors, allow_unused=True)
        with ember.no_grad():
            self.optimizer._apply(list(zip(grads, self.var_list)))
        return None


class Optimizer:
    """Base of the TF1 optimizers: `minimize(loss, var_list=None)` returns a train op.

    The optimizers themselves (`tf.train.GradientDescentOptimizer`, ...) live in the face,
    ember/tf.py, over ember.optim's update rules (one rule per algorithm for both faces); a
    subclass gives `_apply(pairs of (gradient, Variable))`."""

    def __init__(self, learning_rate, name):
        self.learning_rate = learning_rate
        self.name = name

    def minimize(self, loss, var_list=None, global_step=None, name=None):
        if var_list is None:
            var_list = [v for v in loss.graph.trainable if any(n is v for n in _walk([loss]))]
        if not var_list:
            raise ValueError("minimize: no variables to optimize")
        self._create_slots(var_list)
        return Operation(_Minimize(self, loss, list(var_list)), name=name or self.name)

    def _create_slots(self, var_list):
        pass

    def _slot(self, var, name):
        slot = Variable(
            np.zeros(tuple(var.tensor.shape)),
            dtype=var.dtype,
            name=f"{var.op_name}/{self.name}/{name}",
            trainable=False,
        )
        return slot.tensor


def global_variables_initializer():
    return Operation(_Init(None), name="init")


def variables_initializer(var_list):
    return Operation(_Init(list(var_list)), name="init")


def global_variables():
    return get_default_graph().get_collection("variables")


def trainable_variables():
    return get_default_graph().get_collection("trainable_variables")


# --- sessions -----------------------------------------------------------------------------------
_sessions: list = []


def _default_session():
    if not _sessions:
        raise ValueError(
            "Cannot evaluate tensor using `eval()`: No default session is "
            "registered. Use `with sess.as_default()` or pass session="
        )
    return _sessions[-1]


class _RunPlan:
    __slots__ = ("compiled", "placeholders", "structure", "variables", "checked")


class Session:
    """Runs fetches of a TF1 graph, compiling each distinct run (Note [TF1 graphs])."""

    def __init__(self, target="", graph=None, config=None):
        self.graph = graph or get_default_graph()
        self.initialized: set = set()
        self._plans: dict = {}
        self._closed = False

    def __enter__(self):
        _sessions.append(self)
        return self

    def __exit__(self, *exc):
        if _sessions and _sessions[-1] is self:
            _sessions.pop()
        self.close()
        return False

    @contextlib.contextmanager
    def as_default(self):
        _sessions.append(self)
        try:
            yield self
        finally:
            _sessions.pop()

    def close(self) -> None:
        self._closed = True
        self._plans.clear()

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        """Evaluate `fetches` (a node, or a list/tuple/dict of them) with `feed_dict` values
        for placeholders; returns NumPy values in the same structure (None for ops)."""
        if self._closed:
            raise RuntimeError("Attempted to use a closed Session.")
        feed_dict = feed_dict or {}
        flat, structure = flatten(fetches)
        if any(isinstance(f, Tensor) and isinstance(f.fn, _HostOp) for f in flat):
            return self._run_host(flat, structure, feed_dict)
        key = (structure, tuple(map(id, flat)), tuple(id(k) for k in feed_dict))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(fetches, feed_dict)
            self._plans[key] = plan
        if plan.compiled is None:  # initialisers run eagerly
            return self._run_init(plan)
        feeds = []
        for p, value in zip(plan.placeholders, feed_dict.values()):
            feeds.append(_ETensor.from_array(_convert_feed(p, value)))
        if not plan.checked:
            for v in plan.variables:
                if id(v) not in self.initialized:
                    raise FailedPreconditionError(
                        f"Attempting to use uninitialized value {v.op_name}: run "
                        f"tf.global_variables_initializer() in this session first"
                    )
            plan.checked = True
        outs = plan.compiled(*feeds)
        return _restructure(plan.structure, outs)

    def _run_host(self, flat, structure, feed_dict):
        """A run whose fetches include host ops (Note [Host ops]): their inputs are fetched
        with the rest in one compiled run, then each host op makes its value from them."""
        wanted, slots = [], []
        for f in flat:
            if isinstance(f, Tensor) and isinstance(f.fn, _HostOp):
                slots.append((f, len(wanted), len(f.fn.inputs)))
                wanted.extend(f.fn.inputs)
            else:
                slots.append((f, len(wanted), None))
                wanted.append(f)
        values = self.run(wanted, feed_dict) if wanted else []
        results = []
        for f, start, count in slots:
            if count is None:
                results.append(values[start])
            else:
                results.append(f.fn.finish(values[start : start + count]))
        return unflatten(structure, results)

    def _plan(self, fetches, feed_dict):
        flat, structure = flatten(fetches)
        for f in flat:
            if not isinstance(f, Tensor):
                raise TypeError(
                    f"Fetch argument {f!r} has invalid type {type(f).__name__}, "
                    f"must be a string or Tensor. (Can not convert a "
                    f"{type(f).__name__} into a Tensor or Operation.)"
                )
            if f.graph is not self.graph:
                raise ValueError(
                    f"Fetch argument {f!r} cannot be interpreted as a Tensor. "
                    f"(Tensor {f.name} is not an element of this graph.)"
                )
        for k in feed_dict:
            if not isinstance(k, Tensor):
                raise TypeError(f"The key of feed_dict {k!r} is not a graph tensor")
            if k.graph is not self.graph:
                raise ValueError(f"Cannot feed {k.name}: it is not an element of this graph")
        plan = _RunPlan()
        plan.structure = structure
        plan.placeholders = list(feed_dict)
        plan.checked = False
        nodes = _walk(flat)
        plan.variables = [n for n in nodes if n._kind == "variable"]
        inits = [f for f in flat if isinstance(f.fn, _Init)]
        if inits:
            plan.compiled = None
            plan.variables = inits
            return plan
        placeholders = plan.placeholders
        # placeholders differentiated by tf.gradients are fed as tensors that require grad
        targets = {id(x) for n in nodes if isinstance(n.fn, _Gradients) for x in n.fn.xs}
        wants_grad = [id(p) in targets and p.dtype.is_floating_point for p in placeholders]

        def run_graph(*feeds):
            for t, wanted in zip(feeds, wants_grad):
                if wanted:
                    t.requires_grad_(True)
            env = dict(zip(placeholders, feeds))
            memo: dict = {_GRAD_TARGETS: targets} if targets else {}
            return [_eval(f, env, memo) for f in flat]

        run_graph.__name__ = "session_run"
        plan.compiled = ember.compile(run_graph)
        return plan

    def _run_init(self, plan):
        for op in plan.variables:
            variables = op.fn.variables if op.fn.variables is not None else self.graph.variables
            for v in variables:
                v.tensor.array[...] = v.initial_value_array()
                v.tensor._bump_version("global_variables_initializer")  # Note [Pack validity]
                self.initialized.add(id(v))
        for p in self._plans.values():
            p.checked = False
        return _restructure(plan.structure, [None] * plan.structure.num_leaves)


def _numpy_value(out):
    if out is None:
        return None
    arr = out.array if isinstance(out, _ETensor) else np.asarray(out)
    return arr[()] if arr.ndim == 0 else arr


def _restructure(structure, outs):
    """The fetched values in the fetches' structure (Note [Pytrees])."""
    return unflatten(structure, (_numpy_value(o) for o in outs))


def _convert_feed(p, value):
    dtype = p.dtype.numpy
    if isinstance(value, _ETensor):
        value = np.asarray(value.detach())
    if type(value) is np.ndarray and value.dtype == dtype:
        arr = value
    else:
        src = np.asarray(value)
        if (
            src.dtype.kind in "USO"
            or not np.can_cast(src.dtype, dtype, "same_kind")
            and not (src.dtype.kind in "iub" and dtype.kind in "iuf")
        ):
            raise TypeError(
                f"Cannot feed value of dtype {src.dtype} for Tensor '{p.name}', "
                f"which has dtype {p.dtype.name}"
            )
        arr = src.astype(dtype, copy=False)
    if p._shape is not None:
        ok = len(arr.shape) == len(p._shape) and all(
            d is None or d == n for d, n in zip(p._shape, arr.shape)
        )
        if not ok:
            shape = (
                "("
                + ", ".join("?" if d is None else str(d) for d in p._shape)
                + ("," if len(p._shape) == 1 else "")
                + ")"
            )
            raise ValueError(
                f"Cannot feed value of shape {arr.shape} for Tensor "
                f"'{p.name}', which has shape '{shape}'"
            )
    return arr


# --- the functions of the TF namespace (deferred ember calls) -----------------------------------
def placeholder(dtype, shape=None, name=None):
    return Placeholder(dtype, shape, name)


def constant(value, dtype=None, shape=None, name=None):
    dtype = _as_dtype(dtype) or _infer_tf_dtype(value)
    arr = np.asarray(value, dtype=dtype.numpy)
    if shape is not None:
        arr = np.broadcast_to(arr, tuple(shape)).copy()
    t = ember.tensor(arr, dtype=dtype)
    return Tensor(lambda: t, name=name or "Const", dtype=dtype, shape=tuple(arr.shape))


def _axis(axis):
    if isinstance(axis, list):
        return tuple(axis)
    return axis


def reduce_sum(x, axis=None, keepdims=False, name=None):
    return _op(lambda x: ember.sum(x, dim=_axis(axis), keepdim=keepdims), x, name=name or "Sum")


def reduce_mean(x, axis=None, keepdims=False, name=None):
    return _op(lambda x: ember.mean(x, dim=_axis(axis), keepdim=keepdims), x, name=name or "Mean")


def reduce_max(x, axis=None, keepdims=False, name=None):
    return _op(lambda x: ember.amax(x, dim=_axis(axis), keepdim=keepdims), x, name=name or "Max")


def _unary(fn, default):
    def make(x, name=None):
        return _op(fn, x, name=name or default)

    make.__name__ = default.lower()
    return make


square = _unary(ember.square, "Square")
exp = _unary(ember.exp, "Exp")
log = _unary(ember.log, "Log")
sqrt = _unary(ember.sqrt, "Sqrt")
tanh = _unary(ember.tanh, "Tanh")
sigmoid = _unary(ember.sigmoid, "Sigmoid")
abs = _unary(ember.abs, "Abs")  # noqa: A001
negative = _unary(ember.neg, "Neg")


def add(x, y, name=None):
    return _op(operator.add, x, y, name=name or "Add")


def subtract(x, y, name=None):
    return _op(operator.sub, x, y, name=name or "Sub")


def multiply(x, y, name=None):
    return _op(operator.mul, x, y, name=name or "Mul")


def divide(x, y, name=None):
    return _op(operator.truediv, x, y, name=name or "RealDiv")


def maximum(x, y, name=None):
    return _op(ember.maximum, x, y, name=name or "Maximum")


def minimum(x, y, name=None):
    return _op(ember.minimum, x, y, name=name or "Minimum")


def matmul(a, b, transpose_a=False, transpose_b=False, name=None):
    def fn(a, b):
        return ember.matmul(a.mT if transpose_a else a, b.mT if transpose_b else b)

    return _op(fn, a, b, name=name or "MatMul")


def argmax(x, axis=None, output_type=None, name=None):
    dtype = _as_dtype(output_type) or _dt.int64
    return _op(
        lambda x: ember.argmax(x, dim=0 if axis is None else axis).to(dtype),
        x,
        name=name or "ArgMax",
        dtype=dtype,
    )


def equal(x, y, name=None):
    return _op(ember.eq, x, y, name=name or "Equal", dtype=_dt.bool_)


def cast(x, dtype, name=None):
    dtype = _as_dtype(dtype)
    return _op(
        lambda x: x.to(dtype) if isinstance(x, _ETensor) else ember.tensor(x, dtype=dtype),
        x,
        name=name or "Cast",
        dtype=dtype,
    )


def reshape(x, shape, name=None):
    return _op(lambda x: x.reshape(tuple(int(d) for d in shape)), x, name=name or "Reshape")


def shape(input, name=None, out_type=_dt.int32):  # noqa: A002  (TensorFlow's argument)
    """The dynamic shape of `input`, a 1-D int32 tensor (Note [Static shapes])."""
    out_type = _as_dtype(out_type)
    node = _op(lambda x: ember.tensor(list(x.shape), dtype=out_type), input, name=name or "Shape")
    rank = input.shape.ndims if isinstance(input, Tensor) else np.ndim(input)
    node._shape, node._dtype = (None if rank is None else (rank,)), out_type
    return node


def rank(input, name=None):  # noqa: A002
    """The number of dimensions of `input`, a 0-d int32 tensor."""
    node = _op(lambda x: ember.tensor(x.ndim, dtype=_dt.int32), input, name=name or "Rank")
    node._shape, node._dtype = (), _dt.int32
    return node


def size(input, name=None, out_type=_dt.int32):  # noqa: A002
    """The number of elements of `input`, a 0-d tensor."""
    out_type = _as_dtype(out_type)
    node = _op(lambda x: ember.tensor(x.numel(), dtype=out_type), input, name=name or "Size")
    node._shape, node._dtype = (), out_type
    return node


def zeros(shape, dtype=_dt.float32, name=None):
    dtype = _as_dtype(dtype)
    return Tensor(
        lambda: ember.zeros(tuple(shape), dtype=dtype),
        name=name or "zeros",
        dtype=dtype,
        shape=tuple(shape),
    )


def ones(shape, dtype=_dt.float32, name=None):
    dtype = _as_dtype(dtype)
    return Tensor(
        lambda: ember.ones(tuple(shape), dtype=dtype),
        name=name or "ones",
        dtype=dtype,
        shape=tuple(shape),
    )


def _random_normal(shape, mean=0.0, stddev=1.0, dtype=_dt.float32, seed=None, name=None):
    dtype = _as_dtype(dtype)
    return Tensor(
        lambda: ember.randn(tuple(shape), dtype=dtype) * stddev + mean,
        name=name or "random_normal",
        dtype=dtype,
        shape=tuple(shape),
    )


def _random_uniform(shape, minval=0.0, maxval=1.0, dtype=_dt.float32, seed=None, name=None):
    dtype = _as_dtype(dtype)
    return Tensor(
        lambda: ember.rand(tuple(shape), dtype=dtype) * (maxval - minval) + minval,
        name=name or "random_uniform",
        dtype=dtype,
        shape=tuple(shape),
    )


def _truncated_normal(shape, mean=0.0, stddev=1.0, dtype=_dt.float32, seed=None, name=None):
    dtype = _as_dtype(dtype)

    def draw():
        x = ember.randn(tuple(shape), dtype=ember.float64)
        with ember.no_grad():
            while True:  # redraw outside two standard deviations (eager: initialisers only)
                bad = x.abs() > 2
                if not bool(bad.any()):
                    break
                x = ember.where(bad, ember.randn(tuple(shape), dtype=ember.float64), x)
        return (x * stddev + mean).to(dtype)

    return Tensor(draw, name=name or "truncated_normal", dtype=dtype, shape=tuple(shape))


class random:  # noqa: N801  (tf.random namespace)
    normal = staticmethod(_random_normal)
    uniform = staticmethod(_random_uniform)
    truncated_normal = staticmethod(_truncated_normal)


random_normal = _random_normal
random_uniform = _random_uniform
truncated_normal = _truncated_normal


# --- tf.nn --------------------------------------------------------------------------------------
def _softmax_ce(labels, logits, axis=-1):
    return -(labels * ember.log_softmax(logits, axis)).sum(axis)


def _sigmoid_ce(labels, logits):
    # max(x, 0) - x * z + log(1 + exp(-|x|)), TF's stable form
    return ember.relu(logits) - logits * labels + ember.log1p(ember.exp(-logits.abs()))


def _sparse_softmax_ce(labels, logits):
    from ember.ops.nn import cross_entropy

    return cross_entropy(logits, labels.to(ember.int64), reduction="none")


class nn:  # noqa: N801  (tf.nn namespace)
    @staticmethod
    def relu(x, name=None):
        return _op(ember.relu, x, name=name or "Relu")

    @staticmethod
    def sigmoid(x, name=None):
        return _op(ember.sigmoid, x, name=name or "Sigmoid")

    @staticmethod
    def tanh(x, name=None):
        return _op(ember.tanh, x, name=name or "Tanh")

    @staticmethod
    def softmax(logits, axis=-1, name=None):
        return _op(lambda x: ember.softmax(x, axis), logits, name=name or "Softmax")

    @staticmethod
    def log_softmax(logits, axis=-1, name=None):
        return _op(lambda x: ember.log_softmax(x, axis), logits, name=name or "LogSoftmax")

    @staticmethod
    def sigmoid_cross_entropy_with_logits(labels=None, logits=None, name=None):
        return _op(_sigmoid_ce, labels, logits, name=name or "logistic_loss")

    @staticmethod
    def softmax_cross_entropy_with_logits(labels=None, logits=None, axis=-1, name=None):
        return _op(
            lambda z, x: _softmax_ce(z, x, axis),
            labels,
            logits,
            name=name or "softmax_cross_entropy_with_logits",
        )

    softmax_cross_entropy_with_logits_v2 = softmax_cross_entropy_with_logits

    @staticmethod
    def sparse_softmax_cross_entropy_with_logits(labels=None, logits=None, name=None):
        return _op(
            _sparse_softmax_ce, labels, logits, name=name or "SparseSoftmaxCrossEntropyWithLogits"
        )
