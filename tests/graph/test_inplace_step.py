"""The compiled training step updates parameters and optimizer state in place (Note [Executor],
Note [In-place fused kernels], Note [Gradient buffers]) and gives eager's numbers: the MLP
step with Adam / AdamW / SGD, at batch 64 and batch 1, against the same step run eagerly."""

from __future__ import annotations

import copy
import weakref

import numpy as np
import pytest

import ember
from ember.backend import numba_kernels

nn, optim = ember.nn, ember.optim


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


_OPTS = {
    "adam": lambda p: optim.Adam(p, lr=1e-3),
    "adamw": lambda p: optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
}


def _ulps(a, b):
    """Distance in float32 units in the last place, element by element."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**31)) - ia, ia)  # order negative floats
    ib = np.where(ib < 0, np.int64(-(2**31)) - ib, ib)
    return np.abs(ia - ib)


def _step_fn(model, opt):
    criterion = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("batch", [64, 1])
@pytest.mark.parametrize("opt_name", list(_OPTS))
def test_compiled_step_updates_in_place_and_matches_eager(opt_name, batch):
    ember.manual_seed(0)
    base = _MLP()
    rng = np.random.default_rng(1)
    data = [
        (
            ember.tensor(rng.standard_normal((batch, 784)).astype(np.float32)),
            ember.tensor(rng.integers(0, 10, batch)),
        )
        for _ in range(12)
    ]
    eager_model, model = copy.deepcopy(base), copy.deepcopy(base)
    eager_opt, opt = _OPTS[opt_name](eager_model.parameters()), _OPTS[opt_name](model.parameters())
    eager_step = _step_fn(eager_model, eager_opt)
    compiled = ember.compile(_step_fn(model, opt))
    eager_losses = [eager_step(x, y).item() for x, y in data[:3]]
    losses = [compiled(x, y).item() for x, y in data[:3]]
    # from the third call on, one graph runs and writes into the same arrays
    params = [p._data for p in model.parameters()]
    state = [t._data for s in opt.state.values() for t in s.values()]
    # weak references: holding a gradient array would make the next call give it up
    # (Note [Gradient buffers])
    grads = [weakref.ref(p.grad._data) for p in model.parameters()]
    eager_losses += [eager_step(x, y).item() for x, y in data[3:]]
    losses += [compiled(x, y).item() for x, y in data[3:]]
    assert compiled.trace_count <= 2, compiled.retrace_reasons
    assert [p._data for p in model.parameters()] == params  # identity: updated in place
    assert all(
        a is b for a, b in zip([t._data for s in opt.state.values() for t in s.values()], state)
    )
    assert all(p.grad._data is g() for p, g in zip(model.parameters(), grads))
    source = compiled._last.executor.source
    if numba_kernels.available():
        assert "copyto(" not in source, source  # nothing is copied back after the step
    # eager's numbers bit for bit: the fused kernels round every step to the op's dtype, as
    # eager's NumPy calls do, and the reductions are the same NumPy calls
    assert losses == eager_losses
    for (name, p), q in zip(eager_model.named_parameters(), model.parameters()):
        ulps = _ulps(q.detach().numpy(), p.detach().numpy())
        assert ulps.max() == 0, f"{opt_name} {name}: {ulps.max()} ulp"
    for k, (es, s) in enumerate(zip(eager_opt.state.values(), opt.state.values())):
        for key in es:
            ulps = _ulps(s[key].numpy(), es[key].numpy())
            assert ulps.max() == 0, f"{opt_name} state {k} {key}: {ulps.max()} ulp"


def test_a_held_gradient_keeps_its_values():
    """Gradient accumulation outside the graph: the old .grad is held while the next call runs;
    the graph then writes a new buffer instead of the held one (Note [Gradient buffers])."""
    w = ember.tensor([1.0, 2.0], requires_grad=True)

    def step(x):
        w.grad = None
        (w * x).sum().backward()

    c = ember.compile(step)
    total = None
    for k in range(4):
        held = w.grad
        c(ember.full((2,), float(k + 1)))
        if held is not None:
            np.testing.assert_array_equal(held.numpy(), float(k))  # unchanged by this call
    total = w.grad.numpy()
    np.testing.assert_array_equal(total, 4.0)


def test_gradients_are_not_shared_between_parameters():
    """Two parameters whose gradients are one graph value (merged by CSE) get separate .grad
    arrays: an in-place change to one (clipping) leaves the other alone."""
    a = ember.zeros(4, requires_grad=True)
    b = ember.zeros(4, requires_grad=True)

    def step(x):
        a.grad = None
        b.grad = None
        ((a + b) * x).sum().backward()

    c = ember.compile(step)
    for _ in range(3):
        c(ember.ones(4) * 2.0)
    assert a.grad._data is not b.grad._data
    a.grad.mul_(0.0)
    np.testing.assert_array_equal(b.grad.numpy(), 2.0)


def test_flush_denormal_switch():
    """ember.set_flush_denormal: a denormal result reads as zero while on (as in JAX and
    torch.set_flush_denormal), and IEEE arithmetic is back when off."""
    tiny = np.array([1e-39], np.float32)
    if not ember.set_flush_denormal(True):
        pytest.skip("this platform has no flush-to-zero switch (x86-64 Linux only)")
    try:  # as bits: with the flags on, `== 0.0` would read any denormal as zero
        assert (tiny * np.float32(1.0)).view(np.int32)[0] == 0
    finally:
        assert ember.set_flush_denormal(False)
    assert (tiny * np.float32(1.0))[0] == np.float32(1e-39)


_ON_EACH_THREAD = """\
from numba import get_thread_id


def times_one_on_each(x, one, out, ran_on):
    for i in prange(out.shape[0]):
        out[i] = x[i] * one[i]
        ran_on[i] = get_thread_id()
"""


def test_flush_denormal_reaches_the_compute_threads():
    """Note [Denormals on every thread]: a denormal product computed on a worker of ember's pool
    or of numba's team, both started before the switch, flushes while it is on and keeps IEEE
    arithmetic once it is off again. Results are compared as bits: with the flags on, the
    comparison itself would read a denormal as zero."""
    import threading

    from ember.backend import parallel

    if not ember.set_flush_denormal(False):
        pytest.skip("this platform has no flush-to-zero switch (x86-64 Linux only)")
    tiny = np.full(2, 1e-39, np.float32)
    kernel = numba_kernels.jit_source(_ON_EACH_THREAD, "times_one_on_each", parallel=True)
    numba_threads = numba_kernels._load().config.NUMBA_NUM_THREADS if kernel else 0
    before = ember.get_num_threads()
    ember.set_num_threads(2)

    def on_numba_workers():
        numba_kernels.follow_budget()
        out, ran_on = np.empty(2, np.float32), np.empty(2, np.int64)
        kernel(tiny, np.ones(2, np.float32), out, ran_on)  # not foldable: a run-time factor
        assert sorted(ran_on) == [0, 1]  # the caller and one worker
        return out.view(np.int32)

    def on_pool_workers():
        results, met = {}, threading.Barrier(2)

        def chunk(i):
            met.wait(10)  # each chunk on its own thread: the caller and the worker
            main = threading.get_ident() == threading.main_thread().ident
            results[main] = np.multiply(tiny, np.float32(1.0)).view(np.int32)

        parallel.run_chunks(chunk, [(0,), (1,)])
        assert set(results) == {True, False}
        return np.concatenate([results[True], results[False]])

    denormal = tiny.view(np.int32)[0]
    try:
        runs = [on_pool_workers] + ([on_numba_workers] if numba_threads >= 2 else [])
        for run in runs:  # the workers start (or are already running) with IEEE arithmetic
            np.testing.assert_array_equal(run(), denormal)
        assert ember.set_flush_denormal(True)
        for run in runs:
            np.testing.assert_array_equal(run(), 0)
        assert ember.set_flush_denormal(False)
        for run in runs:
            np.testing.assert_array_equal(run(), denormal)
    finally:
        ember.set_flush_denormal(False)
        ember.set_num_threads(before)


@pytest.mark.parametrize("batch", [64, 1])
def test_compiled_step_gives_the_same_bits_on_one_and_two_threads(batch):
    """The compiled MNIST MLP step (784-128-10, Adam) run on 1 and on 2 threads from the same
    start gives the same weights bit for bit: its split products compute every element with the
    same MKL call (Note [Split on numba's threads]) and its parallel fused kernels every element
    with the same loop (Note [Parallel loops])."""
    from ember.backend import blas

    if not blas.mkl_available():
        pytest.skip("MKL not installed: OpenBLAS's 1- and 2-thread products may round apart")
    rng = np.random.default_rng(batch)
    batches = [
        (
            ember.from_numpy(rng.standard_normal((batch, 784)).astype(np.float32)),
            ember.from_numpy(rng.integers(0, 10, batch)),
        )
        for _ in range(4)
    ]
    before = ember.get_num_threads()
    weights = {}
    try:
        for threads in (1, 2):
            ember.set_num_threads(threads)
            ember.manual_seed(0)
            model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
            step = ember.compile(_step_fn(model, optim.Adam(model.parameters(), lr=1e-3)))
            for x, y in batches:
                step(x, y)
            weights[threads] = [p.detach().numpy().copy() for p in model.parameters()]
    finally:
        ember.set_num_threads(before)
    for one, two in zip(weights[1], weights[2]):
        np.testing.assert_array_equal(one, two)
