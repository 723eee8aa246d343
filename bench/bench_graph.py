"""Graph benchmarks (issue 5): the seed's 1000 linear-regression steps compiled (TF1 session
and ember.compile) against PyTorch eager and tf.function; the seed MLP's compiled train step
against ember eager; compile times. Prints ratios and one JSON line per workload."""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import compare  # noqa: E402

import ember  # noqa: E402

X_TRAIN = [1, 2, 3, 4]
Y_TRAIN = [0, -1, -2, -3]


def _seed_tf1_ember():
    import ember.tf as tf

    tf.reset_default_graph()
    W = tf.Variable([0.3], dtype=tf.float32)
    b = tf.Variable([-0.3], dtype=tf.float32)
    x = tf.placeholder(tf.float32)
    y = tf.placeholder(tf.float32)
    loss = tf.reduce_sum(tf.square(W * x + b - y))
    train = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
    sess = tf.Session()

    def run():
        sess.run(tf.global_variables_initializer())
        for _ in range(1000):
            sess.run(train, {x: X_TRAIN, y: Y_TRAIN})
        return sess.run([W, b, loss], {x: X_TRAIN, y: Y_TRAIN})

    return run


def _seed_compiled_ember(fuse=None):
    W = ember.tensor([0.3], requires_grad=True)
    b = ember.tensor([-0.3], requires_grad=True)
    x, y = ember.tensor(X_TRAIN, dtype=ember.float32), ember.tensor(Y_TRAIN, dtype=ember.float32)

    @ember.compile(fuse=fuse)
    def step(x, y):
        loss = ((W * x + b - y) ** 2).sum()
        W.grad = None
        b.grad = None
        loss.backward()
        with ember.no_grad():
            W.sub_(W.grad * 0.01)
            b.sub_(b.grad * 0.01)
        return loss

    def run():
        with ember.no_grad():
            W.copy_(ember.tensor([0.3]))
            b.copy_(ember.tensor([-0.3]))
        for _ in range(1000):
            loss = step(x, y)
        return loss

    return run


def _seed_torch():
    import torch

    def run():
        W = torch.tensor([0.3], requires_grad=True)
        b = torch.tensor([-0.3], requires_grad=True)
        x, y = (
            torch.tensor(X_TRAIN, dtype=torch.float32),
            torch.tensor(Y_TRAIN, dtype=torch.float32),
        )
        opt = torch.optim.SGD([W, b], lr=0.01)
        for _ in range(1000):
            opt.zero_grad()
            loss = ((W * x + b - y) ** 2).sum()
            loss.backward()
            opt.step()
        return loss

    return run


def _seed_tf_function():
    import tensorflow as tf

    W = tf.Variable([0.3], dtype=tf.float32)
    b = tf.Variable([-0.3], dtype=tf.float32)
    x = tf.constant(X_TRAIN, dtype=tf.float32)
    y = tf.constant(Y_TRAIN, dtype=tf.float32)
    opt = tf.keras.optimizers.SGD(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(W * x + b - y))
        opt.apply_gradients(zip(tape.gradient(loss, [W, b]), [W, b]))
        return loss

    def run():
        W.assign([0.3])
        b.assign([-0.3])
        for _ in range(1000):
            loss = step()
        return loss

    return run


class _Data:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((64, 784)).astype(np.float32)
        self.y = rng.integers(0, 10, 64)


def _make_opt(optim, params, name):
    if name == "adam":
        return optim.Adam(params, lr=1e-3)
    return optim.SGD(params, lr=0.01)


def _mlp_step(opt_name, data):
    """The seed MLP (784-128-10, CrossEntropyLoss) train step on a batch of 64."""
    nn, optim = ember.nn, ember.optim

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc2(nn.functional.relu(self.fc1(x)))

    ember.manual_seed(0)
    model = MLP()
    criterion = nn.CrossEntropyLoss()
    opt = _make_opt(optim, model.parameters(), opt_name)

    def step(inputs, labels):
        opt.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        opt.step()
        return loss

    return step, ember.tensor(data.x), ember.tensor(data.y)


def _mlp_torch(opt_name, data):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    criterion = torch.nn.CrossEntropyLoss()
    opt = _make_opt(torch.optim, model.parameters(), opt_name)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)

    def run():
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return run


def _mlp_benchmarks(have_torch):
    from ember.backend import numba_kernels

    results = []
    data = _Data()
    for opt_name in ("sgd", "adam"):
        eager, x, y = _mlp_step(opt_name, data)
        step, _, _ = _mlp_step(opt_name, data)
        unfused_step, _, _ = _mlp_step(opt_name, data)
        numba_before = numba_kernels.compile_seconds()
        start = time.perf_counter()
        compiled = ember.compile(step)
        compiled(x, y)
        compiled(x, y)  # the second call retraces once (.grad and optimizer state appear)
        first_two = time.perf_counter() - start
        numba_s = numba_kernels.compile_seconds() - numba_before
        unfused = ember.compile(unfused_step, fuse=False)
        label = f"seed MLP {opt_name} step (batch 64)"
        run_compiled = functools.partial(compiled, x, y)
        results.append(
            compare(
                f"{label}: compiled vs ember eager",
                run_compiled,
                functools.partial(eager, x, y),
                reference="ember_eager",
                repeats=7,
            )
        )
        results.append(
            compare(
                f"{label}: fused vs unfused compiled",
                run_compiled,
                functools.partial(unfused, x, y),
                reference="ember_unfused",
                repeats=7,
            )
        )
        if have_torch:
            torch_run = _mlp_torch(opt_name, data)
            results.append(
                compare(f"{label}: compiled vs torch eager", run_compiled, torch_run, repeats=7)
            )
        line = {
            "workload": f"{label}: compile time",
            "ember_s": first_two,
            "traces": compiled.trace_count,
            "numba_compile_s": numba_s,
            "last_trace_s": compiled.compile_seconds,
        }
        print(
            f"{label + ': compile time':<40} ember {first_two * 1e3:.1f} ms for the first two "
            f"calls ({compiled.trace_count} traces; numba {numba_s * 1e3:.1f} ms)"
        )
        print(json.dumps(line))
    return results


def main():
    results = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    try:
        import tensorflow  # noqa: F401

        have_tf = True
    except ImportError:
        have_tf = False
    tf1, compiled, unfused = (
        _seed_tf1_ember(),
        _seed_compiled_ember(),
        _seed_compiled_ember(fuse=False),
    )
    W, b, loss = tf1()
    print(f"seed check (TF1 session): W: {W} b: {b} loss: {loss}")
    if have_torch:
        torch_run = _seed_torch()
        results.append(
            compare("seed 1000 steps: ember TF1 Session vs torch eager", tf1, torch_run, repeats=5)
        )
        results.append(
            compare("seed 1000 steps: ember.compile vs torch eager", compiled, torch_run, repeats=5)
        )
    results.append(
        compare(
            "seed 1000 steps: fused vs unfused compiled",
            compiled,
            unfused,
            reference="ember_unfused",
            repeats=5,
        )
    )
    if have_tf:
        tff = _seed_tf_function()
        results.append(
            compare(
                "seed 1000 steps: ember TF1 Session vs tf.function",
                tf1,
                tff,
                reference="tf.function",
                repeats=3,
            )
        )
        results.append(
            compare(
                "seed 1000 steps: ember.compile vs tf.function",
                compiled,
                tff,
                reference="tf.function",
                repeats=3,
            )
        )
    results += _mlp_benchmarks(have_torch)
    # compile time of the seed step
    start = time.perf_counter()
    _seed_compiled_ember()()
    total = time.perf_counter() - start
    print(json.dumps({"workload": "seed compile + 1000 steps (first call)", "ember_s": total}))
    return results


if __name__ == "__main__":
    main()
