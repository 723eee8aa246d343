"""Time per epoch of the seed's MLP (784-128-10, batch 64, Adam) and of a small MNIST CNN,
ember against PyTorch eager, in one process, with the same loop (tensors sliced by a shuffled
index each step). Prints medians, the ratio, and one JSON line per model.

    python bench/bench_mlp.py [--repeats 3] [--cnn-steps 100] [--threads 1]

Both libraries run their BLAS on `--threads` threads (default 1: on a shared 2-core machine
oversubscribed OpenBLAS threads made NumPy's matmul ~20x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _threads_from_argv() -> int:
    """--threads N (default 1), applied to both libraries with harness.set_threads."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


_THREADS = _threads_from_argv()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mnist import load_mnist, normalized  # noqa: E402
from harness import set_threads  # noqa: E402


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
        times = [run_epoch(lib, model, x, y, steps=steps) for _ in range(repeats)]
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
    args = parser.parse_args()
    images, labels = load_mnist("train")
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
