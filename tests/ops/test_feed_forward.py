"""fused_feed_forward (Note [Row-blocked feed-forward] in ember/backend/feed_forward_kernels.py):
the row-blocked kernel against float64 and against the decomposition's kernels, serial and
parallel builds and thread counts equal bit for bit, the fallbacks, and BERT's layers taking
the op in inference only (Note [Feed-forward in one op] in ember/transformers/encoder_heads.py).
The op table rows (`feed_forward_layer_norm*` in ember/testing/op_table.py) add torch, finite
differences and the compiler."""

from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np
import pytest

import ember
from ember.backend import feed_forward_kernels as FK
from ember.backend import mkl_packed, numba_kernels
from ember.backend import transformer_kernels as K
from ember.ops import feed_forward as FF
from ember.testing.parity import close_report, parity_rtol

needs_kernel = pytest.mark.skipif(
    not (numba_kernels.available() and mkl_packed.available()),
    reason="the kernel needs numba (the `fast` extra) and MKL's packed products (the `mkl` "
    "extra); EMBER_FAST_KERNELS=0 or EMBER_MKL_PACK=0 turn them off",
)


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the parallel builds even on a loaded machine (Note [Overloaded machine])."""
    from ember.backend import parallel

    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


def _operands(rng, rows, d=64, n=256, dtype=np.float32):
    """x, W1, b1, W2, b2 and the norm's weight and bias, scaled as a trained BERT's are."""
    x = rng.standard_normal((rows, d))
    w1, w2 = rng.standard_normal((n, d)) / np.sqrt(d), rng.standard_normal((d, n)) / np.sqrt(n)
    b1, b2 = rng.standard_normal(n) * 0.1, rng.standard_normal(d) * 0.1
    w, b = 1.0 + rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    return tuple(a.astype(dtype) for a in (x, w1, b1, w2, b2, w, b))


def _exact(x, w1, b1, w2, b2, w, b, eps, approximate):
    """The reference forward in float64 (the yardstick)."""
    from ember.backend import get_backend

    args = [a.astype(np.float64) for a in (x, w1, b1, w2, b2, w, b)]
    return FF._forward(get_backend("cpu").xp, *args, eps=eps, approximate=approximate)


def _separate(x, w1, b1, w2, b2, w, b, eps, approximate):
    """The decomposition's kernels one after another (the op's fallback)."""
    saved = FK.forward
    try:
        FK.forward = lambda *a: None
        return FF._forward_kernel(x, w1, b1, w2, b2, w, b, eps=eps, approximate=approximate)
    finally:
        FK.forward = saved


@needs_kernel
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("rows", [600, 256])  # 256 x 256: the fewest rows the kernel takes
def test_kernel_within_float32_rounding_of_float64(rows, approximate):
    rng = np.random.default_rng(rows)
    args = _operands(rng, rows)
    got = FK.forward(*args, 1e-12, approximate)
    assert got is not None and got.dtype == np.float32
    exact = _exact(*args, 1e-12, approximate)
    separate = _separate(*args, 1e-12, approximate)
    rtol = parity_rtol(depth=1, width=256)
    ours, theirs = close_report(got, exact, rtol=rtol), close_report(separate, exact, rtol=rtol)
    print(
        f"{rows} rows, {approximate}: kernel vs float64 max abs {ours['max_abs']:.2e} rel "
        f"{ours['max_rel']:.2e}; separate kernels {theirs['max_abs']:.2e} / "
        f"{theirs['max_rel']:.2e}; kernel vs separate "
        f"{np.max(np.abs(got - separate)):.2e}"
    )
    assert ours["ok"], ours
    np.testing.assert_allclose(got, separate, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_parallel_kernels_equal_serial_bit_for_bit():
    args = _operands(np.random.default_rng(3), 1000)
    saved = K.PARALLEL_MIN_SIZE
    before = ember.get_num_threads()
    try:
        K.PARALLEL_MIN_SIZE = 1 << 62
        serial = FK.forward(*args, 1e-5, "none")
        K.PARALLEL_MIN_SIZE = 0
        for threads in (1, 2):
            ember.set_num_threads(threads)
            np.testing.assert_array_equal(FK.forward(*args, 1e-5, "none"), serial)
    finally:
        K.PARALLEL_MIN_SIZE = saved
        ember.set_num_threads(before)


@pytest.mark.parametrize("rows", [5, 300])
def test_block_rows_depend_on_the_rows_alone(rows):
    block = FK.block_rows(rows)
    assert block % 16 == 0 and 16 <= block <= FK.BLOCK_ROWS
    assert block >= rows / 2 or block == FK.BLOCK_ROWS  # two threads get a block each


@pytest.mark.parametrize(
    "case",
    ["float64", "small", "few rows", "no numba"],
)
def test_where_the_kernel_does_not_apply_the_op_runs_the_decomposition(case):
    rng = np.random.default_rng(4)
    rows = {"small": 5, "few rows": FK.MIN_ROWS - 1}.get(case, 400)
    dtype = np.float64 if case == "float64" else np.float32
    args = _operands(rng, rows, n=1024 if case == "few rows" else 256, dtype=dtype)
    tensors = [ember.from_numpy(a) for a in args]
    with numba_kernels.disable_for_tests() if case == "no numba" else nullcontext():
        assert FK.forward(*args, 1e-5, "none") is None
        got = FF.feed_forward_layer_norm(*tensors[:5], 64, *tensors[5:], eps=1e-5)
        ref = FF.feed_forward_layer_norm_reference(*tensors[:5], 64, *tensors[5:], eps=1e-5)
    assert got.dtype == ref.dtype == ember.from_numpy(args[0]).dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=tol, atol=tol)


def test_bad_inputs_name_the_op():
    x, w1, b1, w2, b2, w, b = (
        ember.ones(*s) for s in ((3, 4), (8, 4), (8,), (4, 8), (4,), (4,), (4,))
    )
    with pytest.raises(ValueError, match="feed_forward_layer_norm: normalized_shape"):
        FF.feed_forward_layer_norm(x, w1, b1, w2, b2, 8, w, b)
    with pytest.raises(ValueError, match="feed_forward_layer_norm: output_bias is required"):
        FF.feed_forward_layer_norm(x, w1, b1, w2, None, 4, w, b)
    with pytest.raises(ValueError, match="feed_forward_layer_norm: b1 must have shape"):
        FF.feed_forward_layer_norm(x, w1, ember.ones(4), w2, b2, 4, w, b)
    with pytest.raises(TypeError, match="feed_forward_layer_norm: the fused op takes operands"):
        FF.feed_forward_layer_norm(x, w1.double(), b1, w2, b2, 4, w, b)


# --- BERT's layers -----------------------------------------------------------------------------
def _bert(hidden_act="gelu"):
    from ember.transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act=hidden_act,
    )
    ember.manual_seed(0)
    return BertModel(config).eval()


def _count_fused(monkeypatch):
    from ember.transformers import encoder_heads

    calls = []
    fused = encoder_heads.feed_forward_layer_norm
    monkeypatch.setattr(
        encoder_heads,
        "feed_forward_layer_norm",
        lambda *a, **k: calls.append(1) or fused(*a, **k),
    )
    return calls


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_bert_inference_takes_the_op_within_rounding_of_the_modules(monkeypatch, hidden_act):
    """Under no_grad from FEED_FORWARD_MIN_ROWS rows on each layer's feed-forward is the one op,
    within float32 rounding of the modules; with gradients recorded, the modules run."""
    from ember.transformers import encoder_heads

    model = _bert(hidden_act)
    ids = ember.from_numpy(np.random.default_rng(7).integers(1, 99, (3, 100)))  # 300 rows
    calls = _count_fused(monkeypatch)
    with ember.no_grad():
        fused = model(ids).last_hidden_state.numpy()
    assert len(calls) == 2
    monkeypatch.setattr(encoder_heads, "FEED_FORWARD_MIN_ROWS", 1 << 62)
    with ember.no_grad():
        modules = model(ids).last_hidden_state.numpy()
    assert len(calls) == 2
    np.testing.assert_allclose(fused, modules, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(encoder_heads, "FEED_FORWARD_MIN_ROWS", 256)
    out = model(ids).last_hidden_state  # grad mode on: the modules, a backward
    assert len(calls) == 2 and out.requires_grad
    np.testing.assert_allclose(out.detach().numpy(), modules, rtol=1e-5, atol=1e-5)


def test_short_eager_inference_keeps_the_modules_and_a_trace_takes_the_op(monkeypatch):
    """Below FEED_FORWARD_MIN_ROWS eager inference runs the modules (their weight packs are
    kept between calls); a trace at the same size holds the one op, so a graph does not change
    with the sizes it is traced at (ONNX dynamic axes, compile's buckets)."""
    model = _bert()
    ids = ember.from_numpy(np.random.default_rng(8).integers(1, 99, (2, 6)))
    calls = _count_fused(monkeypatch)
    with ember.no_grad():
        eager = model(ids).last_hidden_state
    assert calls == []
    compiled = ember.compile(lambda ids: model(ids).last_hidden_state)
    with ember.no_grad():
        traced = compiled(ids)
    assert str(compiled.graph).count("fused_feed_forward") == 2
    np.testing.assert_allclose(traced.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)


def test_a_replaced_part_runs_the_modules(monkeypatch):
    from ember import nn

    model = _bert()
    model.encoder.layer[0].intermediate.intermediate_act_fn = nn.ReLU()
    ids = ember.from_numpy(np.random.default_rng(9).integers(1, 99, (3, 100)))
    calls = _count_fused(monkeypatch)
    with ember.no_grad():
        model(ids)
    assert len(calls) == 1  # layer 1 only


def test_distilbert_inference_takes_the_op_within_rounding_of_the_modules(monkeypatch):
    from ember.transformers import DistilBertConfig, DistilBertModel, encoder_heads

    config = DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    ember.manual_seed(0)
    model = DistilBertModel(config).eval()
    ids = ember.from_numpy(np.random.default_rng(10).integers(1, 99, (3, 100)))
    calls = _count_fused(monkeypatch)
    with ember.no_grad():
        fused = model(ids).last_hidden_state.numpy()
    assert len(calls) == 2
    monkeypatch.setattr(encoder_heads, "FEED_FORWARD_MIN_ROWS", 1 << 62)
    with ember.no_grad():
        modules = model(ids).last_hidden_state.numpy()
    np.testing.assert_allclose(fused, modules, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_runs_the_serial_build_with_the_same_bits():
    """GNU OpenMP kills a forked child that starts a parallel region after its parent's
    threads ran (Note [Row-parallel kernels]): the child takes the serial build, same bits."""
    args = _operands(np.random.default_rng(11), 600)
    before = ember.get_num_threads()
    ember.set_num_threads(2)
    try:
        parent = FK.forward(*args, 1e-5, "none")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            child = FK.forward(*args, 1e-5, "none")
            os._exit(0 if child is not None and np.array_equal(child, parent) else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        ember.set_num_threads(before)
    assert os.waitstatus_to_exitcode(status) == 0
