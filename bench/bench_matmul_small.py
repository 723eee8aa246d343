"""The matrix products of issue 21's workloads (Note [Small GEMMs]): every 2-D GEMM shape of
the MiniLM forward (1 x 16, 5 x 12 serving, 32 x 128), the fine-tuning step 16 x 128 (forward
and the two backward products, transposed operands as the VJPs make them) and the MNIST MLP
784-128-10 (batch 64 and 1, forward and backward), through ember's CPU matmul dispatch
(`blas.matmul`: MKL for 2-D float products when installed, NumPy's OpenBLAS otherwise), plain
NumPy (OpenBLAS) and PyTorch (MKL) on the same operands, in interleaved rounds, at 1 and 2
threads. With MKL loaded, `--packed` adds MKL's packed-weight product (cblas_sgemm_compute
on a weight packed once) for the x @ weight.T shapes. Prints min and median per call and the
ratios, one JSON line per product.

    python bench/bench_matmul_small.py [--rounds 9] [--threads 1 2] [--only minilm mlp ...]
        [--packed]

EMBER_BLAS=openblas runs the ember column on OpenBLAS only (its ratio to numpy is then ~1).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))

# ember before NumPy, as a script that starts with `import ember`: OpenBLAS's idle workers
# then spin ~30 us, not 0.1 s into the next product (Note [BLAS spin] in ember/backend/threads.py)
import ember  # noqa: E402, F401, I001

import numpy as np  # noqa: E402
from harness import set_threads, wait_idle  # noqa: E402

from ember.backend import blas  # noqa: E402

HIDDEN, INTER = 384, 1536  # MiniLM hidden and intermediate sizes


def _linear(rows):  # x @ weight.T for MiniLM's three weight shapes (attention, FFN up, down)
    return [
        (rows, HIDDEN, HIDDEN, "c", "t"),
        (rows, HIDDEN, INTER, "c", "t"),
        (rows, INTER, HIDDEN, "c", "t"),
    ]


# group -> [(name, m, k, n, layout of a, layout of b)]: "c" C-contiguous, "t" a transposed
# view of a C-contiguous matrix (weight.T in the forward, g.mT in a weight's gradient)
WORKLOADS = {
    "minilm 1x16": [("fwd x@W.T", *s) for s in _linear(16)],
    "minilm 5x12": [("fwd x@W.T", *s) for s in _linear(60)],
    "minilm 32x128": [("fwd x@W.T", *s) for s in _linear(4096)],
    "finetune 16x128": [("fwd x@W.T", *s) for s in _linear(2048)]
    + [("bwd g@W", 2048, n, k, "c", "c") for (_, k, n, _, _) in _linear(0)]
    + [("bwd g.T@x", n, 2048, k, "t", "c") for (_, k, n, _, _) in _linear(0)],
    "mlp batch 64": [
        ("fwd x@W1.T", 64, 784, 128, "c", "t"),
        ("fwd h@W2.T", 64, 128, 10, "c", "t"),
        ("bwd g2@W2", 64, 10, 128, "c", "c"),
        ("bwd g2.T@h", 10, 64, 128, "t", "c"),
        ("bwd g1.T@x", 128, 64, 784, "t", "c"),
    ],
    "mlp batch 1": [
        ("fwd x@W1.T", 1, 784, 128, "c", "t"),
        ("fwd h@W2.T", 1, 128, 10, "c", "t"),
        ("bwd g2@W2", 1, 10, 128, "c", "c"),
        ("bwd g2.T@h", 10, 1, 128, "t", "c"),
        ("bwd g1.T@x", 128, 1, 784, "t", "c"),
    ],
}


def _operand(rng, shape, layout):
    if layout == "c":
        return rng.standard_normal(shape, dtype=np.float32)
    return rng.standard_normal(shape[::-1], dtype=np.float32).T


def _per_call(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _packed_product(a, b):
    """a @ b with b packed once by MKL (cblas_sgemm_pack), or None without MKL."""
    if not blas.mkl_available() or not a.flags.c_contiguous:
        return None
    lib = ctypes.CDLL(blas._library_paths()[0])
    get_size, pack, compute = (
        lib.cblas_sgemm_pack_get_size,
        lib.cblas_sgemm_pack,
        lib.cblas_sgemm_compute,
    )
    get_size.restype = ctypes.c_size_t
    get_size.argtypes = [ctypes.c_int] * 4
    pack.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    pack.argtypes += [ctypes.c_void_p]
    compute.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p, ctypes.c_int] * 2
    compute.argtypes += [ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    (m, k), n = a.shape, b.shape[1]
    trans_b, ldb = blas._layout(b)
    b_matrix, packed_flag = 162, 151  # CblasBMatrix, CblasPacked
    buffer = np.empty(get_size(b_matrix, m, n, k), np.uint8)
    pack(101, b_matrix, trans_b, m, n, k, 1.0, b.ctypes.data, ldb, buffer.ctypes.data)
    out = np.empty((m, n), np.float32)
    return lambda: compute(
        101, 111, packed_flag, m, n, k, a.ctypes.data, k, buffer.ctypes.data, ldb, 0.0,
        out.ctypes.data, n,
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--only", nargs="*", help="workload groups whose name starts so")
    parser.add_argument("--packed", action="store_true", help="MKL's packed-weight product too")
    args = parser.parse_args()
    import torch

    print(f"EMBER_BLAS={blas.blas_choice()}; MKL for 2-D float products: {blas.mkl_available()}")
    rng = np.random.default_rng(0)
    for threads in args.threads:
        set_threads(threads)
        for group, products in WORKLOADS.items():
            if args.only and not any(group.startswith(o) for o in args.only):
                continue
            for name, m, k, n, layout_a, layout_b in products:
                a, b = _operand(rng, (m, k), layout_a), _operand(rng, (k, n), layout_b)
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                fns = {
                    "ember": lambda a=a, b=b: blas.matmul(a, b),
                    "numpy": lambda a=a, b=b: np.matmul(a, b),
                    "torch": lambda ta=ta, tb=tb: torch.matmul(ta, tb),
                }
                if args.packed and layout_b == "t" and m > 1:
                    packed = _packed_product(a, b)
                    if packed is not None:
                        fns["mkl_packed"] = packed
                reps = min(2000, max(3, int(1e7 / (m * k * n))))
                times: dict = {key: [] for key in fns}
                for fn in fns.values():
                    fn()
                for _ in range(args.rounds):
                    for key, fn in fns.items():
                        wait_idle(quiet_ms=2.0)  # the other side's workers stopped spinning
                        times[key].append(_per_call(fn, reps))
                line = {
                    "workload": f"{group} {name} {m}x{k} @ {k}x{n} ({layout_a}{layout_b})",
                    "threads": threads,
                }
                for key, ts in times.items():
                    line[f"{key}_min_us"] = round(min(ts) * 1e6, 1)
                    line[f"{key}_median_us"] = round(statistics.median(ts) * 1e6, 1)
                for ref in ("numpy", "torch"):
                    line[f"ratio_vs_{ref}_min"] = round(min(times["ember"]) / min(times[ref]), 2)
                extra = ""
                if "mkl_packed" in times:
                    ratio = min(times["mkl_packed"]) / min(times["torch"])
                    extra = f"  packed {line['mkl_packed_min_us']:8.1f} (/torch {ratio:.2f})"
                print(
                    f"{threads}T {group:<15} {name:<10} {m:4d}x{k:<4d}@{k:4d}x{n:<4d} "
                    f"ember {line['ember_min_us']:8.1f} us  numpy {line['numpy_min_us']:8.1f}"
                    f"  torch {line['torch_min_us']:8.1f}"
                    f"  ember/numpy {line['ratio_vs_numpy_min']:.2f}"
                    f"  ember/torch {line['ratio_vs_torch_min']:.2f}" + extra,
                    flush=True,
                )
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
