"""GGUF loading (`from_pretrained(folder, gguf_file=...)`) against HuggingFace transformers.

A tiny random Llama (hidden 32, 2 layers, 4 heads, 2 key-value heads) and a byte-level BPE
trained here are written as llama.cpp's converter writes them (`ember.testing.gguf_files`:
quantized tensors, the rotary row permutation, tied embeddings, tokenizer metadata, a chat
template). ember and transformers then load the same file: configs, dequantized weights and
tokenizer ids must be equal, and the weights must match the original model up to the
quantization error (which checks the row permutation independently of transformers).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ember.io.gguf import GGUFFile
from ember.testing.gguf_files import llama_cpp_permute, write_llama_gguf
from ember.text import AutoTokenizer
from ember.transformers.configuration_utils import PretrainedConfig
from ember.transformers.gguf_utils import (
    GGUFCheckpointReader,
    config_dict_from_gguf,
    unpermute_rotary_rows,
)

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONFIG = dict(
    vocab_size=None,  # the trained vocabulary's size
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
HELD_OUT = [
    "Held-out text: loading 3 GGUF files, 12345 tokens, naïve café 😀.",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "  two spaces\tand a tab\nnew line <repo_name> done",
    "",
]


def _vocabulary():
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    with open(os.path.join(ROOT, "ember", "text", "gpt2.py"), encoding="utf-8") as file:
        corpus = file.read().split("\n")
    engine = tokenizers.Tokenizer(models.BPE())
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    engine.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    engine.train_from_iterator(corpus, trainer)
    model = json.loads(engine.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, hf):
    """(folder, file name, the original HF model) for a Q8_0 tiny Llama GGUF."""
    import torch

    tokens, merges, types = _vocabulary()
    config = dict(CONFIG, vocab_size=len(tokens))
    torch.manual_seed(0)
    model = hf.LlamaForCausalLM(hf.LlamaConfig(**config, bos_token_id=1, eos_token_id=2)).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("gguf")
    name = "tiny-llama.Q8_0.gguf"
    write_llama_gguf(
        str(folder / name),
        state,
        config,
        tokens,
        merges,
        types,
        quantization="Q8_0",
        special_ids={"bos": 1, "eos": 2, "unk": 0, "pad": 2},
        chat_template=CHATML,
    )
    return str(folder), name, model


@pytest.fixture(scope="module")
def hf_from_gguf(tiny, hf):
    folder, name, _ = tiny
    return hf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for heads, rows, cols in ((1, 4, 3), (4, 32, 5), (3, 192, 2)):
        weight = rng.standard_normal((rows, cols)).astype(np.float32)
        np.testing.assert_array_equal(
            unpermute_rotary_rows(llama_cpp_permute(weight, heads), heads), weight
        )
    with pytest.raises(ValueError, match="do not split into 4 heads"):
        unpermute_rotary_rows(np.zeros((6, 2)), 4)


def test_config_equals_huggingface(tiny, hf_from_gguf):
    folder, name, _ = tiny
    ours = config_dict_from_gguf(os.path.join(folder, name))
    theirs = hf_from_gguf.config
    assert ours["model_type"] == theirs.model_type == "llama"
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "vocab_size",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "head_dim",
    ):
        assert ours[key] == getattr(theirs, key), key
    assert ours["rms_norm_eps"] == pytest.approx(theirs.rms_norm_eps, rel=1e-6)
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]


def test_weights_equal_huggingface_and_the_original(tiny, hf_from_gguf):
    folder, name, original = tiny
    reader = GGUFCheckpointReader(os.path.join(folder, name))
    try:
        theirs = {k: v.detach().numpy() for k, v in hf_from_gguf.state_dict().items()}
        source = {k: v.detach().numpy() for k, v in original.state_dict().items()}
        keys = reader.keys()
        assert set(keys) == set(theirs) - {"lm_head.weight"}  # tied: no output.weight
        for key in keys:
            ours = reader.get(key)
            assert reader.shape(key) == ours.shape == theirs[key].shape, key
            np.testing.assert_array_equal(ours, theirs[key], err_msg=key)
            # Q8_0: 8-bit steps of each 32-block's max |w| / 127
            scale = np.abs(source[key]).max()
            np.testing.assert_allclose(ours, source[key], atol=scale / 127, err_msg=key)
    finally:
        reader.close()


def test_tokenizer_equals_huggingface(tiny, hf):
    folder, name, _ = tiny
    ours = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    theirs = hf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    assert (ours.bos_token, ours.eos_token, ours.unk_token, ours.pad_token) == (
        theirs.bos_token,
        theirs.eos_token,
        theirs.unk_token,
        theirs.pad_token,
    )
    assert len(ours) == len(theirs)
    for text in HELD_OUT:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
        ids = theirs(text)["input_ids"]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                ids, skip_special_tokens=skip
            )
    messages = [{"role": "user", "content": "What is GGUF?"}]
    for generation_prompt in (False, True):
        assert (
            ours.apply_chat_template(messages, add_generation_prompt=generation_prompt)["input_ids"]
            == theirs.apply_chat_template(messages, add_generation_prompt=generation_prompt)[
                "input_ids"
            ]
        )


def test_gguf_file_reads_metadata_and_shapes(tiny):
    folder, name, _ = tiny
    gguf_file = GGUFFile(os.path.join(folder, name))
    assert gguf_file.metadata["general.architecture"] == "llama"
    assert gguf_file.field("llama.attention.head_count_kv") == 2
    assert gguf_file.shape("token_embd.weight") == (
        len(gguf_file.field("tokenizer.ggml.tokens")),
        64,
    )
    assert gguf_file.quantization("blk.0.attn_q.weight") == "Q8_0"
    assert gguf_file.quantization("blk.0.attn_norm.weight") == "F32"
    with pytest.raises(KeyError, match="no tensor 'output.weight'"):
        gguf_file.get("output.weight")


def test_bad_gguf_files_say_what_is_wrong(tiny, tmp_path):
    folder, name, _ = tiny
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="is not a GGUF file: it starts with b'PK"):
        GGUFFile(tmp_path / "fake.gguf")
    with pytest.raises(FileNotFoundError, match="no GGUF file 'missing.gguf'.*tiny-llama"):
        AutoTokenizer.from_pretrained(folder, gguf_file="missing.gguf")
    with pytest.raises(FileNotFoundError, match="no GGUF file 'missing.gguf'.*tiny-llama"):
        PretrainedConfig.get_config_dict(folder, gguf_file="missing.gguf")
    truncated = tmp_path / "truncated.gguf"
    with open(os.path.join(folder, name), "rb") as file:
        truncated.write_bytes(file.read(200))
    with pytest.raises(ValueError, match="cannot read"):
        GGUFFile(truncated)


def test_model_from_gguf_equals_huggingface(tiny, hf_from_gguf):
    import torch

    import ember
    from ember.transformers import AutoModelForCausalLM, LlamaForCausalLM

    folder, name, _ = tiny
    model, info = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, output_loading_info=True
    )
    assert isinstance(model, LlamaForCausalLM)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = np.array([[1, 17, 99, 250, 3, 42, 42, 7], [5, 6, 7, 8, 9, 10, 11, 12]])
    with ember.no_grad():
        ours = model(ember.tensor(ids)).logits.numpy()
    with torch.no_grad():
        theirs = hf_from_gguf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    generated = model.generate(ember.tensor(ids[:1]), max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        reference = hf_from_gguf.generate(
            torch.tensor(ids[:1]), max_new_tokens=8, do_sample=False, pad_token_id=2
        )
    assert np.asarray(generated.numpy()).tolist() == reference.numpy().tolist()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_model_from_gguf(tiny, dtype):
    import ember
    from ember.transformers import AutoModelForCausalLM

    folder, name, _ = tiny
    full = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    half = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {getattr(ember, dtype)}
    ids = ember.tensor([[1, 17, 99, 250, 3, 42]])
    with ember.no_grad():
        ours = half(ids).logits
        reference = full(ids).logits.numpy()
    assert ours.dtype is ember.float32
    tolerance = 0.05 if dtype == "bfloat16" else 0.005  # 8 / 11 significant bits per weight
    np.testing.assert_allclose(ours.numpy(), reference, rtol=tolerance, atol=tolerance)
    back = half.float()
    assert {p.dtype for p in back.parameters()} == {ember.float32}
