"""In-place ops on views of tensors in an autograd graph, against PyTorch (Note [Views and
in-place]): outputs and every leaf's gradient, second order on some programs, and the errors
PyTorch raises (leaf views, views made under no_grad, saved tensors changed through a view)."""

import numpy as np
import pytest

import ember
from ember.autograd import AutogradError
from ember.testing.inplace_views import (
    PROGRAMS,
    make_leaves,
    random_program,
    run_random_program,
)

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")

F32_TOL = 2e-5


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _run(lib, program, seed=0):
    leaves = make_leaves(lib, seed=seed)
    out = program.fn(lib, **leaves)
    cot = np.random.default_rng(seed + 1).standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(lib.tensor(cot))
    grads = {name: (None if t.grad is None else _np(t.grad)) for name, t in leaves.items()}
    return _np(out), grads


def _max_err(ours, theirs, what):
    err = float(np.abs(ours - theirs).max()) if np.size(theirs) else 0.0
    scale = float(np.abs(theirs).max()) if np.size(theirs) else 0.0
    print(f"{what}: max abs err {err:.3g} (max |value| {scale:.3g})")
    return err, scale


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_program_matches_torch(program):
    out_e, grads_e = _run(ember, program)
    out_t, grads_t = _run(torch, program)
    assert out_e.shape == out_t.shape
    err, scale = _max_err(out_e, out_t, f"{program.name} output")
    assert err <= F32_TOL * max(1.0, scale)
    for name, gt in grads_t.items():
        ge = grads_e[name]
        if gt is None:
            assert ge is None, f"{name}.grad: torch has none, ember has one"
            continue
        assert ge is not None, f"{name}.grad: torch has one, ember has none"
        err, scale = _max_err(ge, gt, f"{program.name} d/d{name}")
        assert err <= F32_TOL * max(1.0, scale)


def _second_order(lib, program):
    leaves = make_leaves(lib, seed=3)
    names = list(leaves)
    out = program.fn(lib, **leaves)
    loss = (out * out).sum()
    grads = lib.autograd.grad(
        loss, [leaves[n] for n in names], create_graph=True, allow_unused=True
    )
    total = sum((g * g).sum() for g in grads if g is not None)
    total.backward()
    return {n: (None if leaves[n].grad is None else _np(leaves[n].grad)) for n in names}


@pytest.mark.parametrize(
    "program",
    [p for p in PROGRAMS if p.second_order],
    ids=[p.name for p in PROGRAMS if p.second_order],
)
def test_second_order_matches_torch(program):
    ours = _second_order(ember, program)
    theirs = _second_order(torch, program)
    for name, gt in theirs.items():
        if gt is None:
            assert ours[name] is None
            continue
        err, scale = _max_err(ours[name], gt, f"{program.name} second order d/d{name}")
        assert err <= 1e-4 * max(1.0, scale)


def test_history_is_rewritten_like_torch():
    x = ember.randn(3, 4, requires_grad=True)
    y = x * 2
    v = y[1:]
    assert v._base is y and v._is_view()
    assert y.grad_fn.name() == "MulBackward0"
    y[0].mul_(3)
    assert y.grad_fn.name() == "ViewScatterBackward0"  # PyTorch: CopySlices
    # the other view's history is regenerated from the base's (PyTorch: on grad_fn access)
    assert v.grad_fn.next_functions[0][0] is y.grad_fn
    assert y._version_value == v._version_value == 1
    d = x.detach()
    assert d._base is None and not d._is_view()


def test_view_of_base_without_grad_gets_grad_when_the_base_does():
    w = ember.randn(4, requires_grad=True)
    b = ember.zeros(3, 4)
    v = b[2]
    assert not v.requires_grad
    b[0].copy_(w)
    assert b.requires_grad and not b.is_leaf
    assert v.requires_grad  # regenerated, as in PyTorch
    (v * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(4))


def test_view_of_leaf_requiring_grad_is_refused_with_torch_message():
    x = ember.randn(3, 4, requires_grad=True)
    with pytest.raises(
        AutogradError,
        match="a view of a leaf Variable that requires grad is being used in an in-place operation",
    ) as info:
        x[0].mul_(2)
    assert "mul_" in str(info.value) and "test_views.py" in str(info.value)
    with pytest.raises(AutogradError, match="view of a leaf Variable"):
        x.t().copy_(ember.ones(4, 3))
    with pytest.raises(AutogradError, match="view of a leaf Variable"):
        x.diagonal().fill_(0)
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        x.add_(1)


def test_in_place_under_no_grad_is_allowed_and_not_recorded():
    x = ember.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    with ember.no_grad():
        x[0].mul_(2)
        x.diagonal().fill_(0)
    assert x.is_leaf and x.grad_fn is None and x._version_value == 2
    np.testing.assert_array_equal(x.detach().numpy(), [[0.0, 4.0], [3.0, 0.0]])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 8.0], [6.0, 0.0]])


def test_view_made_under_no_grad_then_written_with_grad_is_refused():
    x = ember.randn(3, requires_grad=True)
    y = x * 2
    with ember.no_grad():
        v = y[:2]
    with pytest.raises(AutogradError, match="created in no_grad mode"):
        v.mul_(2)
    b = ember.zeros(3)
    with ember.no_grad():
        u = b[:2]
    u.mul_(2)  # nothing requires grad: not recorded, allowed (as in PyTorch)
    with pytest.raises(AutogradError, match="created in no_grad mode"):
        u.copy_(x[:2])


def test_saved_tensor_changed_through_a_view_names_ops_and_lines():
    x = ember.randn(3, 4, requires_grad=True)
    y = x * 2  # made here
    z = y.sin()  # sin saves y
    y[0].mul_(3)  # changed here, through a view
    with pytest.raises(AutogradError) as info:
        z.sum().backward()
    message = str(info.value)
    assert "sin" in message and "the output of mul" in message and "mul_" in message
    assert "test_views.py" in message and "version 1" in message

    y = x * 2
    v = y[1]
    z = v.sin()  # sin saves the view
    y.add_(1)  # the base changes: so does the view
    with pytest.raises(AutogradError, match="add_") as info:
        z.sum().backward()
    assert "sin" in str(info.value)


def test_writing_a_broadcast_view_and_detaching_a_view_in_place_are_refused():
    x = ember.randn(3, requires_grad=True)
    y = (x * 2).unsqueeze(0).expand(2, 3)
    with pytest.raises(RuntimeError, match="broadcast"):
        y.mul_(2)
    v = (x * 2)[1:]
    with pytest.raises(AutogradError, match="can't detach views in place"):
        v.detach_()


def test_retain_grad_follows_the_base_through_a_write_into_a_view():
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    y[1:].mul_(3)
    (y * y).sum().backward()
    tx = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ty = tx * 2
    ty.retain_grad()
    ty[1:].mul_(3)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())


@pytest.mark.parametrize("block", range(4))
def test_random_view_programs_match_torch(block):
    """Seeded random chains of views written in place and read (also stale ones); where
    PyTorch refuses a program (a saved tensor changed), ember must refuse it too."""
    worst, refused = 0.0, 0
    for seed in range(block * 50, block * 50 + 50):
        program = random_program(seed)
        try:
            theirs = run_random_program(torch, program, seed)
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error)
            with pytest.raises(AutogradError, match="modified by an in-place operation"):
                run_random_program(ember, program, seed)
            refused += 1
            continue
        ours = run_random_program(ember, program, seed)
        for a, b in zip(ours, theirs):
            err = float(np.abs(a - b).max())
            worst = max(worst, err / max(1.0, float(np.abs(b).max())))
            assert err <= F32_TOL * max(1.0, float(np.abs(b).max())), (seed, program)
    print(
        f"block {block}: {50 - refused} programs match, worst relative error {worst:.3g}; "
        f"{refused} refused by both"
    )
