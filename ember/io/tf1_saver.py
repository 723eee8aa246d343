"""tf.train.Saver and tf.train.latest_checkpoint for TF1 graph programs.

`Saver(var_list=None, max_to_keep=5).save(sess, prefix, global_step=None)` writes the
variables' values (by their TF names, 'conv1/W') to `<prefix>[-<step>].safetensors`,
atomically, then updates the folder's `checkpoint` file in TensorFlow's text format
(`model_checkpoint_path: "..."` and one `all_model_checkpoint_paths` per kept checkpoint),
also atomically, and deletes checkpoints beyond the `max_to_keep` newest; it returns the
prefix written. `restore(sess, prefix)` loads them back and marks the variables initialised
in that session; a missing name raises NotFoundError and a shape or dtype that differs
InvalidArgumentError, each naming the variable, the checkpoint and both sides.
`latest_checkpoint(folder)` reads the `checkpoint` file. The data file is safetensors (one
file per checkpoint), not TensorFlow's tensor-bundle pair (.index / .data-*): ember reads what
ember wrote, and any safetensors reader can read it.
"""

from __future__ import annotations

import os

import numpy as np

from ember.graph import tf1 as _tf1
from ember.io.atomic import atomic_write
from ember.io.safetensors import safe_open, save_file

_SUFFIX = ".safetensors"
_STATE = "checkpoint"


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_state(folder: str, latest_filename: str = _STATE):
    """(latest prefix, all prefixes) from the folder's checkpoint file, or (None, [])."""
    path = os.path.join(folder, latest_filename)
    if not os.path.isfile(path):
        return None, []
    latest, every = None, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.strip().partition(":")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if key == "model_checkpoint_path":
                latest = value
            elif key == "all_model_checkpoint_paths":
                every.append(value)
    absolute = [p if os.path.isabs(p) else os.path.join(folder, p) for p in every]
    if latest is not None and not os.path.isabs(latest):
        latest = os.path.join(folder, latest)
    return latest, absolute


def latest_checkpoint(checkpoint_dir, latest_filename=None):
    """The newest checkpoint prefix recorded in `checkpoint_dir` (None if there is none)."""
    latest, _ = _read_state(os.fspath(checkpoint_dir), latest_filename or _STATE)
    if latest is None or not os.path.isfile(latest + _SUFFIX):
        return None
    return latest


def checkpoint_exists(checkpoint_prefix) -> bool:
    return os.path.isfile(os.fspath(checkpoint_prefix) + _SUFFIX)


class Saver:
    """Saves and restores a TF1 graph's variables (tf.train.Saver)."""

    def __init__(self, var_list=None, max_to_keep=5, name=None, **kwargs):
        if var_list is None:
            var_list = _tf1.global_variables()
            if not var_list:
                raise ValueError("Saver: there are no variables to save")
        if isinstance(var_list, dict):
            pairs = list(var_list.items())
        else:
            pairs = [(v.op_name if isinstance(v, _tf1.Variable) else None, v) for v in var_list]
        self._vars: dict = {}
        for key, var in pairs:
            if not isinstance(var, _tf1.Variable):
                raise TypeError(f"Saver: var_list holds {var!r}, which is not a tf.Variable")
            if key in self._vars:
                raise ValueError(f"Saver: at least two variables have the same name: {key}")
            self._vars[key] = var
        self.max_to_keep = max_to_keep
        self._kept: list[str] = []

    def save(self, sess, save_path, global_step=None, latest_filename=None, **kwargs) -> str:
        """Write the variables' values to `<save_path>[-<global_step>].safetensors`."""
        if global_step is not None:
            if isinstance(global_step, _tf1.Tensor):
                global_step = sess.run(global_step)
            save_path = f"{os.fspath(save_path)}-{int(global_step)}"
        prefix = os.fspath(save_path)
        folder = os.path.dirname(os.path.abspath(prefix))
        if not os.path.isdir(folder):
            raise ValueError(f"Saver.save: parent directory of {prefix} doesn't exist, can't save.")
        arrays = {}
        for key, var in self._vars.items():
            if id(var) not in sess.initialized:
                raise _tf1.FailedPreconditionError(
                    f"Saver.save: attempting to use uninitialized value {var.op_name}: run "
                    "tf.global_variables_initializer() (or restore) in this session first"
                )
            arrays[key] = np.array(var.tensor.detach().numpy(), copy=True)
        save_file(arrays, prefix + _SUFFIX, metadata={"format": "ember.tf1.Saver"})
        self._record(folder, os.path.abspath(prefix), latest_filename or _STATE)
        return prefix

    def _record(self, folder, prefix, latest_filename):
        if not self._kept:  # continue a folder's history, as TF's Saver does when recovering
            _, self._kept = _read_state(folder, latest_filename)
        if prefix in self._kept:
            self._kept.remove(prefix)
        self._kept.append(prefix)
        if self.max_to_keep and len(self._kept) > self.max_to_keep:
            for old in self._kept[: -self.max_to_keep]:
                if os.path.isfile(old + _SUFFIX):
                    os.remove(old + _SUFFIX)
            self._kept = self._kept[-self.max_to_keep :]

        def relative(p):
            return os.path.relpath(p, folder) if os.path.dirname(p) == folder else p

        lines = [f"model_checkpoint_path: {_quote(relative(prefix))}"]
        lines += [f"all_model_checkpoint_paths: {_quote(relative(p))}" for p in self._kept]
        with atomic_write(os.path.join(folder, latest_filename), "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def last_checkpoints(self) -> list:
        return list(self._kept)

    def restore(self, sess, save_path) -> None:
        """Load the variables from the checkpoint `save_path` (a prefix Saver.save returned)."""
        if save_path is None:
            raise ValueError("Saver.restore: can't load save_path when it is None.")
        prefix = os.fspath(save_path)
        path = prefix + _SUFFIX
        if not os.path.isfile(path):
            raise _tf1.NotFoundError(
                f"Saver.restore: the checkpoint {prefix!r} does not exist (no {path}); "
                "pass a prefix that Saver.save returned or tf.train.latest_checkpoint(folder)"
            )
        with safe_open(path, framework="np") as handle:
            names = set(handle.keys())
            missing = [k for k in self._vars if k not in names]
            if missing:
                raise _tf1.NotFoundError(
                    f"Saver.restore: key {missing[0]} not found in checkpoint {prefix} "
                    f"({len(missing)} of {len(self._vars)} variables missing: "
                    f"{', '.join(missing[:5])}; it holds {', '.join(sorted(names)[:5])}...)"
                )
            values = {k: handle.get_tensor(k) for k in self._vars}
        for key, var in self._vars.items():
            value, want = values[key], var.tensor
            if tuple(value.shape) != tuple(want.shape):
                raise _tf1.InvalidArgumentError(
                    f"Saver.restore: variable {key} has shape {list(want.shape)} in the graph "
                    f"but {list(value.shape)} in checkpoint {prefix}"
                )
            if value.dtype != want.dtype.numpy:
                raise _tf1.InvalidArgumentError(
                    f"Saver.restore: variable {key} has dtype {want.dtype.name} in the graph "
                    f"but {value.dtype} in checkpoint {prefix}"
                )
        for key, var in self._vars.items():  # all checked: now write
            var.tensor.array[...] = values[key]
            var.tensor._bump_version("Saver.restore")  # Note [Pack validity]
            sess.initialized.add(id(var))
        for plan in sess._plans.values():
            plan.checked = False
