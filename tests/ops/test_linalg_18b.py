"""ember.linalg beyond the op table's rows: torch's error classes for bad input, the tuple
results (lstsq's fields per driver, qr mode='r', torch.svd's V and compute_uv, slogdet's
names), rank-deficient pinv / matrix_rank, and a compiled solve with its gradient."""

from __future__ import annotations

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])

# name -> (call on a library `m`, pattern of ember's message)
ERRORS = {
    "solve singular": (
        lambda m: m.linalg.solve(m.tensor(SINGULAR), m.tensor([1.0, 1.0], dtype=m.float64)),
        "linalg.solve: the solver failed because the input matrix is singular",
    ),
    "inv singular": (lambda m: m.linalg.inv(m.tensor(SINGULAR)), "linalg.solve: the solver"),
    "cholesky not positive-definite": (
        lambda m: m.linalg.cholesky(m.tensor(-np.eye(2))),
        "linalg.cholesky: .*not positive-definite",
    ),
    "inv of integers": (
        lambda m: m.linalg.inv(m.tensor([[1, 2], [3, 4]])),
        "linalg.inv: expected a float32 or float64 tensor",
    ),
    "det of a non-square": (
        lambda m: m.linalg.det(m.ones(2, 3)),
        "linalg.det: A must be batches of square matrices, but they are 2 by 3",
    ),
    "eigh of a vector": (
        lambda m: m.linalg.eigh(m.ones(3)),
        "linalg.eigh: A must have at least 2 dimensions",
    ),
    "solve shapes": (
        lambda m: m.linalg.solve(m.eye(3), m.ones(4, 2)),
        "incompatible shapes of A and B",
    ),
    "cross sizes": (
        lambda m: m.linalg.cross(m.ones(2, 4), m.ones(2, 4)),
        "linalg.cross: inputs dimension -1 must have length 3",
    ),
    "vander N": (lambda m: m.linalg.vander(m.ones(3), N=1), "N must be greater than 1"),
    "trace of a vector": (lambda m: m.trace(m.ones(3)), "trace: expected a matrix"),
    "pdist of 3-D": (lambda m: m.pdist(m.ones(2, 2, 2)), "pdist only supports 2D tensors"),
    "cdist columns": (
        lambda m: m.cdist(m.ones(2, 3), m.ones(2, 4)),
        "X1 and X2 must have the same number of columns",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_as_torch(case):
    call, pattern = ERRORS[case]
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(Exception, match=pattern) as ours:
        call(ember)
    builtin = [
        c for c in type(theirs.value).__mro__ if c.__module__ == "builtins" and c is not object
    ]
    missing = [c.__name__ for c in builtin if not isinstance(ours.value, c)]
    assert not missing, f"{case}: {type(ours.value).__name__} is not {missing} as torch's"


def test_linalg_error_is_exported_and_a_runtime_error():
    assert issubclass(ember.linalg.LinAlgError, RuntimeError)
    with pytest.raises(ember.linalg.LinAlgError):
        ember.linalg.inv(ember.tensor(SINGULAR))


@pytest.mark.parametrize("driver", [None, "gelsy", "gelsd", "gelss", "gels"])
def test_lstsq_fields_match_torch_per_driver(driver):
    a, b = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
    ours = ember.linalg.lstsq(ember.tensor(a), ember.tensor(b), driver=driver)
    theirs = torch.linalg.lstsq(torch.tensor(a), torch.tensor(b), driver=driver)
    for name in ("solution", "residuals", "rank", "singular_values"):
        got, expected = getattr(ours, name), getattr(theirs, name)
        assert tuple(got.shape) == tuple(expected.shape), name
        np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=1e-10, err_msg=name)


def test_rank_deficient_pinv_and_matrix_rank_match_torch():
    a = RNG.standard_normal((5, 2)) @ RNG.standard_normal((2, 4))  # rank 2
    np.testing.assert_allclose(
        np.asarray(ember.linalg.pinv(ember.tensor(a))),
        torch.linalg.pinv(torch.tensor(a)).numpy(),
        atol=1e-10,
    )
    assert int(ember.linalg.matrix_rank(ember.tensor(a))) == 2
    assert int(ember.linalg.matrix_rank(ember.tensor(a), atol=1e9)) == 0


def test_decomposition_results_as_torch():
    a = RNG.standard_normal((4, 3))
    ours, theirs = ember.linalg.qr(ember.tensor(a), mode="r"), torch.linalg.qr(torch.tensor(a), "r")
    assert tuple(ours.Q.shape) == tuple(theirs.Q.shape) == (0,)
    np.testing.assert_allclose(np.asarray(ours.R), theirs.R.numpy(), atol=1e-12)
    u, s, v = ember.svd(ember.tensor(a))
    tu, ts, tv = torch.svd(torch.tensor(a))
    np.testing.assert_allclose(np.asarray(u * s @ v.mT), a, atol=1e-12)
    assert tuple(v.shape) == tuple(tv.shape) and tuple(u.shape) == tuple(tu.shape)
    u0, _, v0 = ember.svd(ember.tensor(a), compute_uv=False)
    assert not np.asarray(u0).any() and not np.asarray(v0).any()
    sign, logabsdet = ember.linalg.slogdet(ember.tensor(-np.eye(3)))
    assert float(sign) == -1.0 and float(logabsdet) == 0.0
    assert float(ember.logdet(ember.tensor(-np.eye(3)))) != float(ember.logdet(ember.eye(3)))


def test_tensor_methods_exist_as_torch():
    x = ember.tensor(RNG.standard_normal((3, 3)) + 3 * np.eye(3))
    tx = torch.tensor(np.asarray(x))
    for name in ("det", "inverse", "logdet", "trace", "pinverse"):
        np.testing.assert_allclose(
            np.asarray(getattr(x, name)()), getattr(tx, name)().numpy(), rtol=1e-10, err_msg=name
        )
    np.testing.assert_allclose(np.asarray(x.matrix_power(2)), tx.matrix_power(2).numpy())


def test_compiled_solve_and_gradient_match_eager():
    a = ember.tensor(RNG.standard_normal((2, 3, 3)) + 3 * np.eye(3), requires_grad=True)
    b = ember.tensor(RNG.standard_normal((2, 3, 2)), requires_grad=True)

    def loss_and_grads(a, b):
        x = ember.linalg.solve(a, b)
        loss = (x * x).sum() + ember.linalg.slogdet(a).logabsdet.sum()
        return (loss,) + tuple(ember.autograd.grad(loss, [a, b]))

    expected = loss_and_grads(a, b)
    got = ember.compile(loss_and_grads)(a, b)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g.detach()), np.asarray(e.detach()), rtol=1e-10)


@pytest.mark.parametrize("scale", [0.01, 1.0, 5.0])
def test_matrix_exp_and_its_gradient_match_torch(scale):
    a = RNG.standard_normal((2, 4, 4)) * scale
    g = RNG.standard_normal((2, 4, 4))
    ours = ember.tensor(a, requires_grad=True)
    theirs = torch.tensor(a, requires_grad=True)
    out, expected = ember.linalg.matrix_exp(ours), torch.linalg.matrix_exp(theirs)
    np.testing.assert_allclose(np.asarray(out.detach()), expected.detach(), rtol=1e-12, atol=1e-12)
    out.backward(ember.tensor(g))
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(np.asarray(ours.grad), theirs.grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(ember.tensor(a).matrix_exp()), expected.detach(), rtol=1e-12, atol=1e-12
    )


def test_matrix_exp_refuses_compilation_clearly():
    compiled = ember.compile(lambda a: ember.linalg.matrix_exp(a))
    with pytest.raises(Exception, match="value is not known while compiling"):
        compiled(ember.eye(3))


def test_tensorsolve_matches_torch():
    a, b = RNG.standard_normal((2, 3, 6)), RNG.standard_normal((2, 3))
    np.testing.assert_allclose(
        np.asarray(ember.linalg.tensorsolve(ember.tensor(a), ember.tensor(b))),
        torch.linalg.tensorsolve(torch.tensor(a), torch.tensor(b)).numpy(),
        atol=1e-12,
    )
