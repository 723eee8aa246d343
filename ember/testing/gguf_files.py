"""Small GGUF files written as llama.cpp's converter writes them, for tests (imported by tests
only).

`write_llama_gguf` takes a HuggingFace-layout Llama state dict (NumPy arrays), its config and
a byte-level BPE vocabulary, and writes what `convert_hf_to_gguf.py` would: llama.cpp's
metadata keys, tensor names, the rotary row permutation of the query and key projections
(the forward of `ember.transformers.gguf_utils.unpermute_rotary_rows`, written out here
independently), no `output.weight` when the embeddings are tied, and the tensors quantized
with the `gguf` package's reference quantizers (Q8_0, Q4_0, Q4_1...; norms stay F32).
"""

from __future__ import annotations

import numpy as np

__all__ = ["llama_cpp_permute", "write_llama_gguf"]

_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's `permute` of convert_hf_to_gguf.py: per head, the two halves of the rotary
    pairs interleaved (row i of the first half -> row 2i, of the second half -> row 2i+1)."""
    rows = weight.shape[0]
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_name(key: str) -> str:
    if key in _NAMES:
        return _NAMES[key]
    parts = key.split(".")
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}." + _LAYER_NAMES[".".join(parts[3:])]
    raise KeyError(f"write_llama_gguf: no GGUF name for {key!r}")


def write_llama_gguf(
    path: str,
    state_dict: dict[str, np.ndarray],
    config: dict,
    tokens: list[str],
    merges: list[str],
    token_types: list[int],
    *,
    quantization: str = "Q8_0",
    special_ids: dict[str, int] | None = None,
    chat_template: str | None = None,
    pre_tokenizer: str = "smollm",
) -> None:
    """Write a Llama GGUF file. `config` holds HuggingFace's LlamaConfig fields (hidden_size,
    num_attention_heads, ...); `special_ids` maps bos/eos/unk/pad to token ids."""
    import gguf
    from gguf import quants

    qtype = gguf.GGMLQuantizationType[quantization]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    ids = special_ids or {}
    for name, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if name in ids:
            add(ids[name])
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    heads = {
        "attn_q.weight": config["num_attention_heads"],
        "attn_k.weight": config["num_key_value_heads"],
    }
    for key, array in state_dict.items():
        if key == "lm_head.weight" and config.get("tie_word_embeddings", False):
            continue  # llama.cpp writes no output.weight for tied embeddings
        name = _gguf_name(key)
        array = np.ascontiguousarray(array, dtype=np.float32)
        suffix = name.split(".", 2)[-1] if name.startswith("blk.") else name
        if suffix in heads:
            array = llama_cpp_permute(array, heads[suffix])
        if array.ndim == 1:
            writer.add_tensor(name, array)
        else:
            data = quants.quantize(array, qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
