"""ember._util.pytree: the one structure walker (Note [Pytrees])."""

import collections

import pytest

from ember._util.pytree import flatten, flatten_with_paths, leaves, map_leaves, unflatten

Point = collections.namedtuple("Point", "x y")

TREES = [
    1,
    [1, 2],
    (1, [2, 3], {"a": 4, "b": (5,)}),
    {"z": 1, "a": [2, {"k": 3}]},
    Point(1, [2, 3]),
    [],
    {},
    (None, "text"),
]


@pytest.mark.parametrize("tree", TREES, ids=repr)
def test_flatten_unflatten_round_trip(tree):
    flat, treedef = flatten(tree)
    assert treedef.num_leaves == len(flat)
    rebuilt = unflatten(treedef, flat)
    assert rebuilt == tree and type(rebuilt) is type(tree)
    assert map_leaves(lambda x: x, tree) == tree
    assert flatten(rebuilt)[1] == treedef and hash(flatten(rebuilt)[1]) == hash(treedef)


def test_structures_differ_by_shape_and_keys():
    assert flatten([1, 2])[1] != flatten((1, 2))[1]
    assert flatten({"a": 1})[1] != flatten({"b": 1})[1]
    assert flatten([1, [2]])[1] == flatten([5, [6]])[1]


def test_map_leaves_of_a_type_and_lists_as_leaves():
    tree = {"a": [1, "s"], "b": (2.5,)}
    assert map_leaves(lambda v: v * 10, tree, int) == {"a": [10, "s"], "b": (2.5,)}
    assert map_leaves(len, ([1, 2], {"k": [3]}), lists=False) == (2, {"k": 1})
    assert leaves(([1, 2], 3), lists=False) == [[1, 2], 3]


def test_paths_name_leaves_as_python_indexes_them():
    pairs, _ = flatten_with_paths({"x": [10, (20,)]}, "args[0]")
    assert pairs == [("args[0]['x'][0]", 10), ("args[0]['x'][1][0]", 20)]
