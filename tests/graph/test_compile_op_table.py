"""Eager against compiled for every op of the op table (forward and, where the row checks
gradients, backward), through ember.compile (Note [Op table])."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.graph import GraphError
from ember.testing.op_table import ROWS, row_rng

# ops whose output shape depends on the data cannot be compiled (they raise GraphError)
_DATA_DEPENDENT = {"nonzero", "masked_select"}


def _cases():
    out = []
    for row in ROWS:
        for i, sample in enumerate(row.samples(row_rng(row))):
            marks = ()
            if row.random:
                marks = pytest.mark.skip(reason="random op: draws differ between runs")
            elif (
                set(row.ops) & _DATA_DEPENDENT
                or row.name in _DATA_DEPENDENT
                or "bool" in (sample.name or "")
                and row.name in ("getitem", "setitem")
            ):
                marks = pytest.mark.skip(reason="data-dependent output shape (tested to raise)")
            out.append(pytest.param(row, sample, id=f"{row.name}-{sample.name or i}", marks=marks))
    return out


def _tensors(sample, row, requires_grad):
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            if a.dtype.kind == "f" and i not in row.int_args:
                t = ember.from_numpy(a.astype(np.float64).copy())
                if requires_grad and i not in row.const_args:
                    t.requires_grad_(True)
            else:
                t = ember.tensor(a.astype(np.int64) if a.dtype.kind in "iuf" else a)
            args.append(t)
        else:
            args.append(a)
    return args


def _flat(x):
    if isinstance(x, ember.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flat(item)]
    return []


def _values(x):
    return [np.asarray(t.detach()) for t in _flat(x)]


@pytest.mark.parametrize("row,sample", _cases())
def test_compiled_matches_eager(row, sample):
    grad = row.grad and sample.grad
    eager_args = _tensors(sample, row, grad)
    tensor_pos = [i for i, a in enumerate(eager_args) if isinstance(a, ember.Tensor)]
    kwargs = sample.kwargs

    def call(*tensors):
        args = list(eager_args)
        for i, t in zip(tensor_pos, tensors):
            args[i] = t
        return row.fn(*args, **kwargs)

    expected = call(*[eager_args[i] for i in tensor_pos])
    leaves = [eager_args[i] for i in tensor_pos]
    compiled = ember.compile(call)
    got = compiled(*leaves)
    exp_vals, got_vals = _values(expected), _values(got)
    assert len(exp_vals) == len(got_vals)
    for e, g in zip(exp_vals, got_vals):
        assert e.shape == g.shape and e.dtype == g.dtype, (e.shape, e.dtype, g.shape, g.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, equal_nan=True)
    compiled.graph.check()
    if not grad:
        return
    diff = [t for t in leaves if t.requires_grad]
    outs = [t for t in _flat(expected) if t.requires_grad and t.dtype.is_floating_point]
    if not diff or not outs:
        return
    eager_grads = ember.autograd.grad(sum((o * o).sum() for o in outs), diff, allow_unused=True)

    def loss_and_grads(*tensors):
        res = [t for t in _flat(call(*tensors)) if t.requires_grad and t.dtype.is_floating_point]
        ws = [t for t in tensors if t.requires_grad]
        return ember.autograd.grad(sum((o * o).sum() for o in res), ws, allow_unused=True)

    compiled_grads = ember.compile(loss_and_grads)(*leaves)
    for e, g in zip(eager_grads, compiled_grads):
        if e is None:
            assert g is None
            continue
        np.testing.assert_allclose(np.asarray(g), np.asarray(e.detach()), rtol=1e-8, atol=1e-10)


def test_data_dependent_shapes_raise_a_clear_error():
    f = ember.compile(lambda x: ember.nonzero(x))
    with pytest.raises(GraphError, match="nonzero: its output shape depends on the data"):
        f(ember.tensor([1.0, 0.0, 2.0]))
