"""L3: creation functions: `tensor`, `zeros`, `arange`, `randn`, ... (PyTorch's signatures).

They make Tensors from Python data, NumPy arrays and the backends' array constructors; the
random ones draw from the generators of ember.ops.random. `ember/__init__.py` re-exports them;
`ember.tensor` keeps them importable from there too.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import ShapeError, ValueOutOfRange, at_user_line
from ember.backend import device as _device, get_backend
from ember.ops import random as _R
from ember.tensor import _DT_OF, Size, Tensor, _wrap


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
        >>> import ember
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
            raise ValueOutOfRange(f"{where}: cannot create a tensor with negative dimension {n}")
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
        raise ValueOutOfRange("arange: step must be non-zero")
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
    if p.ndim not in (1, 2):
        raise ShapeError(f"multinomial: probs must be 1-D or 2-D, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueOutOfRange(
            "multinomial: the probability tensor holds inf, nan or a negative value"
        )
    if not replacement and num_samples > p.shape[-1]:
        raise ValueOutOfRange(
            f"multinomial: cannot draw {num_samples} samples from {p.shape[-1]} categories "
            "without replacement"
        )
    p2 = p.reshape(-1, p.shape[-1])
    rows = []
    for row in p2:
        row = row / row.sum()
        rows.append(gen.rng.choice(len(row), size=num_samples, replace=replacement, p=row))
    out = np.asarray(rows, dtype=np.int64)
    return _wrap(out.reshape(p.shape[:-1] + (num_samples,)))
