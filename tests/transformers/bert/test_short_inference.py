"""Short inputs in inference (Note [Packed weights]): the real MiniLM at 1 x 16, 1 x 8 and
5 x 12 through packed weights matches HuggingFace and repeats its first answer exactly."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import transformers as et
from ember.testing.parity import close_report, parity_rtol


def _hidden(model, ids, mask, **kwargs):
    return model(ids, attention_mask=mask, **kwargs).last_hidden_state.detach().array.copy()


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
