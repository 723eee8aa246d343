import os

import pytest


@pytest.fixture(scope="session")
def hf():
    """HuggingFace transformers on PyTorch, the reference (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def hf_head_mask_attention(hf):
    """transformers 5.x dropped `head_mask`; the reference is 4.x's eager attention, where the
    mask multiplies the probabilities after dropout, registered as an attention function that
    takes `head_mask` (num_layers, num_heads) from the forward's keyword arguments."""
    import torch
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def eager_with_head_mask(
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=None,
        dropout=0.0,
        head_mask=None,
        **kwargs,
    ):
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = torch.nn.functional.softmax(weights, dim=-1)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        if head_mask is not None:
            weights = weights * head_mask[module.layer_idx].reshape(1, -1, 1, 1)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    hf.AttentionInterface.register("eager_head_mask", eager_with_head_mask)
    AttentionMaskInterface.register("eager_head_mask", eager_mask)
    return "eager_head_mask"
