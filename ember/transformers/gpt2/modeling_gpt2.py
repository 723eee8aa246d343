"""GPT-2: token and position embeddings, pre-norm blocks of causal attention and a GELU MLP,
and the language-model head tied to the token embeddings, in one file.

Weight names and layouts are HuggingFace's: the projections are `Conv1D`s whose weight is
(in_features, out_features), the transpose of `nn.Linear`'s (OpenAI's original layout), and
`lm_head.weight` is `transformer.wte.weight` (Note [Tied weights]). Decoding reuses the cache
(Note [KV cache]); masks follow Note [Causal mask].
"""

from __future__ import annotations

import math

import numpy as np

import ember
from ember import nn
from ember.nn import functional as F
from ember.transformers.activations import ACT2FN
from ember.transformers.decoder_utils import (
    CausalLMHeadMixin,
    decoder_attention,
    decoder_inputs,
    decoder_stack,
)
from ember.transformers.generation import GenerationMixin
from ember.transformers.gpt2.configuration_gpt2 import GPT2Config
from ember.transformers.modeling_utils import PreTrainedModel


class Conv1D(nn.Module):
    """x @ weight + bias with weight (in_features, out_features): HuggingFace's GPT-2 layer.

    Example:
        >>> import ember
        >>> from ember.transformers.gpt2 import Conv1D
        >>> tuple(Conv1D(6, 4)(ember.ones(2, 4)).shape)
        (2, 6)
    """

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.nx = nx
        self.weight = nn.Parameter(ember.empty(nx, nf))
        self.bias = nn.Parameter(ember.zeros(nf))
        nn.init.normal_(self.weight, 0.0, 0.02)

    def forward(self, x):
        if x.shape[-1] != self.nx:
            raise ValueError(
                f"Conv1D: input's last dim is {x.shape[-1]}, expected in_features {self.nx}"
            )
        return F.linear(x, self.weight.mT, self.bias)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        if config.add_cross_attention:
            raise ValueError("GPT2Attention: add_cross_attention=True is not supported by ember")
        if config.n_embd % config.n_head:
            raise ValueError(
                f"GPT2Attention: n_embd {config.n_embd} is not a multiple of n_head {config.n_head}"
            )
        self.layer_idx = layer_idx
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        scale = 1.0
        if config.scale_attn_weights:
            scale /= math.sqrt(self.head_dim)
        if config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        self.scale = scale
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, mask, cache, output_attentions: bool = False):
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        qkv = self.c_attn(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim)
        dropout = self.attn_dropout.p if self.training else 0.0
        context, probs = decoder_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, cache, self.layer_idx, self.scale,
            dropout, output_attentions,
        )  # fmt: skip
        return self.resid_dropout(self.c_proj(context)), probs


class GPT2MLP(nn.Module):
    def __init__(self, inner: int, config: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.act = ACT2FN[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(inner, config)

    def forward(self, hidden_states, mask, cache, output_attentions: bool = False):
        attended, probs = self.attn(self.ln_1(hidden_states), mask, cache, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, probs


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    # buffers older checkpoints carry (the causal mask as a tensor)
    _keys_to_ignore_on_load_unexpected = (r"\.attn\.bias$", r"\.attn\.masked_bias$")

    def _init_weights(self, module: nn.Module) -> None:
        """HuggingFace's: normal(0, initializer_range) for Conv1D, Linear and Embedding
        weights, zero biases, LayerNorm ones/zeros; the residual projections (c_proj) get
        std / sqrt(2 * n_layer) (GPT-2 paper)."""
        std = self.config.initializer_range
        if isinstance(module, Conv1D):
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (GPT2Attention, GPT2MLP)):
            nn.init.normal_(module.c_proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))
        else:
            super()._init_weights(module)


class GPT2Model(GPT2PreTrainedModel):
    """The GPT-2 decoder stack; returns the last hidden states (after ln_f) and the cache.

    Example:
        >>> import ember
        >>> from ember.transformers import GPT2Config, GPT2Model
        >>> model = GPT2Model(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4)).eval()
        >>> out = model(ember.tensor([[3, 5, 7]]))
        >>> tuple(out.last_hidden_state.shape), out.past_key_values.get_seq_length()
        ((1, 3, 32), 3)
    """

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.embed_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def forward(
        self,
        input_ids=None,
        past_key_values=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        cache_position=None,
        cache=None,
    ):
        del cache_position  # positions come from the cache length
        input_ids, state = decoder_inputs(
            self,
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            past_key_values,
            use_cache,
            self.wte.weight.dtype,
            cache,
            output_attentions,
            output_hidden_states,
        )
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        positions = state.position_ids  # a Tensor when traced (Note [Traced decoder inputs])
        if isinstance(positions, np.ndarray):
            top = int(positions.max()) + 1 if positions.size else 0
            if top > self.config.n_positions:
                raise ValueError(
                    f"{type(self).__name__}: position {top - 1} is beyond n_positions "
                    f"{self.config.n_positions} (the prompt plus new tokens are too long)"
                )
            positions = ember.from_numpy(positions)
        hidden_states = inputs_embeds + self.wpe(positions)
        if token_type_ids is not None:  # GPT-2 reuses the token embeddings for token types
            hidden_states = hidden_states + self.wte(ember.as_tensor(token_type_ids))
        hidden_states = self.drop(hidden_states)
        return decoder_stack(self, self.h, self.ln_f, hidden_states, state, return_dict)


class GPT2LMHeadModel(CausalLMHeadMixin, GPT2PreTrainedModel, GenerationMixin):
    """GPT-2 with the language-model head (weight tied to `transformer.wte`); `labels` give
    the shifted next-token loss; `generate()` decodes.

    Example:
        >>> import ember
        >>> from ember.transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4))
        >>> out = model(ember.tensor([[3, 5, 7]]), labels=ember.tensor([[3, 5, 7]]))
        >>> tuple(out.logits.shape), out.loss.ndim
        ((1, 3, 99), 0)
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        past_key_values=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
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
        out = self.transformer(
            cache=cache,
            input_ids=input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return self.causal_lm_output(out, labels, logits_to_keep, return_dict)


__all__ = ["Conv1D", "GPT2LMHeadModel", "GPT2Model", "GPT2PreTrainedModel"]
