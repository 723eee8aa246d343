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


# Note [Eager inference overhead]: the glue that rearranges eager results on their arrays
# gives the bits of the ops it stands for
def test_merged_heads_on_the_array_equal_the_ops():
    from ember.transformers.encoder_heads import _merge_heads

    rng = np.random.default_rng(0)
    # a (batch, heads, seq, size) view of a (batch, seq, heads, size) buffer, as the fused
    # attention returns it, and a contiguous one
    for array in (
        rng.standard_normal((2, 5, 3, 4)).astype(np.float32).transpose(0, 2, 1, 3),
        rng.standard_normal((2, 3, 5, 4)).astype(np.float32),
    ):
        eager = _merge_heads(ember.from_numpy(array))
        recorded = ember.from_numpy(array).requires_grad_() * 1.0  # records: the view ops
        ops = _merge_heads(recorded)
        assert ops.requires_grad and tuple(eager.shape) == tuple(ops.shape) == (2, 5, 12)
        np.testing.assert_array_equal(eager.array, ops.detach().array)
