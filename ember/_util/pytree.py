"""Nested containers (lists, tuples, named tuples, dicts) as trees: map a function over the
leaves of one type, keeping the structure. Used by the compiler for inputs and outputs."""

from __future__ import annotations

from typing import Callable


def map_leaves(fn: Callable, tree, leaf_type: type):
    """`tree` with every instance of `leaf_type` replaced by `fn(leaf)`, in order."""
    if isinstance(tree, leaf_type):
        return fn(tree)
    if isinstance(tree, (list, tuple)):
        items = [map_leaves(fn, x, leaf_type) for x in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    if isinstance(tree, dict):
        return {k: map_leaves(fn, v, leaf_type) for k, v in tree.items()}
    return tree
