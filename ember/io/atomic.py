"""Atomic file writes: a file is either the old one or the complete new one, never half.

Note [Atomic writes]: the new content goes to a temporary file in the same folder (same
filesystem, so the rename cannot turn into a copy), which is flushed and fsynced, then
`os.replace`d over the target, and finally the folder itself is fsynced so that the rename
survives a power cut. If anything fails before the rename, the temporary file is removed and
the old target is untouched. A process killed by SIGKILL mid-write may leave a temporary file
(`.<name>.tmp-*`) behind but never a damaged target.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where unsupported."""
    try:
        fd = os.open(os.fspath(folder) or ".", os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file for writing; on a clean exit it replaces `path` atomically.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
        >>> with atomic_write(target, "w") as f:
        ...     _ = f.write("hello")
        >>> open(target).read()
        'hello'
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write: expected a writing mode such as 'wb' or 'w', got {mode!r}")
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    temp_path = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    file = open(temp_path, mode)
    try:
        yield file
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(temp_path, path)
    except BaseException:
        file.close()
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    fsync_dir(folder)
