"""The Transformer hot path's elementwise kernels alone, ember against PyTorch, 1 and 2 threads.

MiniLM's shapes at batch 32 x 128 (4096 rows): bias + GELU forward and backward on the FFN's
4096 x 1536 (PyTorch adds the bias in its addmm, so its side is the GELU alone, and bias + GELU
for comparison), layer norm with the residual added in the kernel, and both layer-norm
gradients (ember: Note [Layer norm gradients together] in ember/backend/transformer_kernels.py;
PyTorch: `native_layer_norm_backward`), the fine-tune step's bias + GELU backward with the
bias gradient (2048 x 1536; PyTorch: `gelu_backward` and the `sum(0)` its addmm backward runs),
and tanh-approximate GELU forward and backward; and the same kernels on MiniLM's 1 x 16
request (`--only 1x16`: the small inputs' paths, Note [Small call costs]). Each workload runs
both sides interleaved (bench/harness.py, Note [Quiet side]) and prints min / median / max and
the ratio of medians ember / torch.

Run: PYTHONPATH=. python bench/bench_transformer_kernels.py [--threads 1 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import statistics  # noqa: E402

from bench.harness import _calibrate, _fmt, _time, set_threads, wait_idle  # noqa: E402


def compare(name, ours, theirs, repeats=7, warmup=2):
    """Time both sides interleaved (Note [Quiet side]); print min / median / max and the ratio
    of medians."""
    for _ in range(warmup):
        ours()
        theirs()
    wait_idle()
    n_e = _calibrate(ours)
    wait_idle()
    n_r = _calibrate(theirs)
    te, tr = [], []
    for _ in range(repeats):
        wait_idle()
        te.append(_time(ours, n_e))
        wait_idle()
        tr.append(_time(theirs, n_r))

    def spread(t):
        return "/".join(_fmt(v) for v in (min(t), statistics.median(t), max(t)))

    ratio = statistics.median(te) / statistics.median(tr)
    print(f"{name:<44} ember {spread(te):>28}  torch {spread(tr):>28}  ratio {ratio:5.2f}")


def workloads(rng):
    """(name, ember callable, torch callable) for each kernel."""
    import torch
    import torch.nn.functional as F

    import ember
    from ember.backend import transformer_kernels as K
    from ember.ops import fused

    x, g = (rng.standard_normal((4096, 1536)).astype(np.float32) for _ in range(2))
    b = rng.standard_normal(1536).astype(np.float32)
    tx, tg, tb = map(torch.from_numpy, (x, g, b))
    h, r, gh = (rng.standard_normal((4096, 384)).astype(np.float32) + 1 for _ in range(3))
    w, c = (rng.standard_normal(384).astype(np.float32) for _ in range(2))
    th, tr, tgh, tw, tc = map(torch.from_numpy, (h, r, gh, w, c))
    s = th + tr
    mean = s.mean(-1, keepdim=True)
    rstd = (s.var(-1, unbiased=False, keepdim=True) + 1e-12).rsqrt()

    def ln_grads():
        with K.layer_norm_grads_together():
            K.layer_norm_input_grad(gh, h, r, w, 1e-12)
            K.layer_norm_param_grad(gh, h, r, 1e-12)

    # the fine-tune step's FFN (16 x 128 rows): GELU's VJP, input and bias gradients
    x2, g2 = x[:2048], g[:2048]
    ex2, eg2, eb = ember.tensor(x2), ember.tensor(g2), ember.tensor(b, requires_grad=True)
    tu2, tg2 = tx[:2048] + tb, tg[:2048]  # PyTorch saves the addmm output, bias included

    def torch_bias_grad():
        gx = torch.ops.aten.gelu_backward(tg2, tu2)
        return gx, gx.sum(0)

    return [
        *_short_request(rng),
        (
            "bias+gelu backward+bias grad 2048x1536",
            lambda: fused._gelu_vjp(eg2, None, ex2, eb),
            torch_bias_grad,
        ),
        (
            "tanh gelu 4096x1536",
            lambda: K.gelu(x, None, "tanh"),
            lambda: F.gelu(tx, approximate="tanh"),
        ),
        (
            "tanh gelu backward 4096x1536",
            lambda: K.gelu_grad(g, x, None, "tanh"),
            lambda: torch.ops.aten.gelu_backward(tg, tx, approximate="tanh"),
        ),
        ("bias+gelu 4096x1536 (torch: gelu)", lambda: K.gelu(x, b, "none"), lambda: F.gelu(tx)),
        ("bias+gelu 4096x1536", lambda: K.gelu(x, b, "none"), lambda: F.gelu(tx + tb)),
        (
            "bias+gelu backward 4096x1536",
            lambda: K.gelu_grad(g, x, b, "none"),
            lambda: torch.ops.aten.gelu_backward(tg, tx + tb),
        ),
        (
            "residual+layer norm 4096x384",
            lambda: K.layer_norm(h, r, w, c, 1e-12),
            lambda: F.layer_norm(th + tr, (384,), tw, tc, 1e-12),
        ),
        (
            "layer norm backward 4096x384",
            ln_grads,
            lambda: torch.ops.aten.native_layer_norm_backward(
                tgh, s, (384,), mean, rstd, tw, tc, [True, True, True]
            ),
        ),
    ]


def _short_request(rng):
    """MiniLM's 1 x 16 request, one call each, with the small inputs' serial kernels loaded
    (Note [Kernel-exact small paths], Note [Small attention]): residual + layer norm on 16 x
    384, bias + GELU on 16 x 1536 (PyTorch: GELU after its addmm added the bias), and the
    attention of 12 heads of 16 x 16 on strided views of one (1, 16, 3, 12, 32) projection."""
    import torch
    import torch.nn.functional as F

    from ember.backend import attention_kernels as A
    from ember.backend import transformer_kernels as K

    x, r = (rng.standard_normal((1, 16, 384)).astype(np.float32) for _ in range(2))
    w, c = (rng.standard_normal(384).astype(np.float32) for _ in range(2))
    u, b = rng.standard_normal((1, 16, 1536)).astype(np.float32), w.repeat(4)
    q, k, v = rng.standard_normal((1, 16, 3, 12, 32)).astype(np.float32).transpose(2, 0, 3, 1, 4)
    m = np.zeros((1, 1, 1, 16), np.float32)
    m[..., 12:] = np.finfo(np.float32).min
    tx, tr, tw, tc, tu = map(torch.from_numpy, (x, r, w, c, u))
    tq, tk, tv, tm = map(torch.from_numpy, (q, k, v, m))
    calls = [
        lambda: K.layer_norm(x, r, w, c, 1e-12),
        lambda: K.gelu(u, b, "none"),
        lambda: A.attention(q, k, v, m, 32**-0.5, 0, 0, 1.0),
    ]
    for _ in range(K.WARM_UP_AFTER or 0):  # the serial kernels load in the background
        for call in calls:
            call()
    thread = K._small_state["thread"]
    if thread is not None:
        thread.join()
    return [
        (
            "1x16 residual+layer norm 16x384",
            calls[0],
            lambda: F.layer_norm(tx + tr, (384,), tw, tc),
        ),
        ("1x16 bias+gelu 16x1536 (torch: gelu)", calls[1], lambda: F.gelu(tu)),
        (
            "1x16 attention 12 heads 16x16x32",
            calls[2],
            lambda: F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, scale=32**-0.5),
        ),
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="", help="run the workloads whose name has this")
    args = parser.parse_args()
    for threads in args.threads:
        set_threads(threads)
        print(f"\n{threads} thread(s)")
        for name, ours, theirs in workloads(np.random.default_rng(0)):
            if args.only not in name:
                continue
            compare(f"{name} x{threads}", ours, theirs, repeats=args.repeats)


if __name__ == "__main__":
    main()
