"""L3: the Tensor, its operators and methods, and the creation functions.

A Tensor wraps one backend array (`_data`) plus autograd state: `requires_grad`, `.grad`, the
Node that made it (`grad_fn`), and a version counter shared with its views
(Note [Saved tensor versions]). Every operator and method goes through the op registry
(Note [Eager dispatch]); nothing here computes on arrays directly except creation, printing
and in-place writes.

Note [Tensor interface]: the layers above L3 reach a tensor's storage through two public names,
`Tensor.from_array(array)` (a new Tensor around a backend array or a graph value: no copy, no
history) and `tensor.array` (the backend array it holds; assigning it rebinds the tensor, no
copy, no version bump); `_wrap` and `._data` are the same things under their private names,
kept for older code.

Note [Views and in-place]: a view op (reshape, permute, expand, basic getitem, diagonal) whose
result shares memory with its input gives the result `_view = (parent, op name, attrs items,
version, made with grad mode on)` and the parent's version counter (`dispatch.make_view`).
`detach()` shares the counter but is no view for autograd, as in PyTorch. An in-place op that
autograd records on a view rewrites the history of the root base, as PyTorch's CopySlices does:
the base's new Node is `view_scatter(base's old history, op(view's old value, ...))` with the
view steps from the base to the view as its attribute (`_rebase_history`, ember/autograd/
inplace.py). Its VJP sends the
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

Note [Contiguous in graphs]: graph values are not always C-contiguous when a compiled graph
runs: the executor hands view ops' results (permute, expand, basic getitem, diagonal) on as
NumPy views with strides, and some kernels return strided arrays too. A traced value has no
strides to look at, so its flags say "not known to be contiguous" (`c_contiguous` False in
ember/graph/ir.py) and `contiguous()` on it records the `contiguous` op, which at run time
returns the array itself when it is C-contiguous and a C-ordered copy when it is not, exactly
what eager `contiguous()` does. (It used to return the traced value itself, so a compiled
`x.mT.contiguous().view(ember.int16)` failed where eager ran, and a strided operand reached
code that asked for a contiguous one.) `is_contiguous()` on a traced value is False for the
same reason. An in-place write through the result of `contiguous()` inside a compiled function
does not reach its input (the graph treats the result as a value of its own).
"""

from __future__ import annotations

import math

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import AutogradError, ShapeError, at_user_line
from ember.backend import Device, _staging, backend_of, device as _device, runs_eagerly
from ember.backend import mkl_packed as _mkl_packed
from ember.autograd import inplace as _inplace_module
from ember.autograd.inplace import InplaceMixin
from ember.ops.surface import OpMixin

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


class Tensor(OpMixin, InplaceMixin):
    """An n-dimensional array with automatic differentiation.

    Its operators and op methods (`+`, `x.exp()`, `x.sum(dim)`) come from `OpMixin`, built from
    the op registry (Note [Op surface] in ember/ops/surface.py).

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
        """Whether the array is C-contiguous; False for a traced value, whose layout is known
        only when the graph runs (Note [Contiguous in graphs])."""
        return bool(self._data.flags.c_contiguous)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point  # bfloat16 too (ml_dtypes' kind is 'V')

    # a dense (strided) tensor; sparse gradients are SparseRowTensor (Note [Sparse gradients])
    is_sparse = False
    layout = "strided"

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
            _mkl_packed.note_exposed(self._data)  # user code may write it (Note [Pack validity])
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
        if dtype is not None:
            return data.astype(dtype)
        if data is self._data:
            _mkl_packed.note_exposed(data)  # user code may write it (Note [Pack validity])
        return data

    def item(self):
        if self._data.size != 1:
            raise ShapeError(  # torch: RuntimeError (Note [Error classes])
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
        data = self._data
        return (data if type(data) is np.ndarray else self._backend().to_numpy(data)).tolist()

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
        data = self._data
        data = data if type(data) is np.ndarray else self._backend().to_numpy(data)
        return (_rebuild, (data.copy(), self._requires_grad))

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

    def type(self, dtype=None):
        if dtype is None:
            return f"ember.{self.dtype.name}"
        return _E.cast(self, dtype)

    def type_as(self, other):
        return _E.cast(self, other.dtype)

    def clone(self, memory_format=None) -> "Tensor":
        return apply(_S.COPY, self)

    def contiguous(self, memory_format=None) -> "Tensor":
        """self when its array is C-contiguous, else a C-ordered copy (Note [Contiguous in
        graphs])."""
        return self if self._data.flags.c_contiguous else apply(_S.CONTIGUOUS, self)

    # --- new_* -----------------------------------------------------------------------------
    def _like(self, make, size, fill, dtype, device, requires_grad):
        args = (size,) if fill is None else (size, fill)
        return make(*args, dtype=dtype or self.dtype, device=device or self.device).requires_grad_(
            requires_grad
        )

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._like(zeros, _size_args(size), None, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._like(ones, _size_args(size), None, dtype, device, requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._like(empty, _size_args(size), None, dtype, device, requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._like(full, size, fill_value, dtype, device, requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return self._like(tensor, data, None, dtype, device, requires_grad)

    # --- operators ---------------------------------------------------------------------------
    def __pos__(self):
        return self

    # & | ^ ~ << >> come from the bitwise ops (Note [Bitwise ops] in ember/ops/elementwise.py)

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
        if not needs_graph and type(self._data) is np.ndarray and runs_eagerly(self._data):
            self._check_writable("__setitem__")
            target, idx = _S._locate(self._data, spec, [t._data for t in tensors])
            _S.assign(target, idx, value._data if isinstance(value, Tensor) else value)
            self._bump_version("__setitem__")
            return
        if isinstance(value, Tensor) and value.dtype is not self.dtype:
            value = value.to(self.dtype)
        self._inplace(_S.INDEX_PUT, value, *tensors, spec=spec)

    def add_(self, other, alpha=1):
        return self._inplace(_E.ADD, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        return self._inplace(_E.SUB, other if alpha == 1 else other * alpha)

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
        if not needs_graph and runs_eagerly(self._data):
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
        if not runs_eagerly(self._data) or self._records_inplace(()):
            # recorded: the old value gets no gradient (PyTorch's FillBackward)
            return self.copy_(full(tuple(self.shape), value, dtype=self.dtype), _name="fill_")
        self._check_writable("fill_")
        self._data[...] = value
        self._bump_version("fill_")
        return self

    # --- methods beyond the op surface (the op methods come from OpMixin) ----------------------
    def equal(self, other) -> bool:
        return tuple(self.shape) == tuple(other.shape) and bool((self == other).all())

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
        return bool(np.allclose(np.asarray(self), np.asarray(other), rtol, atol, equal_nan))

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

    def expand_as(self, other):
        return _S.expand(self, tuple(other.shape))

    def broadcast_to(self, shape):
        return _S.expand(self, tuple(shape))

    def scatter_(self, dim, index, src=None, value=None, *, reduce=None):
        return self.copy_(_S.scatter(self, dim, index, src, value, reduce=reduce))

    def scatter_add_(self, dim, index, src):
        return self.copy_(_S.scatter_add(self, dim, index, src))


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


# Note [Tensor interface]: `Tensor.from_array(array)` is `_wrap` itself (no extra call), and
# `tensor.array` is the `_data` slot's own descriptor under a public name (read and written at
# the slot's speed, no property call): the compiled path reads it on every call.
Tensor.from_array = staticmethod(_wrap)
Tensor.array = Tensor.__dict__["_data"]


def _from_node(array, node) -> Tensor:
    t = _wrap(array)
    t._node = node
    t._requires_grad = True
    return t


def _interceptors_active() -> bool:
    """Kept for code written before Note [Staging backends]: ask `runs_eagerly(array)`."""
    return bool(_staging)


def _caster(name: str, dtype):
    def method(self):
        return _E.cast(self, dtype)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"This tensor as {dtype.name} (itself if it is one already)."
    return method


# x.float(), x.long(), ...: PyTorch's dtype shorthands
for _name, _dtype in (
    ("float", _dt.float32),
    ("double", _dt.float64),
    ("half", _dt.float16),
    ("bfloat16", _dt.bfloat16),
    ("long", _dt.int64),
    ("int", _dt.int32),
    ("short", _dt.int16),
    ("byte", _dt.uint8),
    ("char", _dt.int8),
    ("bool", _dt.bool_),
):
    setattr(Tensor, _name, _caster(_name, _dtype))
del _name, _dtype


# --- device transfer -------------------------------------------------------------------------
def _to_device(t: Tensor, dev: Device) -> Tensor:
    return apply(_S.TO_DEVICE, t, device=dev)


# Late imports: the ops, the dispatcher and the creation functions refer back to this module.
from ember.creation import (  # noqa: E402
    _infer_dtype as _infer_dtype,
    _nested_to_array as _nested_to_array,
    tensor as tensor,
    as_tensor as as_tensor,
    from_numpy as from_numpy,
    _size_args as _size_args,
    _creation_dtype as _creation_dtype,
    _make as _make,
    zeros as zeros,
    ones as ones,
    empty as empty,
    full as full,
    zeros_like as zeros_like,
    ones_like as ones_like,
    empty_like as empty_like,
    full_like as full_like,
    arange as arange,
    linspace as linspace,
    logspace as logspace,
    eye as eye,
    _maybe_grad as _maybe_grad,
    rand as rand,
    randn as randn,
    randint as randint,
    randperm as randperm,
    rand_like as rand_like,
    randn_like as randn_like,
    randint_like as randint_like,
    normal as normal,
    bernoulli as bernoulli,
    multinomial as multinomial,
)
import ember.autograd as _autograd  # noqa: E402
from ember.autograd import dispatch as _dispatch  # noqa: E402
from ember.autograd.dispatch import apply  # noqa: E402
from ember.ops import elementwise as _E  # noqa: E402
from ember.ops import shape as _S  # noqa: E402

_inplace_module.bind_late_names()
