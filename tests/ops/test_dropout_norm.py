"""fused_dropout_add_layer_norm (Note [Dropout, add and norm in one pass] in
ember/backend/dropout_norm_kernels.py): equal bit for bit to the separate ops it replaces
(the bias add, fused_dropout with the same seed, the residual layer norm), forward and
backward, at sizes that take the fused kernels and at small ones; close to the decomposition
`dropout_add_layer_norm_reference`; serial and parallel kernels equal; BERT's blocks in
training give the same numbers as the modules one after another. The op table rows
(`dropout_add_layer_norm*` in ember/testing/op_table.py) add torch, finite differences,
second order and the compiler."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember._util.errors import ShapeError
from ember.backend import dropout_norm_kernels as DK
from ember.backend import numba_kernels
from ember.backend import transformer_kernels as K
from ember.nn import functional as F
from ember.ops import dropout_norm as DN

needs_numba = pytest.mark.skipif(
    not numba_kernels.available(),
    reason="numba is not installed (the `fast` extra) or EMBER_FAST_KERNELS=0",
)


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the parallel builds even on a loaded machine (Note [Overloaded machine])."""
    from ember.backend import parallel

    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


def _leaves(rng, dtype, rows, d):
    def leaf(*shape):
        return ember.from_numpy(rng.standard_normal(shape).astype(dtype)).requires_grad_()

    return leaf(rows, d), leaf(rows, d), leaf(d), leaf(d), leaf(d)


def _run(fn, leaves, cot, seed=3):
    """fn's output and the gradients of (output * cot).sum() for every leaf, after seeding."""
    for t in leaves:
        t.grad = None
    ember.manual_seed(seed)
    out = fn(*leaves)
    (out * cot).sum().backward()
    return [out.detach().numpy().copy()] + [t.grad.numpy().copy() for t in leaves]


def _fused(p, training=True, eps=1e-5):
    return lambda x, r, w, b, db: F.dropout_add_layer_norm(
        x, r, x.shape[-1], w, b, p, training, eps, input_bias=db
    )


def _separate(p, training=True, eps=1e-5):
    """The ops the fused one replaces, in BERT's order (the bias add, dropout, residual norm)."""
    return lambda x, r, w, b, db: F.residual_layer_norm(
        F.dropout(x + db, p, training), r, x.shape[-1], w, b, eps
    )


def _reference(p, training=True, eps=1e-5):
    return lambda x, r, w, b, db: DN.dropout_add_layer_norm_reference(
        x, r, x.shape[-1], w, b, p, training, eps, input_bias=db
    )


# rows x 96: 2048 rows take the fused float32 kernels, 16 the small paths
@pytest.mark.parametrize("rows", [2048, 16])
@pytest.mark.parametrize("p,training", [(0.1, True), (0.5, True), (0.1, False)])
def test_equals_the_separate_ops_bit_for_bit(rows, p, training):
    rng = np.random.default_rng(rows)
    leaves = _leaves(rng, np.float32, rows, 96)
    cot = ember.from_numpy(rng.standard_normal((rows, 96)).astype(np.float32))
    fused = _run(_fused(p, training), leaves, cot)
    separate = _run(_separate(p, training), leaves, cot)
    for name, ours, theirs in zip(["out", "x", "residual", "weight", "bias"], fused, separate):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    # the dense bias: a GEMV over the rows as `linear` takes it, against the add's sum
    np.testing.assert_allclose(fused[5], separate[5], rtol=1e-5, atol=1e-4)
    if training:
        dropped = fused[1] == 0
        assert 0.5 * p < dropped.mean() < 1.5 * p  # fused_dropout's mask, at rate p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [2048, 16])
def test_close_to_the_decomposition(dtype, rows):
    rng = np.random.default_rng(1)
    leaves = _leaves(rng, dtype, rows, 96)
    cot = ember.from_numpy(rng.standard_normal((rows, 96)).astype(dtype))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for ours, ref in zip(_run(_fused(0.2), leaves, cot), _run(_reference(0.2), leaves, cot)):
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * scale)


def _kernel_calls(rng, rows=1024, d=96):
    x, r, g = (rng.standard_normal((rows, d)).astype(np.float32) for _ in range(3))
    w, b, db = (rng.standard_normal(d).astype(np.float32) for _ in range(3))
    args = (12345, DN._fused._threshold(0.3), 1.0 / 0.7, 1e-5)
    return {
        "forward": lambda: DK.forward(x, r, w, b, db, *args),
        "forward (no bias, no dropout)": lambda: DK.forward(x, r, w, b, None, 0, 0, 1.0, 1e-5),
        "backward": lambda: DK.grads(g, x, r, w, db, *args, True, True, True),
        "input gradient": lambda: DK.grads(g, x, r, w, db, *args, True, True, False),
        "parameter gradients": lambda: DK.grads(g, x, r, w, db, *args, False, False, True),
    }


@needs_numba
def test_parallel_kernels_equal_serial_bit_for_bit():
    calls = _kernel_calls(np.random.default_rng(2))
    saved = K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE
    before = ember.get_num_threads()
    try:
        K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE = 1 << 62, 0
        serial = {name: call() for name, call in calls.items()}
        K.PARALLEL_MIN_SIZE = 0
        for threads in (1, 2):
            ember.set_num_threads(threads)
            for name, call in calls.items():
                got = call()
                assert got is not None, name
                want = serial[name]
                for a, b in zip(
                    got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,),
                ):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} x{threads}")
    finally:
        K.PARALLEL_MIN_SIZE, K.COMPILED_MIN_SIZE = saved
        ember.set_num_threads(before)
    # each part alone gives the bits of the pass that computes all of them
    whole = serial["backward"]
    np.testing.assert_array_equal(serial["input gradient"][0], whole[0])
    np.testing.assert_array_equal(serial["input gradient"][1], whole[1])
    np.testing.assert_array_equal(serial["parameter gradients"][2], whole[2])


@needs_numba
def test_the_backward_pass_hands_its_dropout_to_the_next_call_only():
    """The backward kernel's dropout(g_residual) is returned by the fused_dropout call on that
    very array that follows (transformer_kernels.keep_dropout), and by no other call."""
    rng = np.random.default_rng(4)
    x, r, g = (rng.standard_normal((1024, 96)).astype(np.float32) for _ in range(3))
    w, db = rng.standard_normal(96).astype(np.float32), np.zeros(96, np.float32)
    threshold, scale = DN._fused._threshold(0.3), np.float32(1.0 / 0.7)
    with DK.backward_together():
        gr = DK.input_grad(g, x, r, w, db, 7, threshold, scale, 1e-5)
        kept = K.dropout(gr, 7, threshold, scale)
    with DK.backward_together():
        K.keep_dropout(None)
        fresh = K.dropout(gr, 7, threshold, scale)
    np.testing.assert_array_equal(kept, fresh)
    with DK.backward_together():
        gr = DK.input_grad(g, x, r, w, db, 7, threshold, scale, 1e-5)
        assert K._kept_dropout.value[0] is gr
        other = K.dropout(gr.copy(), 7, threshold, scale)  # another array: computed
        assert K._kept_dropout.value is None  # forgotten after one call
    np.testing.assert_array_equal(other, fresh)
    gr = DK.input_grad(g, x, r, w, db, 7, threshold, scale, 1e-5)  # outside: nothing kept
    assert K._kept_dropout.value is None


@needs_numba
def test_the_forward_keeps_its_mask_for_the_backward_with_the_same_bits():
    """The forward keeps its keep mask while the seed array lives (Note [Kept dropout masks]);
    the backward takes it out of the store, and its results equal those of a backward that
    hashes the mask again, bit for bit, at 1 and 2 threads."""
    rng = np.random.default_rng(5)
    x, r, g = (rng.standard_normal((1024, 96)).astype(np.float32) for _ in range(3))
    w, b, db = (rng.standard_normal(96).astype(np.float32) for _ in range(3))
    args = (987654321, DN._fused._threshold(0.3), 1.0 / 0.7, 1e-5)
    before = ember.get_num_threads()
    try:
        for threads in (1, 2):
            ember.set_num_threads(threads)
            hashed = DK.grads(g, x, r, w, db, *args, True, True, True)
            seed = np.array(args[0])
            y = DK.forward(x, r, w, b, db, *args, keep_for=seed)
            np.testing.assert_array_equal(y, DK.forward(x, r, w, b, db, *args))
            assert DK.kept_mask(args[0], args[1], x.shape) is not None  # taken out: once
            DK.forward(x, r, w, b, db, *args, keep_for=seed)
            key = DK._mask_key(args[0], args[1], x.shape)
            assert key in DK._kept_masks
            got = DK.grads(g, x, r, w, db, *args, True, True, True)
            assert key not in DK._kept_masks
            for a, want in zip(got, hashed):
                np.testing.assert_array_equal(a, want)
    finally:
        ember.set_num_threads(before)


@needs_numba
def test_kept_masks_go_with_their_seed():
    """A forward whose backward never runs leaves nothing behind: the mask goes when the seed
    does (the graph dropped, no_grad, nothing requiring grad); a training step's backward
    takes every mask its forward kept."""
    rng = np.random.default_rng(6)
    x, r = (ember.from_numpy(rng.standard_normal((1024, 96)).astype(np.float32)) for _ in "xr")
    w, b, db = (ember.ones(96).requires_grad_() for _ in range(3))
    start = len(DK._kept_masks)  # none, unless another test holds a graph
    out = F.dropout_add_layer_norm(x, r, 96, w, b, 0.2, True, 1e-5, input_bias=db)
    assert len(DK._kept_masks) == start + 1
    del out  # the graph and its seed go: so does the mask
    assert len(DK._kept_masks) == start
    with ember.no_grad():
        F.dropout_add_layer_norm(x, r, 96, w, b, 0.2, True, 1e-5, input_bias=db)
    assert len(DK._kept_masks) == start
    F.dropout_add_layer_norm(x, r, 96, None, None, 0.2, True, 1e-5)  # no input needs grad
    assert len(DK._kept_masks) == start
    out = F.dropout_add_layer_norm(x, r, 96, w, b, 0.2, True, 1e-5, input_bias=db)
    out.sum().backward()
    assert len(DK._kept_masks) == start


def test_bad_inputs_name_the_op():
    x, r = ember.ones(2, 4), ember.ones(2, 4)
    with pytest.raises(ShapeError, match="dropout_add_layer_norm.*residual"):
        F.dropout_add_layer_norm(x, ember.ones(2, 3), 4)
    with pytest.raises(ShapeError, match="dropout_add_layer_norm.*normalized_shape"):
        F.dropout_add_layer_norm(x, r, 3)
    with pytest.raises(ValueError, match="dropout_add_layer_norm.*probability"):
        F.dropout_add_layer_norm(x, r, 4, p=1.5)
    with pytest.raises(ShapeError, match="dropout_add_layer_norm.*input_bias"):
        F.dropout_add_layer_norm(x, r, 4, input_bias=ember.ones(3))
    with pytest.raises(ShapeError, match="dropout_add_layer_norm.*weight"):
        F.dropout_add_layer_norm(x, r, 4, weight=ember.ones(3))


def test_p_one_drops_everything_as_dropout_does():
    x, r = ember.randn(3, 4), ember.randn(3, 4)
    out = F.dropout_add_layer_norm(x, r, 4, p=1.0)
    np.testing.assert_allclose(out.numpy(), F.layer_norm(r, (4,)).numpy(), atol=1e-6)


def _bert(hidden_dropout=0.1):
    from ember.transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=hidden_dropout,
        num_labels=2,
    )
    ember.manual_seed(0)
    return BertForSequenceClassification(config).train()


def test_bert_training_step_equals_the_modules_one_after_another(monkeypatch):
    """BertSelfOutput / BertOutput in training through the fused op give the loss and every
    gradient of the module path bit for bit, and leave the generator where it leaves it."""
    from ember.transformers import encoder_heads
    from ember.transformers.bert import modeling_bert

    model = _bert()
    rng = np.random.default_rng(5)
    ids = ember.tensor(rng.integers(1, 99, (16, 128)))  # 2048 x 32 rows: the fused kernels
    labels = ember.tensor(rng.integers(0, 2, 16))

    def step():
        for p in model.parameters():
            p.grad = None
        ember.manual_seed(11)
        loss = model(ids, labels=labels).loss
        loss.backward()
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        return [loss.detach().numpy()] + grads, ember.rand(3).numpy()

    calls = []
    fused_call = encoder_heads.dense_dropout_add_norm

    def counted(*args):
        calls.append(1)
        return fused_call(*args)

    monkeypatch.setattr(modeling_bert, "dense_dropout_add_norm", counted)
    fused, fused_next = step()
    assert len(calls) == 4  # two blocks a layer

    def modules(dense, dropout, layer_norm, hidden, residual):
        return encoder_heads.add_and_norm(layer_norm, dropout(dense(hidden)), residual)

    monkeypatch.setattr(modeling_bert, "dense_dropout_add_norm", modules)
    separate, separate_next = step()
    names = ["loss"] + [n for n, _ in model.named_parameters()]
    for name, ours, theirs in zip(names, fused, separate):
        if name.endswith("output.dense.bias"):  # a GEMV in both, over the same gradient
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    np.testing.assert_array_equal(fused_next, separate_next)


@pytest.mark.parametrize("rows", [(2, 5), (16, 128)])
def test_bert_inference_folds_the_bias_within_rounding_of_the_modules(rows):
    """In inference the block is one op without dropout (the dense bias folded in): within
    float32 rounding of the modules one after another (the product adds its bias itself)."""
    from ember.transformers import encoder_heads

    model = _bert().eval()
    block = model.bert.encoder.layer[0].output
    h, r = ember.randn(*rows, 64), ember.randn(*rows, 32)
    with ember.no_grad():
        got = block(h, r)
        folded = encoder_heads.biased_add_and_norm(
            block.LayerNorm, F.linear(h, block.dense.weight), block.dense.bias, r
        )
        modules = encoder_heads.add_and_norm(block.LayerNorm, block.dense(h), r)
    np.testing.assert_array_equal(got.numpy(), folded.numpy())
    np.testing.assert_allclose(got.numpy(), modules.numpy(), rtol=1e-5, atol=1e-5)


def test_short_eager_inference_keeps_the_bias_in_the_product(monkeypatch):
    """Below the one-pass kernel's size eager inference runs the modules (the product adds its
    bias); a trace at the same size keeps the one op, so a graph does not change with the
    sizes it is traced at (ONNX dynamic axes, compile's buckets)."""
    from ember.ops import dropout_norm

    model = _bert().eval()
    block = model.bert.encoder.layer[0].output
    h, r = ember.randn(2, 5, 64), ember.randn(2, 5, 32)
    assert not dropout_norm.folds_in_one_pass(10, 32)
    calls = []
    fused = F.dropout_add_layer_norm
    monkeypatch.setattr(
        F, "dropout_add_layer_norm", lambda *a, **k: calls.append(1) or fused(*a, **k)
    )
    with ember.no_grad():
        got = block(h, r)
    assert calls == []
    compiled = ember.compile(lambda h, r: block(h, r))
    with ember.no_grad():
        traced = compiled(h, r)
    assert "fused_dropout_add_layer_norm" in str(compiled.graph)
    np.testing.assert_allclose(traced.numpy(), got.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.0, 0.1])
def test_compiled_gradients_equal_eager(p):
    """ember.compile traces the op and its backward (a compiled graph computes the residual's
    and the parameters' gradients with one joint kernel, Note [Joint kernels])."""
    rng = np.random.default_rng(6)
    leaves = _leaves(rng, np.float32, 1024, 96)
    cot = ember.from_numpy(rng.standard_normal((1024, 96)).astype(np.float32))

    def grads(x, r, w, b, db, cot):
        out = F.dropout_add_layer_norm(x, r, 96, w, b, p, True, input_bias=db)
        return (out,) + tuple(ember.autograd.grad((out * cot).sum(), [x, r, w, b, db]))

    compiled = ember.compile(grads)
    ember.manual_seed(9)
    got = compiled(*leaves, cot)
    ember.manual_seed(9)
    want = grads(*leaves, cot)
    for name, a, b in zip(["out", "x", "residual", "weight", "bias", "input_bias"], got, want):
        np.testing.assert_allclose(
            a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-5, err_msg=name
        )
    text = str(compiled.graph)
    assert (
        "joint[fused_dropout_add_layer_norm_input_grad,fused_dropout_add_layer_norm_param_grad]"
        in text
    )


def test_half_precision_takes_the_decomposition():
    """float16 keeps the decomposition, which accumulates in float32 (Note [Half-precision
    accumulation])."""
    rng = np.random.default_rng(8)
    x, r = (ember.from_numpy(rng.standard_normal((4, 8)).astype(np.float16)) for _ in range(2))
    ember.manual_seed(2)
    got = F.dropout_add_layer_norm(x, r, 8, p=0.25)
    ember.manual_seed(2)
    want = DN.dropout_add_layer_norm_reference(x, r, 8, p=0.25)
    assert got.dtype == ember.float16
    np.testing.assert_array_equal(got.numpy(), want.numpy())
