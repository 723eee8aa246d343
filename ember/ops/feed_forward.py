"""layer_norm(gelu(x W1^T + b1) W2^T + b2 + x) as one primitive: the feed-forward of BERT's
blocks (BertIntermediate + BertOutput) in inference, computed over blocks of rows by one
kernel (Note [Row-blocked feed-forward] in ember/backend/feed_forward_kernels.py).

It follows Note [Fused composites] (ember.ops.registry): the NumPy forward here is the
reference, and the decomposition `feed_forward_layer_norm_reference` (linear, GELU with its
bias, linear, the residual layer norm with the second bias) is checked against the op in the
op table, with torch and with finite differences. The VJP is the decomposition's, written
with ember ops (the products, `fused_gelu_grad` and the gradient primitives of
`fused_dropout_add_layer_norm`), so gradients and second-order gradients flow; models take
the op only where nothing records gradients (encoder_heads.feed_forward_add_norm), as the
kernel keeps no activation for a backward. Where the kernel does not apply (float64, inputs
below its size, no numba or no MKL packed API) the op runs the decomposition's kernels one
after another. ONNX: the decomposition in ONNX primitives (and LayerNormalization / Gelu
where the opset has them, ember/onnx/_fuse.py).
"""

from __future__ import annotations


from ember._util.errors import DTypeError, ShapeError, at_user_line
from ember.backend import feed_forward_kernels as _kernels
from ember.backend import get_backend
from ember.backend import transformer_kernels as _tk
from ember.ops import dropout_norm as _dropout_norm
from ember.ops import fused as _fused
from ember.ops import linalg as _linalg
from ember.ops.registry import apply, defop, onnx_lowering

_NAME = "feed_forward_layer_norm"


def _forward(xp, x, w1, b1, w2, b2, w, b, eps=1e-5, approximate="none"):
    hidden = _fused._gelu_forward(xp, xp.matmul(x, xp.swapaxes(w1, -1, -2)), b1, approximate)
    return _fused._ln_forward(xp, xp.matmul(hidden, xp.swapaxes(w2, -1, -2)) + b2, w, b, x, eps)


def _forward_kernel(x, w1, b1, w2, b2, w, b, eps=1e-5, approximate="none"):
    out = _kernels.forward(x, w1, b1, w2, b2, w, b, eps, approximate)
    if out is not None:
        return out
    # the decomposition's ops as a compiled graph runs them: the products (the backend's
    # matmul: MKL for few rows, Note [Small GEMMs]), the bias + GELU kernel, the bias +
    # residual + layer norm kernel
    xp = get_backend("cpu").xp
    pre = _linalg._linear_forward(xp, x, w1)
    hidden = _tk.gelu(pre, b1, approximate)
    if hidden is None:  # the reference's GELU (float64 small inputs, no numba)
        hidden = _fused._gelu_forward(xp, pre, b1, approximate)
    u = _linalg._linear_forward(xp, hidden, w2)
    return _dropout_norm._forward_kernel(u, x, w, b, b2, p=0.0, eps=eps, biased=True)


def _shape(x, w1, b1, w2, b2, w, b, eps=1e-5, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{_NAME}: approximate must be 'none' or 'tanh', got {approximate!r}")
    if len(x) == 0:
        raise ShapeError(f"{_NAME}: expected at least a 1-D input, got {tuple(x)}")
    d = x[-1]
    n = w1[0] if len(w1) == 2 else None
    if len(w1) != 2 or w1[1] != d or tuple(w2) != (d, n):
        raise ShapeError(
            f"{_NAME}: expected weights (n, {d}) and ({d}, n) for input {tuple(x)}, got "
            f"{tuple(w1)} and {tuple(w2)}"
        )
    for name, t, size in (("b1", b1, n), ("b2", b2, d), ("weight", w, d), ("bias", b, d)):
        if tuple(t) != (size,):
            raise ShapeError(f"{_NAME}: {name} must have shape ({size},), got {tuple(t)}")
    return tuple(x)


def _dtype(x, *params, eps=1e-5, approximate="none"):
    if not x.is_floating_point or any(d != x for d in params):
        got = ", ".join(str(d) for d in (x,) + params)
        raise DTypeError(f"{_NAME}: the fused op takes operands of one floating dtype, got {got}")
    return x


def _vjp(g, y, x, w1, b1, w2, b2, w, b, eps=1e-5, approximate="none"):
    # the decomposition's activations recomputed, then its gradients: the residual layer
    # norm's (fused_dropout_add_layer_norm without dropout), the second product's, GELU's and
    # the first product's
    need = _fused._needs_grad
    pre = apply(_linalg.LINEAR, x, w1)
    hidden = apply(_fused.GELU, pre, b1, approximate=approximate)
    u = apply(_linalg.LINEAR, hidden, w2)
    attrs = {"p": 0.0, "eps": eps, "biased": True}
    g_u = apply(_dropout_norm.INPUT_GRAD, g, u, x, w, b2, **attrs)  # also the residual's
    g_w = g_b = g_b2 = g_w2 = g_b1 = g_w1 = None
    if need(w) or need(b):
        sums = apply(_dropout_norm.PARAM_GRAD, g, u, x, w, b2, **attrs)
        g_w, g_b = sums[0], sums[1]
    rows = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    if need(b2):
        g_b2 = _fused._row_sum(g_u, b2.shape)
    if need(w2):
        g_w2 = rows(g_u).mT @ rows(hidden)
    g_pre = apply(_fused.GELU_GRAD, g_u @ w2, pre, b1, approximate=approximate)
    if need(b1):
        g_b1 = _fused._row_sum(g_pre, b1.shape)
    if need(w1):
        g_w1 = rows(g_pre).mT @ rows(x)
    g_x = g_pre @ w1 + g_u if need(x) else None
    return g_x, g_w1, g_b1, g_w2, g_b2, g_w, g_b


FEED_FORWARD = defop(
    "fused_feed_forward",
    _forward,
    _vjp,
    shape=_shape,
    dtype=_dtype,
    doc="layer_norm(gelu(x w1^T + b1) w2^T + b2 + x) over the last dim as one op, run over "
    "blocks of rows (Note [Row-blocked feed-forward]); the decomposition is "
    "`ember.ops.feed_forward.feed_forward_layer_norm_reference`.",
)
FEED_FORWARD.def_fast_kernel("numpy", _forward_kernel)


@onnx_lowering("fused_feed_forward")
def _onnx(b, x, w1, b1, w2, b2, w, bias, eps=1e-5, approximate="none", gelu=None, norm=None):
    """The decomposition in ONNX primitives; `gelu(u)` and `norm(s)` emit ONNX's Gelu and
    LayerNormalization where the exporter uses them (Note [ONNX fused composites])."""
    pre = _linalg._linear_onnx(b, x, w1)
    if gelu is not None:
        hidden = gelu(b.op("Add", pre, b1))
    else:
        hidden = _fused._gelu_onnx(b, pre, b1, approximate)
    s = b.op("Add", _linalg._linear_onnx(b, hidden, w2, b2), x)
    if norm is not None:
        return norm(s)
    return _fused._ln_onnx(b, s, w, bias, None, eps)


def _check(x, weights, norm, normalized_shape, approximate):
    _dropout_norm.last_dim_shape(_NAME, x, normalized_shape)
    if approximate not in ("none", "tanh"):
        raise ValueError(
            at_user_line(f"{_NAME}: approximate must be 'none' or 'tanh', got {approximate!r}")
        )
    names = ("intermediate_weight", "intermediate_bias", "output_weight", "output_bias")
    for name, t in zip(names, weights):
        if t is None:
            raise ValueError(at_user_line(f"{_NAME}: {name} is required, got None"))
    given = (x,) + tuple(weights) + tuple(t for t in norm if t is not None)
    if not x.is_floating_point() or any(t.dtype != x.dtype for t in given):
        got = ", ".join(str(t.dtype) for t in given)
        raise DTypeError(
            at_user_line(f"{_NAME}: the fused op takes operands of one floating dtype, got {got}")
        )


def feed_forward_layer_norm(
    x,
    intermediate_weight,
    intermediate_bias,
    output_weight,
    output_bias,
    normalized_shape,
    weight=None,
    bias=None,
    eps=1e-5,
    approximate="none",
):
    """layer_norm(gelu(x W1^T + b1) W2^T + b2 + x) over the last dim as one op (Note
    [Row-blocked feed-forward]): BERT's BertIntermediate and BertOutput in inference
    (no dropout), W1 (intermediate, hidden) and W2 (hidden, intermediate) as nn.Linear holds
    them, `weight` and `bias` the layer norm's.

    Example:
        >>> import ember
        >>> from ember.ops.feed_forward import feed_forward_layer_norm
        >>> x = ember.ones(2, 3, 4)
        >>> w1, w2 = ember.ones(8, 4) * 0.1, ember.ones(4, 8) * 0.1
        >>> feed_forward_layer_norm(x, w1, ember.zeros(8), w2, ember.zeros(4), 4).shape
        ember.Size([2, 3, 4])
    """
    weights = (intermediate_weight, intermediate_bias, output_weight, output_bias)
    _check(x, weights, (weight, bias), normalized_shape, approximate)
    d = x.shape[-1]
    w = weight if weight is not None else x.new_ones((d,))
    b = bias if bias is not None else x.new_zeros((d,))
    return apply(FEED_FORWARD, x, *weights, w, b, eps=float(eps), approximate=approximate)


def feed_forward_layer_norm_reference(
    x,
    intermediate_weight,
    intermediate_bias,
    output_weight,
    output_bias,
    normalized_shape,
    weight=None,
    bias=None,
    eps=1e-5,
    approximate="none",
):
    """The decomposition of feed_forward_layer_norm: `linear`, `gelu`, `linear` and
    `layer_norm_reference` of the sum with the residual (the fused op is tested against it)."""
    from ember.ops.nn import gelu, layer_norm_reference

    weights = (intermediate_weight, intermediate_bias, output_weight, output_bias)
    _check(x, weights, (weight, bias), normalized_shape, approximate)
    hidden = gelu(_linalg.linear(x, intermediate_weight, intermediate_bias), approximate)
    u = _linalg.linear(hidden, output_weight, output_bias)
    return layer_norm_reference(u + x, normalized_shape, weight, bias, eps)
