"""Tracing: run a Python function on symbolic tensors and record the ops it calls as a Graph.

Note [Tracing]: a `Tracer` is a staging backend (Note [Staging backends] in
ember/backend/__init__.py): while it is active every op call comes to its `apply` instead of
computing, and the symbolic values it returns (`Var`) belong to the graph backend, which has
no host values.
The tracer casts operands to the op's compute dtype like eager dispatch does (as explicit
`cast` equations), asks the op's shape/dtype rule for the result, appends an equation and
returns a Tensor whose `_data` is the result `Var`. When grad mode is on and an input requires
grad it records an autograd Node exactly as eager does, so `loss.backward()` inside the traced
function runs the eager engine over symbolic tensors: the VJPs are ember ops, so they trace
into more equations (symbolic autodiff from the same rules).

Note [Captured tensors]: a concrete tensor met while tracing (a parameter, an optimizer's state,
a closure tensor, a constant made inside the function) is captured by reference, keyed by its
buffer, so aliases (`p` and `p.detach()`) are one graph value. In-place writes while tracing
rebind the written tensor's traced value (`Tensor._inplace` -> `_graph_assign`); at the end the
tracer turns the last value of each written buffer into an `update`, and each captured leaf's
symbolic `.grad` into a `grad` result, then restores every captured tensor's state. A captured
buffer that nothing outside the trace still references was made while tracing: it becomes a
constant, which constant folding can use. A write into a view rebinds its base's traced value
to a `view_scatter`, and views whose base was written replay their view steps on the base's
latest value when next used (Note [Views and in-place] in ember/tensor.py); the version
counters that moved while tracing are put back with the rest of the captured state.
"""

from __future__ import annotations

import sys
import weakref

from ember import dtypes as _dt
from ember._util.errors import EmberError, ShapeError, user_location
from ember.autograd import dispatch as _dispatch
from ember.autograd.grad_mode import _state
from ember.backend import Backend, pop_staging, push_staging, staging_backends
from ember.graph.ir import ConcretizationError, Eqn, Graph, GraphError, Var
from ember.ops import elementwise as _E
from ember.ops import registry as _registry
from ember.tensor import Tensor

_SCALARS = (bool, int, float)
_DT_OF = _dt.BY_NUMPY  # shared: bfloat16 joins it when first used


# ops whose result shape depends on the data when indexed with a boolean mask
_MASK_INDEXED = {"getitem", "index_put", "index_add"}


class _TracerBackend(Backend):
    """What `ember.backend.backend_of` answers for a traced value (device, no data)."""

    name = "graph"
    device_type = "graph"
    concrete = False

    def device_of(self, array):
        from ember.backend import Device

        return Device("cpu")

    def to_numpy(self, array):
        raise ConcretizationError(_concrete())

    def asarray(self, data, dtype=None, device=None):
        raise ConcretizationError(_concrete())


def _concrete():
    from ember.graph.ir import _concrete_message

    return _concrete_message("read as a Python value")


def _install_backend():
    from ember import backend as _backend

    _backend._by_array_type.setdefault(Var, _TracerBackend())


_install_backend()


class _Buffer:
    """A captured concrete buffer and the tensors seen holding it (Note [Captured tensors])."""

    __slots__ = ("array", "var", "tensors", "saved")

    def __init__(self, array, var):
        self.array = array
        self.var = var
        self.tensors: list = []  # weakrefs
        self.saved: dict = {}  # id(tensor) -> (ref, _data, _node, _requires_grad, grad,
        #                                        _version, _view)


class Tracer(Backend):
    """The staging backend that records ops into `self.graph` (Note [Tracing])."""

    name = "graph"
    device_type = "graph"
    concrete = False

    def __init__(self, name: str = "graph"):
        self.graph = Graph(name)
        self.buffers: dict[int, _Buffer] = {}
        self.by_var: dict[Var, _Buffer] = {}
        self.state_guards: dict = {}  # key -> (fn, value when first asked)
        # version counters of captured tensors -> (counter, value, last change) before tracing:
        # in-place ops while tracing bump them (so views regenerate, Note [Views and in-place])
        self.counters: dict = {}

    def guard(self, key, fn) -> None:
        """The traced Python took a branch that depends on `fn()` (e.g. whether an optimizer's
        state exists yet): the graph is valid while `fn()` returns what it returns now."""
        if key not in self.state_guards:
            self.state_guards[key] = (fn, fn())

    # --- values ------------------------------------------------------------------------------
    def new_input(self, shape, dtype, name=None, requires_grad=False) -> Tensor:
        v = Var(shape, dtype, name)
        self.graph.inputs.append(v)
        t = Tensor.from_array(v)
        t._requires_grad = bool(requires_grad)
        return t

    def emit(self, op, inputs, attrs, shape, dtype, nouts=1):
        outs = (
            [Var(shape, dtype) for _ in range(nouts)]
            if not isinstance(shape, list)
            else [Var(s, d) for s, d in zip(shape, dtype)]
        )
        self.graph.eqns.append(Eqn(op, inputs, attrs, outs, user_location(2)))
        return outs

    def capture(self, t: Tensor) -> Var:
        """The graph value of a concrete tensor: its buffer's latest traced value."""
        array = t.array
        buf = self.buffers.get(id(array))
        if buf is None:
            dtype = array.dtype
            if dtype not in _DT_OF:
                raise GraphError(f"cannot capture an array of dtype {dtype}")
            var = Var(array.shape, dtype)
            buf = _Buffer(array, var)
            self.buffers[id(array)] = buf
            self.by_var[var] = buf
            self.graph.captures.append((var, None))
        if id(t) not in buf.saved:
            buf.saved[id(t)] = (
                weakref.ref(t),
                t.array,
                t._node,
                t._requires_grad,
                t.grad,
                t._version,
                t._view,
            )
            buf.tensors.append(weakref.ref(t))
            counter = t._version
            if counter is not None and id(counter) not in self.counters:
                self.counters[id(counter)] = (counter, counter[0], counter[1])
        return self._latest(buf)

    def _latest(self, buf) -> Var:
        """An alias of the buffer may have been written (its `_data` is now a Var): the newest
        written value is the buffer's value."""
        best = buf.var
        for ref in buf.tensors:
            t = ref()
            if t is not None and isinstance(t.array, Var) and t.array.id > best.id:
                best = t.array
        return best

    def atom(self, a):
        if isinstance(a, Tensor):
            d = a.array
            if isinstance(d, Var):
                return d
            return self.capture(a)
        return a

    add_guard = guard

    # --- the staging backend's op call ---------------------------------------------------------
    def apply(self, op, args, attrs):
        for a in args:
            if isinstance(a, Tensor) and a._view is not None and a._view[3] != a._version[0]:
                _dispatch.refresh_view(a)  # its base was written: its traced value is stale
        args_t = tuple(a if isinstance(a, Tensor) else _dispatch._operand(a) for a in args)
        # make concrete tensors graph values first (so aliases see writes)
        atoms = [self.atom(a) for a in args_t]
        view_args = tuple(
            Tensor.from_array(v) if isinstance(a, Tensor) and not isinstance(a.array, Var) else a
            for a, v in zip(args_t, atoms)
        )
        # restore autograd identity of captured leaves for _record
        rec_args = args_t
        promote = op.promote
        inputs = list(atoms)
        if promote is not None:
            mode, skip = _dispatch._PROMOTE[promote]
            cdt = _dispatch._compute_dtype(mode, skip, view_args)
            if cdt is not None:
                for i, a in enumerate(inputs):
                    if isinstance(a, Var) and i not in skip and a.dtype != cdt.numpy:
                        (inputs[i],) = self.emit(_E.CAST, (a,), {"dtype": cdt}, a.shape, cdt.numpy)
        avals = [(v.shape, _DT_OF[v.dtype]) if isinstance(v, Var) else v for v in atoms]
        try:
            shape, dtype = _registry.infer(op, avals, attrs)
        except EmberError:
            raise
        except (ShapeError, ValueError, TypeError, IndexError) as error:
            raise _dispatch._op_error(op, view_args, attrs, error) from error
        if (
            shape is None
            or any(d is None for d in shape)
            or (
                op.name in _MASK_INDEXED
                and any(isinstance(a, Var) and a.dtype.kind == "b" for a in atoms[1:])
            )
        ):
            raise GraphError(
                _at_user(
                    f"{op.name}: its output shape depends on the data, which a compiled graph "
                    f"cannot know; compute it outside the compiled function"
                )
            )
        (out,) = self.emit(op, inputs, attrs, shape, dtype.numpy)
        result = Tensor.from_array(out)
        if op.view and len(args_t) == 1:
            _dispatch.make_view(result, args_t[0], op, attrs)
        if (
            _state.enabled
            and op.vjp is not None
            and out.dtype.kind == "f"
            and any(isinstance(a, Tensor) and a._requires_grad for a in rec_args)
        ):
            _dispatch._record(op, rec_args, attrs, result)
        return result

    def abort(self) -> None:
        """Tracing failed: give every captured tensor its state back."""
        for buf in self.buffers.values():
            _restore(buf)
        self._restore_counters()
        self.buffers.clear()
        self.by_var.clear()

    def _restore_counters(self) -> None:
        for counter, value, last in self.counters.values():
            counter[0], counter[1] = value, last
        self.counters.clear()

    # --- finishing -----------------------------------------------------------------------------
    def finish(self, outputs) -> Graph:
        """Collect updates and gradients, turn temporaries into constants, restore state."""
        g = self.graph
        g.outputs = list(outputs)
        g.updates = []
        self.grad_writes: dict = {}  # capture Var -> (grad Var or None, owner tensor)
        self.guards: list = []  # (owner, had .grad before tracing)
        for buf in self.buffers.values():
            latest = self._latest(buf)
            if latest is not buf.var:
                g.updates.append((buf.var, latest))
            self._collect_grads(buf)
        for buf in self.buffers.values():
            _restore(buf)
        self._restore_counters()
        g.grads = [(c, v) for c, (v, _) in self.grad_writes.items() if v is not None]
        written = {c for c, _ in g.updates} | set(self.grad_writes)
        captures = []
        for var, _ in g.captures:
            buf = self.by_var[var]
            buf.saved.clear()
            holder = _holder(buf)
            if var in written or holder is not None or _externally_held(buf.array):
                captures.append(
                    (var, holder if holder is not None else Tensor.from_array(buf.array))
                )
            else:
                g.consts[var] = buf.array
            holder = None
        g.captures = captures
        self.buffers.clear()
        self.by_var.clear()
        return g

    def _collect_grads(self, buf):
        for ref in buf.tensors:
            t = ref()
            if t is None:
                continue
            saved = buf.saved[id(t)]
            if not (t._requires_grad or saved[3]):
                continue
            grad, before = t.grad, saved[4]
            if grad is not None and isinstance(grad.array, Var):
                self.grad_writes[buf.var] = (grad.array, t)
            elif grad is None and before is not None:
                self.grad_writes[buf.var] = (None, t)
            else:
                continue
            self.guards.append((t, before is not None))


def _restore(buf):
    for ref, data, node, requires_grad, grad, version, view in buf.saved.values():
        t = ref()
        if t is not None:
            t.array = data
            t._node = node
            t._requires_grad = requires_grad
            t.grad = grad
            t._version = version
            t._view = view


def _holder(buf):
    """A live tensor that held this buffer before tracing (only weak references are kept, so
    a live one is referenced from outside the trace)."""
    for ref in buf.tensors:
        t = ref()
        if t is not None and t.array is buf.array:
            return t
    return None


def _externally_held(array) -> bool:
    # references: the _Buffer, the getrefcount argument and this frame's parameter
    return sys.getrefcount(array) > 3


def _at_user(message: str) -> str:
    from ember._util.errors import at_user_line

    return at_user_line(message)


def current_tracer() -> Tracer | None:
    for backend in reversed(staging_backends()):
        if isinstance(backend, Tracer):
            return backend
    return None


class tracing:
    """Context manager: make `tracer` the active staging backend."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer

    def __enter__(self):
        push_staging(self.tracer)
        return self.tracer

    def __exit__(self, *exc):
        pop_staging()
        return False
