"""The real all-MiniLM-L6-v2 checkpoint against HuggingFace (slow), and the pipelines against
HuggingFace's on small random models with MiniLM's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import transformers as et
from ember.testing.parity import assert_close, close_report, parity_rtol

SENTENCES = [
    "Hello, my dog is cute",
    "The quick brown fox jumps over the lazy dog while the cat watches from the window.",
    "Café crème, naïve façade; 東京は大きい 🙂 \u0007 control?",
    "short",
    "A sentence pair",
    " ".join(["long"] * 200),  # truncated to 128
]


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.slow
def test_minilm_matches_huggingface(minilm, hf, threads):
    import torch

    tokenizer = et.AutoTokenizer.from_pretrained(minilm)
    batch = tokenizer(
        SENTENCES,
        ["and its second part"] * len(SENTENCES),
        padding=True,
        truncation=True,
        max_length=128,
        return_tensors="np",
    )
    ours = et.BertModel.from_pretrained(minilm)
    theirs = hf.BertModel.from_pretrained(minilm, attn_implementation="eager").eval()
    config = ours.config
    # Note [Parity tolerances]: the encoder's layers plus the pooler, widest dot product the FFN's
    rtol = parity_rtol(depth=config.num_hidden_layers + 1, width=config.intermediate_size)
    with ember.no_grad():
        out = ours(
            **{k: ember.from_numpy(v) for k, v in batch.items()},
            output_hidden_states=True,
            output_attentions=True,
        )
        fast = ours(**{k: ember.from_numpy(v) for k, v in batch.items()})
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        ref = theirs(**inputs, output_hidden_states=True, output_attentions=True)
        exact = theirs.double()(**inputs, output_hidden_states=True)  # float64: the yardstick
    pairs = {
        "last_hidden_state": (out.last_hidden_state, ref.last_hidden_state),
        "last_hidden_state (sdpa path)": (fast.last_hidden_state, ref.last_hidden_state),
        "pooler_output": (out.pooler_output, ref.pooler_output),
        **{
            f"hidden_states[{i}]": p
            for i, p in enumerate(zip(out.hidden_states, ref.hidden_states))
        },
        **{f"attentions[{i}]": p for i, p in enumerate(zip(out.attentions, ref.attentions))},
    }
    assert len(out.hidden_states) == 7 and len(out.attentions) == 6
    # sentence-transformers style embeddings: mean over the mask, L2-normalised
    emb = et.encode_sentences(ours, tokenizer, SENTENCES, batch_size=4, max_length=128).numpy()
    single = tokenizer(
        SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="np"
    )
    with torch.no_grad():
        theirs.float()
        h = theirs(**{k: torch.from_numpy(v) for k, v in single.items()}).last_hidden_state
    mask = torch.from_numpy(single["attention_mask"]).unsqueeze(-1).float()
    ref_emb = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=1).numpy()
    pairs["sentence embeddings"] = (emb, ref_emb)
    reports = {k: close_report(a, b, rtol=rtol) for k, (a, b) in pairs.items()}
    # who is nearer the exact answer: ember's and PyTorch's float32 hidden states against
    # PyTorch in float64; the bound must admit the reference's own rounding too
    for i, (a, b, x) in enumerate(zip(out.hidden_states, ref.hidden_states, exact.hidden_states)):
        reports[f"hidden_states[{i}] ember vs float64"] = close_report(a, x, rtol=rtol)
        reports[f"hidden_states[{i}] torch vs float64"] = close_report(b, x, rtol=rtol)
    print(f"MiniLM vs HF at {threads} thread(s), rtol {rtol:.2e}:")
    for k, r in reports.items():
        print(f"  {k}: max abs {r['max_abs']:.2e}, max rel {r['max_rel']:.2e}")
    failed = {k: r for k, r in reports.items() if not r["ok"]}
    assert not failed, failed
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_minilm_head_mask_matches_huggingface(minilm, hf, hf_head_mask_attention, threads):
    """head_mask on the real checkpoint, against HF's eager attention with 4.x's head-mask
    semantics (the `hf_head_mask_attention` fixture)."""
    import torch

    tokenizer = et.AutoTokenizer.from_pretrained(minilm)
    batch = tokenizer(
        SENTENCES[:4], padding=True, truncation=True, max_length=64, return_tensors="np"
    )
    ours = et.BertModel.from_pretrained(minilm)
    theirs = hf.BertModel.from_pretrained(minilm, attn_implementation=hf_head_mask_attention).eval()
    layers, heads = ours.config.num_hidden_layers, ours.config.num_attention_heads
    mask = np.random.default_rng(0).integers(0, 2, (layers, heads)).astype(np.float32)
    mask[0, :2] = [0.0, 0.5]
    with ember.no_grad():
        out = ours(
            **{k: ember.from_numpy(v) for k, v in batch.items()},
            head_mask=ember.from_numpy(mask),
            output_attentions=True,
        )
        fast = ours(
            **{k: ember.from_numpy(v) for k, v in batch.items()}, head_mask=ember.from_numpy(mask)
        )
    with torch.no_grad():
        ref = theirs(
            **{k: torch.from_numpy(v) for k, v in batch.items()},
            head_mask=torch.from_numpy(mask),
            output_attentions=True,
        )
    pairs = {
        "last_hidden_state": (out.last_hidden_state, ref.last_hidden_state),
        "last_hidden_state (sdpa path)": (fast.last_hidden_state, ref.last_hidden_state),
        "pooler_output": (out.pooler_output, ref.pooler_output),
        **{f"attentions[{i}]": p for i, p in enumerate(zip(out.attentions, ref.attentions))},
    }
    # the same comparison without a head mask: float32 rounding over 6 layers, the floor
    with ember.no_grad():
        plain = ours(**{k: ember.from_numpy(v) for k, v in batch.items()})
    with torch.no_grad():
        plain_ref = theirs(**{k: torch.from_numpy(v) for k, v in batch.items()})
    pairs["last_hidden_state without head_mask"] = (
        plain.last_hidden_state,
        plain_ref.last_hidden_state,
    )
    config = ours.config
    rtol = parity_rtol(depth=config.num_hidden_layers + 1, width=config.intermediate_size)
    reports = {k: close_report(a, b, rtol=rtol) for k, (a, b) in pairs.items()}
    print(f"MiniLM head_mask vs HF, rtol {rtol:.2e}:")
    for k, r in reports.items():
        print(f"  {k}: max abs {r['max_abs']:.2e}, max rel {r['max_rel']:.2e}")
    failed = {k: r for k, r in reports.items() if not r["ok"]}
    assert not failed, failed
    assert _err(plain.last_hidden_state.numpy(), ref.last_hidden_state) > 1e-2  # it matters


@pytest.fixture(scope="module")
def tiny_folders(minilm, hf, tmp_path_factory):
    """Small random BERTs over MiniLM's vocabulary, saved by HF with MiniLM's tokenizer."""
    import shutil

    import torch

    root = tmp_path_factory.mktemp("tiny")
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    made = {}
    for name, cls, extra in [
        ("cls", hf.BertForSequenceClassification, dict(id2label={0: "NEGATIVE", 1: "POSITIVE"})),
        ("mlm", hf.BertForMaskedLM, {}),
        ("ner", hf.BertForTokenClassification, dict(id2label=dict(enumerate(labels)))),
        ("base", hf.BertModel, {}),
    ]:
        torch.manual_seed(0)
        model = cls(hf.BertConfig(**config, **extra)).eval()
        if name == "ner":  # make entities likely: favour B-/I- tags over O
            with torch.no_grad():
                model.classifier.weight.mul_(40.0)
        folder = root / name
        model.save_pretrained(folder)
        for file in (
            "vocab.txt",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            shutil.copy(f"{minilm}/{file}", folder / file)
        made[name] = str(folder)
    return made


TEXTS = ["I love this movie", "Sarah lives in Paris and works in Berlin.", "meh"]
# Note [Parity tolerances]: the tiny models' 2 layers plus the head, FFN width 37
TINY_RTOL = parity_rtol(depth=3, width=37)


def _hf_pipeline(hf, task, folder, **kwargs):
    return hf.pipeline(task, model=folder, tokenizer=folder, device="cpu", **kwargs)


def test_text_classification_pipeline(hf, tiny_folders):
    ours = et.pipeline("sentiment-analysis", model=tiny_folders["cls"], batch_size=2)
    theirs = _hf_pipeline(hf, "sentiment-analysis", tiny_folders["cls"])
    got, ref = ours(TEXTS), theirs(TEXTS)
    assert [g["label"] for g in got] == [r["label"] for r in ref]
    assert_close([g["score"] for g in got], [r["score"] for r in ref], rtol=TINY_RTOL)
    all_scores = ours(TEXTS[0], top_k=None)
    assert [d["label"] for d in all_scores] == [d["label"] for d in theirs(TEXTS[0], top_k=None)]


def test_fill_mask_pipeline(hf, tiny_folders):
    ours = et.pipeline("fill-mask", model=tiny_folders["mlm"])
    theirs = _hf_pipeline(hf, "fill-mask", tiny_folders["mlm"])
    text = "The capital of France is [MASK]."
    got, ref = ours(text), theirs(text)
    assert [g["token"] for g in got] == [r["token"] for r in ref]
    assert [g["token_str"] for g in got] == [r["token_str"] for r in ref]
    assert [g["sequence"] for g in got] == [r["sequence"] for r in ref]
    assert_close([g["score"] for g in got], [r["score"] for r in ref], rtol=TINY_RTOL)
    with pytest.raises(ValueError, match="no \\[MASK\\] token"):
        ours("no mask here")


@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_token_classification_pipeline(hf, tiny_folders, strategy):
    ours = et.pipeline("ner", model=tiny_folders["ner"], aggregation_strategy=strategy)
    theirs = _hf_pipeline(hf, "ner", tiny_folders["ner"], aggregation_strategy=strategy)
    got, ref = ours(TEXTS), theirs(TEXTS)
    key = "entity" if strategy == "none" else "entity_group"
    assert sum(len(r) for r in ref) > 0
    for g, r in zip(got, ref):
        assert [(e[key], e["word"], e["start"], e["end"]) for e in g] == [
            (e[key], e["word"], e["start"], e["end"]) for e in r
        ]
        if g:
            assert_close([e["score"] for e in g], [e["score"] for e in r], rtol=TINY_RTOL)


def test_feature_extraction_pipeline(hf, tiny_folders):
    ours = et.pipeline("feature-extraction", model=tiny_folders["base"], batch_size=2)
    theirs = _hf_pipeline(hf, "feature-extraction", tiny_folders["base"])
    for g, r in zip(ours(TEXTS), theirs(TEXTS)):
        assert np.asarray(g).shape == np.asarray(r).shape
        assert_close(g, r, rtol=TINY_RTOL, name="features")


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        et.pipeline("summarization", model=".")


def _nesting(x) -> str:
    """The list/dict structure of a pipeline's output, without its values."""
    if isinstance(x, list):
        return "[" + ",".join(_nesting(item) for item in x) + "]"
    return "{}" if isinstance(x, dict) else "."


@pytest.mark.parametrize(
    "task,folder,inputs",
    [
        ("fill-mask", "mlm", "a [MASK] b"),
        ("fill-mask", "mlm", ["a [MASK] b"]),
        ("fill-mask", "mlm", ["a [MASK] b", "c [MASK]"]),
        ("fill-mask", "mlm", "a [MASK] [MASK] b"),
        ("sentiment-analysis", "cls", "good"),
        ("sentiment-analysis", "cls", ["good"]),
        ("ner", "ner", "Sarah lives in Paris"),
        ("ner", "ner", ["Sarah lives in Paris"]),
        ("feature-extraction", "base", "hi"),
        ("feature-extraction", "base", ["hi", "hello there"]),
    ],
)
def test_pipeline_outputs_nest_as_huggingface(hf, tiny_folders, task, folder, inputs):
    ours = et.pipeline(task, model=tiny_folders[folder])(inputs)
    theirs = _hf_pipeline(hf, task, tiny_folders[folder])(inputs)
    assert _nesting(ours) == _nesting(theirs)
