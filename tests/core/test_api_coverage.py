"""How much of the reference frameworks' public API ember's faces cover, and a ratchet: a name
that ember covered may not disappear.

The public names are read from the installed references (PyTorch, transformers, TensorFlow):
`__all__` where a module has one, else its non-underscore attributes. The names ember covered
when the baseline was last written are in `api_coverage.json` beside this file; the test fails
if one of them is gone. Set EMBER_UPDATE_API_BASELINE=1 to rewrite the baseline after adding
names (it only grows: names are added to it, never removed by the update).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pathlib

import pytest

import ember

BASELINE = pathlib.Path(__file__).with_name("api_coverage.json")

# namespace label -> (reference module path, attribute inside it or None, ember object getter)
NAMESPACES = {
    "torch": ("torch", None, lambda: ember),
    "torch.nn": ("torch.nn", None, lambda: ember.nn),
    "torch.nn.functional": ("torch.nn.functional", None, lambda: ember.nn.functional),
    "torch.Tensor": ("torch", "Tensor", lambda: ember.Tensor),
    "torch.optim": ("torch.optim", None, lambda: ember.optim),
    "transformers": ("transformers", None, lambda: importlib.import_module("ember.transformers")),
    "tensorflow.compat.v1": (
        "tensorflow",
        "compat.v1",
        lambda: importlib.import_module("ember.tf"),
    ),
}


def _public_names(obj) -> set[str]:
    names = getattr(obj, "__all__", None) if inspect.ismodule(obj) else None
    if names is None:
        names = dir(obj)
    return {n for n in names if not n.startswith("_")}


def _reference(label):
    module_path, attribute, _ = NAMESPACES[label]
    module = pytest.importorskip(module_path)
    obj = module
    for part in (attribute or "").split("."):
        if part:
            obj = getattr(obj, part)
    return obj


def _covered(label) -> tuple[set[str], set[str]]:
    """(reference names, the ones ember has)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = _public_names(_reference(label))
    ours = NAMESPACES[label][2]()
    have = set()
    for name in sorted(names):
        try:
            if hasattr(ours, name):
                have.add(name)
        except Exception:  # noqa: BLE001 - a lazy attribute that fails to load is not covered
            pass
    return names, have


@pytest.mark.parametrize("label", list(NAMESPACES))
def test_covered_names_do_not_disappear(label):
    names, have = _covered(label)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    before = set(baseline.get(label, []))
    share = len(have) / len(names)
    print(f"{label}: ember has {len(have)} of {len(names)} public names ({share:.1%})")
    if os.environ.get("EMBER_UPDATE_API_BASELINE") == "1":
        baseline[label] = sorted(before | have)
        BASELINE.write_text(json.dumps(baseline, indent=1, sort_keys=True) + "\n")
        return
    # a name the reference no longer has is not ember's loss (another reference version)
    lost = sorted((before & names) - have)
    assert not lost, f"{label}: names ember covered are gone: {lost}"
