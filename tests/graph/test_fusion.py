"""Elementwise fusion (Note [Fusion]): fused graphs against unfused graphs and eager, over the
op table, broadcasting and reductions, training steps, and the NumPy path without numba."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import ember
from ember.backend import numba_kernels
from ember.ops import REGISTRY
from ember.testing.op_table import ROWS, row_rng

HAVE_NUMBA = numba_kernels.available()
needs_numba = pytest.mark.skipif(
    not HAVE_NUMBA, reason="numba (the `fast` extra) is not installed or EMBER_NO_NUMBA is set"
)


def _fused_names(graph):
    return [e.attrs["ops"] for e in graph.eqns if e.name == "fused"]


def _run(fn, args, fuse, numpy_path=False):
    c = ember.compile(fn, fuse=fuse)
    if numpy_path:
        with numba_kernels.disable_for_tests():
            out = c(*args)
    else:
        out = c(*args)
    return out, c


def _arrays(x):
    if isinstance(x, ember.Tensor):
        return [np.asarray(x.detach())]
    return [a for item in x for a in _arrays(item)]


# --- the op table: each elementwise op inside a fused chain that ends in a reduction ----------
def _elementwise_cases():
    out = []
    for row in ROWS:
        if row.random or not all(isinstance(REGISTRY[op].template, str) for op in row.ops):
            continue
        for i, sample in enumerate(row.samples(row_rng(row))):
            out.append(pytest.param(row, sample, id=f"{row.name}-{sample.name or i}"))
    return out


def _float32_tensors(sample, row):
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            if a.dtype.kind == "f" and i not in row.int_args:
                a = a.astype(np.float32)
                if sample.noncontiguous and a.ndim == 2:
                    a = np.ascontiguousarray(a.T).T
                args.append(ember.from_numpy(a))
            else:
                args.append(ember.tensor(a))
        else:
            args.append(a)
    return args


@pytest.mark.parametrize("row,sample", _elementwise_cases())
def test_fused_chains_match_unfused_and_eager_over_the_op_table(row, sample):
    args = _float32_tensors(sample, row)
    pos = [i for i, a in enumerate(args) if isinstance(a, ember.Tensor)]

    def chain(*tensors):
        full = list(args)
        for i, t in zip(pos, tensors):
            full[i] = t
        y = row.fn(*full, **sample.kwargs)
        if not isinstance(y, ember.Tensor):
            return y
        if y.dtype.is_floating_point:
            z = (y * 0.5 - 0.25).abs()
        else:
            z = y.to(ember.float32) * 2.0 - 0.5 if y.dtype == ember.bool else y
        if z.dtype.is_floating_point and z.ndim > 0 and z.numel() > 0:
            return z, z.sum(dim=-1), z.amax(dim=0, keepdim=True)
        return (z,)

    leaves = [args[i] for i in pos]
    eager = _arrays(chain(*leaves))
    results = {
        "unfused": _run(chain, leaves, fuse=False)[0],
        "numpy path": _run(chain, leaves, fuse=True, numpy_path=True)[0],
    }
    if HAVE_NUMBA:
        results["numba"], c = _run(chain, leaves, fuse=True)
        if eager[0].dtype.kind == "f" and eager[0].size > 1:
            assert _fused_names(c.graph), str(c.graph)
    for how, got in results.items():
        got = _arrays(got)
        for e, g in zip(eager, got):
            assert e.shape == g.shape and e.dtype == g.dtype, (how, e.shape, g.shape)
            with np.errstate(all="ignore"):
                err = np.max(np.abs(g.astype(np.float64) - e), initial=0.0, where=np.isfinite(e))
            np.testing.assert_allclose(
                g, e, rtol=2e-6, atol=2e-6, equal_nan=True, err_msg=f"{how}: max abs error {err}"
            )


# --- broadcasting, reductions, dtypes ----------------------------------------------------------
@pytest.mark.parametrize("numpy_path", [False, True], ids=["numba", "numpy-path"])
def test_broadcasting_and_reductions(numpy_path):
    rng = np.random.default_rng(0)
    x = ember.tensor(rng.standard_normal((5, 1, 4)).astype(np.float32))
    b = ember.tensor(rng.standard_normal((3, 1)).astype(np.float32))
    w = ember.tensor(rng.standard_normal(4).astype(np.float32))
    labels = ember.tensor(rng.integers(-1, 3, 6))

    def f(x, b, w, labels):
        y = ((x + b) * w).tanh().exp() - 1.0  # [5, 3, 4]
        m = labels != -1
        picked = ember.where(m, labels, 0)  # int64 where with a literal
        count = m.to(ember.float32).sum()
        return (
            y,
            y.sum(dim=(0, 2)),
            y.amax(dim=1, keepdim=True),
            (y * 2.0).amin(),
            picked,
            count,
            (x.sum() * 3.0).sqrt(),
        )

    eager = _arrays(f(x, b, w, labels))
    got, c = _run(f, (x, b, w, labels), fuse=True, numpy_path=numpy_path)
    unfused = _arrays(_run(f, (x, b, w, labels), fuse=False)[0])
    for e, g, u in zip(eager, _arrays(got), unfused):
        assert e.dtype == g.dtype and e.shape == g.shape
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g, u, rtol=1e-6, atol=1e-6)
    names = _fused_names(c.graph)
    assert any("sum" in n for n in names) and any("amax" in n for n in names)
    assert "expand" not in [e.name for e in c.graph.eqns]


@needs_numba
def test_nan_and_division_follow_numpy():
    f = ember.compile(lambda x, y: ((x / y).exp() * 1.0 + 0.5, (x * 2.0).amax(dim=0)))
    x = ember.tensor([[1.0, float("nan")], [0.0, -1.0]])
    y = ember.tensor([[0.0, 1.0], [0.0, 1.0]])
    a, m = f(x, y)
    with np.errstate(all="ignore"):
        ref = np.exp(x.numpy() / y.numpy()) + 0.5
    # inf and NaN where NumPy gives them; exp may differ from NumPy's in the last bit
    np.testing.assert_allclose(a.numpy(), ref, rtol=2e-7, equal_nan=True)
    np.testing.assert_array_equal(m.numpy(), np.max(x.numpy() * 2, axis=0))  # NaN wins


@needs_numba
def test_kernels_compile_with_numba_and_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    f = ember.compile(lambda x: (x * 0.75 - 0.125).tanh().sum(dim=1))
    x = ember.ones(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the NumPy path
        out = f(x)
    runners = [v for v in f._last.executor.run.__globals__.values() if hasattr(v, "source")]
    assert runners, "the fused equation did not get a numba kernel"
    np.testing.assert_allclose(out.numpy(), 5 * np.tanh(np.float32(0.625)), rtol=1e-6)
    files = list((tmp_path / "numba").glob("k3_*.py"))
    assert files and list((tmp_path / "numba" / "__pycache__").glob("*.nbi"))
    # a new dispatcher for the same source loads the machine code from the cache folder
    source = files[0].read_text().split("\n\n", 1)[1]
    kernel = numba_kernels.jit_source(source + "\n", "kernel", disk=True)
    assert kernel is not None


@needs_numba
def test_kernels_are_cached_by_expression_not_by_literal_values():
    x = ember.ones(7)
    ember.compile(lambda x: (x * 0.1 + 1.0).exp())(x)
    before = numba_kernels.cache_size()
    out = ember.compile(lambda x: (x * 0.2 + 3.0).exp())(x)
    assert numba_kernels.cache_size() == before
    np.testing.assert_allclose(out.numpy(), np.exp(np.float32(0.2) + np.float32(3.0)), rtol=1e-6)


def test_fused_parameter_update_writes_in_place():
    w = ember.zeros(8, 4, requires_grad=True)
    buffer = w._data

    def step(x):
        loss = (x @ w).tanh().sum()
        w.grad = None
        loss.backward()
        with ember.no_grad():
            w.mul_(0.9).sub_(w.grad * 0.1)  # weight decay and the step: one fused update
        return loss

    c = ember.compile(step)
    x = ember.ones(3, 8)
    c(x)
    ex = c.cache[next(iter(c.cache))].executor
    assert w._data is buffer and "mul,mul,sub" in _fused_names(c.graph)
    assert "out=c0" in ex.source  # the fused update writes straight into the parameter
    np.testing.assert_allclose(w.detach().numpy(), -0.3, rtol=1e-6)


# --- training steps: fused against unfused against eager ---------------------------------------
nn, optim = ember.nn, ember.optim


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(nn.functional.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


def _train(model, data, mode, make_opt):
    criterion = nn.CrossEntropyLoss()
    opt = make_opt(model.parameters())

    def step(inputs, labels):
        opt.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        opt.step()
        return loss

    if mode == "eager":
        run = step
    else:
        run = ember.compile(step, fuse=mode != "unfused")
    if mode == "numpy path":
        with numba_kernels.disable_for_tests():
            losses = [run(x, y).item() for x, y in data]
    else:
        losses = [run(x, y).item() for x, y in data]
    return losses, run, opt


_OPTS = {
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: optim.Adam(p, lr=1e-3),
    "adamw": lambda p: optim.AdamW(p, lr=1e-3, weight_decay=0.05),
}


@pytest.mark.parametrize("opt_name", list(_OPTS))
@pytest.mark.parametrize(
    "model_cls,shape", [(_MLP, (16, 784)), (_CNN, (8, 1, 8, 8))], ids=["mlp", "cnn"]
)
def test_fused_training_steps_match_unfused_and_eager(model_cls, shape, opt_name):
    ember.manual_seed(0)
    base = model_cls()
    rng = np.random.default_rng(0)
    data = [
        (
            ember.tensor(rng.standard_normal(shape).astype(np.float32)),
            ember.tensor(rng.integers(0, 10, shape[0])),
        )
        for _ in range(20)
    ]
    modes = ["eager", "unfused", "fused", "numpy path"]
    runs = {}
    for mode in modes:
        model = copy.deepcopy(base)
        losses, run, opt = _train(model, data, mode, _OPTS[opt_name])
        runs[mode] = (losses, model, run, opt)
    eager_losses, eager_model = runs["eager"][:2]
    for mode in modes[1:]:
        losses, model, run, opt = runs[mode]
        assert run.trace_count <= 2, run.retrace_reasons
        np.testing.assert_allclose(losses, eager_losses, rtol=1e-5, atol=1e-6, err_msg=mode)
        for (name, p), q in zip(eager_model.named_parameters(), model.parameters()):
            err = np.abs(q.detach().numpy() - p.detach().numpy()).max()
            assert err < 1e-5, f"{mode} {name}: max abs error {err}"
    # the optimizer state stays PyTorch's layout, with concrete arrays
    opt = runs["fused"][3]
    state = opt.state_dict()["state"][0]
    expected = {
        "sgd-momentum": {"momentum_buffer"},
        "adam": {"step", "exp_avg", "exp_avg_sq"},
        "adamw": {"step", "exp_avg", "exp_avg_sq"},
    }[opt_name]
    assert set(state) == expected
    assert all(type(t._data) is np.ndarray for t in state.values())
    if "step" in state:
        assert state["step"].item() == 20.0
    eager_state = runs["eager"][3].state_dict()["state"][0]
    for k in expected:
        np.testing.assert_allclose(
            state[k].numpy(), eager_state[k].numpy(), rtol=1e-4, atol=1e-7, err_msg=k
        )


def test_expand_read_through_on_the_numpy_path():
    """A fused group that reads an `expand` through (the kernel broadcasts the source) gives the
    member's full shape on the NumPy path too: x.expand(2, 3, 4)'s gradient sums a (2, 3, 4)
    product, not the (3, 1) source (failed with EMBER_FAST_KERNELS=0 before)."""
    x = ember.tensor(np.random.default_rng(0).random((3, 1)), requires_grad=True)

    def grads(x):
        y = x.expand(2, 3, 4)
        return ember.autograd.grad((y * y).sum(), [x])

    (expected,) = grads(x)
    (got,), compiled = _run(grads, (x,), fuse=True, numpy_path=True)
    assert "add,sum" in _fused_names(compiled.graph)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected.detach()), rtol=1e-12)
