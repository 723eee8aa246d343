"""layer_norm(dropout(x + bias) + residual) as one primitive: the post-norm residual of BERT's
blocks (BertSelfOutput, BertOutput) in one pass forward and one backward (Note [Dropout, add
and norm in one pass] in ember/backend/dropout_norm_kernels.py).

It follows Note [Fused composites] (ember.ops.registry) and Note [Fused Transformer ops]
(ember.ops.fused): the NumPy forward here is the reference, the decomposition
`dropout_add_layer_norm_reference` (fused_dropout with the same seed, an add, layer norm) is
checked against the fused op in the op table, and the backward primitives have VJPs of their
own written with ember ops, so second-order gradients flow. The op takes the dense layer's
bias (`biased`, folded into the same pass) and the dropout seed (`p` > 0) as trailing
inputs, as fused_attention takes its mask and seed. The seed is drawn as `fused_dropout`
draws it (one 0-d int64 from the generator), and the mask is `fused_dropout`'s hash of it,
so a model switched to this op keeps its random stream and its masks.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ember._util.errors import DTypeError, ShapeError
from ember.backend import dropout_norm_kernels as _kernels
from ember.backend import transformer_kernels as _tk
from ember.ops import fused as _fused
from ember.ops.registry import apply, defop, onnx_lowering

_NAME = "dropout_add_layer_norm"


def _parts(rest, biased, p):
    """(dense bias or None, seed or None) from the trailing inputs."""
    return (rest[0] if biased else None), (rest[-1] if p > 0.0 else None)


def _dropped(xp, x, rest, p, biased):
    """dropout(x + bias) with fused_dropout's mask (NumPy reference)."""
    db, seed = _parts(rest, biased, p)
    h = x if db is None else x + db
    return _fused._dropout_forward(xp, h, seed, p) if p > 0.0 else h


def _mask_args(rest, p, biased):
    """(dense bias, seed, threshold, scale) as the kernels take them."""
    db, seed = _parts(rest, biased, p)
    if p <= 0.0:
        return db, 0, 0, 1.0
    return db, np.asarray(seed).reshape(()).item(), _fused._threshold(p), 1.0 / (1.0 - p)


# --- the forward ----------------------------------------------------------------------------
def _forward_dropped(x, rest, p, biased):
    """dropout(x + bias) by the separate kernels, as the decomposition dispatches them (where
    the fused kernels do not apply: float64, small inputs, no numba)."""
    db, seed, threshold, scale = _mask_args(rest, p, biased)
    h = x if db is None else x + db
    if p > 0.0:
        dropped = _tk.dropout(h, seed, threshold, h.dtype.type(scale))
        h = _fused._dropout_forward(np, h, seed, p) if dropped is None else dropped
    return h


def _forward(xp, x, r, w, b, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_forward(xp, _dropped(xp, x, rest, p, biased), w, b, r, eps)


def _forward_kernel(x, r, w, b, *rest, p=0.0, eps=1e-5, biased=False):
    db, seed, threshold, scale = _mask_args(rest, p, biased)
    # a backward may follow: the kernel keeps its dropout mask for it while the seed lives
    # (an autograd node holds it until its backward; Note [Kept dropout masks])
    keep_for = rest[-1] if p > 0.0 and isinstance(rest[-1], np.ndarray) else None
    out = _kernels.forward(x, r, w, b, db, seed, threshold, scale, eps, keep_for)
    if out is not None:
        return out
    h = _forward_dropped(x, rest, p, biased)
    out = _tk.layer_norm(h, r, w, b, eps)
    return _fused._ln_forward(np, h, w, b, r, eps) if out is None else out


def _shape(x, r, w, b, *rest, p=0.0, eps=1e-5, biased=False):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{_NAME}: the fused op takes 0 <= p < 1, got {p}")
    if len(rest) != int(biased) + int(p > 0.0):
        raise ShapeError(
            f"{_NAME}: expected {int(biased) + int(p > 0.0)} trailing inputs (bias if biased, "
            f"seed if p > 0), got {len(rest)}"
        )
    db, seed = _parts(rest, biased, p)
    _fused._ln_check(_NAME, x, (w, b) + (() if db is None else (db,)), r)
    if seed is not None and tuple(seed) != ():
        raise ShapeError(f"{_NAME}: the seed must be a 0-d tensor, got shape {tuple(seed)}")
    return tuple(x)


def _dtype(x, r, *rest, p=0.0, eps=1e-5, biased=False):
    floats = (x, r) + rest[: len(rest) - int(p > 0.0)]
    if not x.is_floating_point or any(d != x for d in floats):
        got = ", ".join(str(d) for d in floats)
        raise DTypeError(
            f"{_NAME}: the fused op takes input, residual, weight, bias (and dense bias) of one "
            f"floating dtype, got {got}"
        )
    return x


def _vjp(g, y, x, r, w, b, *rest, p=0.0, eps=1e-5, biased=False):
    db, _ = _parts(rest, biased, p)
    need = _fused._needs_grad
    want_inputs = need(x) or need(r) or (db is not None and need(db))
    want_params = need(w) or need(b)
    gx = gr = gw = gb = gdb = None
    attrs = {"p": p, "eps": eps, "biased": biased}
    # the kernel of the input gradient computes the rest in its pass (backward_together: the
    # parameter gradients and dropout(gr), handed to the two calls that follow)
    with _kernels.backward_together() if want_inputs else nullcontext():
        if want_inputs:
            gr = apply(INPUT_GRAD, g, x, r, w, *rest, **attrs)
            gx = _undrop(gr, rest, p, biased)
            if db is not None and need(db):
                gdb = _bias_grad(gx, db)
        if want_params:
            sums = apply(PARAM_GRAD, g, x, r, w, *rest, **attrs)
            gw, gb = sums[0], sums[1]
    return (gx, gr, gw, gb) + ((gdb,) if biased else ()) + ((None,) if p > 0.0 else ())


def _bias_grad(gx, db):
    """The dense bias's gradient, ones @ g as `linear` computes it (Note [Linear backward])."""
    return gx if gx.ndim == 1 else _fused._row_sum(gx, db.shape)


DROPOUT_ADD_LAYER_NORM = defop(
    "fused_dropout_add_layer_norm",
    _forward,
    _vjp,
    shape=_shape,
    dtype=_dtype,
    doc="layer_norm(dropout(x + bias) + residual) over the last dim (bias optional, dropout "
    "with fused_dropout's hashed mask when p > 0) as one op; the decomposition is "
    "`ember.ops.dropout_norm.dropout_add_layer_norm_reference`.",
)
DROPOUT_ADD_LAYER_NORM.def_fast_kernel("numpy", _forward_kernel)


# --- the gradients --------------------------------------------------------------------------
def _input_grad_forward(xp, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_input_grad_forward(xp, g, _dropped(xp, x, rest, p, biased), w, r, eps)


def _input_grad_kernel(g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    db, seed, threshold, scale = _mask_args(rest, p, biased)
    out = _kernels.input_grad(g, x, r, w, db, seed, threshold, scale, eps)
    if out is not None:
        return out
    h = _forward_dropped(x, rest, p, biased)
    out = _tk.layer_norm_input_grad(g, h, r, w, eps)
    return _fused._ln_input_grad_forward(np, g, h, w, r, eps) if out is None else out


def _param_grad_forward(xp, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_param_grad_forward(xp, g, _dropped(xp, x, rest, p, biased), r, eps)


def _param_grad_kernel(g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    db, seed, threshold, scale = _mask_args(rest, p, biased)
    sums = _kernels.param_grads(g, x, r, w, db, seed, threshold, scale, eps)
    if sums is not None:
        return sums.astype(np.result_type(x, g))
    h = _forward_dropped(x, rest, p, biased)
    out = _tk.layer_norm_param_grad(g, h, r, eps)
    return _fused._ln_param_grad_forward(np, g, h, r, eps) if out is None else out


def _joint_kernel(xp, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    """Both gradients in one pass for a compiled graph (Note [Joint kernels])."""
    db, seed, threshold, scale = _mask_args(rest, p, biased)
    both = _kernels.joint_grads(g, x, r, w, db, seed, threshold, scale, eps)
    return None if both is None else (both[0], both[1].astype(np.result_type(x, g)))


def _dropped_tensor(x, rest, p, biased):
    """dropout(x + bias) in ember ops (the second-order rules)."""
    db, seed = _parts(rest, biased, p)
    h = x if db is None else x + db
    return apply(_fused.DROPOUT, h, seed, p=p) if p > 0.0 else h


def _undrop(t, rest, p, biased):
    """The dropout's transpose (itself) applied to t."""
    _, seed = _parts(rest, biased, p)
    return apply(_fused.DROPOUT, t, seed, p=p) if p > 0.0 else t


def _trailing(g_h, rest, p, biased):
    """The gradients of the trailing inputs from the gradient of x + bias."""
    db, _ = _parts(rest, biased, p)
    gdb = None
    if db is not None and _fused._needs_grad(db):
        gdb = _fused._row_sum(g_h, db.shape)
    return ((gdb,) if biased else ()) + ((None,) if p > 0.0 else ())


def _input_grad_vjp(h, y, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    # y is the layer norm's input gradient at u = D(x + bias) + r: its rule, then D's (D is
    # its own transpose)
    dropped = _dropped_tensor(x, rest, p, biased)
    g_g, g_u, g_w, g_r = _fused._ln_input_grad_vjp(h, None, g, dropped, w, r, eps)
    g_h = _undrop(g_u, rest, p, biased)
    return (g_g, g_h, g_r, g_w) + _trailing(g_h, rest, p, biased)


def _param_grad_vjp(h, y, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    # w is an input only so that the two gradients share one kernel: these sums ignore it
    dropped = _dropped_tensor(x, rest, p, biased)
    g_g, g_u, g_r = _fused._ln_param_grad_vjp(h, None, g, dropped, r, eps)
    g_h = _undrop(g_u, rest, p, biased)
    return (g_g, g_h, g_r, None) + _trailing(g_h, rest, p, biased)


INPUT_GRAD = defop(
    "fused_dropout_add_layer_norm_input_grad",
    _input_grad_forward,
    _input_grad_vjp,
    shape=lambda g, x, r, w, *rest, **a: _shape(x, r, w, w, *rest, **a),
    dtype=lambda g, x, r, w, *rest, **a: _dtype(x, r, w, w, *rest, **a),
    doc="The gradient of fused_dropout_add_layer_norm with respect to its residual (the layer "
    "norm's input gradient); x's is fused_dropout of it.",
)
PARAM_GRAD = defop(
    "fused_dropout_add_layer_norm_param_grad",
    _param_grad_forward,
    _param_grad_vjp,
    shape=lambda g, x, r, w, *rest, **a: (2, _shape(x, r, w, w, *rest, **a)[-1]),
    dtype=lambda g, x, r, w, *rest, **a: _dtype(x, r, w, *rest, **a),
    doc="(2, D): the gradients of fused_dropout_add_layer_norm's layer-norm weight (sum of "
    "g * xhat) and bias (sum of g) over all rows (w, unused, is an input so that a compiled "
    "graph computes both gradients with one joint kernel).",
)


INPUT_GRAD.def_fast_kernel("numpy", _input_grad_kernel)
PARAM_GRAD.def_fast_kernel("numpy", _param_grad_kernel)
INPUT_GRAD.joint["fused_dropout_add_layer_norm_param_grad"] = _joint_kernel


# --- ONNX: the decomposition in ONNX primitives ----------------------------------------------
# dropout lowers to ONNX Dropout in training mode, as fused_dropout's lowering does: the same
# distribution, not the mask ember hashes from its seed (Note [Fused Transformer ops])
def _onnx_dropped(b, x, rest, p, biased):
    db, _ = _parts(rest, biased, p)
    h = x if db is None else b.op("Add", x, db)
    if p > 0.0:
        h = b.op("Dropout", h, b.const(p, b.out.dtype), b.const(True, "bool"))
    return h


@onnx_lowering("fused_dropout_add_layer_norm")
def _onnx(b, x, r, w, bias, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_onnx(b, _onnx_dropped(b, x, rest, p, biased), w, bias, r, eps)


@onnx_lowering("fused_dropout_add_layer_norm_input_grad")
def _input_grad_onnx(b, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_input_grad_onnx(b, g, _onnx_dropped(b, x, rest, p, biased), w, r, eps)


@onnx_lowering("fused_dropout_add_layer_norm_param_grad")
def _param_grad_onnx(b, g, x, r, w, *rest, p=0.0, eps=1e-5, biased=False):
    return _fused._ln_param_grad_onnx(b, g, _onnx_dropped(b, x, rest, p, biased), r, eps)


# --- the public function and its decomposition ----------------------------------------------
def last_dim_shape(op: str, x, normalized_shape) -> tuple:
    """`normalized_shape` as a tuple, checked to be x's last dim alone (the fused ops' layer
    norm normalises one dim); a ShapeError naming `op` otherwise."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) != 1 or tuple(x.shape[-1:]) != shape:
        raise ShapeError(
            f"{op}: normalized_shape {shape} must be the input's last dim, one dim (input "
            f"{tuple(x.shape)})"
        )
    return shape


def _check(x, residual, normalized_shape, p, weight, bias, input_bias):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{_NAME}: probability must be in [0, 1], got {p}")
    shape = last_dim_shape(_NAME, x, normalized_shape)
    if tuple(residual.shape) != tuple(x.shape):
        raise ShapeError(
            f"{_NAME}: residual {tuple(residual.shape)} must have the input's shape "
            f"{tuple(x.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias), ("input_bias", input_bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ShapeError(
                f"{_NAME}: {name} must have shape {shape} (the input's last dim), got "
                f"{tuple(t.shape)}"
            )


def dropout_add_layer_norm(
    x,
    residual,
    normalized_shape,
    weight=None,
    bias=None,
    p=0.5,
    training=True,
    eps=1e-5,
    input_bias=None,
    generator=None,
):
    """layer_norm(dropout(x + input_bias, p, training) + residual) over the last dim, as one
    op (Note [Dropout, add and norm in one pass]): the post-norm residual of a Transformer
    block, `input_bias` the bias of the linear layer that made x.

    The dropout mask is `fused_dropout`'s: the same generator state gives the same mask as
    `dropout(x + input_bias, p)` followed by `residual_layer_norm`, and the results are the
    same bit for bit.

    Example:
        >>> import ember
        >>> from ember.nn import functional as F
        >>> x, r = ember.ones(2, 4), ember.zeros(2, 4)
        >>> F.dropout_add_layer_norm(x, r, 4, training=False).shape
        ember.Size([2, 4])
    """
    _check(x, residual, normalized_shape, p, weight, bias, input_bias)
    d = x.shape[-1]
    from ember.ops.nn import _fused as _takes_fused_ops  # float32/64 (half: the reference)

    fused = (
        _takes_fused_ops(x)
        and x.numel() > 0
        and p < 1.0
        and all(
            t is None or (t.dtype == x.dtype and tuple(t.shape) == (d,))
            for t in (weight, bias, input_bias)
        )
        and residual.dtype == x.dtype
    )
    if not fused:
        return dropout_add_layer_norm_reference(
            x, residual, normalized_shape, weight, bias, p, training, eps, input_bias, generator
        )
    w = weight if weight is not None else x.new_ones((d,))
    b = bias if bias is not None else x.new_zeros((d,))
    rest = [] if input_bias is None else [input_bias]
    p = float(p) if training else 0.0
    if p > 0.0:
        from ember.ops.random import randint

        rest.append(randint(0, 1 << 62, (), generator=generator, device=x.device))
    return apply(
        DROPOUT_ADD_LAYER_NORM,
        x,
        residual,
        w,
        b,
        *rest,
        p=p,
        eps=float(eps),
        biased=input_bias is not None,
    )


def folds_in_one_pass(rows: int, width: int) -> bool:
    """Whether `dropout_add_layer_norm` over a float32 (rows, width) input runs as the one-pass
    kernel (Note [Dropout, add and norm in one pass]). Below its size the op runs the bias
    add and the norm as kernels of their own, so in inference a model gains nothing from
    leaving the bias out of the product before it (a packed product adds it in the same call,
    Note [Packed weights]): MiniLM 1 x 16 measured 1.02-1.04x slower folded, one process."""
    return rows * width >= _tk.COMPILED_MIN_SIZE


def dropout_add_layer_norm_reference(
    x,
    residual,
    normalized_shape,
    weight=None,
    bias=None,
    p=0.5,
    training=True,
    eps=1e-5,
    input_bias=None,
    generator=None,
):
    """The decomposition of dropout_add_layer_norm: the bias add, `dropout`, the residual add
    and `layer_norm_reference` (the fused op is tested against it)."""
    from ember.ops.nn import dropout, layer_norm_reference

    _check(x, residual, normalized_shape, p, weight, bias, input_bias)
    h = x if input_bias is None else x + input_bias
    h = dropout(h, p, training, generator)
    return layer_norm_reference(h + residual, normalized_shape, weight, bias, eps)
