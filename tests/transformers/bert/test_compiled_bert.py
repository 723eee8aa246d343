"""`ember.compile` on whole BERT models: the forward (base model and sequence classification)
and a full training step (forward, loss, backward, AdamW) against eager over several shapes;
sequence buckets (Note [Sequence buckets]); the Trainer with `torch_compile=True` and
pipelines over a compiled model."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import ember
from ember.graph.compile import RetraceWarning
from ember.testing.parity import assert_close, parity_rtol
from ember.transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from ember.transformers.compile_buckets import bucket_length

SHAPES = [(2, 7), (3, 12), (1, 20)]  # buckets 8, 16, 24


def _config(**kw):
    base = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return BertConfig(**base)


def _batch(shape, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, shape)
    mask = np.ones(shape, np.int64)
    mask[0, -2:] = 0  # a padded row
    ids[0, -2:] = 0
    return ember.tensor(ids), ember.tensor(mask)


RTOL = parity_rtol(depth=2, width=37)


@pytest.mark.parametrize("model_cls", [BertModel, BertForSequenceClassification])
def test_compiled_forward_matches_eager_across_shapes(model_cls):
    ember.manual_seed(0)
    model = model_cls(_config()).eval()
    compiled = ember.compile(model)
    for k, shape in enumerate(SHAPES + [(2, 5)]):  # (2, 5) reuses the (2, 7) bucket
        ids, mask = _batch(shape, k)
        with ember.no_grad():
            out = compiled(ids, attention_mask=mask)
            ref = model(ids, attention_mask=mask)
        assert type(out) is type(ref) and out.keys() == ref.keys()
        for name in ref.keys():
            assert tuple(out[name].shape) == tuple(ref[name].shape), name
            assert_close(out[name].numpy(), ref[name].numpy(), rtol=RTOL, name=f"{shape} {name}")
    assert compiled.trace_count == 3  # buckets 8, 16 and 24, with (2, 5) in the first
    assert "runs in its bucket 16" in compiled.retrace_reasons[0]


def test_buckets_are_planned_traces_and_real_retraces_warn_by_name():
    """A workload over lengths 8-128 traces one graph per bucket without a RetraceWarning at
    the default threshold; retraces in a bucket already traced (a new dtype, a new Python
    value) still warn, naming each change and counting the planned bucket traces apart."""
    lengths = (1, 8, 9, 17, 25, 33, 65, 100, 128, 129, 500)
    assert [bucket_length(n) for n in lengths] == [8, 8, 16, 24, 32, 40, 80, 112, 128, 160, 512]
    assert bucket_length(45, limit=46) == 46  # capped by the position table
    ember.manual_seed(0)
    model = BertModel(_config(max_position_embeddings=128)).eval()
    compiled = ember.compile(model)
    old = ember.config.retrace_warning_after
    ember.config.retrace_warning_after = 5  # the default (EMBER_RETRACE_WARNING may differ)
    try:
        with warnings.catch_warnings(record=True) as caught, ember.no_grad():
            warnings.simplefilter("always")
            for n in range(8, 129, 4):
                compiled(ember.ones((1, n), dtype=ember.int64))
        buckets = sorted({bucket_length(n) for n in range(8, 129, 4)})
        assert len(buckets) == 12 and compiled.trace_count == 12, compiled.retrace_reasons
        assert not [w for w in caught if issubclass(w.category, RetraceWarning)]
        assert "sequence length 12 runs in its bucket 16" in compiled.retrace_reasons[0]
        ember.config.retrace_warning_after = 2
        ids = ember.ones((1, 30), dtype=ember.int64)
        with warnings.catch_warnings(record=True) as caught, ember.no_grad():
            warnings.simplefilter("always")
            compiled(ids, attention_mask=ember.ones((1, 30), dtype=ember.float32))
            compiled(ids, attention_mask=ember.ones((1, 30), dtype=ember.float32))  # cached
            compiled(ids, output_attentions=True)
    finally:
        ember.config.retrace_warning_after = old
    messages = [str(w.message) for w in caught if issubclass(w.category, RetraceWarning)]
    assert len(messages) == 1, messages
    assert (
        "retraced 2 times (and 12 planned traces, one per sequence bucket: 8, 16," in (messages[0])
    )
    assert "attention_mask: dtype int64 -> float32 (sequence length 30 runs" in messages[0]
    assert "output_attentions" in messages[0] and "runs in its bucket 32" in messages[0]
    assert caught[0].filename == __file__  # points at the caller's line
    # a bucket whose graph the bounded cache dropped traces again, and says why
    small = ember.compile(model, max_cache_size=2)
    ember.config.retrace_warning_after = 1
    try:
        with warnings.catch_warnings(record=True) as caught, ember.no_grad():
            warnings.simplefilter("always")
            for n in (8, 16, 24, 8):
                small(ember.ones((1, n), dtype=ember.int64))
    finally:
        ember.config.retrace_warning_after = old
    assert small.trace_count == 4
    messages = [str(w.message) for w in caught if issubclass(w.category, RetraceWarning)]
    assert len(messages) == 1 and "retraced 1 time (and 3 planned traces" in messages[0]
    assert (
        "its graph was dropped from the full cache (max_cache_size 2); from the nearest cached "
        "call: input_ids: shape [1, 24] -> [1, 8]"
    ) in messages[0]
    # buckets off: every length traces
    plain = ember.compile(model, buckets=False)
    with ember.no_grad():
        plain(ember.ones((1, 4), dtype=ember.int64))
        plain(ember.ones((1, 5), dtype=ember.int64))
    assert plain.trace_count == 2


def test_token_level_outputs_and_labels_are_cut_and_padded():
    """Token classification: logits (batch, seq, labels) are cut back to the real length and
    the labels are padded with -100, so the loss equals eager's."""
    ember.manual_seed(0)
    model = BertForTokenClassification(_config()).eval()
    compiled = ember.compile(model)
    ids, mask = _batch((2, 11), 3)
    labels = ember.tensor(np.random.default_rng(4).integers(0, 3, (2, 11)))
    with ember.no_grad():
        out = compiled(input_ids=ids, attention_mask=mask, labels=labels)
        ref = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert tuple(out.logits.shape) == (2, 11, 3)
    assert_close(out.logits.numpy(), ref.logits.numpy(), rtol=RTOL, name="logits")
    assert_close(out.loss.numpy(), ref.loss.numpy(), rtol=RTOL, name="loss")
    with ember.no_grad():
        as_tuple = compiled(input_ids=ids, attention_mask=mask, return_dict=False)
    assert isinstance(as_tuple, tuple) and tuple(as_tuple[0].shape) == (2, 11, 3)


def test_compiled_training_step_matches_eager_across_shapes():
    """The whole step (forward, loss, backward, AdamW) compiled, against the same step run
    eagerly: losses, parameters and optimizer state within the parity tolerance."""
    ember.manual_seed(0)
    base = BertForSequenceClassification(_config()).train()

    def make(model):
        opt = ember.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

        def step(input_ids, attention_mask, labels):
            opt.zero_grad()
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
            out.loss.backward()
            opt.step()
            return out.loss

        return step, opt

    eager_model, model = copy.deepcopy(base), copy.deepcopy(base)
    eager_step, eager_opt = make(eager_model)
    step, opt = make(model)
    compiled = ember.compile(step)
    rng = np.random.default_rng(7)
    for k, shape in enumerate(SHAPES + SHAPES):
        ids, mask = _batch(shape, k)
        labels = ember.tensor(rng.integers(0, 3, shape[0]))
        with warnings.catch_warnings():  # one graph per shape, as expected: no bucket here
            warnings.simplefilter("ignore", RetraceWarning)
            loss = compiled(ids, mask, labels).item()
        expected = eager_step(ids, mask, labels).item()
        assert_close(np.float32(loss), np.float32(expected), rtol=RTOL, name=f"loss {shape}")
    assert compiled.trace_count <= 2 * len(SHAPES), compiled.retrace_reasons
    _assert_same_moves(base, eager_model, model, lr=1e-3, steps=2 * len(SHAPES))
    for (name, _), es, s in zip(
        eager_model.named_parameters(), eager_opt.state.values(), opt.state.values()
    ):
        if not name.endswith("attention.self.key.bias"):
            assert_close(s["exp_avg"].numpy(), es["exp_avg"].numpy(), rtol=RTOL, name=name)


def _assert_same_moves(base, eager_model, model, lr, steps):
    """Adam divides each gradient by its own running size, so a rounding difference in a small
    gradient becomes a difference of the same relative size in the step: the parameters'
    moves from `base` are compared, relative to the typical move (lr per step)."""
    initial = dict(base.named_parameters())
    for (name, p), q in zip(eager_model.named_parameters(), model.parameters()):
        start = initial[name].detach().numpy()
        moved, expected_move = q.detach().numpy() - start, p.detach().numpy() - start
        if name.endswith("attention.self.key.bias"):
            # softmax ignores a bias added to every key: its gradient is rounding noise
            # (~1e-9), whose sign Adam turns into steps of up to lr in either direction
            assert np.abs(moved - expected_move).max() <= 2 * lr * steps, name
            continue
        assert_close(moved, expected_move, rtol=1e-3, scale=lr, name=name)


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(4, 21))
        ids = rng.integers(1, 99, length)
        rows.append({"input_ids": ids, "label": int(ids[0] % 3)})
    return rows


def _pad_collator(rows):
    """Dynamic padding to the longest row of the batch (DataCollatorWithPadding's rule)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = r["input_ids"]
        mask[i, : len(r["input_ids"])] = 1
    labels = np.array([r["label"] for r in rows], np.int64)
    return {
        "input_ids": ember.tensor(ids),
        "attention_mask": ember.tensor(mask),
        "labels": ember.tensor(labels),
    }


def test_trainer_torch_compile_trains_like_eager(tmp_path):
    from ember.train import Trainer, TrainingArguments

    data = _rows(24)

    def run(compiled):
        ember.manual_seed(0)
        model = BertForSequenceClassification(_config())
        args = TrainingArguments(
            str(tmp_path / f"out{int(compiled)}"),
            per_device_train_batch_size=4,
            num_train_epochs=2,
            learning_rate=1e-3,
            torch_compile=compiled,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
            seed=0,
        )
        trainer = Trainer(model, args, train_dataset=data, data_collator=_pad_collator)
        result = trainer.train()
        return trainer, result

    eager, eager_result = run(False)
    old = ember.config.retrace_warning_after
    ember.config.retrace_warning_after = 1  # a graph per bucket is planned: no warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RetraceWarning)
            compiled, compiled_result = run(True)
    finally:
        ember.config.retrace_warning_after = old
    step = compiled._compiled_step
    assert step is not None
    # dynamic padding: batches of lengths 4..20 run in the buckets 8, 16 and 24 only
    shapes = [r for r in step.retrace_reasons if "shape" in r]
    assert len(shapes) <= 2 and step.trace_count == len(shapes) + 1, step.retrace_reasons
    assert all(r.split("-> [")[1].split("]")[0].split(", ")[1] in ("8", "16", "24") for r in shapes)
    eager_losses = [h["loss"] for h in eager.state.log_history if "loss" in h]
    losses = [h["loss"] for h in compiled.state.log_history if "loss" in h]
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    assert abs(compiled_result.training_loss - eager_result.training_loss) < 1e-4
    ember.manual_seed(0)
    base = BertForSequenceClassification(_config())
    steps = compiled.state.global_step
    _assert_same_moves(base, eager.model, compiled.model, lr=1e-3, steps=steps)


def test_pipeline_over_a_compiled_model(tmp_path):
    from ember.text import BertTokenizer
    from ember.transformers import pipeline

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    ember.manual_seed(0)
    model = BertForSequenceClassification(_config())
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w11 w12", "w13"]
    eager = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
    flag = pipeline(
        "text-classification", model=model, tokenizer=tokenizer, top_k=None, compile=True
    )
    given = pipeline(
        "text-classification", model=ember.compile(model), tokenizer=tokenizer, top_k=None
    )
    expected = eager(texts)
    for pipe in (flag, given):
        got = pipe(texts)
        for g, e in zip(got, expected):
            assert [d["label"] for d in g] == [d["label"] for d in e]
            np.testing.assert_allclose([d["score"] for d in g], [d["score"] for d in e], 1e-5)
    assert flag.forward_fn.trace_count == 1
    with pytest.raises(ValueError, match="compile=True is not supported"):
        from ember.transformers.pipelines import TextGenerationPipeline

        TextGenerationPipeline(model, tokenizer=tokenizer, compile=True)
