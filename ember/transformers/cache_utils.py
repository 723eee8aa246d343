"""The key/value cache of decoder models (`past_key_values`) and their attention masks.

Note [KV cache]: `DynamicCache` holds, per layer, the keys and values of every position seen so
far, shaped (batch, kv_heads, seq, head_dim). Under `no_grad` (generation) they live in
preallocated arrays with room to spare: `update` writes the new positions in place and returns
views of the filled part, so a decode step copies one position per layer instead of
concatenating the whole history (`generate` reserves prompt + max_new_tokens up front, so the
arrays never move). When autograd records (training with `use_cache=True`), the cache
concatenates with `ember.cat` instead, so gradients flow into the cached keys; so does a
traced forward, whose keys have no values to copy (an exported graph's present = concat(past,
new)). HuggingFace's
legacy format, a tuple of (key, value) per layer, converts both ways (`from_legacy_cache`,
`to_legacy_cache`); a model given a tuple returns a tuple. Beam search reorders the batch with
`reorder_cache(beam_idx)`.

Note [Causal mask]: decoder attention masks are additive, (batch or 1, 1, q, k) with 0 where a
query may look and the dtype's lowest value where it may not (HuggingFace's convention, so a
masked key gets exactly zero weight). With no padding the mask depends only on the lengths and
is built once per forward as (1, 1, q, k); a one-token decode step with no padding takes no
mask at all, so the common case pays nothing. Padding (a 2-D `attention_mask` with zeros) adds
the key mask per row.
"""

from __future__ import annotations

import numpy as np

import ember
from ember.autograd import is_grad_enabled
from ember.backend import backend_of


class DynamicCache:
    """Keys and values per layer, grown as positions come (Note [KV cache]).

    Example:
        >>> import ember
        >>> from ember.transformers import DynamicCache
        >>> cache = DynamicCache()
        >>> with ember.no_grad():
        ...     k, v = cache.update(ember.ones(1, 2, 3, 4), ember.ones(1, 2, 3, 4), 0)
        ...     k, v = cache.update(ember.zeros(1, 2, 1, 4), ember.zeros(1, 2, 1, 4), 0)
        >>> tuple(k.shape), cache.get_seq_length()
        ((1, 2, 4, 4), 4)
    """

    def __init__(self, reserve: int = 0):
        self._keys: list = []  # per layer: a backend array (buffer) or a Tensor (autograd)
        self._values: list = []
        self._lengths: list[int] = []
        self.reserve = reserve  # capacity asked for when a layer's buffer is first made

    # --- HuggingFace's API --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._lengths)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx] if layer_idx < len(self._lengths) else 0

    def update(self, key_states, value_states, layer_idx: int, cache_kwargs=None):
        """Append (batch, kv_heads, new, head_dim) keys and values to layer `layer_idx`;
        return all of that layer's keys and values so far."""
        if layer_idx > len(self._lengths):
            raise IndexError(
                f"DynamicCache.update: layer {layer_idx} before layer {len(self._lengths)}"
            )
        new = key_states.shape[2]
        if layer_idx == len(self._lengths):
            self._keys.append(None)
            self._values.append(None)
            self._lengths.append(0)
        length = self._lengths[layer_idx]
        old_k = self._keys[layer_idx]
        records = is_grad_enabled() and (
            key_states.requires_grad
            or value_states.requires_grad
            or isinstance(old_k, ember.Tensor)
        )
        # traced keys (no host values) concatenate too (Note [Traced decoder inputs])
        records = records or not backend_of(key_states.array).concrete
        if records:  # autograd: concatenate Tensors
            if old_k is None:
                keys, values = key_states, value_states
            else:
                keys = ember.cat([self._as_tensor(layer_idx, 0), key_states], 2)
                values = ember.cat([self._as_tensor(layer_idx, 1), value_states], 2)
            self._keys[layer_idx], self._values[layer_idx] = keys, values
            self._lengths[layer_idx] = length + new
            return keys, values
        k_new, v_new = key_states.numpy(force=True), value_states.numpy(force=True)
        if old_k is None or old_k.shape[2] < length + new or old_k.shape[0] != k_new.shape[0]:
            self._grow(layer_idx, k_new, v_new, length + new)
        kbuf, vbuf = self._keys[layer_idx], self._values[layer_idx]
        kbuf[:, :, length : length + new] = k_new
        vbuf[:, :, length : length + new] = v_new
        self._lengths[layer_idx] = length + new
        return (
            ember.from_numpy(kbuf[:, :, : length + new]),
            ember.from_numpy(vbuf[:, :, : length + new]),
        )

    def _grow(self, layer_idx: int, k_new, v_new, needed: int) -> None:
        old_k, old_v = self._keys[layer_idx], self._values[layer_idx]
        length = self._lengths[layer_idx]
        if old_k is not None and old_k.shape[0] != k_new.shape[0]:
            raise ValueError(
                f"DynamicCache.update: layer {layer_idx} holds batch {old_k.shape[0]}, "
                f"the new keys have batch {k_new.shape[0]}"
            )
        capacity = max(needed, self.reserve, 2 * (old_k.shape[2] if old_k is not None else 0))
        batch, heads, _, dim = k_new.shape
        kbuf = np.empty((batch, heads, capacity, dim), k_new.dtype)
        vbuf = np.empty((batch, heads, capacity, v_new.shape[3]), v_new.dtype)
        if old_k is not None:
            old_k = old_k.numpy() if isinstance(old_k, ember.Tensor) else old_k[:, :, :length]
            old_v = old_v.numpy() if isinstance(old_v, ember.Tensor) else old_v[:, :, :length]
            kbuf[:, :, :length] = old_k
            vbuf[:, :, :length] = old_v
        self._keys[layer_idx], self._values[layer_idx] = kbuf, vbuf

    def _as_tensor(self, layer_idx: int, which: int):
        stored = (self._keys if which == 0 else self._values)[layer_idx]
        if isinstance(stored, ember.Tensor):
            return stored
        return ember.from_numpy(stored[:, :, : self._lengths[layer_idx]].copy())

    def __getitem__(self, layer_idx: int):
        """(keys, values) of one layer, as HuggingFace's `cache[i]`."""
        if layer_idx >= len(self._lengths):
            raise IndexError(f"DynamicCache: no layer {layer_idx} (has {len(self)})")
        return self._as_tensor(layer_idx, 0), self._as_tensor(layer_idx, 1)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to_legacy_cache(self) -> tuple:
        """HuggingFace's legacy format: ((key, value) per layer)."""
        return tuple(self[i] for i in range(len(self)))

    @classmethod
    def from_legacy_cache(cls, past_key_values) -> "DynamicCache":
        """A cache from ((key, value) per layer), as older HuggingFace models returned."""
        cache = cls()
        if past_key_values is None:
            return cache
        for i, pair in enumerate(past_key_values):
            if len(pair) != 2:
                raise ValueError(
                    f"past_key_values: layer {i} holds {len(pair)} tensors, expected (key, value)"
                )
            key, value = (ember.as_tensor(t) for t in pair)
            if key.ndim != 4 or value.ndim != 4:
                raise ValueError(
                    f"past_key_values: layer {i}'s key/value must be (batch, kv_heads, seq, "
                    f"head_dim), got {tuple(key.shape)} and {tuple(value.shape)}"
                )
            cache._keys.append(key)
            cache._values.append(value)
            cache._lengths.append(key.shape[2])
        return cache

    def reorder_cache(self, beam_idx) -> None:
        """Keep batch rows `beam_idx` (beam search's choice of parents), in that order."""
        index = np.asarray(beam_idx.numpy() if isinstance(beam_idx, ember.Tensor) else beam_idx)
        for i in range(len(self)):
            for store in (self._keys, self._values):
                stored = store[i]
                if isinstance(stored, ember.Tensor):
                    store[i] = stored[ember.from_numpy(index.astype(np.int64))]
                else:
                    store[i] = stored[index]

    def crop(self, max_length: int) -> None:
        """Forget positions from `max_length` on (negative: drop that many from the end)."""
        for i, length in enumerate(self._lengths):
            keep = max_length if max_length >= 0 else length + max_length
            keep = max(0, min(keep, length))
            if isinstance(self._keys[i], ember.Tensor):
                self._keys[i] = self._keys[i][:, :, :keep]
                self._values[i] = self._values[i][:, :, :keep]
            self._lengths[i] = keep

    def __repr__(self) -> str:
        return f"DynamicCache(layers={len(self)}, seq_length={self.get_seq_length()})"


def as_cache(past_key_values, where: str):
    """(cache object, given as legacy tuple?) from a `past_key_values` argument."""
    if past_key_values is None:
        return None, False
    if isinstance(past_key_values, DynamicCache):
        return past_key_values, False
    if isinstance(past_key_values, (tuple, list)):
        return DynamicCache.from_legacy_cache(past_key_values), True
    raise TypeError(
        f"{where}: past_key_values must be a DynamicCache or a tuple of (key, value) per "
        f"layer, got {type(past_key_values).__name__}"
    )


# --------------------------------------------------------------------------- masks
_MASK_CACHE: dict = {}


def _causal_block(query_length: int, key_length: int, dtype) -> np.ndarray:
    """(q, k) additive causal mask where query i sits at position key_length - q + i."""
    cache_key = (query_length, key_length, np.dtype(dtype).str)
    block = _MASK_CACHE.get(cache_key)
    if block is None:
        lowest = np.finfo(dtype).min
        offset = key_length - query_length
        block = np.triu(np.full((query_length, key_length), lowest, dtype), k=offset + 1)
        block.setflags(write=False)
        if len(_MASK_CACHE) > 64:
            _MASK_CACHE.clear()
        _MASK_CACHE[cache_key] = block
    return block


def padding_free(attention_mask) -> bool:
    """True when a 2-D 0/1 mask has no zeros (or there is no mask)."""
    if attention_mask is None:
        return True
    array = attention_mask.numpy() if isinstance(attention_mask, ember.Tensor) else attention_mask
    return bool(np.all(array != 0))


def causal_attention_mask(attention_mask, query_length: int, key_length: int, dtype, where: str):
    """The additive mask of a decoder's self-attention (Note [Causal mask]), or None when no
    position needs masking. `attention_mask`: None or (batch, key_length) of 1/0; a 4-D
    additive float mask is passed through."""
    np_dtype = np.dtype(dtype.numpy if hasattr(dtype, "numpy") else dtype)
    if attention_mask is not None:
        mask = (
            attention_mask.numpy() if isinstance(attention_mask, ember.Tensor) else attention_mask
        )
        mask = np.asarray(mask)
        if mask.ndim == 4:
            return ember.as_tensor(attention_mask).to(ember.dtypes.from_numpy_dtype(np_dtype))
        if mask.ndim != 2 or mask.shape[1] != key_length:
            raise ValueError(
                f"{where}: attention_mask must be (batch, past + new tokens) = (batch, "
                f"{key_length}), got shape {mask.shape}"
            )
        if not np.all(mask != 0):
            lowest = np.finfo(np_dtype).min
            keys = np.where(mask[:, None, None, :] != 0, np_dtype.type(0), lowest).astype(np_dtype)
            if query_length > 1:
                keys = np.minimum(keys, _causal_block(query_length, key_length, np_dtype))
            return ember.from_numpy(keys)
    if query_length == 1:
        return None
    return ember.from_numpy(_causal_block(query_length, key_length, np_dtype)[None, None])


def graph_attention_mask(attention_mask, query_length: int, key_length: int, dtype, where: str):
    """`causal_attention_mask` written with ember ops, for inputs without host values (Note
    [Traced decoder inputs] in decoder_utils): (batch, 1, q, k) additive, the dtype's lowest
    value where a key is padding or after the query; a 4-D float mask is passed through."""
    np_dtype = np.dtype(dtype.numpy if hasattr(dtype, "numpy") else dtype)
    ember_dtype = ember.dtypes.from_numpy_dtype(np_dtype)
    if attention_mask.ndim == 4:
        return attention_mask.to(ember_dtype)
    if attention_mask.ndim != 2 or attention_mask.shape[1] != key_length:
        raise ValueError(
            f"{where}: attention_mask must be (batch, past + new tokens) = (batch, "
            f"{key_length}), got shape {tuple(attention_mask.shape)}"
        )
    lowest = float(np.finfo(np_dtype).min)
    padding = (attention_mask == 0).to(ember_dtype).reshape(attention_mask.shape[0], 1, 1, -1)
    keys = padding * lowest  # 0 (as -0.0) where a key may be seen, lowest where not
    if query_length > 1:
        causal = ember.from_numpy(_causal_block(query_length, key_length, np_dtype).copy())
        keys = ember.minimum(keys, causal.reshape(1, 1, query_length, key_length))
    return keys


def position_ids_from_mask(attention_mask: np.ndarray, query_length: int) -> np.ndarray:
    """Positions of the last `query_length` tokens of rows padded per a (batch, seq) 0/1
    mask: cumsum(mask) - 1, padding at 0 (what `generate` passes, so left-padded rows count
    their positions from their first real token)."""
    positions = np.cumsum(attention_mask != 0, axis=-1, dtype=np.int64) - 1
    positions[attention_mask == 0] = 0
    return positions[:, attention_mask.shape[1] - query_length :]
