"""The op surface and the op facts come from the registry alone (Note [Op surface], Note [OpDef]).

- every Tensor method and `ember.*` function an op provides is the one its OpDef names;
- an op's ufunc computes what its reference forward computes, and quiet ops are the ones
  whose kernels may warn;
- no module under ember/graph/ keeps a table of op names of its own, and every op name it
  compares against is registered (a stale name such as `copy_view` fails here).
"""

import ast
import pathlib

import numpy as np
import pytest

import ember
from ember.ops import REGISTRY
from ember.ops import surface
from ember.ops.registry import COMPOSITES

GRAPH = pathlib.Path(ember.__file__).parent / "graph"


def _graph_primitive_names():
    """Names of graph-level primitives (`name = "fused"` on a class), which are not ops."""
    names = set()
    for path in GRAPH.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and [getattr(t, "id", None) for t in stmt.targets] == ["name"]
                        and isinstance(stmt.value, ast.Constant)
                    ):
                        names.add(stmt.value.value)
    return names


def _strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def _is_name(node) -> bool:
    return (isinstance(node, ast.Name) and node.id == "name") or (
        isinstance(node, ast.Attribute) and node.attr == "name"
    )


def _op_names_in_graph():
    """(file, line, string) for every string an op name is compared with, and every string of
    a module-level set literal (op-name sets such as the passes' splat ops)."""
    found = []
    tables = []
    for path in sorted(GRAPH.glob("*.py")):
        if path.name.startswith("tf1"):  # the TF1 face's files: TensorFlow's names, not ops
            continue
        tree = ast.parse(path.read_text())
        module_sets = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Set):
                for t in stmt.targets:
                    if isinstance(t, ast.Name):
                        module_sets[t.id] = stmt.value
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
                keys = [k.value for k in stmt.value.keys if isinstance(k, ast.Constant)]
                if sum(k in REGISTRY for k in keys) >= 3:
                    tables.append(f"{path.name}:{stmt.lineno}")
        for value in module_sets.values():
            found += [(path.name, value.lineno, s) for s in _strings(value)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_is_name(o) for o in operands):
                    for o in operands:
                        found += [(path.name, node.lineno, s) for s in _strings(o)]
    return found, tables


def test_graph_keeps_no_op_tables_and_names_only_registered_ops():
    found, tables = _op_names_in_graph()
    assert not tables, f"name-keyed op tables in ember/graph (put the fact on the OpDef): {tables}"
    assert found, "the scan found no op names at all: it no longer reads the graph code"
    known = set(REGISTRY) | _graph_primitive_names()
    stale = [f"{f}:{line} {name!r}" for f, line, name in found if name not in known]
    assert not stale, f"ember/graph names ops that are not registered: {stale}"


def test_every_public_name_is_the_registry_s():
    functions = surface.functions()
    for op in REGISTRY.values():
        for name in op.functions:
            fn = functions[name]
            assert getattr(ember, name) is fn and getattr(ember.ops, name) is fn
            if op.api is not None:  # wrapped only for NumPy's argument names
                assert fn is surface.numpy_names(op.api)
                assert getattr(fn, "__wrapped__", fn) is op.api
        for name in op.methods + op.operators + op.inplace:
            assert name in surface.OpMixin.__dict__, (op, name)
    for fn, methods, names in COMPOSITES:
        for name in names:
            assert getattr(ember, name) is surface.numpy_names(fn)
        for name in methods:
            assert surface.OpMixin.__dict__[name] is surface.numpy_names(fn)


def test_two_providers_of_one_name_are_refused():
    from ember.ops.registry import public

    with pytest.raises(ValueError, match="provided by both"):
        public("exp")(lambda x: x)
    COMPOSITES.pop()
    surface.refresh()
    assert ember.tensor([0.0]).exp().item() == 1.0


@pytest.mark.parametrize("op", [op for op in REGISTRY.values() if op.ufunc], ids=lambda o: o.name)
def test_ufunc_computes_the_reference_forward(op):
    rng = np.random.default_rng(0)
    n = surface._arity(op)
    args = [rng.uniform(0.5, 2.0, (3, 4)) for _ in range(n)]
    if op.name.startswith("bitwise_"):  # integer ops (Note [Bitwise ops])
        args = [rng.integers(0, 6, (3, 4)) for _ in range(n)]
    elif op.dtype(np.float64) is ember.bool and op.promote is None:
        args = [a > 1.2 for a in args]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(getattr(np, op.ufunc)(*args), op.forward(np, *args))


def test_generated_methods_dispatch_like_the_functions():
    x = ember.tensor([[0.5, -1.0], [2.0, 3.0]])
    for name in ("exp", "tanh", "neg", "sqrt"):
        np.testing.assert_array_equal(
            getattr(x.abs(), name)().numpy(), getattr(ember, name)(x.abs()).numpy()
        )
    assert (2 - x).tolist() == [[1.5, 3.0], [0.0, -1.0]]
    y = x.clone()
    y += 1
    y.exp_()
    np.testing.assert_allclose(y.numpy(), np.exp(x.numpy() + 1), rtol=1e-6)
