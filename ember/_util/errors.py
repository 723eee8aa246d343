"""Error types and the caller-location helper.

Note [Error messages]: every error raised for bad user input names the op or layer, says what
was expected and what came, and points at the user's own source line (the first stack frame
outside the ember package). `user_location()` finds that frame; it is only called when an
error is being built or when autograd records where a tensor was made, never on a hot path.
"""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class EmberError(Exception):
    """Base class of ember's own errors; the message gets the user's line appended."""

    def __init__(self, message: str = "", *args):
        if message and "(at " not in message:
            where = format_location(user_location(2))
            if where:
                message = f"{message} (at {where})"
        super().__init__(message, *args)


# Note [Error classes]: where PyTorch raises RuntimeError (shapes that do not fit, dtypes an
# op refuses), ember's error is a RuntimeError too, so ported `except RuntimeError` code keeps
# working; it stays a ValueError / TypeError as well, the Python convention ember's own code
# and users of NumPy expect.
class ShapeError(EmberError, RuntimeError, ValueError):
    """An op got inputs whose shapes do not fit together."""


class DTypeError(EmberError, RuntimeError, TypeError):
    """An op got an input of a dtype it does not accept."""


class IndexOutOfRange(EmberError, IndexError):
    """A dim or index is out of range."""


class ValueOutOfRange(EmberError, RuntimeError, ValueError):
    """An op got input values outside its domain (e.g. probabilities outside [0, 1]);
    torch raises RuntimeError there (Note [Error classes])."""


class IntegerDivisionByZero(EmberError, RuntimeError, ZeroDivisionError):
    """Integer `//` or `%` by zero (torch raises RuntimeError; NumPy would give 0)."""


class IndexValueOutOfRange(IndexOutOfRange, RuntimeError):
    """An index tensor holds a value outside the indexed dim (gather, one_hot, index_select):
    torch raises RuntimeError (IndexError for index_select), so this is both."""


class DTypeNotImplemented(DTypeError, NotImplementedError):
    """An op has no kernel for this dtype (bitwise ops on floats): torch raises
    NotImplementedError, a RuntimeError (Note [Error classes])."""


class ShapeIndexError(ShapeError, IndexError):
    """A shape problem that torch reports as IndexError: a reduction over a dim of size 0
    (`argmax`, `max`, `mode`), the diagonal of a tensor with fewer than 2 dims. It stays a
    ShapeError (RuntimeError, ValueError) for code that catches those (Note [Error classes])."""


class LinAlgError(EmberError, RuntimeError):
    """A linear-algebra routine failed on its input: a singular matrix to solve with, a matrix
    that is not positive-definite for cholesky, no convergence (torch.linalg.LinAlgError is a
    RuntimeError too)."""


class DeviceError(EmberError, RuntimeError):
    """Tensors on different devices met in one op, or a device is not available."""


class AutogradError(EmberError, RuntimeError):
    """Backward could not be computed (freed graph, in-place modification, no grad_fn)."""


class DistributedError(RuntimeError):
    """A collective could not complete: another rank failed or left, a timeout passed, or the
    ranks disagree (shapes, dtypes). The message names the rank and the collective."""


_inside: dict = {}  # filename -> whether it belongs to the ember package


def user_location(skip: int = 1) -> tuple[str, int] | None:
    """(filename, line) of the innermost stack frame outside the ember package."""
    frame = sys._getframe(skip)
    inside = _inside
    while frame is not None:
        filename = frame.f_code.co_filename
        known = inside.get(filename)
        if known is None:
            known = inside[filename] = filename.startswith(_PACKAGE_DIR)
        if not known:
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def format_location(location: tuple[str, int] | None) -> str:
    if location is None:
        return ""
    filename, line = location
    return f"{os.path.relpath(filename) if not filename.startswith('<') else filename}:{line}"


def at_user_line(message: str) -> str:
    """Append ' (at file.py:12)' pointing at the user's line."""
    where = format_location(user_location(2))
    return f"{message} (at {where})" if where else message
