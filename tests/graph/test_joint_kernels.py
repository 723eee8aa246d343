"""Joint kernels (Note [Joint kernels]): a compiled step computes softmax cross entropy and its
gradient with one call of the loss's `joint` kernel, with eager's numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.backend import get_backend, numba_kernels
from ember.graph.fusion import JointOp
from ember.ops.registry import REGISTRY

XP = get_backend("cpu").xp
XENT, XENT_GRAD = REGISTRY["softmax_cross_entropy"], REGISTRY["softmax_cross_entropy_grad"]


def _kernel(op):
    return op.kernels.get("numpy") or op.forward


# (dtype, rows, classes, reduction, ignored rows)
CASES = [
    (np.float32, 64, 10, "mean", ()),
    (np.float32, 1, 10, "mean", ()),
    (np.float32, 9, 5, "sum", (2, 7)),
    (np.float64, 9, 5, "mean", (0,)),
    (np.float32, 6, 3, "none", (1,)),
    (np.float32, 4, 3, "mean", (0, 1, 2, 3)),  # no valid target: nan, as PyTorch
    (np.float32, 7, 4, "mean", (3,)),  # 1 / 6 rounds in float32 first, as the reference's
    (np.float64, 33, 7, "sum", (5, 6)),
    (np.float32, 20, 1000, "mean", (3,)),  # wide rows: NumPy row blocks (Note [Wide softmax rows])
]


@pytest.mark.parametrize("dtype,n,c,reduction,ignored", CASES)
def test_joint_kernel_equals_the_two_kernels(dtype, n, c, reduction, ignored):
    rng = np.random.default_rng(n * c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    t = rng.integers(0, c, n)
    t[list(ignored)] = -100
    g = np.asarray(rng.standard_normal(n) if reduction == "none" else 0.7, dtype)
    attrs = dict(ignore_index=-100, reduction=reduction)
    joint = XENT.joint["softmax_cross_entropy_grad"](XP, g, x, t, **attrs)
    if not numba_kernels.available():
        assert joint is None  # the runner then calls both kernels
        return
    loss, grad = joint
    np.testing.assert_array_equal(loss, _kernel(XENT)(XP, x, t, **attrs))
    np.testing.assert_array_equal(grad, _kernel(XENT_GRAD)(XP, g, x, t, **attrs))
    assert loss.dtype == grad.dtype == dtype
    ref_grad = XENT_GRAD.forward(XP, g, x, t, **attrs)  # the reference, a few ulp away
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_joint_kernel_leaves_a_bad_target_to_the_reference(reduction):
    """A target outside the classes: the joint kernel returns None, so the runner calls the
    two kernels and the reference's error names the target."""
    x = np.zeros((3, 4), np.float32)
    t = np.array([1, 4, 0])
    g = np.asarray(np.ones(3) if reduction == "none" else 1.0, np.float32)
    attrs = dict(ignore_index=-100, reduction=reduction)
    assert XENT.joint["softmax_cross_entropy_grad"](XP, g, x, t, **attrs) is None


def _step(model, criterion, loss_fn=None):
    def step(x, y):
        model.zero_grad()
        loss = criterion(model(x), y)
        (loss if loss_fn is None else loss_fn(loss)).backward()
        return loss

    return step


@pytest.mark.parametrize(
    "loss_fn,joint",
    [
        (None, True),
        (lambda loss: loss * 3.0, True),  # upstream gradient a constant: still paired
        (lambda loss: loss * loss, False),  # it needs the loss itself: computed after it
    ],
    ids=["loss", "scaled", "squared"],
)
def test_compiled_step_pairs_loss_and_gradient(loss_fn, joint):
    ember.manual_seed(0)
    model = ember.nn.Linear(7, 5)
    rng = np.random.default_rng(0)
    x = ember.tensor(rng.standard_normal((8, 7)).astype(np.float32))
    y = ember.tensor(rng.integers(0, 5, 8))
    y.numpy()[3] = -100
    criterion = ember.nn.CrossEntropyLoss()
    compiled = ember.compile(_step(model, criterion, loss_fn))
    got = [compiled(x, y).item() for _ in range(2)]
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    names = [e.name for e in compiled._last.graph.eqns]
    joints = [e for e in compiled._last.graph.eqns if isinstance(e.op, JointOp)]
    assert len(joints) == int(joint), names
    assert ("softmax_cross_entropy" in names) == (not joint), names
    eager = _step(model, criterion, loss_fn)
    expected = eager(x, y).item()
    assert got[1] == expected
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_joint_kernel_error_names_the_bad_target():
    """An out-of-range target: the joint kernel declines, the op's kernels run and raise."""
    model = ember.nn.Linear(3, 4)
    criterion = ember.nn.CrossEntropyLoss()
    compiled = ember.compile(_step(model, criterion))
    x = ember.ones(2, 3)
    compiled(x, ember.tensor([0, 1]))
    with pytest.raises(Exception, match="target 9 is out of range for 4 classes"):
        compiled(x, ember.tensor([0, 9]))
