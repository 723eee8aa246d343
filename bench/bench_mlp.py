"""Time per epoch of the seed's MLP (784-128-10, batch 64, Adam) and of a small MNIST CNN,
ember against PyTorch eager, in one process, with the same loop (tensors sliced by a shuffled
index each step); and the MLP's compiled train step (`ember.compile`: forward, loss, backward,
Adam) against a `jax.jit` train step over the same batches, at batch 64 and batch 1. Prints
medians, the ratio, and one JSON line per workload.

    python bench/bench_mlp.py [--repeats 3] [--cnn-steps 100] [--threads 1] [--skip-jax]
    python bench/bench_mlp.py --jax-only --threads 1,2   # one process per thread count
    python bench/bench_mlp.py --profile-lines [--threads 1]  # time each generated line

Both libraries run their BLAS on `--threads` threads (default 1: on a shared 2-core machine
oversubscribed OpenBLAS threads made NumPy's matmul ~20x slower). XLA reads its thread count
when jax is imported, so each thread count runs in a fresh process, pinned to that many cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _threads_from_argv() -> int:
    """--threads N (default 1), applied to both libraries with harness.set_threads."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


def _threads_list_from_argv() -> list[int]:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return [int(t) for t in sys.argv[i + 1].split(",")]
        if a.startswith("--threads="):
            return [int(t) for t in a.split("=", 1)[1].split(",")]
    return [1]


_THREADS = _threads_list_from_argv()[0]
_KEEP_DENORMALS = "--keep-denormals" in sys.argv
# only in the process that runs the workloads: with several thread counts this one starts a
# child per count, which would inherit the first count's XLA_FLAGS and CPU affinity (the
# "2-thread" child then ran on one core: ember's 2-thread step 40 ms instead of 0.45 ms), and
# only when run as a script: bench_dispatch imports this module and keeps its own threads
if (
    __name__ == "__main__"
    and len(_threads_list_from_argv()) == 1
    and ("--jax-only" in sys.argv or "--skip-jax" not in sys.argv)
):
    # before jax is imported: XLA's CPU thread pool size is fixed when it starts
    os.environ.setdefault(
        "XLA_FLAGS",
        f"--xla_cpu_multi_thread_eigen={'true' if _THREADS > 1 else 'false'} "
        f"intra_op_parallelism_threads={_THREADS}",
    )
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > _THREADS:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:_THREADS])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mnist import load_mnist, normalized  # noqa: E402
from harness import set_threads, wait_idle  # noqa: E402


def mlp(lib):
    nn = lib.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc2(lib.nn.functional.relu(self.fc1(x)))

    return MLP()


def cnn(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


def run_epoch(lib, model, x, y, batch_size=64, steps=None):
    """One pass of the seed's loop; returns seconds."""
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-3)
    criterion = lib.nn.CrossEntropyLoss()
    n = len(y)
    order = lib.randperm(n)
    start = time.perf_counter()
    for i, begin in enumerate(range(0, n, batch_size)):
        if steps is not None and i >= steps:
            break
        index = order[begin : begin + batch_size]
        optimizer.zero_grad()
        loss = criterion(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        loss.item()
    return time.perf_counter() - start


def bench(name, build, images, labels, repeats, steps, reshape):
    import torch

    import ember

    set_threads(_THREADS)
    results = {}
    for lib in (ember, torch):
        x = lib.from_numpy(reshape(normalized(images)))
        y = lib.from_numpy(labels)
        lib.manual_seed(0)
        model = build(lib)
        run_epoch(lib, model, x, y, steps=20)  # warm-up
        times = []
        for _ in range(repeats):
            wait_idle()  # the other library's threads idle (Note [Quiet side] in harness.py)
            times.append(run_epoch(lib, model, x, y, steps=steps))
        results[lib.__name__] = statistics.median(times)
    n_steps = steps if steps is not None else -(-len(labels) // 64)
    per_epoch = {k: v * (-(-len(labels) // 64)) / n_steps for k, v in results.items()}
    ratio = per_epoch["ember"] / per_epoch["torch"]
    print(
        f"{name}: ember {per_epoch['ember']:.2f} s/epoch, PyTorch eager "
        f"{per_epoch['torch']:.2f} s/epoch -> ember/PyTorch = {ratio:.2f}x "
        f"(median of {repeats}, {n_steps} steps of batch 64, {_THREADS} BLAS thread(s))"
    )
    print(
        json.dumps(
            {
                "bench": name,
                "ember_s_per_epoch": round(per_epoch["ember"], 4),
                "torch_s_per_epoch": round(per_epoch["torch"], 4),
                "ratio": round(ratio, 3),
                "steps_timed": n_steps,
                "repeats": repeats,
                "threads": int(_THREADS),
            }
        )
    )
    return ratio


# --- compiled train step: ember.compile against jax.jit ------------------------------------------


def _ember_compiled_step():
    import ember

    ember.manual_seed(0)
    model = mlp(ember)
    optimizer = ember.optim.Adam(model.parameters(), lr=1e-3)
    criterion = ember.nn.CrossEntropyLoss()

    @ember.compile
    def step(x, y):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    weights = [p.detach().numpy().copy() for p in model.parameters()]
    return step, weights


def _jax_step(weights):
    """The same MLP, loss and Adam (PyTorch's formula, eps outside the square root) as one
    jitted function; parameters and moments are donated, so XLA updates them in place."""
    import jax
    import jax.numpy as jnp

    params = [jnp.asarray(w) for w in weights]
    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

    def loss_fn(p, x, y):
        w1, c1, w2, c2 = p
        h = jax.nn.relu(x @ w1.T + c1)
        logits = h @ w2.T + c2
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(p, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1.0
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        c1, c2 = 1 - b1**t, 1 - b2**t
        p = [pi - lr * (mi / c1) / (jnp.sqrt(vi / c2) + eps) for pi, mi, vi in zip(p, m, v)]
        return p, m, v, t, loss

    state = [params, m, v, jnp.float32(0.0)]

    def run(x, y):
        p, m_, v_, t, loss = step(*state, x, y)
        state[:] = [p, m_, v_, t]
        return loss

    return run


def bench_compiled_vs_jax(images, labels, batch_size, steps, rounds):
    """Per-epoch time of the compiled MLP step (batch `batch_size`, Adam), ember against JAX,
    over the same shuffled batches (sliced before timing), interleaved rounds."""
    import jax

    import ember

    set_threads(_THREADS)
    # XLA flushes denormal floats to zero on its CPU threads; ember does the same when asked
    # (Note [Denormals]): Adam's moments of dead units decay into that range within a few
    # hundred steps, and denormal arithmetic is ~100x slower
    flushed = ember.set_flush_denormal(not _KEEP_DENORMALS)
    x_all = normalized(images).reshape(-1, 784)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    n_batches = min(steps, len(labels) // batch_size)
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
    xs = [np.ascontiguousarray(x_all[b]) for b in batches]
    ys = [labels[b].astype(np.int64) for b in batches]
    e_batches = [(ember.from_numpy(x), ember.from_numpy(y)) for x, y in zip(xs, ys)]
    j_batches = [(jax.device_put(x), jax.device_put(y.astype(np.int32))) for x, y in zip(xs, ys)]
    step, weights = _ember_compiled_step()
    jstep = _jax_step(weights)

    def run_ember():
        loss = None
        for x, y in e_batches:
            loss = step(x, y)
        return float(loss.item())

    def run_jax():
        loss = None
        for x, y in j_batches:
            loss = jstep(x, y)
        return float(loss)

    run_ember(), run_jax()  # warm-up: traces, compiles, first steps
    te, tj, ce, cj = [], [], [], []  # wall seconds; CPU seconds of this process
    for _ in range(rounds):  # each side once the other's threads are idle (Note [Quiet side])
        wait_idle()
        start, cpu = time.perf_counter(), time.process_time()
        loss_e = run_ember()
        te.append(time.perf_counter() - start)
        ce.append(time.process_time() - cpu)
        wait_idle()
        start, cpu = time.perf_counter(), time.process_time()
        loss_j = run_jax()
        tj.append(time.perf_counter() - start)
        cj.append(time.process_time() - cpu)
    # on a machine shared with other busy processes the wall clock also counts the time the
    # scheduler gave them; the process's CPU time (all its threads, XLA's included) does not
    cpu_ratio = statistics.median(ce) / statistics.median(cj)
    per_epoch = -(-len(labels) // batch_size) / n_batches
    ratios = sorted(a / b for a, b in zip(te, tj))
    me, mj = statistics.median(te) * per_epoch, statistics.median(tj) * per_epoch
    print(
        f"mlp compiled step, batch {batch_size}: ember {me:.3f} s/epoch "
        f"({me / per_epoch / n_batches * 1e6:.0f} us/step), jax.jit {mj:.3f} s/epoch "
        f"({mj / per_epoch / n_batches * 1e6:.0f} us/step) -> ember/JAX = {me / mj:.2f}x "
        f"(per-round ratios min {ratios[0]:.2f} median {statistics.median(ratios):.2f} "
        f"max {ratios[-1]:.2f}; {rounds} rounds of {n_batches} steps, {_THREADS} thread(s); "
        f"CPU-time ratio {cpu_ratio:.2f}; last losses {loss_e:.4f} / {loss_j:.4f}; denormals "
        f"{'flushed' if flushed and not _KEEP_DENORMALS else 'kept'} in ember)"
    )
    ember.set_flush_denormal(False)
    print(
        json.dumps(
            {
                "bench": f"mlp_compiled_adam_batch{batch_size}_vs_jax",
                "ember_s_per_epoch": round(me, 4),
                "jax_s_per_epoch": round(mj, 4),
                "ratio": round(me / mj, 3),
                "ratio_min": round(ratios[0], 3),
                "ratio_max": round(ratios[-1], 3),
                "cpu_time_ratio": round(cpu_ratio, 3),
                "steps_timed": n_batches,
                "rounds": rounds,
                "threads": int(_THREADS),
                "flush_denormal": bool(flushed and not _KEEP_DENORMALS),
            }
        )
    )
    return me / mj


def profile_compiled_step(batch_size, steps=300, rounds=5):
    """Time each line of the compiled MLP step's generated executor (Note [Executor]): the
    kernel calls one step makes and where the time goes. The lines are timed in a copy of the
    executor's source with a clock read around each; the whole call and the bare executor are
    timed unchanged first."""
    import ember

    set_threads(_THREADS)
    ember.set_flush_denormal(not _KEEP_DENORMALS)
    step, _ = _ember_compiled_step()
    rng = np.random.default_rng(0)
    xs = [ember.from_numpy(rng.random((batch_size, 784), dtype=np.float32)) for _ in range(steps)]
    ys = [ember.from_numpy(rng.integers(0, 10, batch_size)) for _ in range(steps)]
    for x, y in zip(xs[:50], ys[:50]):
        step(x, y)
    executor = step._last.executor
    lines = executor.source.splitlines()
    labels, timed = [], [lines[0], "    _clock = _perf_counter"]
    for line in lines[1:-1]:
        text = line.strip()
        if text.startswith(("del ", "with ")):
            timed.append(line)
            continue
        indent = line[: len(line) - len(text)]
        timed += [indent + "_t0 = _clock()", line]
        timed.append(indent + f"_TIMES[{len(labels)}] += _clock() - _t0")
        labels.append(text)
    timed.append(lines[-1])
    namespace = dict(executor.globals)
    totals = np.zeros(len(labels))
    namespace.update(_TIMES=totals, _perf_counter=time.perf_counter)
    exec(compile("\n".join(timed), "<timed ember graph>", "exec"), namespace)
    arrays = [(x.array, y.array) for x, y in zip(xs, ys)]
    captures = [t.array for t in executor.captures]

    def per_step(fn):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(steps):
                fn(i)
            times.append((time.perf_counter() - start) / steps * 1e6)
        return f"min {min(times):.0f} us, median {statistics.median(times):.0f} us"

    print(f"compiled MLP step, batch {batch_size}, {_THREADS} thread(s):")
    print(f"  the compiled function: {per_step(lambda i: step(xs[i], ys[i]))}")
    print(f"  its executor alone:    {per_step(lambda i: executor.run(*arrays[i], *captures))}")
    timed_run = namespace["run"]
    per_step(lambda i: timed_run(*arrays[i], *captures))  # warm-up
    totals[:] = 0
    per_step(lambda i: timed_run(*arrays[i], *captures))
    totals *= 1e6 / (rounds * steps)
    print(f"  {len(labels)} kernel calls, {totals.sum():.0f} us timed line by line (per step):")
    for us, text in sorted(zip(totals, labels), reverse=True):
        print(f"  {us:8.1f} us  {text[:100]}")


def _jax_available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cnn-steps",
        type=int,
        default=100,
        help="steps timed for the CNN (per-epoch time is extrapolated)",
    )
    parser.add_argument("--threads", default="1")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-jax", action="store_true", help="no compiled-step comparison")
    parser.add_argument("--jax-only", action="store_true", help="only the compiled-step one")
    parser.add_argument("--jax-rounds", type=int, default=5)
    parser.add_argument(
        "--profile-lines",
        action="store_true",
        help="time each line of the compiled step's executor (batch 64 and 1), no JAX",
    )
    parser.add_argument(
        "--keep-denormals", action="store_true", help="ember computes with denormals (JAX never)"
    )
    args = parser.parse_args()
    threads = _threads_list_from_argv()
    if len(threads) > 1:  # one fresh process per thread count (XLA fixes its pool at import)
        for n in threads:
            raw = sys.argv[1:]
            argv = [
                a
                for i, a in enumerate(raw)
                if not a.startswith("--threads") and (i == 0 or raw[i - 1] != "--threads")
            ]
            cmd = [sys.executable, os.path.abspath(__file__), *argv, "--threads", str(n)]
            subprocess.run(cmd, check=True)
        return
    if args.profile_lines:
        profile_compiled_step(64)
        profile_compiled_step(1)
        return
    images, labels = load_mnist("train")
    if args.jax_only or (not args.skip_jax and _jax_available()):
        bench_compiled_vs_jax(images, labels, 64, 10**9, args.jax_rounds)
        bench_compiled_vs_jax(images, labels, 1, 3000, args.jax_rounds)
    if args.jax_only:
        return
    bench(
        "mlp_784_128_10_adam", mlp, images, labels, args.repeats, None, lambda a: a.reshape(-1, 784)
    )
    if not args.skip_cnn:
        bench(
            "cnn_mnist_adam",
            cnn,
            images,
            labels,
            args.repeats,
            args.cnn_steps,
            lambda a: a[:, None],
        )


if __name__ == "__main__":
    main()
