"""Short inputs in inference (Note [Short inference], Note [Packed weights]): the one-function
BERT layer equals the module path bit for bit and steps aside wherever it must; the real
MiniLM at 1 x 16, 1 x 8 and 5 x 12 through packed weights matches HuggingFace and repeats its
first answer exactly."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn
from ember import transformers as et
from ember.testing.parity import close_report, parity_rtol
from ember.transformers.bert import modeling_bert


def _tiny():
    ember.manual_seed(0)
    config = et.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    return et.BertModel(config).eval()


def _inputs(batch, length, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (batch, length))
    mask = np.ones_like(ids)
    mask[batch // 2 :, length * 3 // 4 :] = 0
    return ember.from_numpy(ids), ember.from_numpy(mask)


class _Counting:
    """Counts the layers that took the short path."""

    def __init__(self, monkeypatch):
        self.taken = 0
        original = modeling_bert._short_inference

        def counted(layer, hidden_states):
            run = original(layer, hidden_states)
            self.taken += run is not None
            return run

        monkeypatch.setattr(modeling_bert, "_short_inference", counted)


def _hidden(model, ids, mask, **kwargs):
    return model(ids, attention_mask=mask, **kwargs).last_hidden_state.detach().array.copy()


@pytest.mark.parametrize("shape", [(1, 16), (1, 8), (5, 12)])
def test_short_path_equals_the_module_path_bit_for_bit(monkeypatch, shape):
    model = _tiny()
    ids, mask = _inputs(*shape)
    counting = _Counting(monkeypatch)
    with ember.no_grad():
        short = _hidden(model, ids, mask)
        assert counting.taken == 2
        monkeypatch.setattr(modeling_bert, "SHORT_INFERENCE_ROWS", 0)
        modules = _hidden(model, ids, mask)
    assert counting.taken == 2
    np.testing.assert_array_equal(short, modules)


def test_the_module_path_wherever_the_short_one_does_not_apply(monkeypatch):
    model = _tiny()
    ids, mask = _inputs(1, 16)
    counting = _Counting(monkeypatch)
    _hidden(model, ids, mask)  # grad mode on
    with ember.no_grad():
        model.train()
        _hidden(model, ids, mask)
        model.eval()
        model(ids, attention_mask=mask, output_attentions=True)
        model(ids, attention_mask=mask, head_mask=ember.ones(4))
        long_ids, long_mask = _inputs(2, modeling_bert.SHORT_INFERENCE_ROWS // 2 + 1)
        _hidden(model, long_ids, long_mask)
        assert counting.taken == 0

        class Wrapped(nn.Module):  # an adapter around one projection: its forward must run
            def __init__(self, inner):
                super().__init__()
                self.inner = inner
                self.calls = 0

            def forward(self, x):
                self.calls += 1
                return self.inner(x)

        layer = model.encoder.layer[0]
        layer.attention.self.value = Wrapped(layer.attention.self.value)
        _hidden(model, ids, mask)
        assert counting.taken == 1  # the second layer only
        assert layer.attention.self.value.calls == 1


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 16), (1, 8), (5, 12)])
def test_minilm_short_inputs_match_huggingface(minilm, hf, threads, shape):
    import torch

    ours = et.BertModel.from_pretrained(minilm).eval()
    theirs = hf.BertModel.from_pretrained(minilm).eval()
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    ids = rng.integers(1000, 20000, shape)
    mask = np.ones_like(ids)
    mask[shape[0] // 2 :, shape[1] * 3 // 4 :] = 0
    with ember.no_grad():
        first = _hidden(ours, ember.from_numpy(ids), ember.from_numpy(mask))
        second = _hidden(ours, ember.from_numpy(ids), ember.from_numpy(mask))
    with torch.no_grad():
        ref = theirs(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    np.testing.assert_array_equal(second, first)  # packed from the first call on
    config = ours.config
    rtol = parity_rtol(depth=config.num_hidden_layers, width=config.intermediate_size)
    report = close_report(second, ref.last_hidden_state.numpy(), rtol=rtol)
    print(f"MiniLM {shape} at {threads} thread(s): max abs {report['max_abs']:.2e}")
    assert report["ok"], report
