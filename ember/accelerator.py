"""`ember.accelerator`: PyTorch's device-agnostic accelerator API (`torch.accelerator`).

This build computes on the CPU; the CUDA backend (CuPy) plugs in at the backend layer, and
when it can run, CUDA is the accelerator. With none, the answers are PyTorch's on a CPU-only
build: `is_available()` is False, `current_accelerator()` is None, and the calls that need a
device raise RuntimeError. The idiom ported code uses therefore picks the CPU:

Example:
    >>> import ember
    >>> acc = ember.accelerator.current_accelerator()
    >>> device = acc.type if ember.accelerator.is_available() else "cpu"
    >>> ember.zeros(2, device=device).device
    device(type='cpu')
"""

from __future__ import annotations

from ember import cuda

__all__ = [
    "current_accelerator",
    "current_device_index",
    "device_count",
    "is_available",
    "set_device_index",
    "synchronize",
]


def is_available() -> bool:
    """Whether an accelerator (a CUDA device through the CuPy backend) can be used."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False):
    """The accelerator's device type (`ember.device("cuda")`), or None when there is none."""
    if not cuda.is_available():
        return None
    from ember.backend import device

    return device("cuda")


def device_count() -> int:
    """How many accelerator devices there are (0 on the CPU)."""
    return cuda.device_count()


def _need_device(what: str) -> None:
    if not is_available():
        raise RuntimeError(
            f"ember.accelerator.{what}: cannot access an accelerator device when none is "
            "available (this machine computes on the CPU)"
        )


def current_device_index() -> int:
    _need_device("current_device_index")
    return 0


def set_device_index(device) -> None:
    _need_device("set_device_index")


def synchronize(device=None) -> None:
    _need_device("synchronize")
