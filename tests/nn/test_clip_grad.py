"""clip_grad_norm_'s fused path (Note [Fused gradient clipping]) against its per-gradient
reference (`foreach=False`) and PyTorch, and its results at 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.backend import numba_kernels, parallel
from ember.nn.utils import clip_grad, clip_grad_norm_

# (id, shapes, dtype, scale of the gradient values, max_norm): the large cases pass the
# parallel pool's threshold and span several blocks (clip_grad._BLOCK) of one gradient
CASES = [
    ("small_clipped", [(3, 4), (5,), ()], np.float32, 1.0, 0.5),
    ("small_unclipped", [(3, 4), (5,)], np.float32, 0.01, 10.0),
    ("large_clipped", [(1200, 384), (384,), (384, 1536), (7,)], np.float32, 1e-3, 0.1),
    ("large_unclipped", [(1200, 384), (384,)], np.float32, 1e-4, 100.0),
    ("float64", [(700, 300), (11,)], np.float64, 1.0, 1.0),
    ("empty_grad", [(0, 4), (6,)], np.float32, 1.0, 0.1),
]


def _grads(shapes, dtype, scale, seed=0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def _params(grads):
    params = [
        ember.zeros(*g.shape, dtype=ember.from_numpy(g).dtype, requires_grad=True) for g in grads
    ]
    for p, g in zip(params, grads):
        p.grad = ember.from_numpy(g.copy())
    return params


def _needs_numba():
    if not numba_kernels.available():
        pytest.skip("numba is not installed (the `fast` extra): only the reference path exists")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_clip_matches_reference_and_torch(case):
    _, shapes, dtype, scale, max_norm = case
    torch = pytest.importorskip("torch")
    grads = _grads(shapes, dtype, scale)
    fused, reference = _params(grads), _params(grads)
    theirs = [
        torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True) for g in grads
    ]
    for q, g in zip(theirs, grads):
        q.grad = torch.from_numpy(g.copy())
    total = clip_grad_norm_(fused, max_norm)
    expected = clip_grad_norm_(reference, max_norm, foreach=False)
    torch_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert total.dtype == expected.dtype and total.shape == ()
    exact = np.sqrt(sum(np.square(g.astype(np.float64)).sum() for g in grads))
    eps = float(np.finfo(dtype).eps)
    # the fused sum is float64 over runs of 256 (Note [Fused gradient clipping]): within an
    # ulp or two of the exact norm; the reference and torch sum in the gradients' dtype
    assert abs(float(total.item()) - exact) <= 2 * eps * exact
    assert float(total.item()) == pytest.approx(float(expected.item()), rel=64 * eps)
    assert float(total.item()) == pytest.approx(float(torch_total.item()), rel=64 * eps)
    for p, r, q in zip(fused, reference, theirs):
        np.testing.assert_allclose(p.grad.numpy(), r.grad.numpy(), rtol=64 * eps, atol=0)
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=64 * eps, atol=0)
    if max_norm >= exact:  # unclipped: the gradients keep their bits
        for p, g in zip(fused, grads):
            assert p.grad.numpy().tobytes() == g.tobytes()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_clip_gives_the_same_bits_at_one_and_two_threads(case):
    _needs_numba()
    _, shapes, dtype, scale, max_norm = case
    grads = _grads(shapes, dtype, scale, seed=3)
    results = []
    before = ember.get_num_threads()
    try:
        for threads in (1, 2):
            ember.set_num_threads(threads)
            params = _params(grads)
            total = clip_grad_norm_(params, max_norm)
            results.append((total.numpy().tobytes(), [p.grad.numpy().tobytes() for p in params]))
    finally:
        ember.set_num_threads(before)
    assert results[0] == results[1]


def test_fused_clip_runs_on_the_pool_for_large_gradients(monkeypatch):
    _needs_numba()
    calls = []
    real = parallel.run_chunks

    def counting(fn, argsets):
        calls.append(len(argsets))
        return real(fn, argsets)

    monkeypatch.setattr(parallel, "run_chunks", counting)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        clip_grad_norm_(_params(_grads([(1200, 384), (384,)], np.float32, 1.0)), 0.1)
    finally:
        ember.set_num_threads(before)
    assert len(calls) == 2 and min(calls) >= 2  # the sum of squares, then the scaling


def test_fused_clip_bumps_versions_only_when_it_scales():
    _needs_numba()
    params = _params(_grads([(40, 30)], np.float32, 1.0))
    before = params[0].grad._version
    clip_grad_norm_(params, 1e6)
    assert params[0].grad._version == before
    clip_grad_norm_(params, 1e-3)
    assert params[0].grad._version != before


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
def test_fused_clip_nonfinite_gradients(bad):
    torch = pytest.importorskip("torch")
    grads = _grads([(50, 20), (9,)], np.float32, 1.0)
    grads[1][3] = bad
    params = _params(grads)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert params[0].grad.numpy().tobytes() == grads[0].tobytes()  # nothing scaled
    total = clip_grad_norm_(params, 1.0)
    theirs = [torch.from_numpy(g.copy()).requires_grad_() for g in grads]
    for q, g in zip(theirs, grads):
        q.grad = torch.from_numpy(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert np.isnan(total.item()) == np.isnan(expected.item())
    for p, q in zip(params, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_mixed_dtypes_take_the_reference():
    grads = [np.ones((4, 4), np.float32), np.ones(3, np.float64)]
    params = _params(grads)
    assert not clip_grad._fusable([p.grad for p in params], 2.0, None)
    total = clip_grad_norm_(params, 1.0)
    assert total.item() == pytest.approx(np.sqrt(19.0), rel=1e-6)


def test_fused_clip_float64_overflowing_sum_is_inf():
    _needs_numba()
    params = _params([np.full(4, 1e154), np.full(3, 1e154)])  # squares fit, their sum does not
    total = clip_grad_norm_(params, 1.0)
    assert np.isinf(total.item())
