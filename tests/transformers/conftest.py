import os

import numpy as np
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


# --------------------------------------------------------------------------- decoder models
# Tiny random decoders (hidden 32, 2 layers, vocab 99), built by HuggingFace with a fixed seed
# and saved with save_pretrained: ember loads the folder, HF keeps the model as the reference.
DECODER_CONFIGS = {
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    ),
    "llama": (  # grouped-query attention: 4 query heads share 2 key/value heads
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        ),
    ),
}
SPECIAL_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="session")
def tiny_decoder(hf, tmp_path_factory):
    """tiny_decoder(kind, **overrides) -> (HF model in eval mode, folder it was saved to)."""
    import torch

    made = {}

    def build(kind: str, **overrides):
        key = (kind, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in made:
            config_name, model_name, base = DECODER_CONFIGS[kind]
            config = getattr(hf, config_name)(**{**base, **SPECIAL_TOKENS, **overrides})
            torch.manual_seed(0)
            model = getattr(hf, model_name)(config).eval()
            model.config._attn_implementation = "eager"
            folder = str(tmp_path_factory.mktemp(f"{kind}_decoder"))
            model.save_pretrained(folder)
            made[key] = (model, folder)
        return made[key]

    return build


@pytest.fixture(scope="session")
def decoder_prompts():
    """decoder_prompts(padded) -> (ids, mask): 3 prompts of 7 tokens; padded: rows 1 and 2
    padded on the left."""
    return _decoder_prompts


def _decoder_prompts(padded: bool):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 99, (3, 7))
    mask = np.ones_like(ids)
    if padded:
        mask[1, :2] = 0
        mask[2, :4] = 0
        ids[mask == 0] = SPECIAL_TOKENS["pad_token_id"]
    return ids, mask


@pytest.fixture(scope="module")
def torch_one_thread(hf):
    """PyTorch on one thread for the module: its idle threads busy-wait on a shared machine,
    which makes the tiny models' generate() loops ~10x slower (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
