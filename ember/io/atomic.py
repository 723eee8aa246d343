"""Atomic file writes: a file is either the old one or the complete new one, never half.

Note [Atomic writes]: the new content goes to a temporary file in the same folder (same
filesystem, so the rename cannot turn into a copy), which is flushed and fsynced, then
`os.replace`d over the target, and finally the folder itself is fsynced so that the rename
survives a power cut. If anything fails before the rename, the temporary file is removed and
the old target is untouched. A process killed by SIGKILL mid-write may leave a temporary file
(`.<name>.tmp-<pid>-*`) behind but never a damaged target; the next write of the same target
removes those whose process is gone (`remove_stale_temporaries`). An OSError while writing
(ENOSPC: a full disk) removes the temporary file and is raised again naming the target.

Note [Atomic folders]: some files only make sense together (config.json with
model.safetensors; a tokenizer's vocabulary with its maps). `atomic_folder(folder)` makes a
group of atomic_writes into one folder a transaction, with a redo journal:
    1. every atomic_write into the folder inside the block writes and fsyncs its temporary
       file but does not rename it yet;
    2. at the end of the block, the journal `.ember-commit.json` (the list of renames) is
       written atomically and fsynced: this is the commit point;
    3. the renames are done, the folder fsynced, the journal removed.
`recover_folder(folder)`, which every loader of such a folder calls first (and the next
transaction too), finishes a journal that a killed writer left (roll forward) and removes the
temporary files of dead writers that never committed (roll back). So a folder is always seen
either wholly before or wholly after a save, whatever instant the writer was killed at.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re

__all__ = [
    "atomic_folder",
    "atomic_write",
    "save_folder",
    "fsync_dir",
    "process_alive",
    "recover_folder",
    "remove_stale_temporaries",
]

JOURNAL_NAME = ".ember-commit.json"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
# folder (absolute) -> the open transaction's list of (temporary, final) paths
_TRANSACTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "ember_atomic_folders", default=None
)


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
    transaction = (_TRANSACTIONS.get() or {}).get(folder)
    file = open(temp_path, mode)
    try:
        yield file
        file.flush()
        os.fsync(file.fileno())
        file.close()
        if transaction is not None:  # renamed at the commit (Note [Atomic folders])
            transaction.append((temp_path, path))
            return
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


def _read_journal(folder: str):
    try:
        with open(os.path.join(folder, JOURNAL_NAME), encoding="utf-8") as file:
            journal = json.load(file)
        renames = journal["renames"]
        if all(isinstance(a, str) and isinstance(b, str) for a, b in renames):
            return [(os.path.basename(a), os.path.basename(b)) for a, b in renames]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return []  # unreadable: written atomically, so never half; treat as done


def _apply_journal(folder: str, renames) -> None:
    for temp_name, final_name in renames:
        with contextlib.suppress(FileNotFoundError):  # done already (or by the writer)
            os.replace(os.path.join(folder, temp_name), os.path.join(folder, final_name))
    fsync_dir(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, JOURNAL_NAME))
    fsync_dir(folder)


def recover_folder(folder: str | os.PathLike) -> None:
    """Finish or undo what a killed `atomic_folder` writer left (Note [Atomic folders]).

    Rolls a committed journal forward, and removes the temporary files of writers that are
    gone. A folder that cannot be written (read-only) is left as it is.
    """
    folder = os.path.abspath(os.fspath(folder))
    try:
        renames = _read_journal(folder)
        if renames is not None:
            _apply_journal(folder, renames)
        for entry in os.listdir(folder):
            match = _TEMP_RE.match(entry)
            if match is None:
                continue
            pid = int(match.group("pid"))
            if pid != os.getpid() and not process_alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, entry))
    except (PermissionError, FileNotFoundError, NotADirectoryError):
        pass


def save_folder(save_directory: str | os.PathLike, where: str) -> str:
    """The folder a `save_pretrained` writes into, created if needed; a path naming a file is
    a clear error (`where` names the caller), not a half-written save.

    Example:
        >>> import tempfile, os
        >>> folder = save_folder(os.path.join(tempfile.mkdtemp(), "out"), "save_pretrained")
        >>> os.path.isdir(folder)
        True
    """
    folder = os.fspath(save_directory)
    if os.path.isfile(folder):
        raise NotADirectoryError(f"{where}: {folder!r} is a file; expected a folder")
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Make every `atomic_write` into `folder` inside the block one transaction: after a
    kill at any instant the folder holds all the old files or all the new ones
    (Note [Atomic folders]).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> with atomic_folder(folder):
        ...     for name in ("a.txt", "b.txt"):
        ...         with atomic_write(os.path.join(folder, name), "w") as f:
        ...             _ = f.write(name)
        >>> sorted(os.listdir(folder))
        ['a.txt', 'b.txt']
    """
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    current = _TRANSACTIONS.get() or {}
    if folder in current:  # nested: the outer transaction commits everything
        yield
        return
    recover_folder(folder)
    renames: list = []
    token = _TRANSACTIONS.set({**current, folder: renames})
    try:
        yield
    except BaseException:
        for temp_path, _ in renames:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
        raise
    finally:
        _TRANSACTIONS.reset(token)
    if not renames:
        return
    fsync_dir(folder)  # the temporary files' entries exist before the journal names them
    journal = {"pid": os.getpid(), "renames": [[t, f] for t, f in renames]}
    with atomic_write(os.path.join(folder, JOURNAL_NAME), "w") as file:  # the commit point
        json.dump(journal, file)
    _apply_journal(folder, [(os.path.basename(t), os.path.basename(f)) for t, f in renames])
