"""L3: the Tensor, its operators and methods, and the creation functions.

A Tensor wraps one backend array (`_data`) plus autograd state: `requires_grad`, `.grad`, the
Node that made it (`grad_fn`), and a version counter shared with its views
(Note [Saved tensor versions]). Every operator and method goes through the op registry
(Note [Eager dispatch]); nothing here computes on arrays directly except creation, printing
and in-place writes.

Note [Views and in-place]: a view op (reshape, permute, expand, basic getitem, diagonal) whose
result shares memory with its input gives the result `_view = (parent, op name, attrs items,
version, made with grad mode on)` and the parent's version counter (`dispatch.make_view`).
`detach()` shares the counter but is no view for autograd, as in PyTorch. An in-place op that
autograd records on a view rewrites the history of the root base, as PyTorch's CopySlices does:
the base's new Node is `view_scatter(base's old history, op(view's old value, ...))` with the
view steps from the base to the view as its attribute (`_rebase_history`). Its VJP sends the
gradient with the view region zeroed to the old base and the view region to the op, so
gradients flow to both, and second order works because it is written with ember ops.
Any in-place op bumps the shared counter; a view whose recorded version differs from the
counter is stale, and its history is regenerated from the base's current one by replaying the
view steps (`dispatch.refresh_view`, what PyTorch does on grad_fn access) before dispatch reads
its autograd state (the check is one slot read for non-views on the fast path), in
`requires_grad`/`grad_fn`, in-place ops and `backward`. So a view of a base that gains
gradients through another view requires grad from then on. While tracing (ember.compile) the
write is functional: the base's traced value becomes the view_scatter's, the view's the op's,
and stale views replay their steps on the base's latest value (the tracer puts the counters
back afterwards). PyTorch's rules are kept: in-place on a view of a leaf that requires grad is
refused, a view made under no_grad cannot be written with grad mode on, and under no_grad
nothing is recorded. Multi-output views (split, unbind, chunk) are plain views here, so
writing one is allowed where PyTorch refuses it.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import AutogradError, at_user_line, user_location
from ember.backend import Device, backend_of, device as _device, get_backend
from ember.autograd.grad_mode import _state

_SCALARS = (bool, int, float)
_DT_OF = _dt.BY_NUMPY  # shared: bfloat16 joins it when first used
_CPU = Device("cpu")


class Size(tuple):
    """A tensor's shape: a tuple with `numel()`, printed like PyTorch's torch.Size."""

    __slots__ = ()

    def numel(self) -> int:
        return math.prod(self)

    def __repr__(self) -> str:
        return f"ember.Size({list(self)})"


class Tensor:
    """An n-dimensional array with automatic differentiation.

    Example:
        >>> import ember
        >>> x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> (x * x).sum().backward()
        >>> x.grad
        tensor([2., 4., 6.])
    """

    __slots__ = (
        "_data",
        "_requires_grad",
        "grad",
        "_node",
        "_version",
        "_view",
        "_hooks",
        "__weakref__",
        "__dict__",
    )
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor

    def __init__(self, data=None, *, dtype=None, device=None, requires_grad=False):
        # ember.Tensor(data) behaves like ember.tensor(data) with a float default
        src = tensor(
            data if data is not None else [],
            dtype=dtype
            or (None if isinstance(data, (Tensor, np.ndarray)) else _dt.get_default_dtype()),
            device=device,
        )
        self._data = src._data
        self._requires_grad = False
        self.grad = None
        self._node = None
        self._version = None
        self._view = None
        self._hooks = None
        if requires_grad:
            self.requires_grad_(True)

    # --- basic properties --------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[dim]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    @property
    def dtype(self) -> _dt.DType:
        return _DT_OF[self._data.dtype]

    @property
    def device(self) -> Device:
        if type(self._data) is np.ndarray:
            return _CPU
        return backend_of(self._data).device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _backend(self):
        return backend_of(self._data)

    def element_size(self) -> int:
        return self._data.itemsize

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    def stride(self, dim: int | None = None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[dim]

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point  # bfloat16 too (ml_dtypes' kind is 'V')

    # --- autograd state ------------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        if self._node is not None:
            if not requires_grad:
                raise AutogradError(
                    at_user_line(
                        "requires_grad_: you can only change requires_grad of leaf tensors; use "
                        ".detach() to get a tensor without history"
                    )
                )
            return self
        if requires_grad and not self.dtype.is_floating_point:
            raise AutogradError(
                at_user_line(
                    f"requires_grad_: only floating point tensors can require gradients, got "
                    f"{self.dtype}"
                )
            )
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def grad_fn(self):
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        return self._node

    @property
    def _base(self) -> "Tensor | None":
        """The tensor this one is a (differentiable) view of, as PyTorch's `_base`."""
        view = self._view
        if view is None:
            return None
        while view[0]._view is not None:
            view = view[0]._view
        return view[0]

    def _is_view(self) -> bool:
        return self._view is not None

    @property
    def _version_value(self) -> int:
        return 0 if self._version is None else self._version[0]

    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor") -> None:
        self._data = value._data if isinstance(value, Tensor) else np.asarray(value)

    def detach(self) -> "Tensor":
        # shares data and the version counter, but is no view for autograd (as in PyTorch)
        t = _wrap(self._data)
        if self._version is None:
            self._version = [0, None]
        t._version = self._version
        return t

    def detach_(self) -> "Tensor":
        if self._view is not None:
            raise AutogradError(
                at_user_line("detach_: can't detach views in place; use detach() instead")
            )
        self._node = None
        self._requires_grad = False
        return self

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into each leaf's `.grad` (define-by-run)."""
        _autograd.backward(
            [self],
            None if gradient is None else [gradient],
            retain_graph,
            create_graph,
            inputs=inputs,
        )

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; it may return a new one."""
        if not self.requires_grad:
            raise AutogradError(
                at_user_line(
                    "register_hook: cannot register a hook on a tensor that doesn't require grad"
                )
            )
        from ember.autograd.engine import _RemovableHandle

        if self.grad_fn is not None:
            return self._node.register_hook(hook)
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return _RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call `hook(self)` as soon as backward has accumulated this leaf's `.grad`, while the
        rest of backward still runs (Note [Gradient-ready hooks] in ember/autograd/engine.py).

        Example:
            >>> import ember
            >>> w = ember.tensor([1.0, 2.0], requires_grad=True)
            >>> seen = []
            >>> _ = w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.tolist()))
            >>> (w * w).sum().backward()
            >>> seen
            [[2.0, 4.0]]
        """
        if not self.requires_grad:
            raise AutogradError(
                at_user_line(
                    "register_post_accumulate_grad_hook: cannot register a hook on a tensor "
                    "that doesn't require grad"
                )
            )
        if self.grad_fn is not None:
            raise AutogradError(
                at_user_line(
                    "register_post_accumulate_grad_hook: only leaf tensors accumulate .grad; "
                    "this tensor is the output of an op (use register_hook)"
                )
            )
        from ember.autograd.engine import register_post_accumulate_grad_hook

        return register_post_accumulate_grad_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep `.grad` for this non-leaf tensor after backward."""
        if self.grad_fn is None:
            return
        import weakref

        self._node.retained = weakref.ref(self)

    @property
    def retains_grad(self) -> bool:
        return self._node is not None and self._node.retained is not None

    # --- conversion ----------------------------------------------------------------------------
    def numpy(self, force: bool = False) -> np.ndarray:
        if self._requires_grad and not force:
            raise AutogradError(
                at_user_line(
                    "numpy: can't call numpy() on a tensor that requires grad; use "
                    "tensor.detach().numpy() instead"
                )
            )
        if type(self._data) is np.ndarray:
            return self._data
        if not force:
            raise TypeError(
                at_user_line(f"numpy: the tensor is on {self.device}; call .cpu() first")
            )
        return self._backend().to_numpy(self._data)

    def __array__(self, dtype=None, copy=None):
        data = (
            self._data if type(self._data) is np.ndarray else self._backend().to_numpy(self._data)
        )
        return data.astype(dtype) if dtype is not None else data

    def item(self):
        if self._data.size != 1:
            raise ValueError(
                at_user_line(
                    f"item: a Tensor with {self._data.size} elements cannot be converted to a "
                    f"Python number"
                )
            )
        return (
            self._data.reshape(()).item()
            if type(self._data) is np.ndarray
            else (self._backend().to_numpy(self._data).reshape(()).item())
        )

    def tolist(self):
        return np.asarray(self).tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError(
                at_user_line(
                    "only integer tensors of a single element can be converted to an index"
                )
            )
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(
                at_user_line(
                    f"Boolean value of Tensor with {self._data.size} values is ambiguous; use "
                    f".any() or .all()"
                )
            )
        return bool(self.item())

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        from ember._tensor_str import tensor_repr

        return tensor_repr(self)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return repr(self)

    def __reduce__(self):
        return (_rebuild, (np.asarray(self).copy(), self._requires_grad))

    def __deepcopy__(self, memo):
        t = _wrap(self._data.copy())
        t._requires_grad = self._requires_grad
        if self.grad is not None:
            t.grad = _wrap(self.grad._data.copy())
        if type(self) is not Tensor:
            t.__class__ = type(self)
            if hasattr(self, "__dict__"):
                t.__dict__.update(self.__dict__)
        memo[id(self)] = t
        return t

    # --- dtype / device movement -------------------------------------------------------------
    def to(self, *args, **kwargs) -> "Tensor":
        """to(dtype) | to(device) | to(device, dtype) | to(other_tensor); copy=False."""
        dtype = kwargs.pop("dtype", None)
        dev = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        copy = kwargs.pop("copy", False)
        if kwargs:
            raise TypeError(f"to: unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype, dev = a.dtype, a.device
            elif isinstance(a, (_dt.DType, type)) or (a is not None and _looks_like_dtype(a)):
                dtype = a
            else:
                dev = a
        out = self
        if dev is not None and _device(dev) != self.device:
            out = _to_device(out, _device(dev))
        if dtype is not None:
            out = _E.cast(out, dtype)
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, device=None) -> "Tensor":
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self):
        return _E.cast(self, _dt.float32)

    def double(self):
        return _E.cast(self, _dt.float64)

    def half(self):
        return _E.cast(self, _dt.float16)

    def bfloat16(self):
        return _E.cast(self, _dt.bfloat16)

    def long(self):
        return _E.cast(self, _dt.int64)

    def int(self):
        return _E.cast(self, _dt.int32)

    def short(self):
        return _E.cast(self, _dt.int16)

    def byte(self):
        return _E.cast(self, _dt.uint8)

    def char(self):
        return _E.cast(self, _dt.int8)

    def bool(self):
        return _E.cast(self, _dt.bool_)

    def type(self, dtype=None):
        if dtype is None:
            return f"ember.{self.dtype.name}"
        return _E.cast(self, dtype)

    def type_as(self, other):
        return _E.cast(self, other.dtype)

    def clone(self, memory_format=None) -> "Tensor":
        return apply(_S.COPY, self)

    def contiguous(self, memory_format=None) -> "Tensor":
        return self if self._data.flags.c_contiguous else apply(_S.COPY, self)

    # --- new_* -----------------------------------------------------------------------------
    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return zeros(
            *size,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return ones(
            *size,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return full(
            size,
            fill_value,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return empty(
            *size,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return tensor(
            data,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    # --- operators ---------------------------------------------------------------------------
    def __add__(self, other):
        return apply(_E.ADD, self, other)

    def __radd__(self, other):
        return apply(_E.ADD, other, self)

    def __sub__(self, other):
        return apply(_E.SUB, self, other)

    def __rsub__(self, other):
        return apply(_E.SUB, other, self)

    def __mul__(self, other):
        return apply(_E.MUL, self, other)

    def __rmul__(self, other):
        return apply(_E.MUL, other, self)

    def __truediv__(self, other):
        return apply(_E.DIV, self, other)

    def __rtruediv__(self, other):
        return apply(_E.DIV, other, self)

    def __floordiv__(self, other):
        return apply(_E.FLOOR_DIVIDE, self, other)

    def __rfloordiv__(self, other):
        return apply(_E.FLOOR_DIVIDE, other, self)

    def __mod__(self, other):
        return apply(_E.REMAINDER, self, other)

    def __rmod__(self, other):
        return apply(_E.REMAINDER, other, self)

    def __pow__(self, other):
        return apply(_E.POW, self, other)

    def __rpow__(self, other):
        return apply(_E.POW, other, self)

    def __matmul__(self, other):
        return apply(_L.MATMUL, self, other)

    def __rmatmul__(self, other):
        return apply(_L.MATMUL, other, self)

    def __neg__(self):
        return apply(_E.NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return apply(_E.ABS, self)

    def __invert__(self):
        if self._data.dtype.kind == "b":
            return apply(_E.LOGICAL_NOT, self)
        return -self - 1

    def __eq__(self, other):
        return apply(_E.EQ, self, other)  # type: ignore[override]

    def __ne__(self, other):
        return apply(_E.NE, self, other)  # type: ignore[override]

    def __lt__(self, other):
        return apply(_E.LT, self, other)

    def __le__(self, other):
        return apply(_E.LE, self, other)

    def __gt__(self, other):
        return apply(_E.GT, self, other)

    def __ge__(self, other):
        return apply(_E.GE, self, other)

    def _logical(self, other, op):
        if self._data.dtype.kind != "b" or (
            isinstance(other, Tensor) and other._data.dtype.kind != "b"
        ):
            raise TypeError(
                at_user_line(
                    f"{op.name}: the & | ^ operators need bool tensors (bitwise ops on integers "
                    f"are not supported), got {self.dtype}"
                )
            )
        return apply(op, self, other)

    def __and__(self, other):
        return self._logical(other, _E.LOGICAL_AND)

    def __rand__(self, other):
        return self._logical(other, _E.LOGICAL_AND)

    def __or__(self, other):
        return self._logical(other, _E.LOGICAL_OR)

    def __ror__(self, other):
        return self._logical(other, _E.LOGICAL_OR)

    def __xor__(self, other):
        return self._logical(other, _E.LOGICAL_XOR)

    def __rxor__(self, other):
        return self._logical(other, _E.LOGICAL_XOR)

    def __iadd__(self, other):
        return self._inplace(_E.ADD, other)

    def __isub__(self, other):
        return self._inplace(_E.SUB, other)

    def __imul__(self, other):
        return self._inplace(_E.MUL, other)

    def __itruediv__(self, other):
        return self._inplace(_E.DIV, other)

    def __getitem__(self, index):
        if isinstance(index, Tensor) and index._data.dtype.kind == "b" and index.ndim == 0:
            index = (index,)
        return _S.getitem(self, index)

    def __setitem__(self, index, value):
        spec, tensors = _S.encode_index(self, index)
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, (list, np.ndarray)):
            value = tensor(value, dtype=self.dtype)
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        needs_graph = self._records_inplace((value,))
        if not needs_graph and type(self._data) is np.ndarray and not _interceptors_active():
            self._check_writable("__setitem__")
            idx = _S._decode(spec, [t._data for t in tensors])
            self._data[idx] = value._data if isinstance(value, Tensor) else value
            self._bump_version("__setitem__")
            return
        if isinstance(value, Tensor) and value.dtype is not self.dtype:
            value = value.to(self.dtype)
        self._inplace(_S.INDEX_PUT, value, *tensors, spec=spec)

    # --- in-place machinery ------------------------------------------------------------------
    def _check_writable(self, name):
        if type(self._data) is np.ndarray and not self._data.flags.writeable:
            raise RuntimeError(
                at_user_line(
                    f"{name}: this tensor is a broadcast (expanded) view whose elements share "
                    f"memory; call .clone() before writing to it"
                )
            )

    def _bump_version(self, name):
        if self._version is None:
            self._version = [1, (name, user_location(3))]
        else:
            self._version[0] += 1
            self._version[1] = (name, user_location(3))

    def _inplace(self, op, *args, _name=None, **attrs):
        """Run `op(self, *args)` and write the result into self (Note [Saved tensor versions],
        Note [Views and in-place])."""
        name = _name or op.name + "_"
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        needs_graph = _state.enabled and self._records_inplace(args)
        if needs_graph:
            self._check_inplace(name)
        if _dispatch._interceptors:
            # traced values are never overwritten, but self's version moves: the op saves an
            # alias of self's current value with its own counter
            current = self
            if needs_graph:
                current = _wrap(self._data)
                current._requires_grad = self._requires_grad
                current._node = self._node
            result = apply(op, current, *args, **attrs)
            if self._view is not None:  # the write lands in the base: rebind its traced value
                base, steps = _dispatch.view_chain(self)
                _graph_assign(base, apply(_S.VIEW_SCATTER, base, result, steps=steps), needs_graph)
            _graph_assign(self, result, needs_graph)
            self._bump_version(name)
            return self
        if needs_graph:
            # the op's VJP may need self's old value, which the write below overwrites
            snapshot = _wrap(self._data.copy())
            snapshot._requires_grad = self._requires_grad
            snapshot._node = self._node
            result = apply(op, snapshot, *args, **attrs)
        else:
            result = apply(op, self, *args, **attrs)
        data = self._data
        if type(data) is np.ndarray and not data.flags.writeable:
            self._check_writable(name)
        out = result._data
        if out.dtype != self._data.dtype:
            if not np.can_cast(out.dtype, self._data.dtype, "same_kind"):
                raise TypeError(
                    at_user_line(
                        f"{name}: result type {_DT_OF[out.dtype].name} can't be cast to the "
                        f"tensor's dtype {self.dtype.name}"
                    )
                )
        if out.shape != self._data.shape:
            raise ValueError(
                at_user_line(
                    f"{name}: the result has shape {out.shape} but the tensor being written has "
                    f"shape {self._data.shape} (in-place ops cannot broadcast the written tensor)"
                )
            )
        np.copyto(self._data, out, casting="unsafe") if type(
            self._data
        ) is np.ndarray else self._backend().xp.copyto(self._data, out)
        self._bump_version(name)
        if needs_graph:
            if self._view is None:
                _move_retained(self, result._node)
                self._node = result._node  # the result's node now describes self
                self._requires_grad = True
            else:
                _rebase_history(self, result)
        return self

    def _records_inplace(self, args) -> bool:
        """Whether autograd records an in-place op on self with these operands."""
        if not _state.enabled:
            return False
        if self._requires_grad or builtins.any(
            isinstance(a, Tensor) and a.requires_grad for a in args
        ):
            return True
        # a view made under no_grad of a base that requires grad (PyTorch counts it as
        # requiring grad; _check_inplace refuses it)
        return self._view is not None and self._made_without_grad() and self._base._requires_grad

    def _made_without_grad(self) -> bool:
        """Whether this view, or a view it was made from, was made under no_grad."""
        view = self._view
        while view is not None:
            if not view[4]:
                return True
            view = view[0]._view
        return False

    def _check_inplace(self, name):
        """PyTorch's rules for an in-place op that autograd records."""
        if self._view is not None:
            if self._made_without_grad():
                raise AutogradError(
                    at_user_line(
                        f"{name}: a view was created in no_grad mode and is being modified in "
                        f"place with grad mode enabled; this is ambiguous, so it is forbidden (as "
                        f"in PyTorch). Make both the view and the in-place op inside the no_grad "
                        f"block (not tracked) or both outside it (tracked)"
                    )
                )
            if self._requires_grad and self._base._node is None:
                raise AutogradError(
                    at_user_line(
                        f"{name}: a view of a leaf Variable that requires grad is being used in an "
                        f"in-place operation; wrap it in `with ember.no_grad():` or clone the leaf "
                        f"first"
                    )
                )
        elif self._node is None and self._requires_grad:
            raise AutogradError(
                at_user_line(
                    f"{name}: a leaf tensor that requires grad is used in an in-place "
                    f"operation; wrap it in `with ember.no_grad():` or use an out-of-place op"
                )
            )

    def add_(self, other, alpha=1):
        return self._inplace(_E.ADD, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        return self._inplace(_E.SUB, other if alpha == 1 else other * alpha)

    def mul_(self, other):
        return self._inplace(_E.MUL, other)

    def div_(self, other):
        return self._inplace(_E.DIV, other)

    def pow_(self, other):
        return self._inplace(_E.POW, other)

    def neg_(self):
        return self._inplace(_E.NEG)

    def abs_(self):
        return self._inplace(_E.ABS)

    def exp_(self):
        return self._inplace(_E.EXP)

    def log_(self):
        return self._inplace(_E.LOG)

    def sqrt_(self):
        return self._inplace(_E.SQRT)

    def tanh_(self):
        return self._inplace(_E.TANH)

    def sigmoid_(self):
        return self._inplace(_E.SIGMOID)

    def relu_(self):
        return self._inplace(_E.RELU)

    def floor_(self):
        return self._inplace(_E.FLOOR)

    def round_(self, decimals=0):
        return self._inplace(_E.ROUND, decimals=int(decimals))

    def clamp_(self, min=None, max=None):  # noqa: A002
        return (
            self.copy_(_E.clamp(self, min, max))
            if not (
                isinstance(min, (*_SCALARS, type(None)))
                and isinstance(max, (*_SCALARS, type(None)))
            )
            else self._inplace(_E.CLAMP, min=min, max=max)
        )

    clip_ = clamp_

    def addcmul_(self, a, b, value=1):
        return self.add_(a * b * value if value != 1 else a * b)

    def addcdiv_(self, a, b, value=1):
        return self.add_(a / b * value if value != 1 else a / b)

    def lerp_(self, end, weight):
        return self.add_((end - self) * weight)

    def masked_fill_(self, mask, value):
        return self.copy_(_S.masked_fill(self, mask, value))

    def copy_(self, src, non_blocking=False, _name="copy_"):
        """Copy `src` (broadcast to this shape) into this tensor."""
        if not isinstance(src, Tensor):
            src = tensor(src, dtype=self.dtype, device=self.device)
        if src.device != self.device:
            src = src.to(self.device)
        if tuple(src.shape) != tuple(self._data.shape):
            src = src.expand(tuple(self._data.shape))
        if src.dtype is not self.dtype:
            src = src.to(self.dtype)
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        needs_graph = self._records_inplace((src,))
        if not needs_graph and not _interceptors_active():
            self._check_writable("copy_")
            self._data[...] = src._data
            self._bump_version(_name)
            return self
        return self._inplace(_S.ASSIGN, src, _name=_name)

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        if isinstance(value, Tensor):
            value = value.item()
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        if _interceptors_active() or self._records_inplace(()):
            # recorded: the old value gets no gradient (PyTorch's FillBackward)
            return self.copy_(full(tuple(self.shape), value, dtype=self.dtype), _name="fill_")
        self._check_writable("fill_")
        self._data[...] = value
        self._bump_version("fill_")
        return self

    def uniform_(self, a=0.0, b=1.0, generator=None):
        return self._fill_random(
            _R.uniform(tuple(self.shape), a, b, self.dtype, generator, self.device)
        )

    def normal_(self, mean=0.0, std=1.0, generator=None):
        return self._fill_random(
            _R.normal(tuple(self.shape), mean, std, self.dtype, generator, self.device)
        )

    def bernoulli_(self, p=0.5, generator=None):
        return self._fill_random(
            (
                _R.uniform(
                    tuple(self.shape), dtype=_dt.float64, generator=generator, device=self.device
                )
                < p
            ).to(self.dtype)
        )

    def random_(self, low=0, high=None, generator=None):
        if high is None:
            low, high = 0, low if low else 2**24
        return self._fill_random(
            _R.randint(low, high, tuple(self.shape), self.dtype, generator, self.device)
        )

    def exponential_(self, lambd=1.0, generator=None):
        u = _R.uniform(tuple(self.shape), dtype=_dt.float64, generator=generator)
        return self._fill_random((-(1.0 - u).log() / lambd).to(self.dtype))

    def _fill_random(self, values):
        if _state.enabled and self._requires_grad and self._node is None:
            from ember.autograd.grad_mode import no_grad

            with no_grad():  # PyTorch's nn.init runs these under no_grad
                return self._fill_random(values)
        self._check_writable("random fill")
        self._data[...] = values._data
        self._bump_version("random fill")
        return self

    # --- methods that are ops ----------------------------------------------------------------
    def add(self, other, alpha=1):
        return _E.add(self, other, alpha)

    def sub(self, other, alpha=1):
        return _E.sub(self, other, alpha)

    subtract = sub

    def mul(self, other):
        return apply(_E.MUL, self, other)

    multiply = mul

    def div(self, other, rounding_mode=None):
        return _E.div(self, other, rounding_mode)

    divide = true_divide = div

    def pow(self, other):
        return apply(_E.POW, self, other)

    def remainder(self, other):
        return apply(_E.REMAINDER, self, other)

    def floor_divide(self, other):
        return apply(_E.FLOOR_DIVIDE, self, other)

    def neg(self):
        return apply(_E.NEG, self)

    negative = neg

    def abs(self):
        return apply(_E.ABS, self)

    def sign(self):
        return apply(_E.SIGN, self)

    def exp(self):
        return apply(_E.EXP, self)

    def log(self):
        return apply(_E.LOG, self)

    def log1p(self):
        return apply(_E.LOG1P, self)

    def expm1(self):
        return apply(_E.EXPM1, self)

    def sqrt(self):
        return apply(_E.SQRT, self)

    def rsqrt(self):
        return apply(_E.RSQRT, self)

    def reciprocal(self):
        return apply(_E.RECIPROCAL, self)

    def sin(self):
        return apply(_E.SIN, self)

    def cos(self):
        return apply(_E.COS, self)

    def tanh(self):
        return apply(_E.TANH, self)

    def sigmoid(self):
        return apply(_E.SIGMOID, self)

    def relu(self):
        return apply(_E.RELU, self)

    def erf(self):
        return apply(_E.ERF, self)

    def floor(self):
        return apply(_E.FLOOR, self)

    def ceil(self):
        return apply(_E.CEIL, self)

    def round(self, decimals=0):
        return _E.round(self, decimals)

    def trunc(self):
        return apply(_E.TRUNC, self)

    def square(self):
        return apply(_E.MUL, self, self)

    def logical_not(self):
        return apply(_E.LOGICAL_NOT, self)

    def logical_and(self, other):
        return apply(_E.LOGICAL_AND, self, other)

    def logical_or(self, other):
        return apply(_E.LOGICAL_OR, self, other)

    def logical_xor(self, other):
        return apply(_E.LOGICAL_XOR, self, other)

    def isnan(self):
        return apply(_E.ISNAN, self)

    def isinf(self):
        return apply(_E.ISINF, self)

    def isfinite(self):
        return apply(_E.ISFINITE, self)

    def maximum(self, other):
        return apply(_E.MAXIMUM, self, other)

    def minimum(self, other):
        return apply(_E.MINIMUM, self, other)

    def eq(self, other):
        return apply(_E.EQ, self, other)

    def ne(self, other):
        return apply(_E.NE, self, other)

    def lt(self, other):
        return apply(_E.LT, self, other)

    def le(self, other):
        return apply(_E.LE, self, other)

    def gt(self, other):
        return apply(_E.GT, self, other)

    def ge(self, other):
        return apply(_E.GE, self, other)

    def clamp(self, min=None, max=None):
        return _E.clamp(self, min, max)  # noqa: A002

    clip = clamp

    def where(self, condition, other):
        return _E.where(condition, self, other)

    def lerp(self, end, weight):
        return self + (end - self) * weight

    def equal(self, other) -> bool:
        return tuple(self.shape) == tuple(other.shape) and bool((self == other).all())

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
        return bool(np.allclose(np.asarray(self), np.asarray(other), rtol, atol, equal_nan))

    def sum(self, dim=None, keepdim=False, dtype=None):
        return _Rd.sum(self, dim, keepdim, dtype)

    def prod(self, dim=None, keepdim=False, dtype=None):
        return _Rd.prod(self, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim=False, dtype=None):
        return _Rd.mean(self, dim, keepdim, dtype)

    def var(self, dim=None, correction=1, keepdim=False, unbiased=None):
        return _Rd.var(self, dim, correction, keepdim, unbiased)

    def std(self, dim=None, correction=1, keepdim=False, unbiased=None):
        return _Rd.std(self, dim, correction, keepdim, unbiased)

    def amax(self, dim=None, keepdim=False):
        return _Rd.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _Rd.amin(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return _Rd.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _Rd.min(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _Rd.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _Rd.argmin(self, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return _Rd.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return _Rd.any(self, dim, keepdim)

    def cumsum(self, dim, dtype=None):
        return _Rd.cumsum(self, dim, dtype)

    def cumprod(self, dim, dtype=None):
        return _Rd.cumprod(self, dim, dtype)

    def logsumexp(self, dim, keepdim=False):
        return _Rd.logsumexp(self, dim, keepdim)

    def norm(self, p=2, dim=None, keepdim=False):
        return _Rd.norm(self, p, dim, keepdim)

    def softmax(self, dim, dtype=None):
        return _N.softmax(self, dim, dtype)

    def log_softmax(self, dim, dtype=None):
        return _N.log_softmax(self, dim, dtype)

    def reshape(self, *shape):
        return _S.reshape(self, *shape)

    def view(self, *shape):
        """view(*shape): reshape without copying; view(dtype): the same bytes read as `dtype`
        (PyTorch's rules, Note [Bit views]; the result never requires grad)."""
        if len(shape) == 1 and isinstance(shape[0], (_dt.DType, str)):
            return _E.bitcast(self, shape[0])
        return _S.reshape(self, *shape)

    def view_as(self, other):
        return _S.reshape(self, tuple(other.shape))

    def reshape_as(self, other):
        return _S.reshape(self, tuple(other.shape))

    def permute(self, *dims):
        return _S.permute(self, *dims)

    def transpose(self, dim0, dim1):
        return _S.transpose(self, dim0, dim1)

    swapaxes = swapdims = transpose

    def movedim(self, source, destination):
        return _S.movedim(self, source, destination)

    def t(self):
        if self.ndim > 2:
            raise ValueError(at_user_line(f"t: expects a tensor with <= 2 dims, got {self.ndim}"))
        return _S.transpose(self, 0, 1) if self.ndim == 2 else self

    @property
    def T(self):
        return _S.permute(self, tuple(reversed(range(self.ndim)))) if self.ndim > 1 else self

    @property
    def mT(self):
        return _S.transpose(self, -2, -1)

    def expand(self, *shape):
        return _S.expand(self, *shape)

    def expand_as(self, other):
        return _S.expand(self, tuple(other.shape))

    def broadcast_to(self, shape):
        return _S.expand(self, tuple(shape))

    def squeeze(self, dim=None):
        return _S.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _S.unsqueeze(self, dim)

    def flatten(self, start_dim=0, end_dim=-1):
        return _S.flatten(self, start_dim, end_dim)

    def unflatten(self, dim, sizes):
        return _S.unflatten(self, dim, sizes)

    def split(self, split_size, dim=0):
        return _S.split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        return _S.chunk(self, chunks, dim)

    def unbind(self, dim=0):
        return _S.unbind(self, dim)

    def narrow(self, dim, start, length):
        return _S.narrow(self, dim, start, length)

    def flip(self, dims):
        return _S.flip(self, dims)

    def roll(self, shifts, dims=None):
        return _S.roll(self, shifts, dims)

    def repeat(self, *sizes):
        return _S.repeat(self, *sizes)

    def diagonal(self, offset=0, dim1=0, dim2=1):
        return _S.diagonal(self, offset, dim1, dim2)

    def tril(self, diagonal=0):
        return _S.tril(self, diagonal)

    def triu(self, diagonal=0):
        return _S.triu(self, diagonal)

    def gather(self, dim, index):
        return _S.gather(self, dim, index)

    def scatter(self, dim, index, src=None, value=None):
        return _S.scatter(self, dim, index, src, value)

    def scatter_add(self, dim, index, src):
        return _S.scatter_add(self, dim, index, src)

    def scatter_(self, dim, index, src=None, value=None):
        return self.copy_(_S.scatter(self, dim, index, src, value))

    def scatter_add_(self, dim, index, src):
        return self.copy_(_S.scatter_add(self, dim, index, src))

    def index_select(self, dim, index):
        return _S.index_select(self, dim, index)

    def masked_fill(self, mask, value):
        return _S.masked_fill(self, mask, value)

    def masked_select(self, mask):
        return _S.masked_select(self, mask)

    def argsort(self, dim=-1, descending=False, stable=False):
        return _S.argsort(self, dim, descending, stable)

    def sort(self, dim=-1, descending=False, stable=False):
        return _S.sort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return _S.topk(self, k, dim, largest, sorted)

    def nonzero(self, as_tuple=False):
        return _S.nonzero(self, as_tuple)

    def matmul(self, other):
        return apply(_L.MATMUL, self, other)

    def mm(self, other):
        if self.ndim != 2 or other.ndim != 2:
            raise ValueError(
                at_user_line(
                    f"mm: expected 2-D tensors, got {tuple(self.shape)} and {tuple(other.shape)}"
                )
            )
        return apply(_L.MATMUL, self, other)

    def bmm(self, other):
        return _L.bmm(self, other)

    def outer(self, other):
        return _L.outer(self, other)

    def dot(self, other):
        return (self * other).sum()


def _looks_like_dtype(a) -> bool:
    if isinstance(a, str):
        try:
            _dt.as_dtype(a)
            return True
        except TypeError:
            return False
    if isinstance(a, np.dtype):
        return True
    return type(a).__name__ == "dtype"  # torch.float32 and friends


def _rebuild(array, requires_grad):
    t = _wrap(array)
    t._requires_grad = requires_grad
    return t


def _wrap(array) -> Tensor:
    """A new Tensor around a backend array (no copy, no autograd history)."""
    t = object.__new__(Tensor)
    t._data = array
    t._requires_grad = False
    t.grad = None
    t._node = None
    t._version = None
    t._view = None
    t._hooks = None
    return t


def _from_node(array, node) -> Tensor:
    t = _wrap(array)
    t._node = node
    t._requires_grad = True
    return t


def _interceptors_active() -> bool:
    return bool(_dispatch._interceptors)


def _rebase_history(view, result):
    """An in-place op wrote `result` into `view`: the base's history becomes a view_scatter of
    its old history and `result` (PyTorch's CopySlices); the view's own history is regenerated
    from the base's when next used (Note [Views and in-place])."""
    base, steps = _dispatch.view_chain(view)
    new_base = _wrap(base._data)
    _dispatch._record(_S.VIEW_SCATTER, (base, result), {"steps": steps}, new_base)
    _move_retained(base, new_base._node)
    base._node = new_base._node
    base._requires_grad = True


def _move_retained(t, node):
    """retain_grad() follows the tensor to its new history, as in PyTorch."""
    old = t._node
    if old is not None and old.retained is not None and old.retained() is t:
        node.retained = old.retained
        old.retained = None


def _graph_assign(target, result, recorded=True):
    """In-place op while tracing: the traced value of `target` becomes `result`'s, and so does
    its history when autograd records the op (as eager: a write under no_grad keeps it)."""
    target._data = result._data
    if recorded:
        target._node = result._node
        target._requires_grad = result._requires_grad


# --- device transfer -------------------------------------------------------------------------
def _to_device(t: Tensor, dev: Device) -> Tensor:
    return apply(_S.TO_DEVICE, t, device=dev)


# --- creation --------------------------------------------------------------------------------
def _infer_dtype(data, from_numpy: bool | None = None) -> _dt.DType:
    """PyTorch's inference: Python bools/ints/floats give bool/int64/default float; NumPy
    arrays keep their dtype."""
    if from_numpy is None:
        from_numpy = isinstance(data, (np.ndarray, np.generic))
    if isinstance(data, bool):
        return _dt.bool_
    if isinstance(data, int):
        return _dt.int64
    if isinstance(data, float):
        return _dt.get_default_dtype()
    arr = np.asarray(data)
    if arr.dtype.kind == "f" and not from_numpy:
        return _dt.get_default_dtype()
    if arr.dtype.kind in "iu" and not from_numpy:
        return _dt.int64
    if arr.dtype.kind == "b":
        return _dt.bool_
    if arr.dtype.kind in "US":
        raise TypeError(f"tensor: cannot make a tensor of strings ({arr.dtype})")
    return _dt.from_numpy_dtype(arr.dtype)


def _nested_to_array(data):
    """Lists possibly holding Tensors (or 0-d tensors) -> NumPy array."""
    if isinstance(data, Tensor):
        return np.asarray(data)
    if isinstance(data, (list, tuple)):
        if builtins.any(isinstance(d, Tensor) for d in data):
            return np.stack([_nested_to_array(d) for d in data]) if data else np.asarray(data)
        return (
            np.asarray([_nested_to_array(d) if isinstance(d, (list, tuple)) else d for d in data])
            if builtins.any(isinstance(d, (list, tuple)) for d in data)
            else np.asarray(data)
        )
    return data


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of `data` (nested lists, numbers, arrays, tensors).

    Example:
        >>> ember.tensor([[1, 2], [3, 4]])
        tensor([[1, 2],
                [3, 4]])
    """
    if isinstance(data, Tensor):
        arr = np.array(np.asarray(data), copy=True)
        dt = _dt.as_dtype(dtype) if dtype is not None else data.dtype
    else:
        raw = _nested_to_array(data)
        dt = (
            _dt.as_dtype(dtype)
            if dtype is not None
            else _infer_dtype(raw, isinstance(data, (np.ndarray, np.generic)))
        )
        try:
            arr = np.array(raw, dtype=dt.numpy, copy=True)
        except (ValueError, TypeError) as error:
            raise TypeError(
                at_user_line(f"tensor: cannot make a tensor from {type(data).__name__}: {error}")
            ) from None
    if arr.dtype != dt.numpy:
        arr = arr.astype(dt.numpy)
    t = _wrap(arr)
    if device is not None and _device(device).type != "cpu":
        t = _wrap(get_backend(device).asarray(arr, device=_device(device)))
    if requires_grad:
        t.requires_grad_(True)
    return t


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like `tensor`, but shares memory with a NumPy array or tensor when it can."""
    if isinstance(data, Tensor):
        out = data
        if dtype is not None:
            out = out.to(dtype)
        return out if device is None else out.to(device)
    if isinstance(data, np.ndarray) and (dtype is None or _dt.as_dtype(dtype).numpy == data.dtype):
        if data.dtype in _DT_OF:
            t = _wrap(data)
            return t if device is None else t.to(device)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with `array`."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    _dt.from_numpy_dtype(array.dtype)
    return _wrap(array)


def _size_args(size, where: str = "size"):
    """A shape from `*size` or one sequence: ints only (torch refuses '3' and 3.5), >= 0."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, Size)):
        size = size[0]
    shape = []
    for s in size:
        if isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(
                f"{where}: size must be a tuple of ints, but found element {s!r} of type "
                f"{type(s).__name__}"
            )
        n = s.__index__()
        if n < 0:
            raise ValueError(f"{where}: cannot create a tensor with negative dimension {n}")
        shape.append(n)
    return tuple(shape)


def _creation_dtype(dtype, default=None):
    if dtype is not None:
        return _dt.as_dtype(dtype)
    return default or _dt.get_default_dtype()


def _make(array_fn, size, dtype, device, requires_grad):
    dt = dtype
    backend = get_backend(device) if device is not None else get_backend("cpu")
    arr = array_fn(backend.xp, dt.numpy)
    t = _wrap(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape = _size_args(size, "zeros")
    return _make(
        lambda xp, d: xp.zeros(shape, dtype=d), shape, _creation_dtype(dtype), device, requires_grad
    )


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape = _size_args(size, "ones")
    return _make(
        lambda xp, d: xp.ones(shape, dtype=d), shape, _creation_dtype(dtype), device, requires_grad
    )


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape = _size_args(size, "empty")
    return _make(
        lambda xp, d: xp.empty(shape, dtype=d), shape, _creation_dtype(dtype), device, requires_grad
    )


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape = _size_args((size,) if isinstance(size, (tuple, list, Size)) else (size,), "full")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    dt = _creation_dtype(dtype, _infer_dtype(fill_value))
    if not dt.is_floating_point and isinstance(fill_value, float):
        info = np.iinfo(dt.numpy) if dt is not _dt.bool_ else None
        if not math.isfinite(fill_value) or (
            info is not None and not info.min <= fill_value <= info.max
        ):
            raise ValueError(
                f"full: fill_value {fill_value} cannot be converted to {dt.name} without overflow"
            )
    return _make(
        lambda xp, d: xp.full(shape, fill_value, dtype=d), shape, dt, device, requires_grad
    )


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(
        tuple(t.shape),
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(
        tuple(t.shape),
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return empty(
        tuple(t.shape),
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(
        tuple(t.shape),
        fill_value,
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    default = _dt.int64 if builtins.all(isinstance(v, int) for v in vals) else None
    dt = _creation_dtype(dtype, default)
    n = builtins.max(0, math.ceil((vals[1] - vals[0]) / vals[2]))
    return _make(
        lambda xp, d: (
            (xp.arange(n, dtype=np.float64) * vals[2] + vals[0]).astype(d)
            if dt.is_floating_point
            else xp.arange(vals[0], vals[1], vals[2], dtype=d)
        ),
        (n,),
        dt,
        device,
        requires_grad,
    )


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt = _creation_dtype(dtype)
    return _make(
        lambda xp, d: xp.linspace(start, end, int(steps), dtype=np.float64).astype(d),
        (steps,),
        dt,
        device,
        requires_grad,
    )


def logspace(start, end, steps, base=10.0, dtype=None, device=None) -> Tensor:
    return base ** linspace(start, end, steps, dtype=_dt.float64, device=device).to(
        _creation_dtype(dtype)
    )


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    m = n if m is None else m
    return _make(
        lambda xp, d: xp.eye(n, m, dtype=d), (n, m), _creation_dtype(dtype), device, requires_grad
    )


def _maybe_grad(t, requires_grad):
    return t.requires_grad_(True) if requires_grad else t


def rand(*size, generator=None, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _maybe_grad(
        _R.uniform(_size_args(size), dtype=dtype, generator=generator, device=device or "cpu"),
        requires_grad,
    )


def randn(*size, generator=None, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _maybe_grad(
        _R.normal(_size_args(size), dtype=dtype, generator=generator, device=device or "cpu"),
        requires_grad,
    )


def randint(low, high=None, size=None, generator=None, dtype=None, device="cpu") -> Tensor:
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    return _R.randint(low, high, tuple(size), dtype, generator, device or "cpu")


def randperm(n, generator=None, dtype=None, device="cpu") -> Tensor:
    return _R.randperm(n, dtype, generator, device or "cpu")


def rand_like(t, dtype=None, generator=None):
    return rand(tuple(t.shape), dtype=dtype or t.dtype, generator=generator, device=t.device)


def randn_like(t, dtype=None, generator=None):
    return randn(tuple(t.shape), dtype=dtype or t.dtype, generator=generator, device=t.device)


def randint_like(t, low, high=None, dtype=None, generator=None):
    if high is None:
        low, high = 0, low
    return randint(
        low, high, tuple(t.shape), generator=generator, dtype=dtype or t.dtype, device=t.device
    )


def normal(mean, std, size=None, generator=None):
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        shape = tuple((mean if isinstance(mean, Tensor) else std).shape)
        return randn(shape, generator=generator) * std + mean
    return _R.normal(tuple(size), mean, std, generator=generator)


def bernoulli(p, generator=None):
    return _R.bernoulli(p, generator)


def multinomial(probs, num_samples, replacement=False, generator=None):
    from ember.backend.random import default_generator

    gen = generator or default_generator(probs.device)
    p = np.asarray(probs.detach(), dtype=np.float64)
    p2 = p.reshape(-1, p.shape[-1])
    rows = []
    for row in p2:
        row = row / row.sum()
        rows.append(gen.rng.choice(len(row), size=num_samples, replace=replacement, p=row))
    out = np.asarray(rows, dtype=np.int64)
    return _wrap(out.reshape(p.shape[:-1] + (num_samples,)))


# Late imports: the ops and the dispatcher refer back to this module.
import ember.autograd as _autograd  # noqa: E402
from ember.autograd import dispatch as _dispatch  # noqa: E402
from ember.autograd.dispatch import apply  # noqa: E402
from ember.ops import elementwise as _E  # noqa: E402
from ember.ops import linalg as _L  # noqa: E402
from ember.ops import nn as _N  # noqa: E402
from ember.ops import random as _R  # noqa: E402
from ember.ops import reduce as _Rd  # noqa: E402
from ember.ops import shape as _S  # noqa: E402
