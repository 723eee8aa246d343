"""Atomic file writes: a file is either the old one or the complete new one, never half.

Note [Atomic writes]: the new content goes to a temporary file in the same folder (same
filesystem, so the rename cannot turn into a copy), which is flushed and fsynced, then
`os.replace`d over the target, and finally the folder itself is fsynced so that the rename
survives a power cut. If anything fails before the rename, the temporary file is removed and
the old target is untouched. A process killed by SIGKILL mid-write may leave a temporary file
(`.<name>.tmp-<pid>-*`) behind but never a damaged target; the next write of the same target
removes those whose process is gone (`remove_stale_temporaries`). An OSError while writing
(ENOSPC: a full disk) removes the temporary file and is raised again naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

__all__ = ["atomic_write", "fsync_dir", "process_alive", "remove_stale_temporaries"]


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that killed writes of `path` left (their process is gone).

    Both names ember uses are recognised: `.<name>.tmp-<pid>-<hex>` (atomic_write) and
    `<name>.tmp-<pid>` (stream writers such as the Pipeline cache). Returns what was removed.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    pattern = re.compile(
        rf"^(?:\.{re.escape(name)}\.tmp-(\d+)-[0-9a-f]+|{re.escape(name)}\.tmp-(\d+))$"
    )
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry)
        if match is None:
            continue
        pid = int(match.group(1) or match.group(2))
        if pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, entry))
            removed.append(entry)
    return removed


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
    remove_stale_temporaries(path)
    temp_path = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    file = open(temp_path, mode)
    try:
        yield file
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(temp_path, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            file.close()
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        if isinstance(error, OSError) and error.filename is None:
            reason = os.strerror(error.errno) if error.errno else str(error)
            hint = " (the disk is full)" if error.errno == errno.ENOSPC else ""
            raise OSError(error.errno, f"writing {path!r} failed: {reason}{hint}", path) from error
        raise
    fsync_dir(folder)
