"""L1: array backends, devices and random generators.

Ops never call NumPy directly: their reference forwards receive `xp`, the array namespace of
the backend that holds their inputs (NumPy on the CPU, CuPy on CUDA), plus a few extras that
the array API lacks (`xp.erf`, `xp.scatter_add`, `xp.windows`). A new backend registers a
`Backend` for its device type; `get_backend` loads it on first use, so `import ember` never
imports CuPy.
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
