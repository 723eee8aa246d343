"""Checkpoint rotation and replacement never leave a half checkpoint in view (issue 19, item 9)."""

import json
import os

from ember.train.checkpointing import (
    COMPLETE_MARKER,
    list_checkpoints,
    rotate_checkpoints,
    write_checkpoint,
)

DEAD = 2**22 + 777  # above the default pid_max: no such process


def _write(folder, step):
    def files(staging):
        with open(os.path.join(staging, "weights.bin"), "w") as f:
            f.write(str(step))

    return write_checkpoint(str(folder), step, files)


def test_rotation_renames_before_deleting(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        _write(tmp_path, step)
    seen_during_delete = []
    import shutil

    real_rmtree = shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        seen_during_delete.append(sorted(os.listdir(tmp_path)))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", watching_rmtree)
    deleted = rotate_checkpoints(str(tmp_path), 2)
    assert [os.path.basename(p) for p in deleted] == ["checkpoint-1"]
    # while its files were being removed, checkpoint-1 was already out of view
    assert all("checkpoint-1" not in names for names in seen_during_delete)


def test_a_kill_during_deletion_leaves_nothing_visible_and_the_next_save_cleans_up(tmp_path):
    _write(tmp_path, 1)
    half = tmp_path / f".tmp-checkpoint-7-deleting-{DEAD}"
    half.mkdir()
    (half / "weights.bin").write_text("7")  # its marker was already deleted
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path), False)] == ["checkpoint-1"]
    _write(tmp_path, 2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1", "checkpoint-2"]


def test_a_kill_between_the_two_renames_of_a_replacement_is_finished(tmp_path):
    # checkpoint-5 was being replaced: old moved aside (.old), new staging complete, then kill.
    for name, content in (
        (f".tmp-checkpoint-5-{DEAD}", "new"),
        (f".tmp-checkpoint-5-{DEAD}.old", "old"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "weights.bin").write_text(content)
        (folder / COMPLETE_MARKER).write_text(json.dumps({"step": 5, "files": ["weights.bin"]}))
    _write(tmp_path, 6)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-5", "checkpoint-6"]
    assert (tmp_path / "checkpoint-5" / "weights.bin").read_text() == "new"
