"""Note [Module paths]: each torch.nn class that ember has is reachable at PyTorch's module
path, as the same object as `ember.nn.<name>`."""

from __future__ import annotations

import importlib
import inspect

import pytest

import ember.nn as nn


def _torch_classes():
    torch_nn = pytest.importorskip("torch.nn")
    for name in torch_nn.modules.__all__:
        cls = getattr(torch_nn, name, None)
        if inspect.isclass(cls) and hasattr(nn, name):
            yield name, cls.__module__.rsplit(".", 1)[-1]


def test_torch_module_paths_resolve_to_embers_classes():
    checked = 0
    for name, file in _torch_classes():
        module = importlib.import_module(f"ember.nn.modules.{file}")
        assert getattr(module, name, None) is getattr(nn, name), f"ember.nn.modules.{file}.{name}"
        checked += 1
    assert checked >= 80
