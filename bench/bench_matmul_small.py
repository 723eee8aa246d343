"""Few-row matrix products (Note [Small GEMMs]): x @ weight.T at MiniLM's shapes (hidden 384,
intermediate 1536) for 1 to 512 rows, through ember's CPU matmul dispatch (MKL's cblas for
few rows with the `mkl` extra and EMBER_BLAS=mkl), plain NumPy (OpenBLAS) and PyTorch (MKL), in
interleaved rounds, at 1 and 2 threads. Prints min and median per call and the ratios.

    python bench/bench_matmul_small.py [--rounds 9] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))

from harness import set_threads  # noqa: E402

from ember.backend import blas  # noqa: E402

ROWS = (1, 16, 32, 64, 128, 256, 320, 512)
SHAPES = ((384, 384), (384, 1536), (1536, 384))  # (in, out): attention, FFN up, FFN down


def _per_call(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    import torch

    print(f"MKL for few-row products: {blas.mkl_available()}")
    rng = np.random.default_rng(0)
    for threads in args.threads:
        set_threads(threads)
        for rows in ROWS:
            for k, n in SHAPES:
                x = rng.standard_normal((rows, k), dtype=np.float32)
                w = rng.standard_normal((n, k), dtype=np.float32)
                tx, tw = torch.from_numpy(x), torch.from_numpy(w)
                fns = {
                    "ember": lambda x=x, w=w: blas.matmul(x, w.T),
                    "numpy": lambda x=x, w=w: np.matmul(x, w.T),
                    "torch": lambda tx=tx, tw=tw: torch.nn.functional.linear(tx, tw),
                }
                reps = min(400, max(3, int(2e7 / (rows * k * n))))
                times: dict = {key: [] for key in fns}
                for fn in fns.values():
                    fn()
                for _ in range(args.rounds):
                    for key, fn in fns.items():
                        times[key].append(_per_call(fn, reps))
                line = {"workload": f"matmul {rows}x{k} @ {k}x{n}", "threads": threads}
                for key, ts in times.items():
                    line[f"{key}_min_us"] = round(min(ts) * 1e6, 1)
                    line[f"{key}_median_us"] = round(statistics.median(ts) * 1e6, 1)
                for ref in ("numpy", "torch"):
                    line[f"ratio_vs_{ref}_min"] = round(min(times["ember"]) / min(times[ref]), 2)
                print(
                    f"{threads}T {rows:4d}x{k:<4d} @ {k:4d}x{n:<4d} "
                    f"ember {line['ember_min_us']:8.1f} us  numpy {line['numpy_min_us']:8.1f}"
                    f"  torch {line['torch_min_us']:8.1f}"
                    f"  ember/numpy {line['ratio_vs_numpy_min']:.2f}"
                    f"  ember/torch {line['ratio_vs_torch_min']:.2f}"
                )
                print(json.dumps(line))


if __name__ == "__main__":
    main()
