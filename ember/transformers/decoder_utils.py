"""What every decoder language model's forward does the same way: the cache argument, the
attention mask and the positions of the new tokens, the causal-LM loss, and the shared base
class of the causal-LM heads (`generate()` comes from `GenerationMixin`).

The models (gpt2/, llama/) call `decoder_inputs` first and `causal_lm_output` last, so the
conventions (Note [KV cache], Note [Causal mask] in cache_utils) live in one place.

Note [Traced decoder inputs]: eagerly, the mask and the positions are NumPy arrays made from the
attention mask's values (a padding-free decode step takes no mask at all). When the ids have
no host values (they are symbolic: `ember.compile`, `ember.onnx.export`), there are no values
to look at, so the same numbers are made with ember ops instead and become part of the graph:
the additive mask from the 2-D 0/1 mask (`graph_attention_mask`), the positions an
int64 Tensor (the given `position_ids`, or arange(past, past + q)), which the models embed or
turn into rotary tables with ember ops; the cache concatenates (Note [KV cache]). The file an
export writes then runs on any batch, length and past length.
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


@dataclass
class DecoderInputs:
    """The per-forward state shared by every layer."""

    cache: DynamicCache | None
    legacy: bool  # the caller gave a tuple: return a tuple
    past_length: int
    mask: object  # additive (batch or 1, 1, q, k) Tensor or None
    position_ids: object  # (batch or 1, q) int64: np.ndarray, a Tensor when traced


def decoder_inputs(
    model,
    input_ids,
    inputs_embeds,
    attention_mask,
    position_ids,
    past_key_values,
    use_cache,
    dtype,
):
    """Check the arguments of a decoder's forward; return (ids or None, embeddings or None,
    DecoderInputs)."""
    where = type(model).__name__
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
        use_cache = getattr(model.config, "use_cache", True)
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
            where, cache, legacy, past_length, attention_mask, position_ids, length, dtype
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
    return input_ids, DecoderInputs(cache, legacy, past_length, mask, positions)


def _symbolic(t) -> bool:
    """A Tensor without host values (traced)."""
    return isinstance(t, ember.Tensor) and not backend_of(t.array).concrete


def _traced_inputs(where, cache, legacy, past_length, attention_mask, position_ids, length, dtype):
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
    return DecoderInputs(cache, legacy, past_length, mask, positions)


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
