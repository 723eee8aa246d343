"""BERT's feed-forward block in inference, layer_norm(gelu(x W1^T + b1) W2^T + b2 + x), as one
row-blocked op (`fused_feed_forward`, Note [Row-blocked feed-forward] in
ember/backend/feed_forward_kernels.py) against the modules one after another (the path
before it: products, bias + GELU, bias + residual + layer norm, over 1024-row chunks) and
against PyTorch (transformers' BertIntermediate + BertOutput), one MiniLM layer's weights, at
1 and 2 threads, interleaved rounds; then whole MiniLM forwards with the op and with the
modules (ember only, same process, alternating). Prints min / median / max per side and the
ratios (below 1 is faster), one JSON line each.

    PYTHONPATH=. python bench/bench_feed_forward.py [--rounds 15] [--threads 1 2]
        [--rows 4096 1024 256] [--forward-rounds 5] [--no-forward]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ember  # noqa: E402
from ember.transformers import encoder_heads  # noqa: E402

from bench_dropout_norm import _interleaved, _report  # noqa: E402
from harness import set_threads  # noqa: E402


def _modules_only():
    """A context in which BERT's layers run the modules (FEED_FORWARD_MIN_ROWS out of reach,
    traces aside: the bench runs eagerly)."""

    class Modules:
        def __enter__(self):
            self.saved = encoder_heads.FEED_FORWARD_MIN_ROWS
            encoder_heads.FEED_FORWARD_MIN_ROWS = 1 << 62

        def __exit__(self, *exc):
            encoder_heads.FEED_FORWARD_MIN_ROWS = self.saved

    return Modules()


def _block_sides(torch, ours, theirs, rows):
    """One layer's feed-forward: ember's op, ember's modules, transformers' modules."""
    layer, hf_layer = ours.encoder.layer[0], theirs.encoder.layer[0]
    x = np.random.default_rng(rows).standard_normal((1, rows, 384)).astype(np.float32)
    ex, tx = ember.from_numpy(x), torch.from_numpy(x)

    def fused():
        with ember.no_grad():
            return _feed_forward(layer, ex)

    def modules():
        with ember.no_grad(), _modules_only():
            return _feed_forward(layer, ex)

    def reference():
        with torch.no_grad():
            return hf_layer.output(hf_layer.intermediate(tx), tx)

    return {"fused": fused, "modules": modules, "torch": reference}


def _forward_sides(ours, shape):
    ids = ember.from_numpy(np.random.default_rng(0).integers(1000, 20000, shape))

    def fused():
        with ember.no_grad():
            return ours(ids)

    def modules():
        with ember.no_grad(), _modules_only():
            return ours(ids)

    return {"fused": fused, "modules": modules}


def _feed_forward(layer, x):
    """BertLayer's feed-forward part as its forward runs it (Note [Feed-forward in one op])."""
    fused = encoder_heads.feed_forward_add_norm(
        layer.intermediate.dense,
        layer.intermediate.intermediate_act_fn,
        layer.output.dense,
        layer.output.dropout,
        layer.output.LayerNorm,
        x,
    )
    return encoder_heads.feed_forward_in_chunks(layer.feed_forward, x) if fused is None else fused


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, nargs="+", default=[4096, 1024, 256])
    parser.add_argument("--forward-rounds", type=int, default=5)
    parser.add_argument("--no-forward", action="store_true", help="the block alone")
    args = parser.parse_args()
    import torch
    import transformers
    from bench_transformers import FOLDER

    from ember import transformers as et

    ours = et.BertModel.from_pretrained(FOLDER).eval()
    theirs = transformers.BertModel.from_pretrained(FOLDER).eval()
    for threads in args.threads:
        set_threads(threads)
        torch.set_num_threads(threads)
        for rows in args.rows:
            sides = _block_sides(torch, ours, theirs, rows)
            _report(f"feed-forward {rows}x384", threads, _interleaved(sides, args.rounds), "fused")
        if not args.no_forward:
            sides = _forward_sides(ours, (32, 128))
            times = _interleaved(sides, args.forward_rounds)
            _report("minilm forward 32x128 (ember)", threads, times, "fused")


if __name__ == "__main__":
    main()
