"""Checkpoint folders: written atomically, found, rotated; random-number states captured.

Note [Atomic checkpoints]: a checkpoint `checkpoint-N/` is first written whole into a staging
folder in the same output folder (`.tmp-checkpoint-N-<pid>`), every file fsynced; then the
completion marker (`checkpoint_complete.json`, listing the files) is written and fsynced last;
then the staging folder is fsynced and renamed to `checkpoint-N`, and the output folder is
fsynced so the rename survives a power cut. A process killed at any point leaves either no
`checkpoint-N` or a complete one; a left-over staging folder is removed by the next save.
Resuming takes the newest folder that has the marker; rotation (save_total_limit) only ever
deletes complete checkpoints that are neither the newest nor the best, and it first renames the
folder to `.tmp-checkpoint-N-deleting-<pid>` (atomic), so a kill during the deletion never
leaves a half-deleted `checkpoint-N` in view. A staging folder of a dead process that already
holds its marker was a checkpoint being put in place (or the old one moved aside to replace
it): the next save puts it back as `checkpoint-N` if that name is free, else removes it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time

import numpy as np

from ember.io.atomic import fsync_dir, process_alive

__all__ = [
    "COMPLETE_MARKER",
    "PREFIX_CHECKPOINT_DIR",
    "get_last_checkpoint",
    "is_complete",
    "list_checkpoints",
    "rng_states",
    "rotate_checkpoints",
    "set_rng_states",
    "write_checkpoint",
]

PREFIX_CHECKPOINT_DIR = "checkpoint"
COMPLETE_MARKER = "checkpoint_complete.json"
_STAGING_PREFIX = ".tmp-checkpoint-"
_STAGING_RE = re.compile(r"^\.tmp-checkpoint-(\d+)-(?:deleting-)?(\d+)(\.old)?$")
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# Test hook: seconds to sleep half-way through a checkpoint write, so a test can kill the
# process while a checkpoint is being written.
_SLEEP_ENV = "EMBER_TEST_CHECKPOINT_SLEEP"


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: str) -> list[str]:
    names = []
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            _fsync_file(path)
            names.append(os.path.relpath(path, folder))
        for name in dirs:
            fsync_dir(os.path.join(root, name))
    fsync_dir(folder)
    return sorted(names)


def write_checkpoint(output_dir: str, step: int, write_files) -> str:
    """Write `checkpoint-<step>` atomically (Note [Atomic checkpoints]); returns its path.

    `write_files(folder)` writes the checkpoint's files into the (staging) folder it is given.
    """
    os.makedirs(output_dir, exist_ok=True)
    _remove_stale_staging(output_dir)
    final = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
    staging = os.path.join(output_dir, f"{_STAGING_PREFIX}{step}-{os.getpid()}")
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    try:
        write_files(staging)
        pause = float(os.environ.get(_SLEEP_ENV, "0") or 0)
        if pause > 0:
            print(f"checkpoint-{step}: writing (test pause {pause} s)", flush=True)
            time.sleep(pause)
        files = _fsync_tree(staging)
        marker = os.path.join(staging, COMPLETE_MARKER)
        with open(marker, "w", encoding="utf-8") as f:
            json.dump({"step": step, "files": files}, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(staging)
        replaced = None
        if os.path.exists(final):  # e.g. the same step saved again after a resume
            replaced = f"{staging}.old"
            os.replace(final, replaced)
        os.replace(staging, final)
        fsync_dir(output_dir)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _remove_stale_staging(output_dir: str) -> None:
    """Staging folders of other (dead) processes: what a kill mid-write leaves behind
    (Note [Atomic checkpoints])."""
    # a new checkpoint (staging) before the old one it was replacing (.old)
    for name in sorted(os.listdir(output_dir), key=lambda n: n.endswith(".old")):
        if not name.startswith(_STAGING_PREFIX):
            continue
        path = os.path.join(output_dir, name)
        match = _STAGING_RE.match(name)
        if match is not None:
            pid = int(match.group(2))
            if pid == os.getpid() or process_alive(pid):
                continue
            final = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{match.group(1)}")
            if "-deleting-" not in name and is_complete(path) and not os.path.exists(final):
                os.replace(path, final)  # killed between its two renames: finish the swap
                fsync_dir(output_dir)
                continue
        shutil.rmtree(path, ignore_errors=True)


def _delete_checkpoint(path: str) -> None:
    """Remove a checkpoint folder so that no half of it is ever seen as `checkpoint-N`."""
    folder, name = os.path.split(path)
    step = name.rsplit("-", 1)[-1]
    doomed = os.path.join(folder, f"{_STAGING_PREFIX}{step}-deleting-{os.getpid()}")
    os.replace(path, doomed)
    fsync_dir(folder)
    shutil.rmtree(doomed, ignore_errors=True)


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER))


def list_checkpoints(output_dir: str, complete_only: bool = True) -> list[str]:
    """`checkpoint-N` folders in `output_dir`, oldest (smallest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path) and (not complete_only or is_complete(path)):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def get_last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint in `output_dir`, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(
    output_dir: str, save_total_limit: int | None, best_checkpoint: str | None = None
) -> list[str]:
    """Delete the oldest complete checkpoints beyond `save_total_limit`; never the newest one,
    never `best_checkpoint`. Returns the deleted folders."""
    if not save_total_limit:
        return []
    checkpoints = list_checkpoints(output_dir)
    keep = set(checkpoints[-save_total_limit:])
    if best_checkpoint is not None:
        best = os.path.abspath(best_checkpoint)
        keep |= {c for c in checkpoints if os.path.abspath(c) == best}
    deleted = []
    for path in checkpoints:
        if path not in keep:
            _delete_checkpoint(path)
            deleted.append(path)
    if deleted:
        fsync_dir(output_dir)
    return deleted


# --------------------------------------------------------------------------- random states


def rng_states() -> dict:
    """Every random state training draws from, as JSON: ember's default generators, Python's
    `random` and NumPy's global generator."""
    from ember.backend.random import _defaults, default_generator

    default_generator("cpu")
    python_version, python_state, python_gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "ember": {device: gen.get_state() for device, gen in _defaults.items()},
        "python": [python_version, list(python_state), python_gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` captured."""
    from ember.backend.random import default_generator

    for device, state in states.get("ember", {}).items():
        default_generator(device).set_state(state)
    if "python" in states:
        version, state, gauss = states["python"]
        random.setstate((version, tuple(state), gauss))
    if "numpy" in states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
