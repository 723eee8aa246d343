"""Llama: RMSNorm, rotary embeddings, grouped-query attention and a SwiGLU MLP, in one file.

Weight names are HuggingFace's (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`), so
HuggingFace folders of Llama, SmolLM, Mistral and Qwen2 load as they are (Note [Llama-shaped
configs]). The forward runs on ember ops, so it trains; decoding reuses the cache
(Note [KV cache]) and masks only where padding or causality needs it (Note [Causal mask]).

Note [Rotary tables]: cos and sin are computed once per position in float32, as
HuggingFace does (position * inv_freq, then cos/sin of the doubled frequencies), kept in a table
that grows with the longest position seen, and gathered by position ids (which follow the
attention mask under left padding). rotate_half(x) * sin is written as roll(x, d/2) * sin',
sin' = (-sin_1, sin_2): one op instead of slicing, negating and concatenating. Traced positions
(a Tensor, Note [Traced decoder inputs]) get the same float32 products, cos and sin computed by
ember ops in the graph, so an exported file runs at any position.
"""

from __future__ import annotations

import numpy as np

import ember
from ember import nn
from ember.transformers.activations import ACT2FN
from ember.transformers.decoder_utils import (
    CausalLMHeadMixin,
    decoder_attention,
    decoder_inputs,
    decoder_stack,
)
from ember.transformers.generation import GenerationMixin
from ember.transformers.llama.configuration_llama import (
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    SmolLM3Config,
)
from ember.transformers.modeling_utils import PreTrainedModel


class LlamaRMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the last dim (no mean subtraction, no bias)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(ember.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = (hidden_states * hidden_states).mean(-1, keepdim=True)
        return self.weight * (hidden_states * (variance + self.variance_epsilon).rsqrt())

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class LlamaRotaryEmbedding:
    """cos/sin tables by position (Note [Rotary tables]); 'default' and 'linear' scaling."""

    def __init__(self, config: LlamaConfig):
        params = config.rope_parameters
        dim = config.head_dim
        exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        inv_freq = (1.0 / (np.float64(params["rope_theta"]) ** exponents)).astype(np.float32)
        if params["rope_type"] == "linear":
            inv_freq = (inv_freq / np.float32(params["factor"])).astype(np.float32)
        self.inv_freq = inv_freq
        self.half = dim // 2
        self._cos = np.zeros((0, dim), np.float32)
        self._sin = np.zeros((0, dim), np.float32)
        self._grow(config.max_position_embeddings)

    def _grow(self, length: int) -> None:
        positions = np.arange(length, dtype=np.float32)[:, None]
        freqs = positions * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        self._cos = np.cos(emb)
        sin = np.sin(emb)
        sin[:, : self.half] *= -1.0  # Note [Rotary tables]: sign of rotate_half folded in
        self._sin = sin

    def __call__(self, position_ids):
        """(batch or 1, q) positions -> cos, signed sin as (batch or 1, q, 1, head_dim)."""
        if isinstance(position_ids, ember.Tensor):  # traced: Note [Rotary tables]
            freqs = position_ids.to(ember.float32).unsqueeze(-1) * ember.from_numpy(self.inv_freq)
            emb = ember.cat([freqs, freqs], -1)
            sign = np.ones(2 * self.half, np.float32)
            sign[: self.half] = -1.0
            return emb.cos().unsqueeze(2), (emb.sin() * ember.from_numpy(sign)).unsqueeze(2)
        top = int(position_ids.max()) + 1 if position_ids.size else 0
        if top > self._cos.shape[0]:
            self._grow(max(top, 2 * self._cos.shape[0]))
        cos = self._cos[position_ids][:, :, None, :]
        sin = self._sin[position_ids][:, :, None, :]
        return ember.from_numpy(cos), ember.from_numpy(sin)


def apply_rotary(x, cos, sin, half: int):
    """x * cos + rotate_half(x) * sin on (batch, q, heads, head_dim)."""
    return x * cos + x.roll(half, -1) * sin


class LlamaMLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=config.mlp_bias)
        self.up_proj = nn.Linear(hidden, inner, bias=config.mlp_bias)
        self.down_proj = nn.Linear(inner, hidden, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary embeddings and grouped key/value heads (Note [Decoder
    attention] in decoder_utils)."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.groups = self.num_heads // self.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.sliding_window = config.sliding_window_size()
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(
            hidden, self.num_key_value_heads * self.head_dim, bias=config.qkv_bias
        )
        self.v_proj = nn.Linear(
            hidden, self.num_key_value_heads * self.head_dim, bias=config.qkv_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=config.o_bias)

    def forward(self, hidden_states, rotary, mask, cache, output_attentions: bool = False):
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        kv, dim = self.num_key_value_heads, self.head_dim
        cos, sin = rotary
        query = self.q_proj(hidden_states).reshape(batch, length, self.num_heads, dim)
        key = self.k_proj(hidden_states).reshape(batch, length, kv, dim)
        value = self.v_proj(hidden_states).reshape(batch, length, kv, dim)
        query = apply_rotary(query, cos, sin, dim // 2)
        key = apply_rotary(key, cos, sin, dim // 2)
        keys_seen = length + (cache.get_seq_length(self.layer_idx) if cache is not None else 0)
        if self.sliding_window is not None and keys_seen > self.sliding_window:
            raise ValueError(
                f"{type(self).__name__}: {keys_seen} positions exceed the config's "
                f"sliding_window={self.sliding_window}; ember does not implement windowed "
                "attention (Note [Llama-shaped configs])"
            )
        dropout = self.attention_dropout if self.training else 0.0
        context, weights = decoder_attention(
            query, key, value, mask, cache, self.layer_idx, self.scaling, dropout,
            output_attentions,
        )  # fmt: skip
        return self.o_proj(context), weights


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, rotary, mask, cache, output_attentions: bool = False):
        attended, weights = self.self_attn(
            self.input_layernorm(hidden_states), rotary, mask, cache, output_attentions
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _keys_to_ignore_on_load_unexpected = (r"rotary_emb\.inv_freq$",)

    def _init_weights(self, module: nn.Module) -> None:
        """HuggingFace's: normal(0, initializer_range) for Linear and Embedding weights
        (padding row zero), zero biases, RMSNorm weights one."""
        if isinstance(module, LlamaRMSNorm):
            nn.init.ones_(module.weight)
        else:
            super()._init_weights(module)


class LlamaModel(LlamaPreTrainedModel):
    """The Llama decoder stack: embeddings, layers, final norm; returns the last hidden states
    and, with `use_cache`, the cache (`past_key_values`).

    Example:
        >>> import ember
        >>> from ember.transformers import LlamaConfig, LlamaModel
        >>> config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
        ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        >>> out = LlamaModel(config).eval()(ember.tensor([[3, 5, 7]]))
        >>> tuple(out.last_hidden_state.shape), out.past_key_values.get_seq_length()
        ((1, 3, 32), 3)
    """

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        config.validate_llama_shape(type(self).__name__)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        cache_position=None,
        cache=None,
    ):
        del cache_position  # positions come from the cache length (HuggingFace's is redundant)
        input_ids, state = decoder_inputs(
            self,
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            past_key_values,
            use_cache,
            self.embed_tokens.weight.dtype,
            cache,
            output_attentions,
            output_hidden_states,
        )
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rotary_emb(state.position_ids)
        rotary = (cos.to(hidden_states.dtype), sin.to(hidden_states.dtype))
        return decoder_stack(
            self, self.layers, self.norm, hidden_states, state, return_dict, rotary
        )


class LlamaForCausalLM(CausalLMHeadMixin, LlamaPreTrainedModel, GenerationMixin):
    """Llama with the language-model head (tied to the embeddings when
    `tie_word_embeddings`); `labels` give the shifted next-token loss; `generate()` decodes.

    Example:
        >>> import ember
        >>> from ember.transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
        ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        >>> _ = ember.manual_seed(0)
        >>> model = LlamaForCausalLM(config).eval()
        >>> model.generate(ember.tensor([[3, 5, 7]]), max_new_tokens=4).shape
        ember.Size([1, 7])
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        cache_position=None,
        logits_to_keep=0,
        cache=None,
    ):
        out = self.model(
            cache=cache,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return self.causal_lm_output(out, labels, logits_to_keep, return_dict)


# HuggingFace's class names for the Llama-shaped families (Note [Llama-shaped configs]): the
# same model, reading its own config class
class MistralModel(LlamaModel):
    config_class = MistralConfig


class MistralForCausalLM(LlamaForCausalLM):
    config_class = MistralConfig


class Qwen2Model(LlamaModel):
    config_class = Qwen2Config


class Qwen2ForCausalLM(LlamaForCausalLM):
    config_class = Qwen2Config


class SmolLM3Model(LlamaModel):
    config_class = SmolLM3Config


class SmolLM3ForCausalLM(LlamaForCausalLM):
    config_class = SmolLM3Config


FAMILY_MODELS = {  # model_type -> (base model, causal LM)
    "llama": (LlamaModel, LlamaForCausalLM),
    "mistral": (MistralModel, MistralForCausalLM),
    "qwen2": (Qwen2Model, Qwen2ForCausalLM),
    "smollm3": (SmolLM3Model, SmolLM3ForCausalLM),
}

__all__ = [
    "FAMILY_MODELS",
    "MistralForCausalLM",
    "MistralModel",
    "Qwen2ForCausalLM",
    "Qwen2Model",
    "SmolLM3ForCausalLM",
    "SmolLM3Model",
    "LlamaForCausalLM",
    "LlamaModel",
    "LlamaPreTrainedModel",
    "LlamaRMSNorm",
]
