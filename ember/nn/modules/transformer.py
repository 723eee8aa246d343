"""Attention and the Transformer: `MultiheadAttention`, `TransformerEncoderLayer`,
`TransformerEncoder`, `TransformerDecoderLayer`, `TransformerDecoder` and the encoder-decoder
`Transformer`, with PyTorch's parameter names (so state dicts load across) and masks.

Note [Attention masks]: as in PyTorch's nn.MultiheadAttention, a *bool* `attn_mask` or
`key_padding_mask` marks positions that may NOT be attended (True = masked out), and a float
mask is added to the scores. (`F.scaled_dot_product_attention` uses the opposite bool
convention: True = takes part.) Both masks are turned into one additive float mask here.
"""

from __future__ import annotations

import copy
import math

from ember import dtypes as _dt
from ember._util.errors import ShapeError
from ember.nn import functional as F
from ember.nn import init
from ember.nn.modules.container import ModuleList
from ember.nn.modules.layers import Dropout, LayerNorm, Linear
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.ops import elementwise as E
from ember.ops import shape as S
from ember.tensor import Tensor, empty


def _additive_mask(mask: Tensor, dtype) -> Tensor:
    """Bool mask (True = masked out) -> 0 / -inf; float masks pass through."""
    if mask.dtype is _dt.bool_:
        return E.where(mask, float("-inf"), 0.0).to(dtype)
    return mask.to(dtype)


class NonDynamicallyQuantizableLinear(Linear):
    """MultiheadAttention's output projection (PyTorch's name, kept for printing parity)."""


class MultiheadAttention(Module):
    """Multi-head attention: softmax(Q K^T / sqrt(d) + mask) V per head, then a projection.

    Inputs are (L, N, E) or, with `batch_first=True`, (N, L, E); unbatched (L, E) works too.
    Returns (output, weights); weights are averaged over heads unless
    `average_attn_weights=False`, and None when `need_weights=False`.

    As in PyTorch, `add_bias_kv` appends learned `bias_k` / `bias_v` (1, 1, embed_dim) to the
    projected keys and values, and `add_zero_attn` then appends a zero key and value per head;
    each adds one source position (to the weights too) that no mask hides.

    Example:
        >>> import ember, ember.nn as nn
        >>> mha = nn.MultiheadAttention(16, 4, batch_first=True)
        >>> x = ember.randn(2, 5, 16)
        >>> out, w = mha(x, x, x)
        >>> tuple(out.shape), tuple(w.shape)
        ((2, 5, 16), (2, 5, 5))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim=None,
        vdim=None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim {embed_dim} must be divisible by "
                f"num_heads {num_heads}"
            )
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty((3 * embed_dim, embed_dim), **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(empty((embed_dim, embed_dim), **factory))
            self.k_proj_weight = Parameter(empty((embed_dim, self.kdim), **factory))
            self.v_proj_weight = Parameter(empty((embed_dim, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            # a learned key and value appended to every sequence (one more source position)
            self.bias_k = Parameter(empty((1, 1, embed_dim), **factory))
            self.bias_v = Parameter(empty((1, 1, embed_dim), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def _projections(self):
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b = self.in_proj_bias
        if b is None:
            return (wq, None), (wk, None), (wv, None)
        return (wq, b[:e]), (wk, b[e : 2 * e]), (wv, b[2 * e :])

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        unbatched = query.ndim == 2
        if query.ndim not in (2, 3):
            raise ShapeError(f"query must be 2-D (L, E) or 3-D, got {tuple(query.shape)}")
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise ShapeError(
                f"query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                f"{tuple(value.shape)} must have the same number of dims"
            )
        if query.shape[-1] != self.embed_dim:
            raise ShapeError(
                f"query {tuple(query.shape)} last dim {query.shape[-1]} ≠ "
                f"embed_dim {self.embed_dim}"
            )
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ShapeError(
                f"key {tuple(key.shape)} / value {tuple(value.shape)} last dims "
                f"must be kdim {self.kdim} / vdim {self.vdim}"
            )
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1))
        n, tgt_len, _ = query.shape
        src_len = key.shape[1]
        if key.shape[0] != n or value.shape[0] != n or value.shape[1] != src_len:
            raise ShapeError(
                f"query, key and value disagree on batch or source length: "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)} "
                f"(batch first)"
            )
        h, d = self.num_heads, self.head_dim
        (wq, bq), (wk, bk), (wv, bv) = self._projections()
        q = F.linear(query, wq, bq).reshape(n, tgt_len, h, d).transpose(1, 2)
        k = F.linear(key, wk, bk).reshape(n, src_len, h, d).transpose(1, 2)
        v = F.linear(value, wv, bv).reshape(n, src_len, h, d).transpose(1, 2)

        mask = None
        if attn_mask is not None:
            mask = _additive_mask(attn_mask, q.dtype)
            if mask.ndim == 2:
                if tuple(mask.shape) != (tgt_len, src_len):
                    raise ShapeError(
                        f"attn_mask {tuple(mask.shape)} must be ({tgt_len}, {src_len})"
                    )
            elif mask.ndim == 3:
                if tuple(mask.shape) != (n * h, tgt_len, src_len):
                    raise ShapeError(
                        f"attn_mask {tuple(mask.shape)} must be ({n * h}, {tgt_len}, {src_len})"
                    )
                mask = mask.reshape(n, h, tgt_len, src_len)
            else:
                raise ShapeError(f"attn_mask must be 2-D or 3-D, got {tuple(mask.shape)}")
        elif is_causal:
            raise ValueError("is_causal=True needs attn_mask (it is only a hint, as in PyTorch)")
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (n, src_len):
                raise ShapeError(
                    f"key_padding_mask {tuple(key_padding_mask.shape)} must be ({n}, {src_len})"
                )
            pad = _additive_mask(key_padding_mask, q.dtype).reshape(n, 1, 1, src_len)
            mask = pad if mask is None else mask + pad

        extra = 0  # source positions appended after projection, never masked
        if self.bias_k is not None:
            k = S.cat([k, self.bias_k.reshape(1, h, 1, d).expand(n, h, 1, d)], 2)
            v = S.cat([v, self.bias_v.reshape(1, h, 1, d).expand(n, h, 1, d)], 2)
            extra += 1
        if self.add_zero_attn:
            k = S.cat([k, k.new_zeros((n, h, 1, d))], 2)
            v = S.cat([v, v.new_zeros((n, h, 1, d))], 2)
            extra += 1
        if mask is not None and extra:
            mask = F.pad(mask, (0, extra))

        scores = (q @ k.mT) * (1.0 / math.sqrt(d))
        if mask is not None:
            scores = scores + mask
        weights = F.softmax(scores, -1)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout > 0 else weights
        out = (dropped @ v).transpose(1, 2).reshape(n, tgt_len, self.embed_dim)
        out = self.out_proj(out)
        if not self.batch_first and not unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(1)
        if unbatched:
            weights = weights.squeeze(0)
        return out, weights

    def _error_label(self) -> str:
        return f"MultiheadAttention {self.embed_dim}, {self.num_heads} heads"


def _activation(activation):
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise ValueError(f"activation should be relu/gelu or a callable, not {activation!r}")


class _TransformerLayer(Module):
    """What PyTorch's encoder and decoder layers share (Note [Transformer layer blocks]).

    Note [Transformer layer blocks]: a layer is a sequence of sub-blocks (self-attention,
    then, in the decoder, attention over the memory, then the feed-forward block), sub-block
    i wrapped in a residual connection with `norm{i}` and ending in `dropout{i}`: after the
    residual with the default post-norm, `x = norm_i(x + block(x))`, before the block with
    `norm_first=True`, `x = x + block(norm_i(x))`. The attributes are built in PyTorch's
    order (self_attn, multihead_attn, linear1, dropout, linear2, norm_first, norm1..n,
    dropout1..n), so state dicts keep PyTorch's keys and key order and move both ways.
    """

    _cross_attention = False  # the decoder's attention over the memory

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        attention_args = dict(dropout=dropout, bias=bias, batch_first=batch_first, **factory)
        self.self_attn = MultiheadAttention(d_model, nhead, **attention_args)
        if self._cross_attention:
            self.multihead_attn = MultiheadAttention(d_model, nhead, **attention_args)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        blocks = 3 if self._cross_attention else 2
        for i in range(1, blocks + 1):
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        for i in range(1, blocks + 1):
            setattr(self, f"dropout{i}", Dropout(dropout))
        self._ff_dropout = f"dropout{blocks}"  # the feed-forward block is the last one
        self.activation = _activation(activation)
        self.batch_first = batch_first

    def _residual(self, x: Tensor, norm: Module, block, *args) -> Tensor:
        """One sub-block with its residual connection and norm (Note [Transformer layer
        blocks])."""
        if self.norm_first:
            return x + block(norm(x), *args)
        return norm(x + block(x, *args))

    def _sa_block(self, x, attn_mask, key_padding_mask):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return getattr(self, self._ff_dropout)(x)


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention then a feed-forward block, each with a residual connection and LayerNorm
    (after each block, or before it with `norm_first=True`), as in PyTorch; parameter names
    match its state dicts (Note [Transformer layer blocks])."""

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = self._residual(src, self.norm1, self._sa_block, src_mask, src_key_padding_mask)
        return self._residual(x, self.norm2, self._ff_block)


class TransformerEncoder(Module):
    """A stack of `num_layers` copies of `encoder_layer`, then an optional final norm.

    Unlike PyTorch's eval-mode fast path (nested tensors), padded positions are computed like
    any other rather than returned as zeros."""

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
    """(sz, sz) float mask: 0 on and below the diagonal, -inf above (no attention to later
    positions), PyTorch's `Transformer.generate_square_subsequent_mask`."""
    from ember.tensor import full

    return S.triu(full((sz, sz), float("-inf"), dtype=dtype, device=device), 1)


class TransformerDecoderLayer(_TransformerLayer):
    """Self-attention, attention over the encoder's output (memory), then a feed-forward
    block, each with a residual connection and LayerNorm (after each block, or before it with
    `norm_first=True`), as in PyTorch; parameter names match its state dicts (Note
    [Transformer layer blocks])."""

    _cross_attention = True

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        if tgt_is_causal and tgt_mask is None:
            L = tgt.shape[1] if self.batch_first and tgt.ndim == 3 else tgt.shape[0]
            tgt_mask = _generate_square_subsequent_mask(L, dtype=tgt.dtype)
        x = self._residual(tgt, self.norm1, self._sa_block, tgt_mask, tgt_key_padding_mask)
        x = self._residual(
            x, self.norm2, self._mha_block, memory, memory_mask, memory_key_padding_mask
        )
        return self._residual(x, self.norm3, self._ff_block)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask):
        x = self.multihead_attn(
            x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        return self.dropout2(x)


class TransformerDecoder(Module):
    """A stack of `num_layers` copies of `decoder_layer`, then an optional final norm."""

    def __init__(
        self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None
    ) -> None:
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        if self.norm is not None:
            x = self.norm(x)
        return x


class Transformer(Module):
    """The encoder-decoder Transformer of "Attention Is All You Need", as PyTorch builds it:
    `encoder` (TransformerEncoder with a final LayerNorm), `decoder` (TransformerDecoder with a
    final LayerNorm); parameters initialised Xavier-uniform (every matrix), as PyTorch does.

    Example:
        >>> import ember, ember.nn as nn
        >>> model = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=2,
        ...                        num_decoder_layers=2, dim_feedforward=32)
        >>> src, tgt = ember.randn(10, 3, 16), ember.randn(7, 3, 16)
        >>> mask = nn.Transformer.generate_square_subsequent_mask(7)
        >>> tuple(model(src, tgt, tgt_mask=mask).shape)
        (7, 3, 16)
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        custom_encoder: Module | None = None,
        custom_decoder: Module | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps)
        layer_kwargs = dict(batch_first=batch_first, norm_first=norm_first, bias=bias, **factory)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(
                TransformerEncoderLayer(*layer_args, **layer_kwargs),
                num_encoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory),
            )
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(
                TransformerDecoderLayer(*layer_args, **layer_kwargs),
                num_decoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory),
            )
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        batched = src.ndim == 3
        if batched != (tgt.ndim == 3):
            raise ShapeError(
                f"Transformer: src {tuple(src.shape)} and tgt {tuple(tgt.shape)} must both be "
                "batched (3-D) or both unbatched (2-D)"
            )
        batch_dim = 0 if self.batch_first else 1
        if batched and src.shape[batch_dim] != tgt.shape[batch_dim]:
            raise ShapeError(
                f"Transformer: the batch number of src and tgt must be equal, got "
                f"{src.shape[batch_dim]} and {tgt.shape[batch_dim]}"
            )
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ShapeError(
                f"Transformer: the feature number of src and tgt must be equal to d_model "
                f"({self.d_model}), got {src.shape[-1]} and {tgt.shape[-1]}"
            )
        memory = self.encoder(
            src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal
        )
        return self.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
        )

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above."""
        return _generate_square_subsequent_mask(sz, device, dtype)
