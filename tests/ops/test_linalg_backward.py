"""The backward of linear, of attention's scores q @ k.mT and of the embedding (Note [Linear
backward] and Note [Transposed operand gradients] in ember/ops/linalg.py,
Note [Scatter into zeros] in ember/ops/shape.py): gradients against PyTorch for contiguous and
strided output gradients, the bias gradient's GEMV equal at 1 and 2 threads, and index_add's
zero table made by `zeros` only where the base is a broadcast +0.0."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.backend import parallel
from ember.backend.numpy_backend import backend
from ember.ops import shape as shape_ops

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-5, 1e-5  # float32 products of length <= 512, values ~1


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the parallel paths even on a loaded machine (Note [Overloaded machine])."""
    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


# name -> (x shape, out features, how the output gradient is laid out)
CASES = {
    "3-D, contiguous gradient": ((4, 16, 24), 40, "c"),
    "3-D, (B, C, T)-ordered gradient (attention's key)": ((4, 16, 24), 40, "t"),
    "4-D, permuted gradient": ((2, 3, 16, 24), 32, "p"),
    "2-D, transposed gradient": ((32, 24), 40, "t2"),
    "1-D input": ((24,), 40, "c"),
}


def _output_gradient(rng, shape, layout):
    """An upstream gradient of `shape` with the given memory layout (same values)."""
    values = rng.standard_normal(shape).astype(np.float32)
    if layout == "t":  # stored as (B, C, T), seen as (B, T, C)
        return np.ascontiguousarray(values.swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout == "t2":
        return np.ascontiguousarray(values.T).T
    if layout == "p":  # stored with the two leading dims swapped
        return np.ascontiguousarray(values.swapaxes(0, 1)).swapaxes(0, 1)
    return values


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_linear_gradients_match_torch(case, bias):
    x_shape, out_features, layout = CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((out_features, x_shape[-1])).astype(np.float32)
    b = rng.standard_normal(out_features).astype(np.float32) if bias else None
    g = _output_gradient(rng, x_shape[:-1] + (out_features,), layout)
    assert layout == "c" or not g.flags.c_contiguous

    ex, ew = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
    eb = ember.tensor(b, requires_grad=True) if bias else None
    ember.nn.functional.linear(ex, ew, eb).backward(ember.from_numpy(g))
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    torch.nn.functional.linear(tx, tw, tb).backward(torch.from_numpy(np.array(g)))
    pairs = [(ex, tx), (ew, tw)] + ([(eb, tb)] if bias else [])
    for ours, theirs in pairs:
        scale = max(1.0, float(np.abs(theirs.grad.numpy()).max()))
        np.testing.assert_allclose(
            ours.grad.numpy(), theirs.grad.numpy(), rtol=RTOL, atol=ATOL * scale
        )


def _bias_gradient(threads, g):
    before = ember.get_num_threads()
    ember.set_num_threads(threads)
    try:
        x = ember.zeros(g.shape[:-1] + (8,))
        w = ember.zeros((g.shape[-1], 8))
        b = ember.zeros((g.shape[-1],), requires_grad=True)
        ember.nn.functional.linear(x, w, b).backward(ember.from_numpy(g))
        return b.grad.numpy()
    finally:
        ember.set_num_threads(before)


@pytest.mark.parametrize("shape", [(16, 128, 384), (2048, 1536), (3, 5, 7)])
def test_bias_gradient_is_the_same_at_1_and_2_threads(shape):
    g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    one, two = _bias_gradient(1, g), _bias_gradient(2, g)
    np.testing.assert_array_equal(one, two)
    exact = g.astype(np.float64).reshape(-1, shape[-1]).sum(0)
    bound = g.shape[0] * np.finfo(np.float32).eps * np.abs(g).reshape(-1, shape[-1]).sum(0)
    assert np.all(np.abs(one - exact) <= bound)


@pytest.mark.parametrize("heads", [True, False], ids=["split-head views", "contiguous stacks"])
def test_attention_scores_gradients_match_torch_and_reach_the_key_in_c_order(heads):
    """Note [Transposed operand gradients]: in q @ k.mT the key's gradient is computed as
    (g^T q)^T, so the gradient reaching k (through the head split of a (batch, length, hidden)
    projection, as in BERT) is C-ordered like the query's; both match PyTorch."""
    rng = np.random.default_rng(3)
    batch, length, num_heads, size = 3, 10, 4, 8
    x = rng.standard_normal((batch, length, num_heads * size)).astype(np.float32)
    y = rng.standard_normal((batch, length, num_heads * size)).astype(np.float32)
    g = rng.standard_normal((batch, num_heads, length, length)).astype(np.float32)

    def split(t):
        if heads:
            return t.reshape(batch, length, num_heads, size).transpose(1, 2)
        return t.reshape(batch, num_heads, length, size)

    eq, ek = ember.tensor(x, requires_grad=True), ember.tensor(y, requires_grad=True)
    q, k = split(eq), split(ek)
    key_grad = []
    k.register_hook(lambda grad: key_grad.append(grad.numpy()))
    (q @ k.mT).backward(ember.from_numpy(g))
    tq, tk = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    (split(tq) @ split(tk).mT).backward(torch.from_numpy(g))
    assert key_grad[0].flags.c_contiguous
    for ours, theirs in ((eq, tq), (ek, tk)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_embedding_gradient_matches_torch():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((1000, 16)).astype(np.float32)
    ids = rng.integers(0, 1000, (8, 64))
    ids[0, :5] = 7  # repeated rows accumulate
    g = rng.standard_normal((8, 64, 16)).astype(np.float32)
    ew = ember.tensor(table, requires_grad=True)
    ember.nn.functional.embedding(ember.from_numpy(ids), ew).backward(ember.from_numpy(g))
    tw = torch.tensor(table, requires_grad=True)
    torch.nn.functional.embedding(torch.from_numpy(ids), tw).backward(torch.from_numpy(g))
    np.testing.assert_allclose(ew.grad.numpy(), tw.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "fill, zeros_made",
    [(0.0, True), (-0.0, False), (2.5, False)],
    ids=["+0.0: zeros", "-0.0: copied (its sign shows)", "2.5: copied"],
)
def test_index_add_base_copy(monkeypatch, fill, zeros_made):
    """A broadcast +0.0 base comes from `zeros` (calloc: an untouched page is never written);
    any other base is copied, so -0.0 keeps its sign where nothing lands."""
    xp = backend.xp
    made = []
    real_zeros = xp.zeros
    monkeypatch.setattr(xp, "zeros", lambda *a, **k: made.append(1) or real_zeros(*a, **k))
    base = np.broadcast_to(np.array(fill, np.float32), (50, 4))
    index = np.array([3, 3, 10] * 8)
    values = np.ones((24, 4), np.float32)
    out = shape_ops._index_add_forward(xp, base, values, index, spec=(("t",),))
    expected = np.full((50, 4), fill, np.float32)
    np.add.at(expected, index, values)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    assert bool(made) == zeros_made
    assert out.flags.writeable and not np.shares_memory(out, base)
