"""Grad mode: `no_grad`, `enable_grad`, `set_grad_enabled`, `inference_mode` (thread-local, as in
PyTorch). Each works as a context manager and as a decorator."""

from __future__ import annotations

import functools
import threading


class _State(threading.local):
    def __init__(self):
        self.enabled = True


_state = _State()


def is_grad_enabled() -> bool:
    return _state.enabled


class _GradModeContext:
    _target: bool

    def __enter__(self):
        self._prev = _state.enabled
        _state.enabled = self._target
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    """Operations inside record no graph: faster, less memory (evaluation, optimizer steps)."""

    _target = False


class enable_grad(_GradModeContext):
    _target = True


class inference_mode(_GradModeContext):
    """Like no_grad (ember has no separate inference tensors)."""

    def __init__(self, mode: bool = True):
        self._target = not mode

    def __call__(self, fn):
        mode = not self._target

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(mode):
                return fn(*args, **kwargs)

        return wrapper


class set_grad_enabled(_GradModeContext):
    def __init__(self, mode: bool):
        self._prev = _state.enabled
        self._target = bool(mode)
        _state.enabled = self._target  # takes effect as a function call too, as in PyTorch

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False
