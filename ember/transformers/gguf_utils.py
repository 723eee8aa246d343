"""Loading GGUF files as HuggingFace models: `from_pretrained(folder, gguf_file=...)`.

Note [GGUF checkpoints]: a GGUF (llama.cpp's format) holds the config as metadata, the
tokenizer (Note [GGUF tokenizers]) and the weights, often quantized. HuggingFace transformers
loads one by dequantizing every tensor to float32 and renaming it; ember does the same, so
both build the same float32 model from the same file:
- the config comes from `general.architecture` and that architecture's keys
  (`llama.block_count` -> num_hidden_layers, `llama.rope.freq_base` -> rope_theta, ...), the
  special token ids from the tokenizer keys, and `tie_word_embeddings` from whether the file
  has an `output.weight` (llama.cpp writes none when the LM head is the embedding matrix);
- tensor names map to HuggingFace's (`blk.3.attn_q.weight` ->
  `model.layers.3.self_attn.q_proj.weight`, `token_embd.weight` -> `model.embed_tokens.weight`);
- llama.cpp's converter reorders the rows of the Llama family's query and key projections for
  its rotary kernel: within each head, HuggingFace's layout is the first halves of the rotary
  pairs then the second halves, llama.cpp's interleaves them (row 2i is first-half row i, row
  2i+1 second-half row i). `unpermute_rotary_rows` undoes it, per head (query: the attention
  heads, key: the key-value heads).
Tensors are dequantized one at a time while loading (`GGUFCheckpointReader` is a drop-in for
the safetensors reader of `modeling_utils`), so loading needs about the float32 model's size.
"""

from __future__ import annotations

import re

import numpy as np

from ember.io.gguf import GGUFFile, gguf_path

__all__ = [
    "GGUF_CONFIG_FIELDS",
    "GGUFCheckpointReader",
    "config_dict_from_gguf",
    "gguf_path",
    "unpermute_rotary_rows",
]

_DECODER_FIELDS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
}
# general.architecture -> (model_type, {metadata key suffix: config field})
GGUF_CONFIG_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "llama": ("llama", {**_DECODER_FIELDS, "rope.dimension_count": "head_dim"}),
    "mistral": ("mistral", {**_DECODER_FIELDS, "rope.dimension_count": "head_dim"}),
    "qwen2": ("qwen2", _DECODER_FIELDS),
}
# architectures whose query/key rows llama.cpp reorders (Note [GGUF checkpoints])
_ROTARY_PERMUTED = ("llama", "mistral")

_TENSOR_NAMES = (
    (re.compile(r"^token_embd\.(weight)$"), r"model.embed_tokens.\1"),
    (re.compile(r"^output_norm\.(weight)$"), r"model.norm.\1"),
    (re.compile(r"^output\.(weight)$"), r"lm_head.\1"),
    (re.compile(r"^blk\.(\d+)\.attn_norm\.(weight)$"), r"model.layers.\1.input_layernorm.\2"),
    (
        re.compile(r"^blk\.(\d+)\.ffn_norm\.(weight)$"),
        r"model.layers.\1.post_attention_layernorm.\2",
    ),
    (re.compile(r"^blk\.(\d+)\.attn_q\.(weight|bias)$"), r"model.layers.\1.self_attn.q_proj.\2"),
    (re.compile(r"^blk\.(\d+)\.attn_k\.(weight|bias)$"), r"model.layers.\1.self_attn.k_proj.\2"),
    (re.compile(r"^blk\.(\d+)\.attn_v\.(weight|bias)$"), r"model.layers.\1.self_attn.v_proj.\2"),
    (
        re.compile(r"^blk\.(\d+)\.attn_output\.(weight|bias)$"),
        r"model.layers.\1.self_attn.o_proj.\2",
    ),
    (re.compile(r"^blk\.(\d+)\.ffn_gate\.(weight)$"), r"model.layers.\1.mlp.gate_proj.\2"),
    (re.compile(r"^blk\.(\d+)\.ffn_up\.(weight)$"), r"model.layers.\1.mlp.up_proj.\2"),
    (re.compile(r"^blk\.(\d+)\.ffn_down\.(weight)$"), r"model.layers.\1.mlp.down_proj.\2"),
)


def hf_tensor_name(name: str) -> str | None:
    """The HuggingFace name of a GGUF tensor, or None for one ember does not map."""
    for pattern, replacement in _TENSOR_NAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's rotary row order -> HuggingFace's, per head (Note [GGUF checkpoints]).

    Example:
        >>> rows = np.array([0, 10, 1, 11]).reshape(4, 1)  # one head: pairs interleaved
        >>> unpermute_rotary_rows(rows, 1).ravel().tolist()
        [0, 1, 10, 11]
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(
            f"unpermute_rotary_rows: {rows} rows do not split into {num_heads} heads of "
            "rotary pairs"
        )
    half = rows // num_heads // 2
    split = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(split.swapaxes(1, 2).reshape(weight.shape))


def config_dict_from_gguf(path: str, where: str = "from_pretrained") -> dict:
    """The HuggingFace config.json dict of the model a GGUF file holds."""
    gguf = GGUFFile(path)
    try:
        architecture = gguf.field("general.architecture")
        if architecture not in GGUF_CONFIG_FIELDS:
            raise NotImplementedError(
                f"{where}: {path!r} holds a {architecture!r} model (general.architecture); "
                f"ember loads GGUF files of {sorted(GGUF_CONFIG_FIELDS)}"
            )
        model_type, fields = GGUF_CONFIG_FIELDS[architecture]
        config = {"model_type": model_type}
        for suffix, name in fields.items():
            value = gguf.field(f"{architecture}.{suffix}")
            if value is not None:
                config[name] = value
        if "vocab_size" not in config:
            tokens = gguf.field("tokenizer.ggml.tokens")
            if tokens is not None:
                config["vocab_size"] = len(tokens)
        scaling = gguf.field(f"{architecture}.rope.scaling.type")
        if scaling not in (None, "none"):
            factor = gguf.field(f"{architecture}.rope.scaling.factor")
            config["rope_scaling"] = {"rope_type": scaling, "type": scaling, "factor": factor}
        for name, key in (
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ):
            value = gguf.field(f"tokenizer.ggml.{key}")
            if value is not None:
                config[name] = value
        config["tie_word_embeddings"] = "output.weight" not in gguf.keys()
        name = gguf.field("general.name")
        if name is not None:
            config["_name_or_path"] = name
        config["architectures"] = [
            {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}.get(
                model_type, "Qwen2ForCausalLM"
            )
        ]
    finally:
        gguf.close()
    return config


class GGUFCheckpointReader:
    """HuggingFace name -> float32 array over a GGUF file (Note [GGUF checkpoints]); the
    interface of `modeling_utils`' checkpoint reader (keys, shape, get, close, source)."""

    def __init__(self, path: str, where: str = "from_pretrained"):
        self.source = path
        self._file = GGUFFile(path)
        self._architecture = self._file.field("general.architecture")
        self._names: dict[str, str] = {}
        unmapped = []
        for name in self._file.keys():
            hf_name = hf_tensor_name(name)
            if hf_name is None:
                unmapped.append(name)
            else:
                self._names[hf_name] = name
        self.unmapped = unmapped  # reported as unexpected keys, under their GGUF names
        heads = self._file.field(f"{self._architecture}.attention.head_count")
        kv_heads = self._file.field(f"{self._architecture}.attention.head_count_kv") or heads
        self._heads = {"q_proj": heads, "k_proj": kv_heads}

    def keys(self) -> list[str]:
        return [*self._names, *self.unmapped]

    def shape(self, key: str) -> tuple:
        return self._file.shape(self._names.get(key, key))

    def get(self, key: str) -> np.ndarray:
        array = self._file.get(self._names.get(key, key))
        if self._architecture in _ROTARY_PERMUTED:
            projection = key.rsplit(".", 2)[-2]
            if projection in self._heads and self._heads[projection]:
                array = unpermute_rotary_rows(array, self._heads[projection])
        return array

    def close(self) -> None:
        self._file.close(forget=True)  # the weights are in the model now
