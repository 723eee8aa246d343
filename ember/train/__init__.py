"""L8: training: the Trainer (to come), checkpoints and TensorBoard logs.

Names load on first use (PEP 562), so `import ember.train` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["SummaryWriter"]

_LAZY = {"SummaryWriter": "ember.train.tensorboard"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
