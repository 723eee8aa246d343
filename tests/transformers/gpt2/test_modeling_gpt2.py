"""GPT-2 against HuggingFace transformers: a tiny random checkpoint saved by HF loads into
ember's GPT2Model and GPT2LMHeadModel (Conv1D layout, tied head) and agrees on logits, hidden
states, attentions, loss and gradients; the cache gives a full forward's logits; ember's folder
loads back into HF."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import transformers as et

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOL = 1e-5


def _close(got, ref) -> float:
    """max |got - ref| / (1 + |ref|): 1e-5 is absolute near zero, relative for large values."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref))))


def _np(tensor):
    return tensor.detach().numpy()


@pytest.mark.parametrize("padded", [False, True])
def test_lm_head_matches_huggingface(tiny_decoder, decoder_prompts, padded):
    import torch

    hf_model, folder = tiny_decoder("gpt2")
    model, info = et.GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    ids, mask = decoder_prompts(padded)
    flags = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = hf_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **flags)
    got = model(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask), **flags)
    real = mask.astype(bool)
    errors = {
        "logits": _close(_np(got.logits)[real], ref.logits.numpy()[real]),
        "hidden_states": max(
            _close(_np(g)[real], r.numpy()[real])
            for g, r in zip(got.hidden_states, ref.hidden_states)
        ),
        "attentions": max(
            _close(_np(g).transpose(0, 2, 1, 3)[real], r.numpy().transpose(0, 2, 1, 3)[real])
            for g, r in zip(got.attentions, ref.attentions)
        ),
    }
    print(padded, {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(v <= TOL for v in errors.values()), errors
    assert got.past_key_values.get_seq_length() == 7


def test_base_model_loads_the_head_checkpoint(tiny_decoder, decoder_prompts):
    import torch

    hf_model, folder = tiny_decoder("gpt2")
    model, info = et.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == "GPT2Model"
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    ids, _ = decoder_prompts(False)
    with torch.no_grad():
        ref = hf_model.transformer(torch.from_numpy(ids)).last_hidden_state.numpy()
    assert _close(_np(model(ember.from_numpy(ids)).last_hidden_state), ref) <= TOL


def test_loss_and_gradients_match_huggingface(tiny_decoder, decoder_prompts):
    import torch

    hf_model, folder = tiny_decoder("gpt2", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = et.GPT2LMHeadModel.from_pretrained(folder).train()
    hf_model.train()
    ids, mask = decoder_prompts(True)
    labels = np.where(mask == 1, ids, -100)
    got = model(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask), labels=labels)
    ref = hf_model(
        torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        labels=torch.from_numpy(labels),
    )
    got.loss.backward()
    ref.loss.backward()
    hf_model.eval()
    grads = {n: p.grad.numpy() for n, p in hf_model.named_parameters()}
    compared = [(n, p) for n, p in model.named_parameters() if n in grads]
    assert len(compared) == len(grads)
    worst = max(_close(p.grad.numpy(), grads[n]) for n, p in compared)
    loss_err = _close(_np(got.loss), ref.loss.detach().numpy())
    print(f"loss {loss_err:.1e}, gradients {worst:.1e}")
    assert loss_err <= TOL and worst <= TOL


def test_cache_one_token_at_a_time_equals_one_forward(tiny_decoder, decoder_prompts):
    """(through `cache=`, transformers 5.25's name for past_key_values)"""
    _, folder = tiny_decoder("gpt2")
    model = et.GPT2LMHeadModel.from_pretrained(folder)
    ids, _ = decoder_prompts(False)
    with ember.no_grad():
        full = model(ember.from_numpy(ids)).logits.numpy()
        past, steps = None, []
        for i in range(ids.shape[1]):
            out = model(ember.from_numpy(ids[:, i : i + 1]), cache=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits.numpy())
    assert _close(np.concatenate(steps, 1), full) <= TOL


def test_saved_folder_loads_into_huggingface(hf, tiny_decoder, decoder_prompts, tmp_path):
    import torch

    _, folder = tiny_decoder("gpt2")
    model = et.GPT2LMHeadModel.from_pretrained(folder)
    model.save_pretrained(tmp_path)
    back = hf.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    ids, _ = decoder_prompts(False)
    with torch.no_grad():
        ref = back(torch.from_numpy(ids)).logits.numpy()
    assert _close(_np(model(ember.from_numpy(ids)).logits), ref) <= TOL


def test_config_generic_names_and_errors():
    config = et.GPT2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, n_positions=8
    )
    assert (config.n_embd, config.n_layer, config.n_head) == (32, 2, 4)
    model = et.GPT2LMHeadModel(
        et.GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4, n_positions=8)
    )
    with pytest.raises(ValueError, match="beyond n_positions 8"):
        model(ember.tensor([list(range(9))]))
    with pytest.raises(ValueError, match="not a multiple of n_head"):
        et.GPT2Model(et.GPT2Config(n_embd=30, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="add_cross_attention"):
        et.GPT2Model(et.GPT2Config(n_embd=32, n_layer=1, n_head=4, add_cross_attention=True))
