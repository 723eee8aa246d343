"""L1: array backends, devices and random generators.

Ops never call NumPy directly: their reference forwards receive `xp`, the array namespace of
the backend that holds their inputs (NumPy on the CPU, CuPy on CUDA), plus a few extras that
the array API lacks (`xp.erf`, `xp.scatter_add`, `xp.windows`). A new backend registers a
`Backend` for its device type; `get_backend` loads it on first use, so `import ember` never
imports CuPy.

Note [Staging backends]: graph tracing is a backend too. Its arrays are symbolic values
(`ember.graph.ir.Var`, registered like CuPy's arrays are) whose backend is not `concrete`: it
has no values to give the host. While a staging backend is active (`push_staging`), every op
goes to it (`Backend.apply`) instead of running, concrete inputs included (they become graph
captures, Note [Captured tensors] in ember/graph/trace.py). Layers above ask the backend, never
whether they are tracing:
- `runs_eagerly(array)`: may code write this array's memory now (a concrete array, no staging
  backend)? Tensor writes and optimizers' fused kernels take their fast paths only then;
- `host_values(array)`: the values as a NumPy array, or None where the backend has none
  (value checks such as "targets within the classes" run only where there are values);
- `guard(key, fn)`: Python code branched on host state (`fn()`, e.g. whether optimizer state
  exists): a staging backend keeps the answer and its graph holds only while it stays the same.
"""

from __future__ import annotations

import importlib
import threading

from ember._util.errors import DeviceError

__all__ = [
    "Device",
    "device",
    "Backend",
    "get_backend",
    "backend_of",
    "push_staging",
    "pop_staging",
    "runs_eagerly",
    "host_values",
    "guard",
    "unstaged",
    "Generator",
    "default_generator",
    "manual_seed",
    "seed",
    "initial_seed",
]


class Device:
    """Where a tensor's memory lives: `ember.device("cpu")`, `ember.device("cuda:0")`."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int | None = None):
        self.type = type
        self.index = index

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, Device) and (self.type, self.index or 0) == (
            other.type,
            other.index or 0,
        )

    def __hash__(self) -> int:
        return hash((self.type, self.index or 0))


_KNOWN_TYPES = {"cpu": "ember.backend.numpy_backend", "cuda": "ember.backend.cupy_backend"}


def device(spec="cpu", index: int | None = None) -> Device:
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        # torch.device / other objects that print as 'cpu' or 'cuda:0'
        spec = str(spec)
    kind, _, idx = spec.partition(":")
    if kind not in _KNOWN_TYPES:
        raise DeviceError(
            f"device: unknown device type {kind!r}; expected one of {sorted(_KNOWN_TYPES)}"
        )
    if idx:
        index = int(idx)
    if kind == "cpu":
        index = None
    elif index is None:
        index = 0
    return Device(kind, index)


class Backend:
    """One array library. Subclasses set `xp`, `array_type`, `device_type`."""

    name: str
    device_type: str
    xp = None
    array_type: type

    def device_of(self, array) -> Device:  # pragma: no cover - overridden
        raise NotImplementedError

    def asarray(self, data, dtype=None, device: Device | None = None):
        raise NotImplementedError

    def to_numpy(self, array):
        raise NotImplementedError

    def new_bit_generator(self, seed: int):
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    # Note [Staging backends]: concrete backends hold values; a staging one records ops
    concrete = True

    def apply(self, op, args, attrs):  # pragma: no cover - staging backends override it
        raise NotImplementedError(f"{self.name} backend does not stage ops")

    def guard(self, key, fn) -> None:
        """Python code branched on `fn()`; only a staging backend keeps it."""


class _Interceptor(Backend):
    """A plain function `fn(op, args, attrs)` used as a staging backend (tests, tools)."""

    name = "interceptor"
    concrete = False

    def __init__(self, fn):
        self.fn = fn

    def apply(self, op, args, attrs):
        return self.fn(op, args, attrs)


# the active staging backends, innermost last (Note [Staging backends])
_staging: list = []


def push_staging(backend) -> None:
    """Send every op to `backend.apply` (or to a function `fn(op, args, attrs)`) until popped."""
    _staging.append(backend if isinstance(backend, Backend) else _Interceptor(backend))


def pop_staging() -> None:
    _staging.pop()


def staging_backends() -> list:
    """The active staging backends, innermost last."""
    return list(_staging)


def runs_eagerly(array) -> bool:
    """Whether ops on `array` run now on its memory: a concrete array and no staging backend."""
    if _staging:
        return False
    backend = _by_array_type.get(type(array))
    return backend is not None and backend.concrete


def host_values(array):
    """`array`'s values as a NumPy array, or None where its backend has none (symbolic)."""
    backend = backend_of(array)
    return backend.to_numpy(array) if backend.concrete else None


class unstaged:
    """Context manager: ops run now, on their arrays, even inside a staging backend (values
    that are static while tracing, e.g. an imported ONNX graph's shape computations)."""

    def __enter__(self):
        self.saved = list(_staging)
        _staging.clear()
        return self

    def __exit__(self, *exc):
        _staging[:] = self.saved
        return False


def guard(key, fn) -> None:
    """Tell the active staging backend, if any, that Python branched on `fn()`."""
    if _staging:
        _staging[-1].guard(key, fn)


_backends: dict[str, Backend] = {}
_by_array_type: dict[type, Backend] = {}
_lock = threading.Lock()


def register_backend(backend: Backend) -> None:
    _backends[backend.device_type] = backend
    _by_array_type[backend.array_type] = backend


def get_backend(dev: Device | str = "cpu") -> Backend:
    dev_type = dev.type if isinstance(dev, Device) else device(dev).type
    backend = _backends.get(dev_type)
    if backend is None:
        with _lock:
            backend = _backends.get(dev_type)
            if backend is None:
                try:
                    importlib.import_module(_KNOWN_TYPES[dev_type])  # registers itself
                except ImportError as error:
                    raise DeviceError(
                        f"device {dev_type!r} is not available: ember has no {dev_type} backend "
                        f"on this machine ({error}); use 'cpu'"
                    ) from None
                backend = _backends[dev_type]
    return backend


def backend_of(array) -> Backend:
    backend = _by_array_type.get(type(array))
    if backend is None:
        raise DeviceError(f"no ember backend holds arrays of type {type(array).__name__}")
    return backend


def loaded_backends() -> list[Backend]:
    return list(_backends.values())


from ember.backend.random import (  # noqa: E402
    Generator as Generator,
    default_generator as default_generator,
    initial_seed as initial_seed,
    manual_seed as manual_seed,
    seed as seed,
)
from ember.backend import numpy_backend as _numpy_backend  # noqa: E402,F401  (always present)
