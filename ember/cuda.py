"""`ember.cuda`: whether a CUDA device can be used. The CUDA backend itself (CuPy) is not part
of this build; these answer for it without importing anything heavy."""

from __future__ import annotations

import importlib.util


def is_available() -> bool:
    """True when the CUDA backend can run here (it needs CuPy and a GPU)."""
    if importlib.util.find_spec("ember.backend.cupy_backend") is None:
        return False
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: not available
        return False


def device_count() -> int:
    if not is_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def synchronize(device=None) -> None:
    if not is_available():
        from ember._util.errors import DeviceError

        raise DeviceError("cuda.synchronize: no CUDA device is available on this machine")
