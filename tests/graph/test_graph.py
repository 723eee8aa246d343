"""ember.compile: IR printing and checking, cache and retraces, errors, passes, executor,
control flow, and compiled training steps against eager."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import ember
from ember.graph import ConcretizationError, GraphError, RetraceWarning
from ember.graph import passes as P
from ember.graph.compile import trace as _trace


def _seed_step(W, b):
    def step(x, y):
        loss = ((W * x + b - y) ** 2).sum()
        W.grad = None
        b.grad = None
        loss.backward()
        with ember.no_grad():
            W.sub_(W.grad * 0.01)
            b.sub_(b.grad * 0.01)
        return loss

    return step


def _seed_data():
    return ember.tensor([1.0, 2, 3, 4]), ember.tensor([0.0, -1, -2, -3])


def test_seed_linear_regression_compiled_equals_eager():
    x, y = _seed_data()
    We, be = ember.tensor([0.3], requires_grad=True), ember.tensor([-0.3], requires_grad=True)
    Wc, bc = ember.tensor([0.3], requires_grad=True), ember.tensor([-0.3], requires_grad=True)
    eager, compiled = _seed_step(We, be), ember.compile(_seed_step(Wc, bc))
    for _ in range(1000):
        le = eager(x, y)
        lc = compiled(x, y)
    np.testing.assert_allclose(Wc.detach().numpy(), We.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(bc.detach().numpy(), be.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(lc.item(), le.item(), rtol=1e-4, atol=1e-12)
    assert abs(Wc.item() + 0.9999969) < 1e-5 and abs(bc.item() - 0.99999082) < 1e-5
    assert Wc.requires_grad and Wc.is_leaf and Wc.grad is not None
    np.testing.assert_allclose(Wc.grad.numpy(), We.grad.numpy(), rtol=1e-3, atol=1e-9)
    assert compiled.trace_count <= 2  # a second variant once the .grad tensors exist


def test_graph_prints_like_a_jaxpr_and_is_well_formed():
    f = ember.compile(lambda x, y: (x * y + 1.0).sum(), fuse=False)
    f(ember.ones(3), ember.ones(3))
    text = str(f.graph)
    assert text.startswith("{ lambda x:f32[3] y:f32[3]")
    assert "mul x y" in text and "sum[" in text and text.rstrip().endswith("}")
    f.graph.check()


def test_check_rejects_use_before_definition():
    g = ember.compile(lambda x: x.exp() * 2.0, fuse=False).trace(ember.ones(2))
    g.eqns.reverse()
    with pytest.raises(GraphError, match="before it is defined"):
        g.check()


def test_symbolic_gradients_are_graph_nodes_from_the_same_vjps():
    w = ember.tensor([1.0, 2.0], requires_grad=True)

    def f(x):
        return ember.autograd.grad((w * x).exp().sum(), [w])[0]

    c = ember.compile(f, fuse=False)
    x = ember.tensor([0.5, -1.0])
    np.testing.assert_allclose(c(x).numpy(), f(x).numpy(), rtol=1e-6)
    names = [e.name for e in c.graph.eqns]
    assert names.count("exp") == 1 and "mul" in names  # forward exp reused by its VJP


def test_cache_keys_on_shapes_dtypes_and_python_values_with_reasons():
    f = ember.compile(lambda x, scale: x * scale)
    f(ember.ones(2), 2.0)
    f(ember.ones(2), 2.0)
    assert f.trace_count == 1
    f(ember.ones(3), 2.0)
    assert f.retrace_reasons[-1] == "x: shape [2] -> [3]"
    f(ember.ones(3), 3.0)
    assert f.retrace_reasons[-1] == "scale: 2.0 -> 3.0"
    f(ember.ones(3, dtype=ember.float64), 3.0)
    assert "dtype float32 -> float64" in f.retrace_reasons[-1]
    assert f.trace_count == 4


def test_too_many_retraces_warn_and_the_cache_is_bounded():
    f = ember.compile(lambda x: x + 1.0, max_cache_size=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, 9):
            f(ember.ones(n))
    assert any(issubclass(w.category, RetraceWarning) for w in caught)
    assert len(f.cache) == 3
    np.testing.assert_allclose(f(ember.ones(8)).numpy(), 2.0)


def test_tensor_control_flow_points_at_the_line_and_names_cond_and_while_loop():
    def f(x):
        if x.sum() > 0:  # the line the error points at
            return x
        return -x

    with pytest.raises(ConcretizationError) as info:
        ember.compile(f)(ember.ones(2))
    message = str(info.value)
    assert "ember.cond" in message and "ember.while_loop" in message
    assert "test_graph.py" in message and "run_eagerly" in message


def test_tracing_errors_leave_parameters_untouched():
    w = ember.tensor([1.0], requires_grad=True)

    def f(x):
        with ember.no_grad():
            w.add_(x)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        ember.compile(f)(ember.ones(1))
    assert type(w._data) is np.ndarray and w.item() == 1.0 and w.requires_grad


def test_run_eagerly_switch(monkeypatch):
    calls = []

    def f(x):
        calls.append(1)
        return x * 2.0

    c = ember.compile(f)
    monkeypatch.setattr(ember.config, "run_eagerly", True)
    c(ember.ones(1))
    c(ember.ones(1))
    assert len(calls) == 2 and not c.cache


def test_errors_in_compiled_graphs_name_the_op_and_line():
    def f(x, idx):
        return ember.gather(x, 0, idx)  # the failing op's line

    c = ember.compile(f)
    x = ember.ones(3)
    c(x, ember.tensor([0, 1]))
    with pytest.raises(GraphError) as info:
        c(x, ember.tensor([0, 7]))
    assert "op gather failed" in str(info.value) and "test_graph.py" in str(info.value)


def test_dce_cse_folding_and_simplification():
    def f(x):
        unused = x.exp()  # noqa: F841
        a = x.sin() + x.sin()
        k = ember.ones(3) * 2.0 + 1.0  # constant
        return (a * k * 1.0).reshape(3)

    g, *_ = _trace(f, (ember.ones(3),), {}, [ember.ones(3)], ["x"])
    before = [e.name for e in g.eqns]
    assert "exp" in before and before.count("sin") == 2
    P.run_passes(g, fuse=False)
    names = [e.name for e in g.eqns]
    assert "exp" not in names and names.count("sin") == 1 and "reshape" not in names
    assert len(names) == 3  # sin, add, mul by the folded constant


def test_print_graph_after_each_pass(monkeypatch, capsys):
    monkeypatch.setenv("EMBER_PRINT_GRAPH", "1")
    ember.compile(lambda x: x * 1.0 + 0.0)(ember.ones(2))
    out = capsys.readouterr().out
    for stage in (
        "after tracing",
        "after simplify",
        "after constant folding",
        "after cse",
        "after dce",
    ):
        assert stage in out


def test_executor_reuses_buffers_and_updates_parameters_in_place():
    w = ember.zeros(64, requires_grad=True)
    buffer = w._data

    def step(x):
        loss = ((w * x).tanh() * x).exp().sin().cos().sum()
        w.grad = None
        loss.backward()
        with ember.no_grad():
            w.sub_(w.grad * 0.1)
        return loss

    c = ember.compile(step, fuse=False)
    c(ember.ones(64))
    ex = c.cache[next(iter(c.cache))].executor
    n_values = sum(e.out.nbytes for e in c.graph.eqns)
    assert ex.buffers_bytes < n_values / 2
    assert "out=c0" in ex.source  # the update writes straight into the parameter
    assert w._data is buffer


def test_results_are_not_overwritten_by_later_calls():
    c = ember.compile(lambda x: (x * 2.0, (x + 1.0).exp()))
    a1, b1 = c(ember.ones(2))
    c(ember.zeros(2))
    np.testing.assert_allclose(a1.numpy(), 2.0)
    np.testing.assert_allclose(b1.numpy(), np.e**2, rtol=1e-6)


def test_gradients_accumulate_without_zero_grad():
    w = ember.tensor([1.0, 2.0], requires_grad=True)

    def step(x):
        (w * x).sum().backward()

    c = ember.compile(step)
    c(ember.ones(2))
    c(ember.ones(2))
    c(ember.ones(2))
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 3.0])


def test_cond_and_while_loop():
    f = ember.compile(lambda x: ember.cond(x.sum() > 0, lambda v: v * 2.0, lambda v: -v, x))
    np.testing.assert_allclose(f(ember.ones(2)).numpy(), 2.0)
    np.testing.assert_allclose(f(-ember.ones(2)).numpy(), 1.0)
    g = ember.compile(
        lambda x: ember.while_loop(
            lambda i, s: i < 10, lambda i, s: (i + 1, s * 2.0), (ember.tensor(0), x)
        )
    )
    i, s = g(ember.ones(3))
    assert i.item() == 10 and np.allclose(s.numpy(), 1024.0)
    assert any(e.name == "while_loop" for e in g.graph.eqns)
    # eagerly both are plain Python
    assert ember.while_loop(lambda i: i < 5, lambda i: i + 2, ember.tensor(0)).item() == 6


def test_cond_is_differentiable():
    w = ember.tensor([2.0], requires_grad=True)

    def f(x):
        y = ember.cond(x.sum() > 0, lambda v: v * w, lambda v: v * w * w, x)
        return ember.autograd.grad(y.sum(), [w])[0]

    c = ember.compile(f)
    np.testing.assert_allclose(c(ember.ones(1)).numpy(), [1.0])
    np.testing.assert_allclose(c(-ember.ones(1)).numpy(), [-4.0])


# --- compiled training steps of nn models -------------------------------------------------------
from ember import nn, optim  # noqa: E402


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = nn.functional.relu(self.fc1(x))
        return self.fc2(x)


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(nn.functional.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


def _train(model, data, compiled, momentum=0.0):
    criterion = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=momentum)

    def step(inputs, labels):
        opt.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        opt.step()
        return loss

    run = ember.compile(step) if compiled else step
    losses = [run(x, y).item() for x, y in data]
    return losses, run


@pytest.mark.parametrize(
    "model_cls,shape", [(_MLP, (16, 784)), (_CNN, (8, 1, 8, 8))], ids=["mlp", "cnn"]
)
def test_compiled_training_step_matches_eager_after_20_steps(model_cls, shape):
    ember.manual_seed(0)
    eager_model = model_cls()
    compiled_model = copy.deepcopy(eager_model)
    rng = np.random.default_rng(0)
    data = [
        (
            ember.tensor(rng.standard_normal(shape).astype(np.float32)),
            ember.tensor(rng.integers(0, 10, shape[0])),
        )
        for _ in range(20)
    ]
    eager_losses, _ = _train(eager_model, data, compiled=False)
    compiled_losses, run = _train(compiled_model, data, compiled=True)
    assert run.trace_count <= 2
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager_model.named_parameters(), compiled_model.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), atol=1e-5, err_msg=name)


def test_second_call_of_a_training_step_does_not_retrace():
    """Note [Trace ahead]: the variant with parameters' .grad present (and the optimizer's
    state created) is traced during the first call, so later calls never retrace."""
    ember.manual_seed(0)
    model = _MLP()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    @ember.compile
    def step(x, y):
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    x, y = ember.ones(4, 784), ember.tensor([0, 1, 2, 3])
    step(x, y)
    traced = step.trace_count
    assert traced == 2 and "traced ahead" in step.retrace_reasons[-1]
    for _ in range(3):
        step(x, y)
    assert step.trace_count == traced
    assert all(type(p.grad._data) is np.ndarray for p in model.parameters())
