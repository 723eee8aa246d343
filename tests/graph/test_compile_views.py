"""Compiled programs that write in place through views (Note [Views and in-place]): the traced
graph writes into the base with view_scatter; results and gradients equal eager's."""

import numpy as np
import pytest

import ember
from ember.autograd import AutogradError
from ember.testing.inplace_views import (
    LEAF_SHAPES,
    PROGRAMS,
    random_program,
    random_program_body,
)

COMPILED = [p for p in PROGRAMS if p.compiled]


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [
        ember.tensor(rng.standard_normal(shape).astype(np.float32))
        for shape in LEAF_SHAPES.values()
    ]


def _step(program):
    def step(x, w, z, s):
        leaves = [t.detach().requires_grad_() for t in (x, w, z, s)]
        out = program.fn(ember, *leaves)
        (out * out).sum().backward()
        return (out,) + tuple(t.grad if t.grad is not None else ember.zeros_like(t) for t in leaves)

    return step


@pytest.mark.parametrize("program", COMPILED, ids=[p.name for p in COMPILED])
def test_compiled_program_matches_eager(program):
    step = _step(program)
    compiled = ember.compile(step)
    for seed in (0, 1):  # the second call runs the cached graph
        args = _inputs(seed)
        eager = step(*args)
        ours = compiled(*args)
        for name, a, b in zip(("out", "dx", "dw", "dz", "ds"), eager, ours):
            a, b = a.detach().numpy(), b.detach().numpy()
            err = float(np.abs(a - b).max())
            print(f"{program.name} {name}: max abs err compiled vs eager {err:.3g}")
            assert err <= 1e-5 * max(1.0, float(np.abs(a).max()))
    if program.name not in ("index_setitem", "base_written_after_view"):  # these write bases
        assert "view_scatter" in str(compiled.graph)


def test_compiled_writes_through_views_into_captured_tensors():
    def run(fn_of):
        buf = ember.ones(3, 4)
        column = buf[:, 1]  # a view made outside the function

        def f(w):
            buf[1].copy_(w)
            buf.mul_(2)
            return column * 1.0

        fn = fn_of(f)
        w = ember.tensor([1.0, 2.0, 3.0, 4.0])
        return fn(w).numpy(), fn(w * 2).numpy(), buf.numpy().copy()

    eager = run(lambda f: f)
    compiled = run(ember.compile)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a, b)


def test_compiled_in_place_on_a_view_of_a_leaf_is_refused():
    p = ember.randn(3, 4, requires_grad=True)

    def f(x):
        p[0].mul_(2)
        return (p * x).sum()

    with pytest.raises(AutogradError, match="view of a leaf Variable"):
        ember.compile(f)(ember.ones(3, 4))


def _random_step(program):
    def step(x, w):
        x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
        y, loss = random_program_body(program, x, w)
        loss.backward()
        return y, x.grad, w.grad

    return step


def test_random_view_programs_compiled_match_eager():
    checked = 0
    refused = 0
    for seed in range(50):
        step = _random_step(random_program(seed))
        rng = np.random.default_rng(seed)
        x, w = (ember.tensor(rng.standard_normal((4, 5)).astype(np.float32)) for _ in range(2))
        try:
            eager = step(x, w)
        except AutogradError:  # a saved tensor was changed: compiled must refuse it too
            with pytest.raises(AutogradError, match="modified by an in-place operation"):
                ember.compile(step)(x, w)
            refused += 1
            continue
        compiled = ember.compile(step)(x, w)
        for a, b in zip(eager, compiled):
            err = float(np.abs(a.detach().numpy() - b.detach().numpy()).max())
            assert err <= 1e-5 * max(1.0, float(np.abs(a.detach().numpy()).max())), seed
        checked += 1
    print(f"{checked} random view programs: compiled equals eager; {refused} refused by both")
    assert checked >= 25 and refused >= 5


def test_compiled_training_step_writes_parameter_views_under_no_grad():
    def run(fn_of):
        p = ember.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)

        def step(x):
            loss = (p * x).sin().sum()
            loss.backward()
            with ember.no_grad():
                p.sub_(0.1 * p.grad)
                p[0].zero_()
                p.diagonal(1).mul_(0.5)
            p.grad = None
            return loss

        fn = fn_of(step)
        x = ember.tensor(np.arange(12, dtype=np.float32).reshape(3, 4) / 5)
        losses = [fn(x).item() for _ in range(3)]
        return losses, p.detach().numpy().copy(), p.requires_grad, p.is_leaf

    eager, compiled = run(lambda f: f), run(ember.compile)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-6)
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-6, atol=1e-7)
    assert compiled[2:] == eager[2:] == (True, True)


CONTIGUOUS_PROGRAMS = [  # (name, fn): each needs its strided operand made contiguous
    ("bitcast_of_transpose", lambda x: x.mT.contiguous().view(ember.int16)),
    ("bitcast_of_permuted_slice", lambda x: x[:, 1:].permute(1, 0).contiguous().view(ember.uint8)),
    ("contiguous_input", lambda x: x.contiguous().view(ember.int16)),
    ("flags_of_result", lambda x: x.mT.contiguous() * 2.0),
]


@pytest.mark.parametrize(
    "fn", [p[1] for p in CONTIGUOUS_PROGRAMS], ids=[p[0] for p in CONTIGUOUS_PROGRAMS]
)
def test_compiled_contiguous_makes_strided_values_contiguous(fn):
    """Note [Contiguous in graphs]: a graph value may be strided when the graph runs, so
    `contiguous()` on it is an op, not the value itself (which made the bitcasts fail)."""
    x = ember.tensor(np.arange(12, dtype=np.float32).reshape(3, 4) / 7)
    compiled = ember.compile(fn)
    expected, got = fn(x), compiled(x)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert got.numpy().flags.c_contiguous
    assert "contiguous" in str(compiled.graph)


def test_traced_value_is_not_known_contiguous():
    seen = []

    def f(x):
        seen.append((x.is_contiguous(), x.contiguous() is x))
        return x.contiguous()

    ember.compile(f)(ember.ones(2, 3))
    assert seen == [(False, False)]
    x = ember.ones(2, 3)
    assert x.is_contiguous() and x.contiguous() is x  # eager: itself
    assert not x.mT.is_contiguous() and x.mT.contiguous().is_contiguous()
