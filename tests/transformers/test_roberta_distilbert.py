"""RoBERTa and DistilBERT against HuggingFace transformers (PyTorch). Tiny random models built
by transformers from a config (no downloads) are saved with save_pretrained and loaded into
ember; outputs (with padded batches), losses and gradients agree; ember's folders load back
into transformers; the Auto classes pick the family from config.json. One tester class walks
a table of (family, head) rows (STYLE.md habit 5)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ember
from ember import transformers as et
from ember.testing.parity import parity_error, parity_rtol

BATCH, SEQ = 3, 7
# Note [Parity tolerances]: 2 layers plus a head, FFN width 37; backward doubles the depth
TOL = parity_rtol(depth=3, width=37)
GRAD_TOL = parity_rtol(depth=6, width=37)

# family -> how to build it. `pad` is the padding id written into padded positions (RoBERTa's
# position ids depend on it: Note [RoBERTa positions]).
FAMILIES = {
    "roberta": dict(
        config="RobertaConfig",
        prefix="Roberta",
        pad=1,
        token_types=True,
        tiny=dict(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
            type_vocab_size=1,
            pad_token_id=1,
            layer_norm_eps=1e-5,
        ),
    ),
    "distilbert": dict(
        config="DistilBertConfig",
        prefix="DistilBert",
        pad=0,
        token_types=False,
        tiny=dict(
            vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64
        ),
    ),
    "distilbert-sinusoidal": dict(
        config="DistilBertConfig",
        prefix="DistilBert",
        pad=0,
        token_types=False,
        tiny=dict(
            vocab_size=99,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=37,
            max_position_embeddings=64,
            sinusoidal_pos_embds=True,
            activation="relu",
        ),
    ),
}
HEADS = [
    "Model",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForMaskedLM",
    "ForQuestionAnswering",
    "ForMultipleChoice",
]
CHOICES = 2  # ForMultipleChoice's inputs are (BATCH, CHOICES, SEQ)
CASES = [(family, head) for family in FAMILIES for head in HEADS]
AUTO = {
    "Model": "AutoModel",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForMultipleChoice": "AutoModelForMultipleChoice",
}


def _err(a, b) -> float:
    """Note [Parity tolerances]'s normalised error (held under TOL)."""
    return parity_error(a, b)


def _abs_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _labels(rng, head: str, num_labels: int = 3):
    if head == "ForSequenceClassification":
        return {"labels": rng.integers(0, num_labels, BATCH)}
    if head == "ForTokenClassification":
        labels = rng.integers(0, num_labels, (BATCH, SEQ))
        labels[2, 3:] = -100  # padding ignored
        return {"labels": labels}
    if head == "ForMaskedLM":
        labels = np.full((BATCH, SEQ), -100)
        labels[:, 2] = rng.integers(0, 99, BATCH)
        labels[0, 4] = 7
        return {"labels": labels}
    if head == "ForQuestionAnswering":
        return {
            "start_positions": rng.integers(0, SEQ, BATCH),
            "end_positions": np.array([1, SEQ + 3, 2]),
        }  # one out of range: ignored
    if head == "ForMultipleChoice":
        return {"labels": rng.integers(0, CHOICES, BATCH)}
    return {}


class EncoderTester:
    """The tiny config, padded inputs, and both models from one folder saved by HF."""

    def __init__(self, hf, tmp_path, family: str, head: str, **overrides):
        import torch

        spec = FAMILIES[family]
        self.hf, self.torch, self.spec = hf, torch, spec
        self.name = spec["prefix"] + head
        rng = np.random.default_rng(0)
        num_labels = 2 if head == "ForQuestionAnswering" else 3
        self.config = getattr(hf, spec["config"])(
            **{**spec["tiny"], "num_labels": num_labels, **overrides}
        )
        torch.manual_seed(0)
        self.hf_model = getattr(hf, self.name)(self.config).eval()
        self.hf_model.config._attn_implementation = "eager"
        self.folder = str(tmp_path / self.name)
        self.hf_model.save_pretrained(self.folder)
        ids = rng.integers(3, 99, (BATCH, SEQ))
        ids[:, 0] = 0 if family == "roberta" else 2  # <s> / [CLS]-like first token
        mask = np.ones((BATCH, SEQ), np.int64)
        mask[1, 5:] = 0
        mask[2, 3:] = 0
        ids[mask == 0] = spec["pad"]
        if head == "ForMultipleChoice":  # choice 1: the batch in reverse order
            ids, mask = (np.stack([a, a[::-1]], axis=1) for a in (ids, mask))
        self.inputs = {"input_ids": ids, "attention_mask": mask}
        self.labels = _labels(rng, head)

    def ember_model(self):
        return getattr(et, self.name).from_pretrained(self.folder, output_loading_info=True)

    def run_both(self, model=None, with_labels=True, **flags):
        model = model if model is not None else self.ember_model()[0]
        kwargs = {**self.inputs, **(self.labels if with_labels else {})}
        torch = self.torch
        out_hf = self.hf_model(
            **{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, **flags
        )
        out_em = model(**{k: ember.from_numpy(np.asarray(v)) for k, v in kwargs.items()}, **flags)
        return model, out_em, out_hf


def _compare_outputs(out_em, out_hf) -> dict:
    keys = [k for k in out_hf.keys() if k != "cross_attentions"]  # () without a decoder
    assert list(out_em.keys()) == keys, (out_em.keys(), out_hf.keys())
    errors = {}
    for key in keys:
        ref, got = out_hf[key], out_em[key]
        if isinstance(ref, tuple):
            assert len(ref) == len(got), key
            errors[key] = max(
                _err(g.detach().numpy(), r.detach().numpy()) for g, r in zip(got, ref)
            )
        else:
            errors[key] = _err(got.detach().numpy(), ref.detach().numpy())
    return errors


@pytest.mark.parametrize("family,head", CASES)
def test_outputs_match_huggingface(hf, tmp_path, family, head):
    tester = EncoderTester(hf, tmp_path, family, head)
    model, info = tester.ember_model()
    assert info["missing_keys"] == [] and info["mismatched_keys"] == [], info
    assert info["unexpected_keys"] == [], info
    _, out_em, out_hf = tester.run_both(model, output_hidden_states=True, output_attentions=True)
    errors = _compare_outputs(out_em, out_hf)
    print(family, head, "max abs err", {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(v < TOL for v in errors.values()), errors
    # the fast attention path (no probabilities asked for) agrees too
    _, out_em, out_hf = tester.run_both(model, with_labels=False)
    first = list(out_hf.keys())[0]
    fast = _err(out_em[first].detach().numpy(), out_hf[first].detach().numpy())
    print(family, head, f"sdpa path {first} max abs err {fast:.2e}")
    assert fast < TOL
    # return_dict=False gives the tuple of the non-None fields (Note [ModelOutput access])
    as_tuple = model(
        **{k: ember.from_numpy(v) for k, v in tester.inputs.items()}, return_dict=False
    )
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out_em)
    assert np.array_equal(as_tuple[0].detach().numpy(), out_em[0].detach().numpy())


@pytest.mark.parametrize("family,head", [(f, h) for f, h in CASES if h != "Model"])
def test_loss_and_gradients_match_huggingface(hf, tmp_path, family, head):
    tester = EncoderTester(hf, tmp_path, family, head)
    model = None
    if head == "ForMultipleChoice":
        # the softmax over choices ignores a shift shared by the choices, so the gradients of
        # the parameters the choices share near the output are sums of per-choice terms that
        # cancel (some to exactly zero): float32 leaves them as rounding noise near 1e-3 of
        # their size. In float64 both sides agree to 1e-12; compare there.
        tester.hf_model.double()
        model = tester.ember_model()[0].double()
    model, out_em, out_hf = tester.run_both(model)
    ref_loss = out_hf.loss.detach().numpy()
    loss_rel = _abs_err(out_em.loss.detach().numpy(), ref_loss) / abs(float(ref_loss))
    out_em.loss.backward()
    out_hf.loss.backward()
    hf_grads = {n: p.grad for n, p in tester.hf_model.named_parameters()}
    # Relative error per tensor, against the tensor's largest gradient. Some gradients are
    # zero in exact arithmetic (key biases: softmax ignores a shift; QA's output bias and
    # last LayerNorm bias: each span softmax sums to one), and both sides then hold rounding
    # noise, below 1e-7 of the model's largest gradient (the smallest real ones here sit
    # near 3e-7): those are held to TOL of that largest gradient instead.
    overall = max(float(g.abs().max()) for g in hf_grads.values() if g is not None)
    worst, worst_abs, compared, noise = 0.0, 0.0, 0, []
    for name, param in model.named_parameters():
        ref = hf_grads.get(name)
        if ref is None:  # a tied name HF lists once; the same Parameter in ember
            continue
        assert param.grad is not None, name
        err, scale = _abs_err(param.grad.numpy(), ref.numpy()), float(ref.abs().max())
        if scale < 1e-7 * overall:
            noise.append(name)
            assert err < GRAD_TOL * overall, (name, err, overall)
        else:
            worst = max(worst, err / scale)
        worst_abs = max(worst_abs, err)
        compared += 1
    # a key bias per layer; QA's two; multiple choice's classifier, pre_classifier and last
    # LayerNorm biases (DistilBERT)
    assert len(noise) <= 2 + (3 if head == "ForMultipleChoice" else 2), noise
    print(
        family,
        head,
        f"loss rel err {loss_rel:.2e}, grads ({compared} tensors) "
        f"max rel err {worst:.2e}, max abs err {worst_abs:.2e}",
    )
    assert compared >= 20
    assert loss_rel < TOL and worst < GRAD_TOL


@pytest.mark.parametrize(
    "problem_type,labels",
    [
        ("regression", np.array([0.5, -1.0, 2.0], np.float32)),
        ("multi_label_classification", np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32)),
    ],
)
@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_sequence_classification_problem_types(hf, tmp_path, family, problem_type, labels):
    import torch

    num_labels = 1 if problem_type == "regression" else 3
    tester = EncoderTester(hf, tmp_path, family, "ForSequenceClassification", num_labels=num_labels)
    model, _ = tester.ember_model()
    got = model(
        **{k: ember.from_numpy(v) for k, v in tester.inputs.items()},
        labels=ember.from_numpy(labels),
    )
    ref = tester.hf_model(
        **{k: torch.from_numpy(v) for k, v in tester.inputs.items()},
        labels=torch.from_numpy(labels),
    )
    assert model.config.problem_type == tester.hf_model.config.problem_type == problem_type
    err = _err(got.loss.detach().numpy(), ref.loss.detach().numpy())
    print(family, problem_type, f"loss max abs err {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("family,head", CASES)
def test_ember_folder_loads_into_huggingface(hf, tmp_path, family, head):
    import torch

    spec = FAMILIES[family]
    name = spec["prefix"] + head
    num_labels = 2 if head == "ForQuestionAnswering" else 3
    config = getattr(et, spec["config"])(**spec["tiny"], num_labels=num_labels)
    ember.manual_seed(1)
    model = getattr(et, name)(config).eval()
    folder = tmp_path / "ember-saved"
    model.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    hf_model, info = getattr(hf, name).from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    hf_model.eval()
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 99, (2, 6))
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2])
    ids[mask == 0] = spec["pad"]
    if head == "ForMultipleChoice":  # one question, two choices
        ids, mask = ids.reshape(1, 2, 6), mask.reshape(1, 2, 6)
    ours = model(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask))
    theirs = hf_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    err = _err(ours[0].detach().numpy(), theirs[0].detach().numpy())
    print(family, head, f"ember-saved -> HF max abs err {err:.2e}")
    assert err < TOL
    if head == "ForMaskedLM":  # HF ties the decoder to the word embeddings as ember does
        decoder = hf_model.get_output_embeddings().weight
        assert decoder.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()
    # and back into ember: identical parameters
    again = getattr(et, name).from_pretrained(folder)
    for (key, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), key


@pytest.mark.parametrize("family,head", CASES)
def test_auto_classes_pick_the_family(hf, tmp_path, family, head):
    tester = EncoderTester(hf, tmp_path, family, head)
    config = et.AutoConfig.from_pretrained(tester.folder)
    assert type(config).__name__ == FAMILIES[family]["config"]
    model = getattr(et, AUTO[head]).from_pretrained(tester.folder)
    assert type(model).__name__ == tester.name
    assert not model.training
    # a head checkpoint also loads into the bare encoder, and the reverse, by prefix
    base = et.AutoModel.from_pretrained(tester.folder)
    assert type(base).__name__ == FAMILIES[family]["prefix"] + "Model"
    if head == "ForMaskedLM":  # HuggingFace maps pretraining to the MLM head for these
        pretraining = et.AutoModelForPreTraining.from_pretrained(tester.folder)
        assert type(pretraining).__name__ == tester.name


def test_roberta_position_ids_follow_padding_idx(hf):
    import torch

    from ember.transformers.roberta.modeling_roberta import create_position_ids_from_input_ids

    ids = np.array([[0, 5, 6, 2, 1, 1], [1, 0, 7, 1, 8, 2]])  # left padding and a pad inside
    ours = create_position_ids_from_input_ids(ember.from_numpy(ids), 1).numpy()
    theirs = (
        hf.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
            torch.from_numpy(ids), 1
        ).numpy()
    )
    print(ours.tolist())
    assert ours.tolist() == theirs.tolist() == [[2, 3, 4, 5, 1, 1], [1, 2, 3, 1, 4, 5]]


def test_roberta_inputs_embeds_and_left_padding_match(hf, tmp_path):
    import torch

    tester = EncoderTester(hf, tmp_path, "roberta", "Model")
    model, _ = tester.ember_model()
    ids = np.array([[1, 1, 0, 5, 6, 2], [0, 7, 8, 9, 10, 2]])
    mask = (ids != 1).astype(np.int64)
    ours = model(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask))
    theirs = tester.hf_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    left = _err(ours.last_hidden_state.detach().numpy(), theirs.last_hidden_state.detach().numpy())
    embeds = tester.hf_model.get_input_embeddings()(torch.from_numpy(ids))
    ours_e = model(inputs_embeds=ember.from_numpy(embeds.detach().numpy()))
    theirs_e = tester.hf_model(inputs_embeds=embeds)
    embedded = _err(
        ours_e.last_hidden_state.detach().numpy(), theirs_e.last_hidden_state.detach().numpy()
    )
    print(f"left padding {left:.2e}, inputs_embeds {embedded:.2e}")
    assert left < TOL and embedded < TOL


def test_roberta_token_type_ids_when_configured(hf, tmp_path):
    """type_vocab_size 2 (some RoBERTa-derived checkpoints): given token types are used."""
    tester = EncoderTester(hf, tmp_path, "roberta", "ForSequenceClassification", type_vocab_size=2)
    types = np.zeros((BATCH, SEQ), np.int64)
    types[:, 4:] = 1
    tester.inputs["token_type_ids"] = types
    _, out_em, out_hf = tester.run_both(with_labels=False)
    err = _err(out_em.logits.detach().numpy(), out_hf.logits.detach().numpy())
    print(f"token types {err:.2e}")
    assert err < TOL


def test_roberta_too_long_input_is_a_clear_error():
    config = et.RobertaConfig(**FAMILIES["roberta"]["tiny"])  # 64 positions, pad 1
    model = et.RobertaModel(config)
    model(ember.zeros((1, 62), dtype=ember.int64))  # positions 2..63: fits
    with pytest.raises(ValueError, match=r"RobertaEmbeddings: sequence length 63 .* 62 tokens"):
        model(ember.zeros((1, 63), dtype=ember.int64))


def test_distilbert_config_fields_and_aliases(hf):
    config = et.DistilBertConfig(hidden_size=48, num_attention_heads=6, num_hidden_layers=3)
    assert (config.dim, config.n_heads, config.n_layers) == (48, 6, 3)
    ours = config.to_dict()
    assert "hidden_size" not in ours and ours["dim"] == 48
    theirs = hf.DistilBertConfig().to_dict()
    defaults = et.DistilBertConfig().to_dict()
    for key in (
        "dim",
        "n_layers",
        "n_heads",
        "hidden_dim",
        "activation",
        "sinusoidal_pos_embds",
        "qa_dropout",
        "seq_classif_dropout",
        "dropout",
        "attention_dropout",
        "max_position_embeddings",
        "vocab_size",
        "initializer_range",
        "pad_token_id",
    ):
        assert defaults[key] == theirs[key], key


def test_distilbert_sinusoidal_table_matches_huggingface(hf):
    hf_model = hf.DistilBertModel(hf.DistilBertConfig(**FAMILIES["distilbert-sinusoidal"]["tiny"]))
    ours = et.DistilBertModel(et.DistilBertConfig(**FAMILIES["distilbert-sinusoidal"]["tiny"]))
    err = _err(
        ours.embeddings.position_embeddings.weight.detach().numpy(),
        hf_model.embeddings.position_embeddings.weight.detach().numpy(),
    )
    print(f"sinusoidal table {err:.2e}")
    assert err < 1e-6


def _write_config(folder, data: dict) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(data, file)
    return str(folder)


def test_unknown_model_type_is_a_clear_error(tmp_path):
    folder = _write_config(tmp_path / "x", {"model_type": "robertta", "hidden_size": 32})
    with pytest.raises(
        ValueError,
        match=r"unknown model_type 'robertta'.*'distilbert'.*"
        r"'roberta'",
    ):
        et.AutoConfig.from_pretrained(folder)
    with pytest.raises(ValueError, match="unknown model_type 'robertta'"):
        et.AutoModel.from_pretrained(folder)
    with pytest.raises(ValueError, match="unknown model_type"):
        et.AutoConfig.for_model("xlnet")


def test_config_of_another_family_is_a_clear_error(tmp_path):
    folder = _write_config(tmp_path / "d", {"model_type": "distilbert", "dim": 32})
    with pytest.raises(
        ValueError,
        match=r"RobertaConfig.*'distilbert' config, expected "
        r"'roberta'",
    ):
        et.RobertaConfig.from_pretrained(folder)
    with pytest.raises(ValueError, match="expected 'roberta'"):
        et.RobertaForMaskedLM.from_pretrained(folder)
    with pytest.raises(
        ValueError,
        match=r"AutoModelForNextSentencePrediction: no model for "
        r"model_type 'distilbert'",
    ):
        et.AutoModelForNextSentencePrediction.from_config(et.DistilBertConfig(dim=32, n_heads=4))


def test_unknown_fields_round_trip_and_bad_values_fail_clearly(tmp_path):
    # an unknown key is kept and written back (as HuggingFace does: Note [Config round trip])
    data = {**FAMILIES["distilbert"]["tiny"], "model_type": "distilbert", "my_field": [1, 2]}
    folder = _write_config(tmp_path / "u", data)
    config = et.AutoConfig.from_pretrained(folder)
    assert config.my_field == [1, 2] and config.to_dict()["my_field"] == [1, 2]
    # a known field with a value ember cannot build says what it expected
    with pytest.raises(KeyError, match=r"unknown activation 'gelu_fancy'; known: .*gelu"):
        et.DistilBertModel(
            et.DistilBertConfig(**{**FAMILIES["distilbert"]["tiny"], "activation": "gelu_fancy"})
        )
    with pytest.raises(
        ValueError,
        match=r"position_embedding_type 'relative_key' is not "
        r"supported",
    ):
        et.RobertaModel(
            et.RobertaConfig(**FAMILIES["roberta"]["tiny"], position_embedding_type="relative_key")
        )
    with pytest.raises(
        ValueError,
        match=r"DistilBertSelfAttention: dim 30 is not a multiple "
        r"of n_heads 4",
    ):
        et.DistilBertModel(et.DistilBertConfig(vocab_size=99, dim=30, n_heads=4, n_layers=1))
    model = et.DistilBertForMaskedLM(et.DistilBertConfig(**FAMILIES["distilbert"]["tiny"]))
    with pytest.raises(
        TypeError,
        match=r"DistilBertForMaskedLM.forward: unexpected keyword "
        r"arguments \['token_typeids'\]",
    ):
        model(ember.tensor([[2, 5]]), token_typeids=ember.tensor([[0, 0]]))
    model(ember.tensor([[2, 5]]), token_type_ids=ember.tensor([[0, 0]]))  # zeros: accepted
    with pytest.raises(ValueError, match="DistilBertModel: DistilBERT has no token types"):
        model(ember.tensor([[2, 5]]), token_type_ids=ember.tensor([[0, 1]]))


def _tiny_byte_level_bpe(folder) -> int:
    """A RoBERTa-style tokenizer.json (byte-level BPE, <s> A </s>, <mask> with lstrip) trained
    on a few sentences with the `tokenizers` library; returns its vocabulary size."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    engine = tokenizers.Tokenizer(models.BPE())
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    engine.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    engine.train_from_iterator(
        [
            "the cat sat on the mat",
            "a dog ate my homework",
            "the quick brown fox jumps over the lazy dog",
        ]
        * 20,
        trainer,
    )
    engine.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    engine.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    os.makedirs(folder, exist_ok=True)
    engine.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as file:
        json.dump(
            {
                "tokenizer_class": "RobertaTokenizer",
                "model_max_length": 60,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "sep_token": "</s>",
                "cls_token": "<s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "mask_token": "<mask>",
            },
            file,
        )
    return engine.get_vocab_size()


def _pipeline_scores(results) -> list:
    return [[(r["token"], r["score"]) for r in row] for row in results]


def test_roberta_tokenizer_and_pipelines_match_huggingface(hf, tmp_path):
    import torch

    folder = str(tmp_path / "roberta-mlm")
    vocab_size = _tiny_byte_level_bpe(folder)
    config = hf.RobertaConfig(**{**FAMILIES["roberta"]["tiny"], "vocab_size": vocab_size})
    torch.manual_seed(0)
    hf.RobertaForMaskedLM(config).eval().save_pretrained(folder)
    texts = ["the cat sat on the <mask>", "a <mask> ate my homework, said the quick brown fox"]
    ours_tok = et.AutoTokenizer.from_pretrained(folder)
    theirs_tok = hf.AutoTokenizer.from_pretrained(folder)
    assert type(ours_tok).__name__ == "RobertaTokenizer"
    ours, theirs = ours_tok(texts, padding=True), theirs_tok(texts, padding=True)
    assert dict(ours) == dict(theirs)  # the <mask> keeps its lstrip; no token_type_ids
    ours_fill = et.pipeline("fill-mask", model=folder, top_k=3)(texts)
    theirs_fill = hf.pipeline("fill-mask", model=folder, top_k=3)(texts)
    ours_s, theirs_s = _pipeline_scores(ours_fill), _pipeline_scores(theirs_fill)
    assert [[t for t, _ in row] for row in ours_s] == [[t for t, _ in row] for row in theirs_s]
    err = max(abs(a[1] - b[1]) for x, y in zip(ours_s, theirs_s) for a, b in zip(x, y))
    print(f"fill-mask scores max abs err {err:.2e}")
    assert err < TOL
    assert [r["sequence"] for r in ours_fill[0]] == [r["sequence"] for r in theirs_fill[0]]


def test_distilbert_text_classification_pipeline_matches_huggingface(hf, tmp_path):
    import torch

    folder = str(tmp_path / "distilbert-cls")
    os.makedirs(folder)
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "a",
        "dog",
        "good",
        "bad",
        "movie",
        "was",
        "!",
        ",",
    ]
    with open(os.path.join(folder, "vocab.txt"), "w") as file:
        file.write("".join(w + "\n" for w in words + [f"w{i}" for i in range(99 - len(words))]))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as file:
        json.dump({"tokenizer_class": "DistilBertTokenizer", "do_lower_case": True}, file)
    config = hf.DistilBertConfig(**FAMILIES["distilbert"]["tiny"], num_labels=3)
    torch.manual_seed(0)
    hf.DistilBertForSequenceClassification(config).eval().save_pretrained(folder)
    texts = ["the movie was good !", "a bad , bad dog sat on the mat", "cat"]
    ours = et.pipeline("text-classification", model=folder, top_k=None)(texts)
    theirs = hf.pipeline("text-classification", model=folder, top_k=None)(texts)
    for a, b in zip(ours, theirs):
        assert [r["label"] for r in a] == [r["label"] for r in b]
    err = max(abs(x["score"] - y["score"]) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    print(f"text-classification scores max abs err {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("output_attentions", [True, False], ids=["explicit", "sdpa"])
@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_head_mask_matches_huggingface(
    hf, hf_head_mask_attention, tmp_path, family, output_attentions
):
    """BERT's head_mask (HuggingFace 4.x semantics; the reference attention comes from
    conftest) reaches RoBERTa through BertModel.forward and DistilBERT through its own."""
    import torch

    tester = EncoderTester(hf, tmp_path, family, "ForSequenceClassification")
    tester.hf_model.config._attn_implementation = hf_head_mask_attention
    if family == "distilbert":  # the reference attention finds its layer by layer_idx
        for index, layer in enumerate(tester.hf_model.distilbert.transformer.layer):
            layer.attention.layer_idx = index
    model, _ = tester.ember_model()
    mask = np.array([[0.5, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.25]], np.float32)
    with torch.no_grad():
        ref = tester.hf_model(
            **{k: torch.from_numpy(v) for k, v in tester.inputs.items()},
            head_mask=torch.from_numpy(mask),
            output_attentions=True,
        )
    with ember.no_grad():
        out = model(
            **{k: ember.from_numpy(v) for k, v in tester.inputs.items()},
            head_mask=ember.from_numpy(mask),
            output_attentions=output_attentions,
        )
        plain = model(**{k: ember.from_numpy(v) for k, v in tester.inputs.items()})
    err = _err(out.logits.numpy(), ref.logits.numpy())
    if output_attentions:
        err = max(
            [err] + [_err(a.numpy(), b.numpy()) for a, b in zip(out.attentions, ref.attentions)]
        )
        assert not out.attentions[0].numpy()[:, 2].any()  # a silenced head
    print(family, f"head_mask max abs err {err:.2e}")
    assert err < TOL
    assert _err(plain.logits.numpy(), ref.logits.numpy()) > 1e-5  # the mask matters


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
@pytest.mark.parametrize(
    "head", ["ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"]
)
def test_mlm_checkpoint_starts_a_task_head(hf, tmp_path, family, head):
    """Fine-tuning starts from a pretraining (MLM) folder: the encoder loads, the task layers
    are reported missing (newly initialised), the MLM head is skipped without a report."""
    tester = EncoderTester(hf, tmp_path, family, "ForMaskedLM")
    name = FAMILIES[family]["prefix"] + head
    model, info = getattr(et, name).from_pretrained(
        tester.folder, output_loading_info=True, num_labels=2
    )
    fresh = {
        "ForSequenceClassification": {
            "roberta": "classifier.",
            "distilbert": ("pre_classifier.", "classifier."),
        },
        "ForTokenClassification": {"roberta": "classifier.", "distilbert": "classifier."},
        "ForQuestionAnswering": {"roberta": "qa_outputs.", "distilbert": "qa_outputs."},
    }
    print(name, info)
    assert info["missing_keys"] and all(
        k.startswith(fresh[head][family]) for k in info["missing_keys"]
    )
    assert info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    encoder = getattr(model, model.base_model_prefix)
    reference = getattr(tester.hf_model, model.base_model_prefix)
    ours = encoder.embeddings.word_embeddings.weight.detach().numpy()
    assert np.array_equal(ours, reference.embeddings.word_embeddings.weight.detach().numpy())


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("RobertaModel", "BertModel"),
        ("RobertaEmbeddings", "BertEmbeddings"),
    ],
)
def test_reused_bert_parts_still_fit(ours, theirs):
    """RobertaModel and its embeddings reuse BERT's forward with their own __init__; every
    attribute BERT's __init__ builds must exist on them too, so a change to BERT's constructor
    shows up here rather than as an AttributeError in a forward. (DistilBERT reuses nothing
    of BERT's: the shared pieces are encoder_heads' public functions.)"""
    from ember.transformers.bert import modeling_bert
    from ember.transformers.distilbert import modeling_distilbert
    from ember.transformers.roberta import modeling_roberta

    bert_config = et.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    family_config = (
        et.RobertaConfig(**FAMILIES["roberta"]["tiny"])
        if ours.startswith("Rob")
        else et.DistilBertConfig(**FAMILIES["distilbert"]["tiny"])
    )
    module = getattr(modeling_roberta, ours, None) or getattr(modeling_distilbert, ours)
    built, reference = module(family_config), getattr(modeling_bert, theirs)(bert_config)
    names = set(vars(reference)) | set(reference._modules) | set(reference._parameters)
    absent = sorted(n for n in names if not n.startswith("_") and not hasattr(built, n))
    assert absent == [], f"{ours} lacks {absent} that {theirs}.__init__ builds"


def test_inherited_bert_errors_name_the_actual_class():
    """Code RoBERTa inherits from BERT (BertModel.forward, BertEmbeddings.forward) names the
    class the user built, not BERT."""
    model = et.RobertaModel(et.RobertaConfig(**FAMILIES["roberta"]["tiny"]))
    with pytest.raises(
        ValueError,
        match=r"^RobertaModel: input_ids must be \(batch, seq\), got "
        r"shape \(5,\)",
    ):
        model(ember.tensor([0, 5, 6, 7, 2]))
    with pytest.raises(
        ValueError, match="^RobertaModel: pass exactly one of input_ids and inputs_embeds"
    ):
        model()
    with pytest.raises(
        ValueError,
        match=r"^RobertaModel: attention_mask shape \(1, 3\) does "
        r"not fit input \(1, 5\)",
    ):
        model(ember.tensor([[0, 5, 6, 7, 2]]), attention_mask=ember.tensor([[1, 1, 1]]))
    with pytest.raises(
        ValueError,
        match="^embeddings: RobertaEmbeddings: sequence length 70 "
        "exceeds max_position_embeddings 64",
    ):
        model(
            ember.zeros((1, 70), dtype=ember.int64),
            position_ids=ember.zeros((1, 70), dtype=ember.int64),
        )
    with pytest.raises(ValueError, match=r"^BertModel: input_ids must be \(batch, seq\)"):
        et.BertModel(
            et.BertConfig(
                vocab_size=99,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=37,
            )
        )(ember.tensor([1, 2]))


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_multiple_choice_inputs_embeds_and_bad_shapes(hf, tmp_path, family):
    """inputs_embeds (batch, choices, seq, hidden) are flattened as input_ids are; 2-D ids are
    a clear error naming the head."""
    import torch

    tester = EncoderTester(hf, tmp_path, family, "ForMultipleChoice")
    model, _ = tester.ember_model()
    ids = torch.from_numpy(tester.inputs["input_ids"])
    embeds = tester.hf_model.get_input_embeddings()(ids).detach()
    mask = tester.inputs["attention_mask"]
    theirs = tester.hf_model(inputs_embeds=embeds, attention_mask=torch.from_numpy(mask))
    ours = model(
        inputs_embeds=ember.from_numpy(embeds.numpy()), attention_mask=ember.from_numpy(mask)
    )
    err = _err(ours.logits.detach().numpy(), theirs.logits.detach().numpy())
    print(family, f"multiple choice inputs_embeds logits max abs err {err:.2e}")
    assert err < TOL
    name = FAMILIES[family]["prefix"] + "ForMultipleChoice"
    with pytest.raises(
        ValueError,
        match=rf"^{name}: input_ids must be \(batch, choices, seq\), "
        r"got shape \(3, 7\)",
    ):
        model(ember.zeros((3, 7), dtype=ember.int64))
