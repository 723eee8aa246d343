"""BERT against HuggingFace transformers (PyTorch): tiny random checkpoints saved by HF load
into every ember head and agree (outputs, losses, gradients); ember's folders load back into
HF. One tester class walks a table of heads (STYLE.md habit 5)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ember
from ember import transformers as et
from ember.testing.parity import parity_error, parity_rtol

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
BATCH, SEQ = 3, 7
# Note [Parity tolerances]: 2 layers plus a head, FFN width 37; backward doubles the depth
TOL = parity_rtol(depth=3, width=37)
GRAD_TOL = parity_rtol(depth=6, width=37)


def _labels(rng, head: str, num_labels: int = 3):
    """The label keyword arguments for each head."""
    if head == "BertForSequenceClassification":
        return {"labels": rng.integers(0, num_labels, BATCH)}
    if head == "BertForTokenClassification":
        return {"labels": rng.integers(0, num_labels, (BATCH, SEQ))}
    if head == "BertForMaskedLM":
        labels = np.full((BATCH, SEQ), -100)
        labels[:, 2] = rng.integers(0, 99, BATCH)
        labels[0, 4] = 7
        return {"labels": labels}
    if head == "BertForNextSentencePrediction":
        return {"labels": rng.integers(0, 2, BATCH)}
    if head == "BertForPreTraining":
        labels = np.full((BATCH, SEQ), -100)
        labels[:, 1] = rng.integers(0, 99, BATCH)
        return {"labels": labels, "next_sentence_label": rng.integers(0, 2, BATCH)}
    if head == "BertForQuestionAnswering":
        return {
            "start_positions": rng.integers(0, SEQ, BATCH),
            "end_positions": np.array([1, SEQ + 3, 2]),
        }  # one out of range: ignored
    if head == "BertForMultipleChoice":
        return {"labels": rng.integers(0, 2, BATCH)}
    return {}


HEADS = [
    "BertModel",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
]


def _err(a, b, scale=None) -> float:
    """Note [Parity tolerances]'s normalised error (held under TOL / GRAD_TOL)."""
    return parity_error(a, b, scale=scale)


def _gradient_scale(grads) -> float:
    """The root mean square over all of a model's gradients: the size of the terms that cancel
    in a gradient that is zero in exact arithmetic (a key bias: softmax ignores a shift), where
    both sides hold rounding noise only (Note [Parity tolerances])."""
    squares = [np.square(np.asarray(g, np.float64)) for g in grads]
    return float(np.sqrt(sum(s.sum() for s in squares) / sum(s.size for s in squares)))


class BertModelTester:
    """Builds the tiny config, the inputs, and both models from one HF-saved folder."""

    def __init__(self, hf, tmp_path, head: str, **config_overrides):
        import torch

        self.hf, self.torch, self.head = hf, torch, head
        rng = np.random.default_rng(0)
        num_labels = 2 if head == "BertForQuestionAnswering" else 3  # start and end
        self.config = hf.BertConfig(**{**TINY, "num_labels": num_labels, **config_overrides})
        torch.manual_seed(0)
        self.hf_model = getattr(hf, head)(self.config).eval()
        self.hf_model.config._attn_implementation = "eager"
        self.folder = str(tmp_path / head)
        self.hf_model.save_pretrained(self.folder)
        ids = rng.integers(1, 99, (BATCH, SEQ))
        mask = np.ones((BATCH, SEQ), np.int64)
        mask[1, 5:] = 0  # padding
        mask[2, 3:] = 0
        types = np.zeros((BATCH, SEQ), np.int64)
        types[:, 4:] = 1
        self.inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if head == "BertForMultipleChoice":  # (batch, choices=2, seq)
            self.inputs = {k: np.stack([v, v[::-1]], 1) for k, v in self.inputs.items()}
        self.labels = _labels(rng, head)

    def ember_model(self):
        model, info = getattr(et, self.head).from_pretrained(self.folder, output_loading_info=True)
        return model, info

    def run_both(self, with_labels=True, **flags):
        ember_model, _ = self.ember_model()
        kwargs = {**self.inputs, **(self.labels if with_labels else {})}
        torch = self.torch
        out_hf = self.hf_model(
            **{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, **flags
        )
        out_em = ember_model(
            **{k: ember.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, **flags
        )
        return ember_model, out_em, out_hf


@pytest.mark.parametrize("head", HEADS)
def test_head_matches_huggingface(hf, tmp_path, head):
    tester = BertModelTester(hf, tmp_path, head)
    ember_model, info = tester.ember_model()
    assert info["missing_keys"] == [] and info["mismatched_keys"] == []
    assert info["unexpected_keys"] == []
    _, out_em, out_hf = tester.run_both(output_hidden_states=True, output_attentions=True)
    hf_keys = [k for k in out_hf.keys() if k != "cross_attentions"]  # () without a decoder
    assert list(out_em.keys()) == hf_keys, (out_em.keys(), out_hf.keys())
    errors = {}
    for key in hf_keys:
        ref, got = out_hf[key], out_em[key]
        if isinstance(ref, tuple):
            assert len(ref) == len(got), key
            errors[key] = max(
                _err(g.detach().numpy(), r.detach().numpy()) for g, r in zip(got, ref)
            )
        else:
            errors[key] = _err(got.detach().numpy(), ref.detach().numpy())
    print(head, {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(v < TOL for v in errors.values()), errors
    # tuple access and index access agree with attributes (Note [ModelOutput access])
    assert out_em[0] is out_em[list(out_em.keys())[0]]


@pytest.mark.parametrize("head", HEADS)
def test_sdpa_path_matches_explicit_attention(hf, tmp_path, head):
    tester = BertModelTester(hf, tmp_path, head)
    _, out_em, out_hf = tester.run_both(with_labels=False)
    first = list(out_hf.keys())[0]
    err = _err(out_em[first].detach().numpy(), out_hf[first].detach().numpy())
    print(head, first, f"{err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("head", [h for h in HEADS if h != "BertModel"])
def test_loss_and_gradients_match_huggingface(hf, tmp_path, head):
    tester = BertModelTester(hf, tmp_path, head)
    ember_model, out_em, out_hf = tester.run_both()
    loss_err = _err(out_em.loss.detach().numpy(), out_hf.loss.detach().numpy())
    out_em.loss.backward()
    out_hf.loss.backward()
    hf_grads = {n: p.grad for n, p in tester.hf_model.named_parameters()}
    scale = _gradient_scale(g.numpy() for g in hf_grads.values() if g is not None)
    worst, compared = 0.0, 0
    for name, param in ember_model.named_parameters():
        ref = hf_grads.get(name)
        if ref is None:  # a tied name HF lists once; it is the same Parameter in ember
            continue
        assert param.grad is not None, name
        worst = max(worst, _err(param.grad.numpy(), ref.numpy(), scale=scale))
        compared += 1
    print(head, f"loss {loss_err:.2e}, grads ({compared} tensors) {worst:.2e}")
    assert compared >= 30
    assert loss_err < TOL and worst < GRAD_TOL


@pytest.mark.parametrize(
    "problem_type,labels",
    [
        ("regression", np.array([0.5, -1.0, 2.0], np.float32)),
        ("single_label_classification", np.array([0, 2, 1])),
        ("multi_label_classification", np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32)),
    ],
)
def test_sequence_classification_problem_types(hf, tmp_path, problem_type, labels):
    import torch

    num_labels = 1 if problem_type == "regression" else 3
    tester = BertModelTester(hf, tmp_path, "BertForSequenceClassification", num_labels=num_labels)
    model, _ = tester.ember_model()
    inputs = tester.inputs
    labels = labels[:, None][:, :1].reshape(-1) if num_labels == 1 else labels
    got = model(
        **{k: ember.from_numpy(v) for k, v in inputs.items()}, labels=ember.from_numpy(labels)
    )
    ref = tester.hf_model(
        **{k: torch.from_numpy(v) for k, v in inputs.items()}, labels=torch.from_numpy(labels)
    )
    assert model.config.problem_type == tester.hf_model.config.problem_type == problem_type
    err = _err(got.loss.detach().numpy(), ref.loss.detach().numpy())
    print(problem_type, f"{err:.2e}")
    assert err < TOL


@pytest.mark.parametrize(
    "head", ["BertForPreTraining", "BertForSequenceClassification", "BertForTokenClassification"]
)
def test_ember_folder_loads_into_huggingface(hf, tmp_path, head):
    import torch

    config = et.BertConfig(**TINY, num_labels=3)
    ember.manual_seed(1)
    model = getattr(et, head)(config).eval()
    folder = tmp_path / "ember-saved"
    model.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    hf_model, info = getattr(hf, head).from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf_model.eval()
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 99, (2, 6))
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2])
    ours = model(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask))
    theirs = hf_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    err = _err(ours[0].detach().numpy(), theirs[0].detach().numpy())
    print(head, f"{err:.2e}")
    assert err < TOL
    # and back into ember: identical parameters
    again = getattr(et, head).from_pretrained(folder)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and np.array_equal(p1.detach().numpy(), p2.detach().numpy())


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = et.BertForMaskedLM(et.BertConfig(**TINY))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    untied = et.BertForMaskedLM(et.BertConfig(**TINY, tie_word_embeddings=False))
    assert (
        untied.cls.predictions.decoder.weight is not untied.bert.embeddings.word_embeddings.weight
    )


def test_init_weights_like_huggingface():
    ember.manual_seed(0)
    model = et.BertForPreTraining(
        et.BertConfig(**{**TINY, "hidden_size": 256, "num_attention_heads": 4})
    )
    weight = model.bert.encoder.layer[0].attention.self.query.weight.detach().numpy()
    assert abs(weight.std() - 0.02) < 0.002 and abs(weight.mean()) < 0.002
    assert np.all(model.bert.encoder.layer[0].attention.self.query.bias.detach().numpy() == 0)
    assert np.all(model.bert.embeddings.LayerNorm.weight.detach().numpy() == 1)
    padding_row = model.bert.embeddings.word_embeddings.weight.detach().numpy()[0]
    assert np.all(padding_row == 0)
    assert np.all(model.cls.predictions.bias.detach().numpy() == 0)


def test_loading_report_names_new_and_unused_weights(tmp_path, caplog):
    base = et.BertModel(et.BertConfig(**TINY))
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level("WARNING", logger="ember.transformers"):
        model, info = et.BertForSequenceClassification.from_pretrained(
            tmp_path / "base", num_labels=4, output_loading_info=True
        )
    assert info["missing_keys"] == ["classifier.weight", "classifier.bias"]
    assert info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert "classifier.weight, classifier.bias" in caplog.text
    assert model.config.num_labels == 4 and model.classifier.out_features == 4
    # the encoder weights did load
    assert np.array_equal(
        model.bert.embeddings.word_embeddings.weight.detach().numpy(),
        base.embeddings.word_embeddings.weight.detach().numpy(),
    )
    # a head checkpoint into the bare model: prefix stripped, the head is unexpected
    model.save_pretrained(tmp_path / "head")
    bare, info = et.BertModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [
        "classifier.bias",
        "classifier.weight",
    ]


def test_mismatched_sizes_raise_unless_ignored(tmp_path):
    model = et.BertForSequenceClassification(et.BertConfig(**TINY, num_labels=3))
    model.save_pretrained(tmp_path)
    with pytest.raises(
        RuntimeError,
        match="classifier.weight: checkpoint \\(3, 32\\), "
        "model \\(5, 32\\)(.|\n)*ignore_mismatched_sizes",
    ):
        et.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model5, info = et.BertForSequenceClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert [k for k, _, _ in info["mismatched_keys"]] == ["classifier.weight", "classifier.bias"]
    assert tuple(model5.classifier.weight.shape) == (5, 32)


def test_pickle_weights_need_allow_pickle(hf, tmp_path):
    import torch

    hf_model = hf.BertModel(hf.BertConfig(**TINY)).eval()
    hf_model.config.save_pretrained(tmp_path)
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        et.BertModel.from_pretrained(tmp_path)
    model = et.BertModel.from_pretrained(tmp_path, allow_pickle=True)
    ids = np.array([[5, 6, 7, 8]])
    err = _err(
        model(ember.from_numpy(ids)).last_hidden_state.detach().numpy(),
        hf_model(torch.from_numpy(ids)).last_hidden_state.detach().numpy(),
    )
    assert err < TOL


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    data = {
        **TINY,
        "model_type": "bert",
        "gradient_checkpointing": False,
        "my_custom_field": [1, 2],
        "id2label": {"0": "NEG", "1": "POS"},
        "label2id": {"NEG": 0, "POS": 1},
    }
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = et.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, et.BertConfig)
    assert config.num_labels == 2 and config.id2label == {0: "NEG", 1: "POS"}
    assert config.my_custom_field == [1, 2]
    config.save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["my_custom_field"] == [1, 2] and written["gradient_checkpointing"] is False
    assert written["id2label"] == {"0": "NEG", "1": "POS"}
    assert et.BertConfig.from_pretrained(tmp_path / "out") == config


def test_auto_classes_pick_bert(tmp_path):
    et.BertForMaskedLM(et.BertConfig(**TINY)).save_pretrained(tmp_path)
    assert type(et.AutoModel.from_pretrained(tmp_path)).__name__ == "BertModel"
    assert type(et.AutoModelForMaskedLM.from_pretrained(tmp_path)).__name__ == "BertForMaskedLM"
    model = et.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert model.config.num_labels == 5
    with pytest.raises(ValueError, match="unknown model_type 'gpt9'"):
        et.AutoConfig.for_model("gpt9")


def test_bad_inputs_give_clear_errors():
    model = et.BertModel(et.BertConfig(**TINY))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="max_position_embeddings 64"):
        model(ember.ones((1, 65), dtype=ember.int64))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(ember.ones((2, 5), dtype=ember.int64), attention_mask=ember.ones((2, 4)))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        et.BertModel.from_pretrained("no-such-org/no-such-model")


def test_model_output_access():
    out = et.modeling_outputs.SequenceClassifierOutput(logits=ember.ones(2))
    assert out[0] is out.logits is out["logits"] and out.to_tuple() == (out.logits,)
    with pytest.raises(KeyError, match="no \\(non-None\\) field 'loss'"):
        out["loss"]


def test_dropout_is_active_in_train_mode():
    model = et.BertModel(et.BertConfig(**TINY)).train()
    ids = ember.tensor([[3, 4, 5, 6]])
    a = model(ids).last_hidden_state.detach().numpy()
    b = model(ids).last_hidden_state.detach().numpy()
    assert not np.allclose(a, b)
    model.eval()
    assert np.array_equal(
        model(ids).last_hidden_state.detach().numpy(), model(ids).last_hidden_state.detach().numpy()
    )


# --- head_mask ---------------------------------------------------------------------------------
HEAD_MASKS = {
    "per_head": np.array([1.0, 0.0, 1.0, 1.0], np.float32),
    "per_layer": np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]], np.float32),
    "fractional": np.array([[0.5, 1.0, 0.25, 1.0], [1.0, 1.0, 1.0, 0.0]], np.float32),
}


def _full_head_mask(mask, layers=2):
    return np.broadcast_to(mask, (layers, mask.shape[-1]))


@pytest.mark.parametrize("kind", list(HEAD_MASKS))
@pytest.mark.parametrize("output_attentions", [True, False], ids=["explicit", "sdpa"])
def test_head_mask_matches_huggingface(
    hf, hf_head_mask_attention, tmp_path, kind, output_attentions
):
    import torch

    tester = BertModelTester(hf, tmp_path, "BertModel")
    tester.hf_model.config._attn_implementation = hf_head_mask_attention
    ember_model, _ = tester.ember_model()
    mask = HEAD_MASKS[kind]
    with torch.no_grad():
        ref = tester.hf_model(
            **{k: torch.from_numpy(v) for k, v in tester.inputs.items()},
            head_mask=torch.from_numpy(_full_head_mask(mask).copy()),
            output_attentions=True,
        )
    with ember.no_grad():
        out = ember_model(
            **{k: ember.from_numpy(v) for k, v in tester.inputs.items()},
            head_mask=ember.from_numpy(mask),
            output_attentions=output_attentions,
        )
    errors = {
        "last_hidden_state": _err(out.last_hidden_state.numpy(), ref.last_hidden_state),
        "pooler_output": _err(out.pooler_output.numpy(), ref.pooler_output),
    }
    if output_attentions:
        errors["attentions"] = max(
            _err(a.numpy(), b) for a, b in zip(out.attentions, ref.attentions)
        )
        silenced = np.argwhere(_full_head_mask(mask) == 0)
        assert all(not out.attentions[layer].numpy()[:, head].any() for layer, head in silenced)
    print(kind, "max abs errors:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(v < TOL for v in errors.values()), errors
    # the mask matters: without it the output differs
    with ember.no_grad():
        plain = ember_model(**{k: ember.from_numpy(v) for k, v in tester.inputs.items()})
    assert _err(plain.last_hidden_state.numpy(), ref.last_hidden_state) > 1e-3


def test_head_mask_gradients_match_huggingface(hf, hf_head_mask_attention, tmp_path):
    """Loss and gradients, the head mask's own included (HF's head-importance scores)."""
    import torch

    head = "BertForSequenceClassification"
    tester = BertModelTester(hf, tmp_path, head)
    tester.hf_model.config._attn_implementation = hf_head_mask_attention
    ember_model, _ = tester.ember_model()
    mask = HEAD_MASKS["fractional"]
    t_mask = torch.from_numpy(mask.copy()).requires_grad_(True)
    e_mask = ember.from_numpy(mask.copy()).requires_grad_(True)
    kwargs = {**tester.inputs, **tester.labels}
    out_hf = tester.hf_model(
        **{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, head_mask=t_mask
    )
    out_em = ember_model(
        **{k: ember.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, head_mask=e_mask
    )
    out_hf.loss.backward()
    out_em.loss.backward()
    hf_grads = {n: p.grad for n, p in tester.hf_model.named_parameters()}
    scale = _gradient_scale(g.numpy() for g in hf_grads.values() if g is not None)
    worst = max(
        _err(p.grad.numpy(), hf_grads[n].numpy(), scale=scale)
        for n, p in ember_model.named_parameters()
        if n in hf_grads
    )
    errors = {
        "loss": _err(out_em.loss.detach().numpy(), out_hf.loss.detach().numpy()),
        "parameter grads": worst,
        "head_mask grad": _err(e_mask.grad.numpy(), t_mask.grad.numpy()),
    }
    print("head_mask normalised errors:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert errors["loss"] < TOL, errors
    assert errors["parameter grads"] < GRAD_TOL and errors["head_mask grad"] < GRAD_TOL, errors
    assert np.abs(t_mask.grad.numpy()).min() > 0  # every head's score is informative


def test_head_mask_shape_is_checked():
    model = et.BertModel(et.BertConfig(**TINY))
    ids = ember.tensor([[3, 4, 5]])
    for bad in (ember.ones(3), ember.ones((3, 4)), ember.ones((2, 4, 1))):
        with pytest.raises(
            ValueError,
            match=r"head_mask must have shape \(num_heads,\) = "
            r"\(4,\) or \(num_layers, num_heads\) = \(2, 4\)",
        ):
            model(ids, head_mask=bad)


def test_weights_the_checkpoint_lacks_are_initialised(tmp_path):
    """Note [Skipped initialisation]: from_pretrained draws no weights it will overwrite, and
    initialises the ones the checkpoint lacks as a fresh model would (HF's _init_weights)."""
    config = et.BertConfig(**TINY, num_labels=3)
    base = et.BertModel(config)
    base.save_pretrained(tmp_path)
    model, info = et.BertForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert info["missing_keys"] == ["classifier.weight", "classifier.bias"]
    weight = model.classifier.weight.detach().numpy()
    bias = model.classifier.bias.detach().numpy()
    assert np.isfinite(weight).all() and np.array_equal(bias, np.zeros(3, np.float32))
    assert abs(weight.std() - config.initializer_range) < 0.3 * config.initializer_range
    for name, value in base.state_dict().items():  # the loaded ones are the checkpoint's
        assert np.array_equal(model.bert.state_dict()[name].numpy(), value.numpy()), name


@pytest.mark.parametrize("chunk_rows", [4, 5, 64])
def test_feed_forward_chunks_in_inference_equal_the_whole_batch(monkeypatch, chunk_rows):
    """Note [Feed-forward chunks]: under no_grad the feed-forward block runs over blocks of
    rows (one that does not divide the rows included); the result equals the whole-batch
    forward (grad mode on) within float32 rounding, padding and mask included."""
    from ember.transformers import encoder_heads

    ember.manual_seed(0)
    model = et.BertModel(et.BertConfig(**TINY)).eval()
    rng = np.random.default_rng(0)
    ids = ember.from_numpy(rng.integers(1, 99, (BATCH, SEQ)))
    mask = np.ones((BATCH, SEQ), np.int64)
    mask[1, 4:] = 0
    mask = ember.from_numpy(mask)
    whole = model(ids, attention_mask=mask).last_hidden_state.detach().numpy()
    monkeypatch.setattr(encoder_heads, "FEED_FORWARD_CHUNK_ROWS", chunk_rows)
    with ember.no_grad():
        chunked = model(ids, attention_mask=mask)
    assert chunked.last_hidden_state.shape == (BATCH, SEQ, TINY["hidden_size"])
    np.testing.assert_allclose(chunked.last_hidden_state.numpy(), whole, rtol=1e-6, atol=1e-6)
