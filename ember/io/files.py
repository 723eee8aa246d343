"""Whole-file reads and writes (`ember.io.read_file`, `tf.io.read_file`).

Paths may be str, bytes, os.PathLike, NumPy str/bytes scalars or 0-d arrays of them (what a
Pipeline over file names hands to a map function).
"""

from __future__ import annotations

import os

__all__ = ["read_file", "write_file"]


def _path(filename) -> str:
    if hasattr(filename, "numpy") and not isinstance(filename, (str, bytes)):
        filename = filename.numpy()
    if hasattr(filename, "item") and not isinstance(filename, (str, bytes)):
        filename = filename.item()
    if isinstance(filename, bytes):
        return os.fsdecode(filename)
    if isinstance(filename, (str, os.PathLike)):
        return os.fspath(filename)
    raise TypeError(
        f"read_file: expected a path (str, bytes or os.PathLike), got {type(filename).__name__}"
    )


def read_file(filename) -> bytes:
    """The contents of a file, as bytes.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "hello.txt")
        >>> write_file(path, b"hi")
        >>> read_file(path)
        b'hi'
    """
    with open(_path(filename), "rb") as handle:
        return handle.read()


def write_file(filename, contents) -> None:
    """Write `contents` (bytes or str) to a file atomically (temporary file, then rename)."""
    from ember.io.atomic import atomic_write

    path = _path(filename)
    data = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
    with atomic_write(path, "wb") as handle:  # on ENOSPC no temporary file stays behind
        handle.write(data)
