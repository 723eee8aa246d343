"""L0: nested containers as trees (pytrees), the one module for every structure walk: the
compiler's arguments and results, the TF1 session's fetches, the data pipeline's elements and
the Trainer's outputs.

Note [Pytrees]: lists, tuples (named tuples rebuilt by field) and dicts are the nodes, and
classes registered with `register_node` (and their subclasses: a model's output dataclasses);
anything else is a leaf (`lists=False` makes lists leaves too, as tf.data treats a list as one
value).
`flatten` gives the leaves in order (dicts in insertion order) and a `TreeDef`, which is
hashable and equal for equal structures (a cache key) and rebuilds the tree around new leaves
(`unflatten`); `map_leaves` is both in one pass; `flatten_with_paths` names each leaf the way
Python indexes it (`args[0]['mask']`), for messages.
"""

from __future__ import annotations

from typing import Callable

__all__ = [
    "TreeDef",
    "flatten",
    "flatten_with_paths",
    "leaves",
    "map_leaves",
    "register_node",
    "unflatten",
]

_NODES: dict = {}  # registered class -> (items(obj) -> (keys, values), rebuild(cls, keys, values))
_NODE_OF: dict = {}  # any class -> its registered base's functions, or None (cached)


def register_node(cls: type, items: Callable, rebuild: Callable) -> None:
    """Make instances of `cls` (and of its subclasses) tree nodes: `items(obj)` gives (keys,
    values) in order and `rebuild(type, keys, values)` makes the object again, as JAX's
    `register_pytree_node` (Note [Pytrees])."""
    _NODES[cls] = (items, rebuild)
    _NODE_OF.clear()


def _node_fns(kind):
    try:
        return _NODE_OF[kind]
    except KeyError:
        fns = next((_NODES[c] for c in kind.__mro__ if c in _NODES), None) if _NODES else None
        _NODE_OF[kind] = fns
        return fns


class TreeDef:
    """The structure of a tree without its leaves (Note [Pytrees])."""

    __slots__ = ("node", "keys", "children", "num_leaves", "_key")

    def __init__(self, node, keys, children):
        self.node = node  # None for a leaf, else the container type
        self.keys = keys  # a dict's keys, in order
        self.children = children
        self.num_leaves = 1 if node is None else sum(c.num_leaves for c in children)
        self._key = None if node is None else (node, keys, tuple(c._key for c in children))

    def __eq__(self, other) -> bool:
        return isinstance(other, TreeDef) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        if self.node is None:
            return "*"
        inner = (
            ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children))
            if self.node is dict
            else ", ".join(repr(c) for c in self.children)
        )
        return f"{self.node.__name__}({inner})"


_LEAF = TreeDef(None, (), ())


def _is_node(tree, lists: bool) -> bool:
    return (
        isinstance(tree, (tuple, dict))
        or (lists and isinstance(tree, list))
        or _node_fns(type(tree)) is not None
    )


def _rebuild(node, keys, items):
    fns = _node_fns(node)
    if fns is not None:
        return fns[1](node, keys, items)
    if node is dict or issubclass(node, dict):
        return dict(zip(keys, items))
    if hasattr(node, "_fields"):  # a named tuple
        return node(*items)
    return node(items)


def flatten(tree, *, lists: bool = True) -> tuple[list, TreeDef]:
    """(leaves in order, structure) of `tree`."""
    out: list = []
    return out, _flatten(tree, out, lists)


def _flatten(tree, out, lists):
    if not _is_node(tree, lists):
        out.append(tree)
        return _LEAF
    if isinstance(tree, dict):
        keys = tuple(tree)
        return TreeDef(dict, keys, tuple(_flatten(tree[k], out, lists) for k in keys))
    fns = _node_fns(type(tree))
    if fns is not None:
        keys, values = fns[0](tree)
        return TreeDef(type(tree), tuple(keys), tuple(_flatten(x, out, lists) for x in values))
    return TreeDef(type(tree), (), tuple(_flatten(x, out, lists) for x in tree))


def flatten_with_paths(tree, prefix: str = "", *, lists: bool = True):
    """([(path, leaf)] in order, structure): paths as Python indexes them, after `prefix`."""
    out: list = []
    return out, _flatten_paths(tree, prefix, out, lists)


def _flatten_paths(tree, path, out, lists):
    if not _is_node(tree, lists):
        out.append((path, tree))
        return _LEAF
    if isinstance(tree, dict):
        keys = tuple(tree)
        children = tuple(_flatten_paths(tree[k], f"{path}[{k!r}]", out, lists) for k in keys)
        return TreeDef(dict, keys, children)
    fns = _node_fns(type(tree))
    if fns is not None:
        keys, values = fns[0](tree)
        children = tuple(_flatten_paths(x, f"{path}.{k}", out, lists) for k, x in zip(keys, values))
        return TreeDef(type(tree), tuple(keys), children)
    children = tuple(_flatten_paths(x, f"{path}[{i}]", out, lists) for i, x in enumerate(tree))
    return TreeDef(type(tree), (), children)


def unflatten(treedef: TreeDef, leaves) -> object:
    """The tree of structure `treedef` around `leaves` (any iterable, consumed in order)."""
    it = iter(leaves)
    return _unflatten(treedef, it)


def _unflatten(treedef, it):
    if treedef.node is None:
        return next(it)
    return _rebuild(treedef.node, treedef.keys, [_unflatten(c, it) for c in treedef.children])


def leaves(tree, *, lists: bool = True) -> list:
    """The leaves of `tree`, in order."""
    return flatten(tree, lists=lists)[0]


def map_leaves(fn: Callable, tree, leaf_type: type | None = None, *, lists: bool = True):
    """`tree` with every leaf (every instance of `leaf_type`, if given) replaced by `fn(leaf)`,
    in order; other leaves are kept."""
    if leaf_type is not None and isinstance(tree, leaf_type):
        return fn(tree)
    kind = type(tree)
    if kind is tuple or (lists and kind is list):
        return kind([map_leaves(fn, x, leaf_type, lists=lists) for x in tree])
    if kind is dict:
        return {k: map_leaves(fn, v, leaf_type, lists=lists) for k, v in tree.items()}
    if _is_node(tree, lists):
        fns = _node_fns(kind)
        if fns is not None:
            keys, values = fns[0](tree)
            return fns[1](kind, keys, [map_leaves(fn, v, leaf_type, lists=lists) for v in values])
        if isinstance(tree, dict):
            items = [map_leaves(fn, v, leaf_type, lists=lists) for v in tree.values()]
            return _rebuild(dict, tuple(tree), items)
        return _rebuild(kind, (), [map_leaves(fn, x, leaf_type, lists=lists) for x in tree])
    return tree if leaf_type is not None else fn(tree)
