"""Compiled graphs run an op's registered forward with the executor's buffers (`writes_out`,
Note [OpDef] and Note [Executor]): matmul reaches the backend's `xp.matmul` (the small-GEMM
dispatch, Note [Small GEMMs]) with the layout the forward chose, and writes into planned
buffers, never over its own operands."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.backend import blas, get_backend
from ember.ops.registry import REGISTRY

XP = get_backend("cpu").xp


@pytest.fixture
def matmul_calls(monkeypatch):
    """The products the backend's `xp.matmul` computes: (a, b, out) per call."""
    assert XP.matmul is blas.matmul  # the dispatch the executor must reach
    calls = []

    def observed(a, b, out=None):
        calls.append((a, b, out))
        return blas.matmul(a, b, out=out)

    monkeypatch.setattr(XP, "matmul", observed)
    return calls


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


# (name, function of tensors, inputs, number of products per call, operand shapes BLAS sees)
CASES = [
    ("2d", lambda a, b: (a @ b) * 2.0, [(8, 5), (5, 3)], [((8, 5), (5, 3))]),
    # (..., M, K) @ (K, N): one GEMM over the flattened batch
    ("batch_2d", lambda a, b: (a @ b) * 2.0, [(4, 6, 5), (5, 3)], [((24, 5), (5, 3))]),
    # a transposed operand in a stack reaches the dispatch as a view: one MKL batch call takes
    # it as a transpose flag, else the dispatch copies it (Note [Strided batches])
    (
        "stack_mT",
        lambda q, k: (q @ k.mT) * 2.0,
        [(2, 3, 6, 4), (2, 3, 7, 4)],
        [((2, 3, 6, 4), (2, 3, 4, 7))],
    ),
    ("stack_a_mT", lambda k, g: (k.mT @ g) * 2.0, [(2, 5, 6), (2, 5, 3)], [((2, 6, 5), (2, 5, 3))]),
    (
        "linear",
        lambda x, w: ember.nn.functional.linear(x, w) * 2.0,
        [(8, 5), (3, 5)],
        [((8, 5), (5, 3))],
    ),
]


@pytest.mark.parametrize("name,fn,shapes,products", CASES, ids=[c[0] for c in CASES])
def test_compiled_matmul_runs_the_registered_forward(matmul_calls, name, fn, shapes, products):
    arrays = [_rand(*s, seed=i) for i, s in enumerate(shapes)]
    compiled = ember.compile(fn, fuse=False)
    compiled(*[ember.from_numpy(a) for a in arrays])  # trace
    for round_ in range(2):  # every call goes through the forward, into the same buffer
        matmul_calls.clear()
        got = compiled(*[ember.from_numpy(a) for a in arrays]).numpy()
        assert [(a.shape, b.shape) for a, b, _ in matmul_calls] == products
        for _, _, out in matmul_calls:
            assert out is not None and out.flags.c_contiguous  # a planned buffer
        address = matmul_calls[0][2].__array_interface__["data"][0]
        if round_ == 0:
            first_address = address
        else:
            assert address == first_address
    ref = np.asarray(fn(*[ember.from_numpy(a.astype(np.float64)) for a in arrays]).numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_compiled_matmul_result_is_a_fresh_array(matmul_calls):
    """A product that is the graph's result goes to no planned buffer: the caller keeps it."""
    compiled = ember.compile(lambda a, b: a @ b)
    a, b = ember.from_numpy(_rand(4, 5)), ember.from_numpy(_rand(5, 2, seed=1))
    first = compiled(a, b)
    kept = first.numpy().copy()
    second = compiled(a * 2.0, b)
    assert matmul_calls[-1][2] is None
    np.testing.assert_array_equal(first.numpy(), kept)
    np.testing.assert_allclose(second.numpy(), 2 * kept, rtol=1e-6)


def test_matmul_update_of_its_own_operand_is_not_written_over_it(matmul_calls):
    """w <- w @ r in place: BLAS must not write into the w it reads (`writes_out` outputs
    share no memory with the inputs), so the update is computed aside and copied back."""
    w0, r = _rand(6, 6), _rand(6, 6, seed=1)
    w = ember.from_numpy(w0.copy())

    def step(r):
        with ember.no_grad():
            w.copy_(w @ r)
        return w.sum()

    compiled = ember.compile(step)
    expected = w0.astype(np.float64)
    for _ in range(3):
        compiled(ember.from_numpy(r))
        expected = expected @ r
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-4, atol=1e-4)
    for a, b, out in matmul_calls:
        assert out is None or not (np.shares_memory(out, a) or np.shares_memory(out, b))


def test_ops_that_write_out_accept_out_in_eager_forward():
    """Every op whose OpDef says `writes_out` fills the `out` it is given with its forward's
    result (the contract the executor relies on), for a sample of its inputs."""
    samples = {
        "matmul": ((_rand(3, 4), _rand(4, 2, seed=1)), {}),
        "linear": ((_rand(3, 4), _rand(2, 4, seed=1), _rand(2, seed=2)), {}),
        "relu": ((_rand(3, 4),), {}),
    }
    flagged = sorted(name for name, op in REGISTRY.items() if op.writes_out)
    assert flagged == sorted(samples)  # a new `writes_out` op gets a sample here
    for name in flagged:
        op = REGISTRY[name]
        args, attrs = samples[name]
        forward = op.kernels.get("numpy") or op.forward
        expected = forward(XP, *args, **attrs)
        out = np.full(expected.shape, np.nan, expected.dtype)
        assert forward(XP, *args, out=out, **attrs) is out
        np.testing.assert_array_equal(out, expected)
