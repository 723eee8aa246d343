"""Eager dispatch: run an op's kernel on its inputs' backend and record the backward graph.

Note [Eager dispatch]: `apply(op, *args, **attrs)`
1. gives the call to the active staging backend if there is one (graph tracing, L4; Note
   [Staging backends] in ember/backend/__init__.py);
2. casts inputs to the op's compute dtype (Note [Type promotion]);
3. runs the backend's kernel for the op (a registered fast kernel, else the reference forward);
4. wraps the result, and if grad mode is on and an input requires grad, records a Node
   (Note [Autograd graph]); a view op's result remembers its source, and a stale view input
   gets its history regenerated first (Note [Views and in-place] in ember/tensor.py).
Kernel errors are re-raised as ember errors naming the op, the input shapes and dtypes, the
reason from the op's shape rule, and the user's line (Note [Error messages]).

Note [Eager inference overhead]: a short eager request (MiniLM 1 x 16: 76 ops, ~3.5 ms of
kernels) spends a large share of its time in the Python above the kernels: module calls, the
op functions' checks, dispatch, wrapping results. The code on that path (the Transformer
glue in ember/transformers/encoder_heads.py, the op functions it calls, this dispatcher, the
packed-weight products of ember/autograd/packed.py) keeps to a few habits, each worth ~0.2-2
us a call: shapes read once (`x.shape` makes a Size each time; the array's own tuple where
only a value is needed), no generator expressions in checks (`any(...)` over 3 items costs
~0.5 us, three `or`s ~0.05), module attributes read through the mirror (Note [Module
attribute mirror]) rather than the registries, and a plain nn.Linear inside a block called as
its forward (`F.linear`). A fresh op result that nothing else holds and that records nothing
may be rearranged on its array and re-wrapped (`Tensor.from_array`) instead of through view
ops: no other view shares its memory, so none needs the version counter view ops share.
Results, errors and grad-mode semantics are the plain path's; graph tracing and calls that
record a backward take the plain path itself.
"""

from __future__ import annotations

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import (
    DeviceError,
    DTypeError,
    EmberError,
    IndexOutOfRange,
    ShapeError,
    at_user_line,
    user_location,
)
from ember.autograd.engine import OWN_OUTPUT, Node, TensorMeta
from ember.autograd.grad_mode import _state
from ember.backend import _staging, backend_of, get_backend, pop_staging, push_staging
from ember.backend import parallel as _parallel
from ember.ops import registry as _registry

_SCALARS = (bool, int, float)
_DT_OF = _dt.BY_NUMPY  # shared: bfloat16 joins it when first used
_NDARRAY = np.ndarray
_NUMPY_BACKEND = get_backend("cpu")
_NUMPY_XP = _NUMPY_BACKEND.xp
# operands all smaller than this take NumPy's own functions (Note [Parallel kernels] in
# ember/backend/parallel.py): no parallel wrapper on the small-op path
_NUMPY_SERIAL_XP = _NUMPY_BACKEND.serial_xp
_PARALLEL_FROM = _parallel.threshold(costly=True)
_PROMOTE = {
    "common": ("common", ()),
    "float": ("float", ()),
    "common_tail": ("common", (0,)),
    "common_skip_index": ("common", (1,)),
}


# the names tools and tests used before staging backends (Note [Staging backends])
push_interceptor = push_staging
pop_interceptor = pop_staging


def _operand(a):
    """Normalise a non-Tensor operand: NumPy scalars to Python, arrays to Tensors."""
    if isinstance(a, np.generic):
        return a.item()
    if isinstance(a, np.ndarray):
        return _wrap(np.asarray(a))
    if isinstance(a, (list, tuple)):
        from ember.tensor import tensor as _tensor

        return _tensor(a)
    return a


def _compute_dtype(mode, skip, args):
    operands = []
    for i, a in enumerate(args):
        if i in skip or a is None:
            continue
        if isinstance(a, Tensor):
            d = a._data
            dt = _DT_OF[d.dtype]
            operands.append(dt if d.ndim else ("weak", dt))
        else:
            operands.append(a)
    if not operands:
        return None
    return _registry.compute_dtype(mode, operands)


def apply(op, *args, **attrs):
    if _staging:
        return _staging[-1].apply(op, args, attrs)
    # Fast path (Note [Eager dispatch]): operands on the CPU that need no casting, e.g. float
    # tensor (op) same-dtype tensor, float tensor (op) Python number, n same-dtype tensors.
    n = len(args)
    arrays = None
    if n > 2 and isinstance(args[0], Tensor):
        # three or more Tensor operands on the CPU of one dtype (any dtypes for an op that
        # does not promote), e.g. linear with a bias, fused layer norm, attention
        promote = op.promote
        dt = args[0]._data.dtype
        if promote != "float" or dt.kind == "f":
            arrays = []
            need_grad = False
            for t in args:
                if not isinstance(t, Tensor):
                    arrays = None
                    break
                d = t._data
                if type(d) is not _NDARRAY or (promote is not None and d.dtype is not dt):
                    arrays = None
                    break
                if t._view is not None and t._view[3] != t._version[0]:
                    refresh_view(t)
                arrays.append(d)
                need_grad = need_grad or t._requires_grad
    elif n:
        a = args[0]
        promote = op.promote
        if isinstance(a, Tensor):
            d0 = a._data
            if type(d0) is _NDARRAY:
                if a._view is not None and a._view[3] != a._version[0]:
                    refresh_view(a)
                if n == 1:
                    if promote != "float" or d0.dtype.kind == "f":
                        arrays = (d0,)
                        need_grad = a._requires_grad
                else:
                    b = args[1]
                    if isinstance(b, Tensor):
                        d1 = b._data
                        if b._view is not None and b._view[3] != b._version[0]:
                            refresh_view(b)
                        if type(d1) is _NDARRAY and (
                            promote is None
                            or (
                                d1.dtype is d0.dtype
                                and (promote != "float" or d0.dtype.kind == "f")
                            )
                        ):
                            arrays = (d0, d1)
                            need_grad = a._requires_grad or b._requires_grad
                    elif (type(b) is float or type(b) is int) and d0.dtype.kind == "f":
                        arrays = (d0, b)
                        need_grad = a._requires_grad
        elif (type(a) is float or type(a) is int) and n == 2:
            b = args[1]
            if isinstance(b, Tensor):
                d1 = b._data
                if b._view is not None and b._view[3] != b._version[0]:
                    refresh_view(b)
                if type(d1) is _NDARRAY and d1.dtype.kind == "f":
                    arrays = (a, d1)
                    need_grad = b._requires_grad
    if arrays is not None:
        kernel = op.kernels.get("numpy") or op.forward if op.kernels else op.forward
        xp = _NUMPY_SERIAL_XP
        for x in arrays:
            if type(x) is _NDARRAY and x.size >= _PARALLEL_FROM:
                xp = _NUMPY_XP
                break
        try:
            out = kernel(xp, *arrays, **attrs)
        except EmberError:
            raise
        except (ValueError, TypeError, IndexError, AttributeError) as error:
            raise _op_error(op, args, attrs, error) from error
        if type(out) is not _NDARRAY:
            out = _NUMPY_XP.asarray(out)
        result = _wrap(out)
        if op.view and n == 1:
            make_view(result, a, op, attrs)
        if need_grad and op.vjp is not None and _state.enabled and out.dtype.kind == "f":
            _record(op, args, attrs, result)
        return result
    return _apply_general(op, args, attrs)


def _apply_general(op, args, attrs):
    for a in args:
        if isinstance(a, Tensor) and a._view is not None and a._view[3] != a._version[0]:
            refresh_view(a)
    promote = op.promote
    backend = None
    arrays = []
    need_grad = False
    if promote is None:
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a._data)
                need_grad = need_grad or a._requires_grad
            else:
                arrays.append(_operand(a))
        args_t = args
    else:
        # fast path: every operand is a Tensor of one dtype
        first = args[0]
        same = isinstance(first, Tensor)
        if same:
            dt = first._data.dtype
            for a in args:
                if not isinstance(a, Tensor) or a._data.dtype is not dt:
                    same = False
                    break
            if same and promote == "float" and dt.kind != "f":
                same = False
        if same:
            for a in args:
                arrays.append(a._data)
                need_grad = need_grad or a._requires_grad
            args_t = args
        else:
            args_t = tuple(a if isinstance(a, Tensor) else _operand(a) for a in args)
            mode, skip = _PROMOTE[promote]
            cdt = _compute_dtype(mode, skip, args_t)
            target = cdt.numpy if cdt is not None else None
            for i, a in enumerate(args_t):
                if isinstance(a, Tensor):
                    d = a._data
                    if target is not None and d.dtype != target and i not in skip:
                        d = d.astype(target)
                    arrays.append(d)
                    need_grad = need_grad or a._requires_grad
                elif target is not None and i not in skip and isinstance(a, (bool, int, float)):
                    # a Python number among promoted operands takes the compute dtype (NumPy
                    # would make float64 of where(c, 1.5, -0.5))
                    arrays.append(_NUMPY_XP.asarray(a, dtype=target))
                else:
                    arrays.append(a)
    # backend of the inputs
    for d in arrays:
        if type(d) is _NDARRAY:
            if backend is None:
                backend = _NUMPY_BACKEND
            elif backend is not _NUMPY_BACKEND:
                _mixed_devices(op, args_t)
        elif hasattr(d, "__array_namespace__") or hasattr(d, "__cuda_array_interface__"):
            b = backend_of(d)
            if backend is None:
                backend = b
            elif backend is not b:
                _mixed_devices(op, args_t)
    if backend is None:
        device = attrs.get("device")
        backend = _NUMPY_BACKEND if device is None else get_backend(device)
    kernel = op.kernels.get(backend.name) or op.forward
    xp = backend.xp
    if backend is _NUMPY_BACKEND and not any(
        type(d) is _NDARRAY and d.size >= _PARALLEL_FROM for d in arrays
    ):
        xp = _NUMPY_SERIAL_XP
    try:
        out = kernel(xp, *arrays, **attrs)
    except EmberError:
        raise
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise _op_error(op, args_t, attrs, error) from error
    if type(out) is not backend.array_type:
        out = backend.xp.asarray(out)
    result = _wrap(out)
    if op.view and len(args_t) == 1:
        make_view(result, args_t[0], op, attrs)
    if need_grad and op.vjp is not None and _state.enabled and out.dtype.kind == "f":
        _record(op, args_t, attrs, result)
    return result


def make_view(result, source, op, attrs):
    """Views share their base's version counter (Note [Saved tensor versions]) and remember
    how they were made from `source` (Note [Views and in-place] in ember/tensor.py)."""
    data = result._data
    if type(data) is _NDARRAY and data.size:
        # the kernel copied (an empty result counts as a view, as in PyTorch); an array that
        # owns its memory is a copy, one based on the source's memory is not
        base = data.base
        if base is None:
            return
        src = source._data
        if base is not src and base is not src.base and not np.may_share_memory(data, src):
            return
    version = source._version
    if version is None:
        version = source._version = [0, None]
    result._version = version
    if op.vjp is not None:  # a non-differentiable view (bitcast) only shares the counter
        # attrs: this call's own dict, never mutated afterwards
        result._view = (source, op.name, attrs, version[0], _state.enabled)


def view_chain(t):
    """(root base, view steps from the base to `t`) of a differentiable view."""
    steps = []
    while t._view is not None:
        parent, name, attrs = t._view[:3]
        steps.append((name, tuple(attrs.items())))
        t = parent
    steps.reverse()
    return t, tuple(steps)


def refresh_view(t):
    """A view whose version counter moved since its history was made (an in-place op on it, on
    its base or on another view of the base) gets its history regenerated from the base's
    current one, as PyTorch does on grad_fn access (Note [Views and in-place]). While tracing,
    its traced value is regenerated too."""
    parent, name, items, _, grad_mode = t._view
    t._view = (parent, name, items, t._version[0], grad_mode)
    base, steps = view_chain(t)
    staged = bool(_staging)  # Note [Staging backends]: the replay is the view's value too
    if not staged and t._node is None and not base._requires_grad:
        return
    prev = _state.enabled
    _state.enabled = True
    try:
        r = base
        for step_name, step_items in steps:
            r = apply(_registry.REGISTRY[step_name], r, **dict(step_items))
    finally:
        _state.enabled = prev
    if not staged and r._node is None and t._node is None:
        return
    t._node = r._node
    t._requires_grad = r._requires_grad
    if staged:
        t._data = r._data


def _record(op, args, attrs, result):
    edges = []
    in_meta = []
    saved = []
    versions = []
    save_inputs = op.save_inputs
    needed_by = op.needed_by
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            d = a._data
            if a._requires_grad:
                edges.append(a._node if a._node is not None else a)
            else:
                edges.append(None)
            in_meta.append((d.shape if type(d) is _NDARRAY else tuple(d.shape), _DT_OF[d.dtype]))
            # indices and masks (integer/bool inputs) are always kept: index VJPs need them
            if save_inputs or d.dtype.kind in "biu":
                saved.append(a)
                if needed_by is not None:
                    for j in needed_by.get(i, ()):
                        other = args[j]
                        if isinstance(other, Tensor) and other._requires_grad:
                            break
                    else:
                        continue  # no gradient reads this input: no version check
                if a._version is None:
                    a._version = [0, None]
                versions.append((a, a._version, a._version[0], a._node))
            else:
                saved.append(TensorMeta(a))
        else:
            edges.append(None)
            in_meta.append(None)
            saved.append(a)
    node = Node(op, attrs, tuple(saved), tuple(edges), tuple(in_meta), user_location(3))
    if op.save_output:
        node.out_data = result._data
        if result._version is None:
            result._version = [0, None]
        # Note [Autograd graph]: no reference from the node to itself
        versions.append((None, result._version, result._version[0], OWN_OUTPUT))
        node.out_version = result._version
    node.versions = versions
    result._node = node
    result._requires_grad = True


def _mixed_devices(op, args):
    devices = sorted({str(a.device) for a in args if isinstance(a, Tensor)})
    raise DeviceError(
        at_user_line(
            f"{op.name}: expected all tensors on one device, got tensors on {' and '.join(devices)}"
        )
    )


def _describe(args):
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append(f"{tuple(a.shape)} {a.dtype.name}")
        else:
            parts.append(repr(a))
    return ", ".join(parts)


def _op_error(op, args, attrs, error):
    """Build an ember error from a kernel error, asking the op's rules for the reason."""
    avals = [(tuple(a.shape), a.dtype) if isinstance(a, Tensor) else a for a in args]
    reason = None
    kind = ShapeError
    try:
        _registry.infer(
            op, avals, {k: v for k, v in attrs.items() if k != "device"} if op.stateful else attrs
        )
    except (ShapeError, ValueError, IndexError) as rule_error:
        reason = str(rule_error)
        kind = IndexError if isinstance(rule_error, IndexError) else ShapeError
    except TypeError as rule_error:
        reason = str(rule_error)
        kind = DTypeError
    except Exception:  # a rule that cannot judge these inputs: report the kernel's reason
        reason = None
    if reason is None:
        reason = f"{type(error).__name__}: {error}"
        kind = (
            DTypeError
            if isinstance(error, TypeError)
            else (IndexError if isinstance(error, IndexError) else ShapeError)
        )
    if reason.startswith(op.name + ":"):
        message = reason
    else:
        message = f"{op.name}: {reason}"
    message += f" [inputs: {_describe(args)}]"
    if kind is IndexError:
        return IndexOutOfRange(message)
    return kind(message)


from ember.tensor import Tensor, _wrap  # noqa: E402  (tensor.py imports this module lazily)

_registry.set_dispatcher(apply)

from ember.autograd import packed as _packed  # noqa: E402, F401  (Note [Packed weights])
