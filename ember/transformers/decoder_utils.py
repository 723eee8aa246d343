"""What every decoder language model does the same way: the forward's arguments (the cache, the
attention mask and the positions of the new tokens), the attention over the cache, the loop
over the layers, the causal-LM head's output and loss, and the shared parts of the causal-LM
heads (`generate()` comes from `GenerationMixin`).

The models (gpt2/, llama/) call `decoder_inputs` first, `decoder_attention` in each layer,
`decoder_stack` over their layers and `causal_lm_output` last, so the conventions (Note [KV
cache], Note [Causal mask] in cache_utils, Note [Decoder attention] here) live in one place;
what differs between the models (fused or separate projections, rotary or learned positions,
the MLP, the norms) stays in their own files.

Note [Traced decoder inputs]: eagerly, the mask and the positions are NumPy arrays made from the
attention mask's values (a padding-free decode step takes no mask at all). When the ids have
no host values (they are symbolic: `ember.compile`, `ember.onnx.export`), there are no values
to look at, so the same numbers are made with ember ops instead and become part of the graph:
the additive mask from the 2-D 0/1 mask (`graph_attention_mask`), the positions an
int64 Tensor (the given `position_ids`, or arange(past, past + q)), which the models embed or
turn into rotary tables with ember ops; the cache concatenates (Note [KV cache]). The file an
export writes then runs on any batch, length and past length.

Note [Decoder attention]: `decoder_attention` takes the new positions' queries (batch, q, H,
head_dim) and keys and values (batch, q, KV, head_dim), appends the keys and values to the
cache (which holds them as (batch, KV, seq, head_dim)), and returns softmax(Q K^T * scale +
mask) V with the heads merged back, (batch, q, H * head_dim). With H query heads sharing KV
key/value heads (G = H / KV queries per key head, HuggingFace's head order h = kv * G + g), the
queries are laid out as (batch, KV, G * q, head_dim), so one batched matmul per key head scores
all its G query heads without repeating the keys G times (what `repeat_kv` does in
HuggingFace): the same numbers, and the cache stays KV heads wide. With G = 1 (GPT-2, and any
model whose KV = H) the layout is a transpose, a view. A one-token step moves no data in
either layout (a reshape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ember
from ember.backend import backend_of
from ember.nn import functional as F
from ember.transformers.cache_utils import (
    DynamicCache,
    as_cache,
    causal_attention_mask,
    graph_attention_mask,
)
from ember.transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast


@dataclass
class DecoderInputs:
    """The per-forward state shared by every layer."""

    cache: DynamicCache | None
    legacy: bool  # the caller gave a tuple: return a tuple
    past_length: int
    mask: object  # additive (batch or 1, 1, q, k) Tensor or None
    position_ids: object  # (batch or 1, q) int64: np.ndarray, a Tensor when traced
    use_cache: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False


def decoder_inputs(
    model,
    input_ids,
    inputs_embeds,
    attention_mask,
    position_ids,
    past_key_values,
    use_cache,
    dtype,
    cache=None,
    output_attentions=None,
    output_hidden_states=None,
):
    """Check the arguments of a decoder's forward (None flags take the config's values;
    `cache` is transformers 5.25's name for `past_key_values`); return (ids or None,
    DecoderInputs)."""
    where = type(model).__name__
    config = model.config
    past_key_values = cache_argument(model, past_key_values, cache)
    if output_attentions is None:
        output_attentions = config.output_attentions
    if output_hidden_states is None:
        output_hidden_states = config.output_hidden_states
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"{where}: pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        input_ids = ember.as_tensor(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(
                f"{where}: input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}"
            )
        if input_ids.dtype.is_floating_point:
            raise TypeError(f"{where}: input_ids must hold integers, got {input_ids.dtype}")
        batch, length = input_ids.shape
    else:
        if inputs_embeds.ndim != 3:
            raise ValueError(
                f"{where}: inputs_embeds must be (batch, seq, hidden), got shape "
                f"{tuple(inputs_embeds.shape)}"
            )
        batch, length = inputs_embeds.shape[0], inputs_embeds.shape[1]
    if use_cache is None:
        use_cache = getattr(config, "use_cache", True)
    flags = (bool(use_cache), bool(output_attentions), bool(output_hidden_states))
    cache, legacy = as_cache(past_key_values, where)
    if cache is None and use_cache:
        cache = DynamicCache()
    past_length = cache.get_seq_length() if cache is not None else 0
    if cache is not None and len(cache) and cache._keys[0] is not None:
        cached_batch = cache._keys[0].shape[0]
        if cached_batch != batch:
            raise ValueError(
                f"{where}: past_key_values hold batch {cached_batch}, the input has batch {batch}"
            )
    traced = _symbolic(input_ids if input_ids is not None else inputs_embeds)
    if traced:  # Note [Traced decoder inputs]
        return input_ids, _traced_inputs(
            where, cache, legacy, past_length, attention_mask, position_ids, length, dtype, flags
        )
    if attention_mask is not None:
        attention_mask = (
            attention_mask.numpy(force=True)
            if isinstance(attention_mask, ember.Tensor)
            else np.asarray(attention_mask)
        )
        if attention_mask.ndim == 2 and attention_mask.shape[0] != batch:
            raise ValueError(
                f"{where}: attention_mask has batch {attention_mask.shape[0]}, input_ids {batch}"
            )
    key_length = past_length + length
    if dtype in ember.dtypes.HALF_DTYPES:  # Note [Half-precision weights]: float32 compute
        dtype = ember.float32
    mask = causal_attention_mask(attention_mask, length, key_length, dtype, where)
    if position_ids is None:  # as HuggingFace: the cache's next positions, padding or not
        positions = np.arange(past_length, key_length, dtype=np.int64)[None]
    else:
        positions = (
            position_ids.numpy(force=True)
            if isinstance(position_ids, ember.Tensor)
            else np.asarray(position_ids)
        ).astype(np.int64, copy=False)
        if positions.ndim == 1:
            positions = positions[None]
        if positions.shape[-1] != length:
            raise ValueError(
                f"{where}: position_ids must be (batch, {length}), got shape {positions.shape}"
            )
    return input_ids, DecoderInputs(cache, legacy, past_length, mask, positions, *flags)


def _symbolic(t) -> bool:
    """A Tensor without host values (traced)."""
    return isinstance(t, ember.Tensor) and not backend_of(t.array).concrete


def _traced_inputs(
    where, cache, legacy, past_length, attention_mask, position_ids, length, dtype, flags
):
    """Note [Traced decoder inputs]: the mask and positions as ember ops."""
    key_length = past_length + length
    if dtype in ember.dtypes.HALF_DTYPES:
        dtype = ember.float32
    if attention_mask is not None:
        mask = graph_attention_mask(ember.as_tensor(attention_mask), length, key_length, dtype,
                                    where)  # fmt: skip
    else:
        mask = causal_attention_mask(None, length, key_length, dtype, where)
    if position_ids is None:
        positions = ember.arange(past_length, key_length, dtype=ember.int64).reshape(1, length)
    else:
        positions = ember.as_tensor(position_ids)
        if positions.ndim == 1:
            positions = positions.reshape(1, -1)
        if positions.ndim != 2 or positions.shape[-1] != length:
            raise ValueError(
                f"{where}: position_ids must be (batch, {length}), got shape "
                f"{tuple(positions.shape)}"
            )
        if positions.dtype != ember.int64:
            positions = positions.to(ember.int64)
    return DecoderInputs(cache, legacy, past_length, mask, positions, *flags)


def cache_argument(model, past_key_values, cache):
    """transformers 5.25 renames `past_key_values` to `cache`; either name is accepted."""
    if cache is not None:
        if past_key_values is not None:
            raise ValueError(
                f"{type(model).__name__}: pass the cache as past_key_values or cache, not both"
            )
        return cache
    return past_key_values


def returned_cache(state: DecoderInputs, use_cache: bool):
    if not use_cache or state.cache is None:
        return None
    return state.cache.to_legacy_cache() if state.legacy else state.cache


def keep_logits(hidden_states, logits_to_keep):
    """HuggingFace's `logits_to_keep`: 0 keeps every position, n > 0 the last n (generation
    asks for 1, so the prompt's full-vocabulary logits are never computed); a 1-D index list
    keeps those positions."""
    if isinstance(logits_to_keep, int):
        if logits_to_keep == 0:
            return hidden_states
        return hidden_states[:, -logits_to_keep:]
    return hidden_states[:, ember.as_tensor(logits_to_keep)]


def causal_lm_loss(logits, labels, vocab_size: int):
    """Mean cross-entropy of position t's logits against labels[t + 1] (-100 ignored), as
    HuggingFace's causal LM heads compute it."""
    labels = ember.as_tensor(labels)
    shift_logits = logits[:, :-1].reshape(-1, vocab_size).float()
    shift_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


def decoder_attention(
    query,
    key,
    value,
    mask,
    cache,
    layer_idx: int,
    scale: float,
    dropout: float = 0.0,
    output_attentions: bool = False,
):
    """Causal attention of the new positions over the cache and themselves (Note [Decoder
    attention]): query (batch, q, H, head_dim), key and value (batch, q, KV, head_dim), mask
    additive (batch or 1, 1, q, k) or None, `cache` a DynamicCache or None; `dropout` the
    probability applied to the attention weights (0 in eval). Returns the context (batch, q,
    H * head_dim) and the weights (batch, H, q, k) when `output_attentions`, else None."""
    batch, length, heads, dim = query.shape
    kv = key.shape[2]
    groups = heads // kv
    if length == 1:  # (batch, 1, kv, dim) -> (batch, kv, 1, dim) moves no data
        key, value = key.reshape(batch, kv, 1, dim), value.reshape(batch, kv, 1, dim)
    else:
        key, value = key.transpose(1, 2), value.transpose(1, 2)
    if cache is not None:
        key, value = cache.update(key, value, layer_idx)
    keys_seen = key.shape[2]
    if groups == 1 and length > 1 and not output_attentions:
        # scaled_dot_product_attention: the one fused op in inference (Note [Attention blocks]
        # in ember/backend/attention_kernels.py), whose result is laid out (batch, q, H, dim)
        if isinstance(
            mask, np.ndarray
        ):  # eager masks are host arrays (Note [Traced decoder inputs])
            mask = ember.from_numpy(mask)
        context = F.scaled_dot_product_attention(
            query.transpose(1, 2), key, value, attn_mask=mask, dropout_p=dropout, scale=scale
        )
        return context.transpose(1, 2).reshape(batch, length, heads * dim), None
    # (batch, q, kv * groups, dim) -> (batch, kv, groups * q, dim)
    if length == 1:
        query = query.reshape(batch, kv, groups, dim)
    elif groups == 1:
        query = query.transpose(1, 2)
    else:
        query = (
            query.reshape(batch, length, kv, groups, dim)
            .permute(0, 2, 3, 1, 4)
            .reshape(batch, kv, groups * length, dim)
        )
    scores = (query @ key.mT) * scale
    if mask is not None and groups == 1:
        scores = scores + mask
    elif mask is not None:
        scores = (scores.reshape(batch, kv, groups, length, keys_seen) + mask.unsqueeze(2)).reshape(
            batch, kv, groups * length, keys_seen
        )
    probs = F.softmax(scores, -1)
    attended = F.dropout(probs, dropout, True) if dropout > 0.0 else probs
    context = attended @ value  # (batch, kv, groups * q, dim)
    if length == 1:
        context = context.reshape(batch, 1, heads * dim)
    elif groups == 1:
        context = context.transpose(1, 2).reshape(batch, length, heads * dim)
    else:
        context = (
            context.reshape(batch, kv, groups, length, dim)
            .permute(0, 3, 1, 2, 4)
            .reshape(batch, length, heads * dim)
        )
    if not output_attentions:
        return context, None
    return context, attended.reshape(batch, heads, length, keys_seen)  # after dropout, as HF


def decoder_stack(model, layers, norm, hidden_states, state: DecoderInputs, return_dict, *args):
    """Run `layers` (each called as layer(hidden_states, *args, mask, cache,
    output_attentions) -> (hidden_states, attention weights)) and the final `norm`; return the
    model's BaseModelOutputWithPast (a tuple unless return_dict), with the hidden states and
    attention weights of every layer when the flags in `state` ask for them."""
    all_hidden = () if state.output_hidden_states else None
    all_attentions = () if state.output_attentions else None
    cache = state.cache if state.use_cache else None
    for layer in layers:
        if all_hidden is not None:
            all_hidden += (hidden_states,)
        hidden_states, weights = layer(
            hidden_states, *args, state.mask, cache, state.output_attentions
        )
        if all_attentions is not None:
            all_attentions += (weights,)
    hidden_states = norm(hidden_states)
    if all_hidden is not None:
        all_hidden += (hidden_states,)
    output = BaseModelOutputWithPast(
        last_hidden_state=hidden_states,
        past_key_values=returned_cache(state, state.use_cache),
        hidden_states=all_hidden,
        attentions=all_attentions,
    )
    return model_output(model, output, return_dict)


def model_output(model, output, return_dict):
    """The output dataclass, or its tuple when `return_dict` (default: the config's) is
    False."""
    return_dict = model.config.return_dict if return_dict is None else return_dict
    return output if return_dict else output.to_tuple()


class CausalLMHeadMixin:
    """What the causal-LM heads (GPT2LMHeadModel, LlamaForCausalLM) share: the base model under
    `base_model_prefix`, `lm_head` tied to its input embeddings per `tie_word_embeddings`, and
    the output step (`causal_lm_output`)."""

    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def get_output_embeddings(self):
        return self.lm_head

    def causal_lm_output(self, out, labels, logits_to_keep, return_dict):
        """Logits of the kept positions (`keep_logits`), the shifted next-token loss when
        `labels` are given, and the base model's cache, hidden states and attentions."""
        logits = self.lm_head(keep_logits(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size)
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return model_output(self, output, return_dict)
