"""Llama (and the Llama-shaped Mistral / Qwen2 configs) against HuggingFace transformers:
tiny random checkpoints saved by HF load into ember and agree on logits, hidden states,
attentions, loss and gradients; the KV cache gives the same logits as a full forward; ember's
folders load back into HF; configs ember cannot run fail naming the field."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ember
from ember import transformers as et

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOL = 1e-5


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _close(got, ref) -> float:
    """max |got - ref| / (1 + |ref|): 1e-5 is absolute near zero, relative for large values."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref))))


# variants: (name, HF config class, overrides)
VARIANTS = [
    ("gqa", "LlamaConfig", {}),
    (
        "mha-linear-rope-tied-bias",
        "LlamaConfig",
        dict(
            num_key_value_heads=4,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
            rope_theta=500.0,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
        ),
    ),
    ("mqa-head-dim", "LlamaConfig", dict(num_key_value_heads=1, head_dim=16)),
    ("mistral", "MistralConfig", dict(sliding_window=None)),
    ("qwen2", "Qwen2Config", {}),
]


@pytest.fixture(scope="module")
def variant_folder(hf, tmp_path_factory):
    import torch

    made = {}

    def build(name):
        if name not in made:
            _, config_name, overrides = next(v for v in VARIANTS if v[0] == name)
            base = dict(
                vocab_size=99,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
            )
            config = getattr(hf, config_name)(**{**base, **overrides})
            config._attn_implementation = "eager"
            torch.manual_seed(0)
            model = hf.AutoModelForCausalLM.from_config(config).eval()
            folder = str(tmp_path_factory.mktemp(name))
            model.save_pretrained(folder)
            made[name] = (model, folder)
        return made[name]

    return build


@pytest.mark.parametrize("variant", [v[0] for v in VARIANTS])
def test_logits_hidden_states_attentions_match_huggingface(
    variant_folder, decoder_prompts, variant
):
    import torch

    hf_model, folder = variant_folder(variant)
    model, info = et.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, et.LlamaForCausalLM)
    assert type(model).__name__ == type(hf_model).__name__  # HF's class names
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    assert type(model.config).model_type == hf_model.config.model_type
    ids, mask = decoder_prompts(padded=True)
    # positions as generate gives them (left padding); HF's forward alone counts from 0
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    flags = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = hf_model(
            torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(positions),
            **flags,
        )
    got = model(
        ember.from_numpy(ids),
        attention_mask=ember.from_numpy(mask),
        position_ids=ember.from_numpy(positions),
        **flags,
    )
    real = mask.astype(bool)
    errors = {"logits": _close(got.logits.detach().numpy()[real], ref.logits.numpy()[real])}
    errors["hidden_states"] = max(
        _close(g.detach().numpy()[real], r.numpy()[real])
        for g, r in zip(got.hidden_states, ref.hidden_states)
    )
    assert len(got.attentions) == len(ref.attentions) == 2
    errors["attentions"] = max(
        _close(
            g.detach().numpy().transpose(0, 2, 1, 3)[real], r.numpy().transpose(0, 2, 1, 3)[real]
        )
        for g, r in zip(got.attentions, ref.attentions)
    )
    print(variant, {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(v <= TOL for v in errors.values()), errors


def test_loss_and_gradients_match_huggingface(variant_folder, decoder_prompts):
    import torch

    hf_model, folder = variant_folder("gqa")
    model = et.LlamaForCausalLM.from_pretrained(folder).train()
    hf_model.train()
    ids, _ = decoder_prompts(padded=False)
    labels = ids.copy()
    labels[0, :3] = -100
    got = model(ember.from_numpy(ids), labels=ember.from_numpy(labels), use_cache=False)
    ref = hf_model(torch.from_numpy(ids), labels=torch.from_numpy(labels), use_cache=False)
    got.loss.backward()
    ref.loss.backward()
    hf_model.eval()
    grads = {n: p.grad.numpy() for n, p in hf_model.named_parameters()}
    worst = max(_close(p.grad.numpy(), grads[n]) for n, p in model.named_parameters())
    loss_err = _close(got.loss.detach().numpy(), ref.loss.detach().numpy())
    print(f"loss {loss_err:.1e}, gradients {worst:.1e}")
    assert loss_err <= TOL and worst <= TOL


@pytest.mark.parametrize("legacy", [False, True])
def test_cache_in_chunks_equals_one_forward(variant_folder, decoder_prompts, legacy):
    """Prompt in two chunks (4 + 3 tokens) through the cache = the whole prompt at once; a
    legacy tuple cache comes back as a tuple."""
    _, folder = variant_folder("gqa")
    model = et.LlamaForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(padded=True)
    t = ember.from_numpy
    full = model(t(ids), attention_mask=t(mask)).logits.detach().numpy()
    with ember.no_grad():
        first = model(t(ids[:, :4]), attention_mask=t(mask[:, :4]), use_cache=True)
        past = first.past_key_values
        if legacy:
            past = past.to_legacy_cache()
        second = model(t(ids[:, 4:]), attention_mask=t(mask), past_key_values=past)
    if legacy:
        assert isinstance(second.past_key_values, tuple) and len(second.past_key_values) == 2
        assert tuple(second.past_key_values[0][0].shape) == (3, 2, 7, 8)
    else:
        assert second.past_key_values.get_seq_length() == 7
    chunked = np.concatenate([first.logits.numpy(), second.logits.numpy()], 1)
    real = mask.astype(bool)
    assert _close(chunked[real], full[real]) <= TOL


def test_cache_matches_huggingface_cache(variant_folder, decoder_prompts):
    """The cached keys/values equal HF's DynamicCache layer by layer."""
    import torch

    hf_model, folder = variant_folder("gqa")
    model = et.LlamaForCausalLM.from_pretrained(folder)
    ids, _ = decoder_prompts(padded=False)
    with torch.no_grad():
        ref = hf_model(torch.from_numpy(ids), use_cache=True).past_key_values
    got = model(ember.from_numpy(ids), use_cache=True).past_key_values
    for i in range(2):
        ref_k, ref_v = ref.layers[i].keys, ref.layers[i].values
        got_k, got_v = got[i]
        assert _close(got_k.detach().numpy(), ref_k.numpy()) <= TOL
        assert _close(got_v.detach().numpy(), ref_v.numpy()) <= TOL


def test_saved_folder_loads_into_huggingface(hf, variant_folder, decoder_prompts, tmp_path):
    import torch

    _, folder = variant_folder("mha-linear-rope-tied-bias")
    model = et.LlamaForCausalLM.from_pretrained(folder)
    model.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "generation_config.json")
    back = hf.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert back.config.rope_parameters["rope_type"] == "linear"
    ids, _ = decoder_prompts(padded=False)
    with torch.no_grad():
        ref = back(torch.from_numpy(ids)).logits.numpy()
    assert _close(model(ember.from_numpy(ids)).logits.detach().numpy(), ref) <= TOL
    # tied: one Parameter, saved once
    assert model.lm_head.weight is model.model.embed_tokens.weight


def _write_config(folder, **fields):
    folder.mkdir(exist_ok=True)
    base = dict(
        model_type="llama",
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
    )
    with open(folder / "config.json", "w") as file:
        json.dump({**base, **fields}, file)
    return folder


@pytest.mark.parametrize(
    "fields,named",
    [
        (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type 'yarn'"),
        (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}), "rope_type 'llama3'"),
        (dict(rope_scaling={"type": "linear", "factor": 0.5}), "factor"),
        (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (dict(model_type="smollm3", no_rope_layers=[1, 0]), "no_rope_layers"),
    ],
)
def test_unsupported_config_fields_are_named(tmp_path, fields, named):
    folder = _write_config(tmp_path / "m", **fields)
    with pytest.raises(ValueError, match=named):
        et.AutoModelForCausalLM.from_config(et.AutoConfig.from_pretrained(folder))


def test_family_configs_load_as_llama(tmp_path):
    folder = _write_config(tmp_path / "q", model_type="qwen2", num_key_value_heads=2)
    config = et.LlamaConfig.from_pretrained(folder)  # Llama's config class gives Qwen2's
    assert type(config).__name__ == "Qwen2Config"
    model = et.AutoModelForCausalLM.from_config(config)
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.bias is not None and attention.o_proj.bias is None


def test_sliding_window_shorter_than_sequence_is_refused(tmp_path):
    config = et.MistralConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=4,
    )
    model = et.LlamaForCausalLM(config).eval()
    model(ember.tensor([[5, 6, 7, 8]]))  # within the window
    with pytest.raises(ValueError, match="sliding_window=4"):
        model(ember.tensor([[5, 6, 7, 8, 9]]))


def test_bad_inputs_name_the_argument():
    config = et.LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
    )
    model = et.LlamaForCausalLM(config).eval()
    with pytest.raises(ValueError, match="input_ids must be \\(batch, seq\\)"):
        model(ember.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ember.tensor([[1, 2, 3]]), attention_mask=ember.tensor([[1, 1]]))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(TypeError, match="past_key_values must be"):
        model(ember.tensor([[1, 2]]), past_key_values="cache")
