"""Indexing as torch indexes, in a table: where advanced indices put their dims (Note [Advanced
index placement] in ember/ops/shape.py), tuples and lists inside an index, bool masks mixed
with integers, None and Ellipsis. Each row is checked forward and backward (getitem), as an
assignment with its gradients (setitem / index_put) against torch, and compiled against eager.
"""

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(2018)
_SHAPE = (2, 3, 4, 5)
_MASK01 = np.array([True, False])
_MASK3 = np.array([True, False, True])
_MASK34 = np.array([[True, False, True, False], [False, True, True, False], [True] * 4])
S = slice(None)

# (name, index): np.ndarray items become tensors of each library; lists and tuples stay Python
ROWS = [
    ("adjacent-after-slice", (S, [0, 2], [1, 3])),
    ("separated-by-slice", ([0, 1], S, [1, 3])),
    ("separated-twice", (S, [0, 1], S, [1, 2])),
    ("int-apart-from-tensor", (0, S, [1, 3])),  # NumPy would move the dims first; torch not
    ("int-slice-int-tensor", (1, S, 2, [0, 4])),
    ("slice-int-slice-tensor", (S, 0, S, [1, 2])),
    ("tensor-slice-int", ([0, 1], S, S, 3)),
    ("int-between-tensors", (S, [0, 2], 1, [1, 4])),
    ("int-ellipsis-tensor", (1, Ellipsis, np.array([0, 4, 2]))),
    ("int-then-2d-tensor", (0, S, S, np.array([[1, 2], [3, 4]]))),
    ("tuple-items", ((0, 1), S, (1, 2))),
    ("tuple-item-alone", ((1, 0),)),
    ("list-of-lists-is-a-tuple", [[0, 1], [2, 1]]),
    ("list-with-slice-is-a-tuple", [S, [0, 2]]),
    ("list-with-tensor-is-a-tuple", [np.array([1, 0]), np.array([0, 2])]),
    ("mask-then-int", (_MASK01, 2)),
    ("mask-slice-tensor", (_MASK01, S, [1, 2])),
    ("int-mask", (1, _MASK3)),
    ("int-slice-mask", (0, S, np.array([True, False, False, True]))),
    ("2d-mask-then-tensor", (1, _MASK34, [0, 2, 4, 1, 3, 0, 2, 1])),
    ("none-tensor-ellipsis-tensor", (None, [0, 1], Ellipsis, [1, 2])),
    ("ellipsis-tensor-none", (Ellipsis, [0, 3], None)),
    ("tensor-none-tensor", ([0, 1], None, [1, 2])),
    ("negative-indices", (S, [-1, 0], S, -2)),
    ("0d-tensor-apart", (S, np.array(1), S, [1, 2])),
    ("broadcast-tensors", (np.array([[0], [1]]), S, np.array([0, 2, 3]))),
    ("step-slice-and-tensors", (S, slice(None, None, 2), [1, 3], 0)),
]
IDS = [name for name, _ in ROWS]
# both libraries warn that a list read as a tuple of indices is deprecated in torch
pytestmark = pytest.mark.filterwarnings("ignore:.*(non-tuple sequence|read as a tuple)")


def _index(index, lib):
    def item(v):
        if isinstance(v, np.ndarray):
            return lib.tensor(v)
        if isinstance(v, list) and any(isinstance(e, np.ndarray) for e in v):
            return [item(e) for e in v]
        return v

    if isinstance(index, tuple):
        return tuple(item(v) for v in index)
    return item(index)


def _pair(requires_grad=True):
    x = _RNG.standard_normal(_SHAPE)
    return (
        torch.tensor(x, requires_grad=requires_grad),
        ember.tensor(x, requires_grad=requires_grad),
    )


@pytest.mark.parametrize("index", [i for _, i in ROWS], ids=IDS)
def test_getitem_forward_and_gradient_as_torch(index):
    tx, ex = _pair()
    want = tx[_index(index, torch)]
    got = ex[_index(index, ember)]
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy())
    g = _RNG.standard_normal(tuple(want.shape))
    want.backward(torch.tensor(g))
    got.backward(ember.tensor(g))
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def _unique_targets(index):
    """Whether every element is written once (torch's index_put_ with repeats is undefined)."""
    probe = torch.arange(int(np.prod(_SHAPE))).reshape(_SHAPE)
    hit = probe[_index(index, torch)].reshape(-1)
    return hit.unique().numel() == hit.numel()


@pytest.mark.parametrize("index", [i for _, i in ROWS], ids=IDS)
def test_setitem_values_and_gradients_as_torch(index):
    if not _unique_targets(index):
        pytest.skip("the index writes an element twice: torch's result is undefined there")
    tx, ex = _pair()
    shape = tuple(tx[_index(index, torch)].shape)
    v = _RNG.standard_normal(shape)
    tv, ev = torch.tensor(v, requires_grad=True), ember.tensor(v, requires_grad=True)
    ty, ey = tx * 1.0, ex * 1.0
    ty[_index(index, torch)] = tv
    ey[_index(index, ember)] = ev
    np.testing.assert_array_equal(ey.detach().numpy(), ty.detach().numpy())
    g = _RNG.standard_normal(_SHAPE)
    ty.backward(torch.tensor(g))
    ey.backward(ember.tensor(g))
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ev.grad.numpy(), tv.grad.numpy(), rtol=1e-12, atol=1e-12)
    # the same assignment without autograd takes the direct write path
    tz, ez = _pair(requires_grad=False)
    tz[_index(index, torch)] = torch.tensor(v)
    ez[_index(index, ember)] = ember.tensor(v)
    np.testing.assert_array_equal(ez.numpy(), tz.numpy())


@pytest.mark.parametrize(
    "index",
    [i for name, i in ROWS if "mask" not in name],  # masks give data-dependent shapes
    ids=[name for name, _ in ROWS if "mask" not in name],
)
def test_compiled_indexing_matches_eager(index):
    _, ex = _pair(requires_grad=False)

    def f(x):
        return x[_index(index, ember)] * 2.0

    np.testing.assert_array_equal(ember.compile(f)(ex).numpy(), f(ex).numpy())


def test_a_list_read_as_a_tuple_warns_as_torch():
    tx, ex = _pair(requires_grad=False)
    with pytest.warns(UserWarning, match="non-tuple sequence"):
        tx[[[0, 1], [1, 2]]]
    with pytest.warns(UserWarning, match="read as a tuple of indices"):
        ex[[[0, 1], [1, 2]]]


def test_index_errors_as_torch():
    tx, ex = _pair(requires_grad=False)
    for index in ((S, [0, 3]), ([0, 1], S, [1, 2, 3])):  # out of range; shapes that differ
        with pytest.raises(IndexError):
            tx[_index(index, torch)]
        with pytest.raises(IndexError):
            ex[_index(index, ember)]
