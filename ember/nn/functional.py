"""`ember.nn.functional`: the functional form of every layer, activation and loss.

Names only: each is the op (or composite) from `ember.ops`, re-exported (STYLE.md habit 13).
The few functions defined here are thin argument adapters with PyTorch's signatures, and
`embedding`, whose `max_norm` rewrites the weight in place outside autograd (a layer-5 job).
"""

from __future__ import annotations

from ember.ops.conv import (
    adaptive_avg_pool1d as adaptive_avg_pool1d,
)
from ember.ops.conv import (
    adaptive_avg_pool2d as adaptive_avg_pool2d,
)
from ember.ops.conv import (
    adaptive_avg_pool3d as adaptive_avg_pool3d,
)
from ember.ops.conv import (
    adaptive_max_pool1d as adaptive_max_pool1d,
)
from ember.ops.conv import (
    adaptive_max_pool2d as adaptive_max_pool2d,
)
from ember.ops.conv import (
    adaptive_max_pool3d as adaptive_max_pool3d,
)
from ember.ops.conv import (
    avg_pool1d as avg_pool1d,
)
from ember.ops.conv import (
    avg_pool2d as avg_pool2d,
)
from ember.ops.conv import (
    avg_pool3d as avg_pool3d,
)
from ember.ops.conv import (
    conv1d as conv1d,
)
from ember.ops.conv import (
    conv2d as conv2d,
)
from ember.ops.conv import conv3d as conv3d
from ember.ops.conv import conv_transpose1d as conv_transpose1d
from ember.ops.conv import conv_transpose2d as conv_transpose2d
from ember.ops.conv import conv_transpose3d as conv_transpose3d
from ember.ops.conv import fold as fold
from ember.ops.conv import unfold as unfold
from ember.ops.conv import (
    max_pool1d as max_pool1d,
)
from ember.ops.conv import (
    max_pool2d as max_pool2d,
)
from ember.ops.conv import (
    max_pool3d as max_pool3d,
)
from ember.ops.conv import (
    max_unpool1d as max_unpool1d,
)
from ember.ops.conv import (
    max_unpool2d as max_unpool2d,
)
from ember.ops.conv import (
    max_unpool3d as max_unpool3d,
)
from ember.ops.elementwise import (
    relu as relu,
)
from ember.ops.elementwise import (
    sigmoid as sigmoid,
)
from ember.ops.elementwise import (
    tanh as tanh,
)
from ember.ops.interpolate import interpolate as interpolate
from ember.ops.interpolate import upsample as upsample
from ember.ops.interpolate import upsample_bilinear as upsample_bilinear
from ember.ops.interpolate import upsample_nearest as upsample_nearest
from ember.ops.linalg import linear as linear
from ember.ops.nn import (
    batch_norm as batch_norm,
)
from ember.ops.nn import (
    binary_cross_entropy as binary_cross_entropy,
)
from ember.ops.nn import (
    binary_cross_entropy_with_logits as binary_cross_entropy_with_logits,
)
from ember.ops.nn import (
    cross_entropy as cross_entropy,
)
from ember.ops.nn import (
    dropout as dropout,
)
from ember.ops.nn import (
    elu as elu,
)
from ember.ops.nn import (
    gelu as gelu,
)
from ember.ops.nn import (
    group_norm as group_norm,
)
from ember.ops.nn import (
    hardtanh as hardtanh,
)
from ember.ops.nn import (
    kl_div as kl_div,
)
from ember.ops.nn import (
    l1_loss as l1_loss,
)
from ember.ops.nn import (
    layer_norm as layer_norm,
)
from ember.ops.nn import (
    leaky_relu as leaky_relu,
)
from ember.ops.nn import (
    log_softmax as log_softmax,
)
from ember.ops.nn import (
    mse_loss as mse_loss,
)
from ember.ops.nn import (
    nll_loss as nll_loss,
)
from ember.ops.nn import (
    scaled_dot_product_attention as scaled_dot_product_attention,
)
from ember.ops.nn import (
    silu as silu,
)
from ember.ops.nn import (
    smooth_l1_loss as smooth_l1_loss,
)
from ember.ops.nn import (
    softmax as softmax,
)
from ember.ops.nn import (
    softplus as softplus,
)
from ember.ops.nn import (
    hardsigmoid as hardsigmoid,
)
from ember.ops.nn import (
    hardswish as hardswish,
)
from ember.ops.nn import (
    softsign as softsign,
)
from ember.ops.nn import (
    celu as celu,
)
from ember.ops.nn import (
    selu as selu,
)
from ember.ops.nn import (
    mish as mish,
)
from ember.ops.nn import (
    softmin as softmin,
)
from ember.ops.nn import (
    dropout1d as dropout1d,
)
from ember.ops.nn import (
    dropout2d as dropout2d,
)
from ember.ops.nn import (
    dropout3d as dropout3d,
)
from ember.ops.nn import (
    feature_dropout as feature_dropout,
)
from ember.ops.spatial import lp_pool1d as lp_pool1d  # issue 18 (ops18b)
from ember.ops.spatial import lp_pool2d as lp_pool2d
from ember.ops.spatial import lp_pool3d as lp_pool3d
from ember.ops.spatial import pixel_shuffle as pixel_shuffle
from ember.ops.spatial import pixel_unshuffle as pixel_unshuffle
from ember.ops.spatial import instance_norm as instance_norm
from ember.ops.spatial import local_response_norm as local_response_norm
from ember.ops.distance import cosine_similarity as cosine_similarity
from ember.ops.distance import pairwise_distance as pairwise_distance
from ember.ops.distance import pdist as pdist
from ember.ops.elementwise import where
from ember.ops.shape import embedding as _embedding
from ember.autograd.function import Function
from ember.autograd.grad_mode import is_grad_enabled
from ember.autograd.sparse import SparseRowTensor
from ember.backend import runs_eagerly
from ember._util.errors import DTypeError, at_user_line
from ember.dtypes import HALF_DTYPES as _HALF_DTYPES
from ember.ops.shape import (
    one_hot as one_hot,
)
from ember.ops.shape import (
    pad as pad,
)


def embedding(
    input,
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
):
    """Rows of `weight` picked by the integer tensor `input` (PyTorch's F.embedding).

    With `max_norm`, each row that `input` looks up and whose `norm_type`-norm exceeds
    `max_norm` is first rescaled to norm max_norm, in place in `weight` and without gradient
    (PyTorch's embedding_renorm_; a row looked up several times is rescaled once). The rest is
    `ember.ops.shape.embedding`: no gradient to `padding_idx`'s row, `scale_grad_by_freq`.
    A float16 or bfloat16 table gives float32 rows (Note [Half-precision weights]).

    Example:
        >>> import ember
        >>> weight = ember.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> out = embedding(ember.tensor([0, 0, 1]), weight, max_norm=1.0)
        >>> [round(n, 4) for n in out.norm(dim=-1).tolist()]  # row 1's norm 0.5 is kept
        [1.0, 1.0, 0.5]
        >>> [round(v, 4) for v in weight[0].tolist()]  # row 0 was rescaled in place
        [0.6, 0.8]
    """
    if max_norm is not None:
        _embedding_renorm_(weight, input, float(max_norm), float(norm_type))
    if sparse and weight.requires_grad and is_grad_enabled():
        out = _sparse_embedding(input, weight, padding_idx, scale_grad_by_freq)
    else:
        out = _embedding(input, weight, padding_idx, scale_grad_by_freq)
    if weight.dtype in _HALF_DTYPES:  # Note [Half-precision weights]: compute in float32
        out = out.float()
    return out


class _SparseEmbedding(Function):
    """Rows of the weight whose gradient is a SparseRowTensor: one row per looked-up index,
    uncoalesced, without `padding_idx`'s rows, as torch's embedding_sparse_backward
    (Note [Sparse gradients] in ember/autograd/sparse.py)."""

    @staticmethod
    def forward(ctx, weight, index, padding_idx):
        ctx.index, ctx.padding_idx, ctx.size = index, padding_idx, tuple(weight.shape)
        return _embedding(index, weight, padding_idx)

    @staticmethod
    def backward(ctx, g):
        rows = ctx.index.reshape(-1)
        values = g.reshape(-1, ctx.size[1])
        if ctx.padding_idx is not None:
            keep = rows != ctx.padding_idx
            rows, values = rows[keep], values[keep]
        return SparseRowTensor(rows.reshape(1, -1), values, ctx.size), None, None


def _sparse_embedding(index, weight, padding_idx, scale_grad_by_freq):
    if scale_grad_by_freq:
        raise NotImplementedError(
            at_user_line(
                "embedding: scale_grad_by_freq is not supported with sparse gradients (as in "
                "torch); use sparse=False"
            )
        )
    if not runs_eagerly(weight.array):
        raise NotImplementedError(
            at_user_line(
                "embedding: sparse gradients are eager only; a compiled graph keeps dense "
                "gradients, so use sparse=False inside ember.compile"
            )
        )
    if index.dtype.is_floating_point:
        raise DTypeError(f"embedding: indices must be integer, got {index.dtype}")
    if padding_idx is not None:
        padding_idx %= weight.shape[0]
    return _SparseEmbedding.apply(weight, index, padding_idx)


def _embedding_renorm_(weight, index, max_norm: float, norm_type: float) -> None:
    """weight[i] *= max_norm / (norm + 1e-7) for each looked-up row i whose norm exceeds
    max_norm, in place and outside autograd. Every copy of a repeated index is computed from
    the same old row, so the repeated writes store one value."""
    from ember.autograd.grad_mode import no_grad

    if index.dtype.is_floating_point:
        raise TypeError(f"embedding: indices must be integer, got {index.dtype}")
    with no_grad():
        rows = weight[index]
        norms = rows.norm(norm_type, dim=-1, keepdim=True)
        scale = where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
        weight[index] = rows * scale


def bilinear(input1, input2, weight, bias=None):
    """y_k = x1^T A_k x2 + b_k, with weight A of shape (out, in1, in2)."""
    from ember.ops.linalg import einsum

    out = einsum("...i,kij,...j->...k", input1, weight, input2)
    return out if bias is None else out + bias


def flatten(input, start_dim: int = 1, end_dim: int = -1):
    return input.flatten(start_dim, end_dim)


def relu6(input):
    return hardtanh(input, 0.0, 6.0)


def logsigmoid(input):
    return -softplus(-input)


def normalize(input, p: float = 2.0, dim: int = 1, eps: float = 1e-12):
    """input / max(||input||_p, eps) along dim (p=0 counts the nonzero entries, and like
    PyTorch's 0-norm passes no gradient through the denominator)."""
    from ember.ops.elementwise import maximum

    norm = input.norm(p, dim, keepdim=True)
    return input / maximum(norm, eps)


# ember's extension for Transformer blocks: layer_norm(x + residual) in one pass
from ember.ops.nn import residual_layer_norm as residual_layer_norm  # noqa: E402

# ember's extension for Transformer blocks: layer_norm(dropout(x + bias) + residual) in one pass
from ember.ops.dropout_norm import dropout_add_layer_norm as dropout_add_layer_norm  # noqa: E402
