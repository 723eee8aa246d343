"""The rest of issue 18's error behaviour: ember raises what torch raises (every builtin class
of torch's error, Note [Error classes] in ember/_util/errors.py) with a message naming the op,
what was expected and what came; and `mode`, against torch.

Each row of CASES runs one bad call on torch and on ember (torch must raise, so the row stays
honest when torch changes), as tests/ops/test_torch_refusals.py does.
"""

from __future__ import annotations

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def _z(m, *shape, dtype=None):
    return m.tensor(np.zeros(shape) if dtype is None else np.zeros(shape, dtype=dtype))


def _F(m):
    return m.nn.functional


def _ints(m, dtype=np.int64):
    return m.tensor(np.array([1, 2, 3], dtype=dtype))


# name -> (call on a library `m`, pattern ember's message matches)
CASES = {
    "softmax of int64": (lambda m: m.softmax(_ints(m), 0), r"softmax: not implemented for 'Long'"),
    "softmax of int32": (
        lambda m: _ints(m, np.int32).softmax(0),
        r"softmax: not implemented for 'Int'",
    ),
    "F.softmax of bool": (
        lambda m: _F(m).softmax(m.tensor([True, False]), 0),
        r"softmax: not implemented for 'Bool'",
    ),
    "log_softmax of int64": (
        lambda m: _ints(m).log_softmax(0),
        r"log_softmax: not implemented for 'Long'",
    ),
    "F.log_softmax of uint8": (
        lambda m: _F(m).log_softmax(_ints(m, np.uint8), 0),
        r"log_softmax: not implemented for 'Byte'",
    ),
    "narrow past the end": (
        lambda m: _z(m, 3).narrow(0, 2, 2),
        r"narrow: start \(2\) \+ length \(2\) exceeds dim 0 of size 3",
    ),
    "narrow start out of range": (
        lambda m: _z(m, 3).narrow(0, 4, 0),
        r"narrow: start 4 is out of range for dim 0 of size 3",
    ),
    "narrow dim out of range": (lambda m: _z(m, 3).narrow(1, 0, 1), "narrow: dim 1 is out of"),
    "argmax over an empty dim": (
        lambda m: _z(m, 0, 3).argmax(0),
        r"argmax\(\): expected reduction dim 0 to have non-zero size, got shape \(0, 3\)",
    ),
    "argmin over an empty dim": (
        lambda m: m.argmin(_z(m, 2, 0), 1),
        r"argmin\(\): expected reduction dim 1 to have non-zero size, got shape \(2, 0\)",
    ),
    "argmax of an empty tensor": (
        lambda m: _z(m, 0, 3).argmax(),
        r"argmax\(\): expected a reduction dim to be specified for an empty tensor",
    ),
    "max over an empty dim": (
        lambda m: _z(m, 0, 3).max(0),
        r"max\(\): expected reduction dim 0 to have non-zero size",
    ),
    "min over an empty dim": (
        lambda m: m.min(_z(m, 0, 3), dim=-2),
        r"min\(\): expected reduction dim 0 to have non-zero size",
    ),
    "max of an empty tensor": (
        lambda m: _z(m, 0).max(),
        r"max\(\): expected a reduction dim to be specified for an empty tensor of shape \(0,\)",
    ),
    "amax over an empty dim": (
        lambda m: _z(m, 0, 3).amax(0),
        r"amax\(\): expected reduction dim 0 to have non-zero size",
    ),
    "mode over an empty dim": (
        lambda m: _z(m, 0, 3).mode(0),
        r"mode\(\): expected reduction dim 0 to have non-zero size",
    ),
    "diagonal of a 1-D tensor": (
        lambda m: _z(m, 3).diagonal(),
        r"diagonal: input must have at least 2 dims, got shape \(3,\)",
    ),
    "diagonal of a 0-D tensor": (
        lambda m: _z(m).diagonal(),
        r"diagonal: input must have at least 2 dims, got shape \(\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_errors_as_torch(case):
    call, pattern = CASES[case]
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(Exception, match=pattern) as ours:
        call(ember)
    builtin = [
        c for c in type(theirs.value).__mro__ if c.__module__ == "builtins" and c is not object
    ]
    missing = [c.__name__ for c in builtin if not isinstance(ours.value, c)]
    assert not missing, (
        f"{case}: ember raised {type(ours.value).__name__}, not {missing} as torch "
        f"({type(theirs.value).__name__}: {theirs.value})"
    )
    assert "test_torch_errors_18b.py" in str(ours.value), "the message points at the caller"


def test_the_new_classes_keep_ember_s_python_classes():
    """ShapeError catchers keep catching (Note [Error classes])."""
    with pytest.raises(ValueError):
        _z(ember, 3).diagonal()
    with pytest.raises(ValueError):
        _z(ember, 0, 3).argmax(0)
    with pytest.raises(IndexError):
        _z(ember, 3).narrow(0, 2, 2)


# reductions over a non-empty dim of an empty tensor give an empty result, as in torch
@pytest.mark.parametrize("name", ["amax", "amin", "argmax", "argmin", "max", "min", "mode"])
def test_reducing_a_non_empty_dim_of_an_empty_tensor(name):
    ours = getattr(_z(ember, 3, 0), name)(0)
    theirs = getattr(_z(torch, 3, 0), name)(0)
    ours = ours if isinstance(ours, ember.Tensor) else ours[1]
    theirs = theirs if isinstance(theirs, torch.Tensor) else theirs[1]
    assert tuple(ours.shape) == tuple(theirs.shape) == (0,)
    assert ours.dtype.name == str(theirs.dtype).removeprefix("torch.")


def test_softmax_of_an_integer_tensor_with_dtype_computes():
    x = np.array([1, 2, 3])
    for name in ("softmax", "log_softmax"):
        ours = getattr(ember.tensor(x), name)(0, dtype=ember.float32)
        theirs = getattr(torch.tensor(x), name)(0, dtype=torch.float32)
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-6)


MODE_CASES = [
    ([1, 2, 2, 3, 3], {}),
    ([3, 1, 1, 3], {}),
    ([[1.0, 2, 2], [3, 3, 1]], {"dim": 1}),
    ([[1.0, 2, 2], [3, 1, 1]], {"dim": 0, "keepdim": True}),
    ([[1.0, 2, 2], [3, 1, 1]], {"dim": -2}),
    ([np.nan, 1, 1, np.nan, np.nan], {}),
    ([[5.0, 5, 4, 4, 4, 5], [0, 0, 0, 0, 0, 0]], {"dim": 1, "keepdim": True}),
    (7.5, {}),
    ([2.0], {"dim": 0}),
]


@pytest.mark.parametrize("values,kwargs", MODE_CASES)
def test_mode_matches_torch(values, kwargs):
    ours = ember.tensor(values).mode(**kwargs)
    theirs = torch.tensor(values).mode(**kwargs)
    for a, b in zip(ours, theirs):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_array_equal(np.asarray(a), b.numpy())
        assert a.dtype.name == str(b.dtype).removeprefix("torch.")
    function = ember.mode(ember.tensor(values), **kwargs)
    np.testing.assert_array_equal(np.asarray(function.indices), theirs.indices.numpy())


def test_mode_random_ties_and_gradient_match_torch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 9)).astype(np.float64)
    t = torch.tensor(x, requires_grad=True)
    e = ember.tensor(x, requires_grad=True)
    for dim in (0, 1):
        ours, theirs = e.mode(dim), t.mode(dim)
        np.testing.assert_array_equal(np.asarray(ours.values.detach()), theirs.values.detach())
        np.testing.assert_array_equal(np.asarray(ours.indices), theirs.indices.numpy())
    g = rng.standard_normal(9)
    e.mode(0).values.backward(ember.tensor(g))
    t.mode(0).values.backward(torch.tensor(g))
    np.testing.assert_allclose(np.asarray(e.grad), t.grad.numpy())


def test_mode_compiles():
    x = ember.tensor(np.array([[1.0, 2, 2, 0], [3, 3, 1, 1]]))
    compiled = ember.compile(lambda t: t.mode(1).indices)
    np.testing.assert_array_equal(np.asarray(compiled(x)), [2, 3])  # 1 beats 3, last 1 at 3
    np.testing.assert_array_equal(np.asarray(compiled(x)), np.asarray(x.mode(1).indices))
