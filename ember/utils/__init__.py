"""`ember.utils.data`: the PyTorch spelling of `ember.data` (loaded on first use)."""

import importlib as _importlib


def __getattr__(name: str):
    if name == "data":
        module = _importlib.import_module("ember.data")
        globals()["data"] = module
        return module
    raise AttributeError(f"module 'ember.utils' has no attribute {name!r}")
