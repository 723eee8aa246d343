"""The op test table (Note [Op table]): one row per op, primitives and composites alike.

Note [Op table]: a row names the registry ops it exercises, how to call the op in ember and in
PyTorch (same argument order), a NumPy reference where one is short to write, sample inputs
(broadcasting, empty, non-contiguous, edge values), error inputs with the error they must
raise, and whether gradients (first and second order) are checked. Generic tests in
tests/ops/ walk the table; a test fails if a registered op has no row. Samples are NumPy
arrays (or Python values); tests turn float arrays into float32 or float64 tensors as needed.
A row's samples are drawn from its own generator (`row_rng`, seeded by the row's name), so
they do not change when rows are added, removed or filtered out before it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import ember
from ember._util.errors import ShapeError
import ember.ops.conv as C
import ember.ops.fused as _fused
import ember.ops.dropout_norm as _dropout_norm
import ember.ops.feed_forward as _feed_forward
import ember.ops.linalg as L
import ember.ops.nn as N
import ember.ops.shape as S


@dataclass
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    noncontiguous: bool = False  # pass float arrays as transposed views
    name: str = ""
    grad: bool = True  # False for edge values where finite differences mean nothing
    dtype: type | None = None  # float dtype to run in (default float32; np.float16 samples
    # check Note [Half-precision accumulation] against torch)


@dataclass
class ErrorCase:
    args: tuple
    kwargs: dict
    error: type
    match: str


@dataclass
class OpRow:
    name: str
    ops: tuple  # registry op names exercised
    fn: Callable  # ember: fn(*tensors, **kwargs)
    samples: Callable  # rng -> list[Sample]
    torch_fn: Callable | None = None
    ref: Callable | None = None  # NumPy reference: ref(*arrays, **kwargs)
    grad: bool = True
    gradgrad: bool = False
    errors: tuple = ()
    int_args: tuple = ()  # positions of integer-index arguments (never float-cast)
    atol: float = 1e-5
    rtol: float = 1e-5
    random: bool = False  # output depends on the generator: checked statistically
    finite_differences: bool = True  # False where float64 differences are meaningless
    const_args: tuple = ()  # float inputs that are not differentiated (e.g. class weights)


def _r(rng, *shape, low=None):
    a = np.asarray(rng.standard_normal(shape))
    if low is not None:
        a = np.abs(a) + low
    return np.asarray(a)


def unary_samples(low=None, edge=None):
    def samples(rng):
        out = [
            Sample((_r(rng, 3, 4, low=low),), name="2d"),
            Sample((_r(rng, 4, 3, low=low),), noncontiguous=True, name="noncontiguous"),
            Sample((_r(rng, low=low).reshape(()),), name="0d"),
            Sample((np.zeros((0, 3)),), name="empty"),
        ]
        if edge is not None:
            out.append(Sample((np.array(edge, dtype=np.float64),), name="edge", grad=False))
        return out

    return samples


def binary_samples(positive_b=False):
    def samples(rng):
        b = lambda *s: _r(rng, *s, low=0.5 if positive_b else None)  # noqa: E731
        return [
            Sample((_r(rng, 3, 4), b(3, 4)), name="same"),
            Sample((_r(rng, 2, 3, 4), b(4)), name="broadcast"),
            Sample((_r(rng, 3, 1), b(1, 4)), name="outer-broadcast"),
            Sample((_r(rng, 4, 3), b(4, 3)), noncontiguous=True, name="noncontiguous"),
            Sample((_r(rng, 3, 4), 2.5), name="scalar"),
            Sample((np.zeros((0, 4)), b(4)), name="empty"),
        ]

    return samples


_BROADCAST_ERROR = ErrorCase(
    (np.ones((2, 3)), np.ones((4,))), {}, ValueError, "cannot be broadcast"
)


def _unary(name, fn, tfn, ref, low=None, edge=None, grad=True, gradgrad=True, atol=1e-5):
    return OpRow(
        name,
        (name,),
        fn,
        unary_samples(low, edge),
        tfn,
        ref,
        grad=grad,
        gradgrad=gradgrad,
        atol=atol,
    )


def _binary(name, fn, tfn, ref, positive_b=False, grad=True, gradgrad=True, ops=None):
    return OpRow(
        name,
        ops or (name,),
        fn,
        binary_samples(positive_b),
        tfn,
        ref,
        grad=grad,
        gradgrad=gradgrad and grad,
        errors=(_BROADCAST_ERROR,),
    )


def _erf_ref(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if np.size(x) else np.asarray(x)


def _t(name):
    """A torch function by dotted name, resolved at call time (torch is a test-only import)."""

    def call(*args, **kwargs):
        import torch

        obj = torch
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj(*args, **kwargs)

    return call


def _feed_forward_samples(rng):
    def parts(*lead):
        return (_r(rng, *lead, 4), _r(rng, 8, 4), _r(rng, 8), _r(rng, 4, 8), _r(rng, 4),
                _r(rng, 4), _r(rng, 4))  # fmt: skip

    return [
        Sample(parts(2, 3)),
        Sample(parts(5), {"approximate": "tanh"}, name="tanh"),
        Sample(parts(4), noncontiguous=True, name="noncontiguous"),
    ]


def _feed_forward_torch(x, w1, b1, w2, b2, w, b, approximate="none"):
    hidden = _t("nn.functional.linear")(x, w1, b1)
    hidden = _t("nn.functional.gelu")(hidden, approximate=approximate)
    out = _t("nn.functional.linear")(hidden, w2, b2)
    return _t("nn.functional.layer_norm")(out + x, (4,), w, b)


def _tt(v):
    """A Python scalar as a torch tensor (torch.maximum does not take scalars)."""
    import torch

    return v if isinstance(v, torch.Tensor) else torch.tensor(v)


def _cmp_samples(rng):
    a = np.round(_r(rng, 3, 4))
    return [
        Sample((a, np.round(_r(rng, 3, 4))), name="same"),
        Sample((a, np.round(_r(rng, 4))), name="broadcast"),
        Sample((a, 0.0), name="scalar"),
    ]


def _bool_samples(rng):
    return [
        Sample((rng.random((3, 4)) > 0.5, rng.random((3, 4)) > 0.5)),
        Sample((rng.random((3, 4)) > 0.5, rng.random((4,)) > 0.5)),
    ]


def _bool1(rng):
    return [Sample((rng.random((3, 4)) > 0.5,))]


def _reduce_samples(rng):
    return [
        Sample((_r(rng, 3, 4),), {}, name="all"),
        Sample((_r(rng, 3, 4),), {"dim": 1}, name="dim1"),
        Sample((_r(rng, 2, 3, 4),), {"dim": (0, 2), "keepdim": True}, name="dims-keep"),
        Sample((_r(rng, 4, 3),), {"dim": 0}, noncontiguous=True, name="noncontiguous"),
        Sample((_r(rng, 2, 3),), {"dim": -1, "keepdim": True}, name="negdim"),
    ]


def _one_dim(rng):
    return [
        Sample((_r(rng, 3, 4),), {"dim": 1}),
        Sample((_r(rng, 2, 3, 4),), {"dim": 0}),
        Sample((_r(rng, 4, 3),), {"dim": 1, "keepdim": True}, noncontiguous=True),
    ]


def _dim_err(fn_name):
    return (ErrorCase((np.ones((2, 3)),), {"dim": 3}, IndexError, "out of range"),)


def _conv_samples(rng):
    return [
        Sample((_r(rng, 2, 3, 6, 6), _r(rng, 4, 3, 3, 3)), {}, name="basic"),
        Sample(
            (_r(rng, 1, 4, 7, 6), _r(rng, 4, 2, 3, 2)),
            {"stride": 2, "padding": 1, "groups": 2},
            name="stride-pad-groups",
        ),
        Sample(
            (_r(rng, 1, 2, 7, 7), _r(rng, 2, 2, 2, 2)),
            {"dilation": 2, "padding": (1, 2)},
            name="dilation",
        ),
    ]


def _getitem(x, kind):
    if kind == "basic":
        return x[1:, ::2]
    if kind == "int":
        return x[1, None, ..., -1]
    if kind == "advanced":
        return x[ember.tensor([0, 2, 0])] if isinstance(x, ember.Tensor) else x[[0, 2, 0]]
    if kind == "bool":
        return x[x > 0]
    return x[:, [1, 1, 3]] if not isinstance(x, ember.Tensor) else x[:, ember.tensor([1, 1, 3])]


def _getitem_torch(x, kind):
    import torch

    if kind == "advanced":
        return x[torch.tensor([0, 2, 0])]
    if kind == "mixed":
        return x[:, torch.tensor([1, 1, 3])]
    return _getitem(x, kind)


def _setitem(x, v, kind):
    y = x.clone() if hasattr(x, "clone") else x.copy()
    if kind == "slice":
        y[1:, :2] = v
    else:
        idx = ember.tensor([0, 2]) if isinstance(x, ember.Tensor) else _torch_or_np_index(x)
        y[idx] = v
    return y


def _view_scatter(x, v, kind):
    lib = ember if isinstance(x, ember.Tensor) else __import__("torch")
    if kind == "diagonal":
        return lib.diagonal_scatter(x, v, 1) * 2
    if kind == "diagonal-batched":
        return lib.diagonal_scatter(x, v, -1, 2, 1)
    return lib.slice_scatter(x, v, 1, 1, 5, 2)


def _view_scatter_ref(x, v, kind):
    out = x.copy()
    if kind == "diagonal":
        np.einsum("ii->i", out[:, 1:])[...] = v
        return out * 2
    if kind == "diagonal-batched":
        out[:, np.arange(3), np.arange(3) + 1] = v
        return out
    out[:, 1:5:2] = v
    return out


def _torch_or_np_index(x):
    if isinstance(x, np.ndarray):
        return np.array([0, 2])
    import torch

    return torch.tensor([0, 2])


def _sdpa_samples(rng):
    mask = rng.random((3, 5)) > 0.3
    mask[:, 0] = True
    return [
        Sample((_r(rng, 2, 3, 4), _r(rng, 2, 5, 4), _r(rng, 2, 5, 6)), {}, name="plain"),
        Sample((_r(rng, 2, 3, 4), _r(rng, 2, 5, 4), _r(rng, 2, 5, 6), mask), {}, name="bool-mask"),
        Sample(
            (_r(rng, 2, 3, 4), _r(rng, 2, 5, 4), _r(rng, 2, 5, 6), _r(rng, 3, 5)),
            {},
            name="float-mask",
        ),
        Sample(
            (_r(rng, 1, 4, 4), _r(rng, 1, 4, 4), _r(rng, 1, 4, 3)),
            {"is_causal": True},
            name="causal",
        ),
    ]


def _sdpa(q, k, v, mask=None, **kw):
    return N.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)


def _sdpa_torch(q, k, v, mask=None, **kw):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)


def _ce_samples(rng):
    return [
        Sample((_r(rng, 4, 5), rng.integers(0, 5, 4)), {}, name="indices"),
        Sample((_r(rng, 4, 5), np.array([1, -100, 3, 0])), {"ignore_index": -100}, name="ignore"),
        Sample((_r(rng, 4, 5), rng.integers(0, 5, 4)), {"label_smoothing": 0.1}, name="smoothing"),
        Sample((_r(rng, 4, 5), rng.integers(0, 5, 4)), {"reduction": "none"}, name="none"),
        Sample(
            (_r(rng, 2, 3, 4), rng.integers(0, 3, (2, 4))), {"reduction": "sum"}, name="spatial"
        ),
        Sample((_r(rng, 4, 5), _softmax(_r(rng, 4, 5))), {}, name="probabilities"),
    ]


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce_weight(x, t, w, **kw):
    return N.cross_entropy(x, t, weight=w, **kw)


def _ce_weight_torch(x, t, w, **kw):
    import torch.nn.functional as F

    return F.cross_entropy(x, t, weight=w, **kw)


def _gather_samples(rng):
    return [
        Sample((_r(rng, 3, 4), 1, rng.integers(0, 4, (3, 2))), name="dim1"),
        Sample((_r(rng, 3, 4), 0, rng.integers(0, 3, (2, 4))), name="dim0"),
    ]


def _scatter_samples(rng):
    idx = np.array([[0, 1], [2, 0], [1, 3]])
    return [Sample((_r(rng, 3, 4), 1, idx, _r(rng, 3, 2)), name="dim1")]


def _scatter_add_samples(rng):
    return [
        Sample((_r(rng, 3, 4), 1, np.array([[0, 0], [2, 2], [1, 3]]), _r(rng, 3, 2)), name="dup")
    ]


def _pad_samples(rng):
    return [
        Sample((_r(rng, 2, 3, 4), (1, 2)), {}, name="last"),
        Sample((_r(rng, 2, 3, 4), (1, 0, 0, 2)), {"value": 1.5}, name="two-dims"),
        Sample((_r(rng, 2, 3, 4), (-1, 1)), {}, name="negative"),
        Sample((_r(rng, 2, 3, 4), (2, 1)), {"mode": "reflect"}, name="reflect"),
        Sample((_r(rng, 2, 3, 4), (2, 1, 1, 0)), {"mode": "replicate"}, name="replicate"),
    ]


def _torch_pad(x, p, **kw):
    import torch.nn.functional as F

    return F.pad(x, p, **kw)


def _pool_index_samples(rng):
    ties = lambda *shape: rng.integers(-2, 3, shape).astype(np.float64)  # noqa: E731
    nan = _r(rng, 1, 2, 5, 6)
    nan[0, 0, 1, 1] = nan[0, 0, 1, 2] = nan[0, 1, 3, 4] = np.nan
    neg_inf = np.full((1, 2, 3, 4), -np.inf)
    neg_inf[0, 1, 1, 1] = 0.5
    return [
        Sample((ties(2, 3, 6, 6), 2), {"kernel_size": 2}, name="ties"),
        Sample(
            (ties(1, 2, 7, 7), 2),
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            name="ties-pad-ceil",
        ),
        Sample(
            (_r(rng, 1, 2, 8, 9), 2),
            {
                "kernel_size": (2, 3),
                "stride": (3, 2),
                "padding": (1, 1),
                "dilation": (2, 3),
                "ceil_mode": True,
            },
            name="dilation",
        ),
        Sample((nan, 2), {"kernel_size": 3, "stride": 1}, name="nan"),
        Sample((neg_inf, 2), {"kernel_size": 2, "padding": 1}, name="-inf-padding"),
        Sample(
            (ties(2, 3, 9), 1),
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            name="1d",
        ),
        Sample((ties(3, 8), 1), {"kernel_size": 2, "dilation": 3}, name="1d-unbatched"),
        Sample(
            (ties(1, 2, 5, 6, 7), 3),
            {"kernel_size": (2, 3, 2), "stride": (2, 1, 2), "padding": 1, "ceil_mode": True},
            name="3d",
        ),
        Sample(
            (_r(rng, 2, 4, 5, 5), 3), {"kernel_size": 2, "dilation": (1, 2, 2)}, name="3d-unbatched"
        ),
    ]


def _adaptive_index_samples(rng):
    ties = lambda *shape: rng.integers(-2, 3, shape).astype(np.float64)  # noqa: E731
    nan = _r(rng, 1, 2, 5, 7)
    nan[0, 0, 1, 1] = nan[0, 0, 2, 3] = nan[0, 1, 4, 6] = np.nan
    neg_inf = np.full((1, 2, 5, 4), -np.inf)
    neg_inf[0, 1, 2, 1] = 0.5
    return [
        Sample((ties(2, 3, 11), 1, 4), name="1d-ties"),
        Sample((ties(3, 9), 1, 5), name="1d-unbatched"),
        Sample((ties(2, 3, 7, 9), 2, (3, 4)), name="2d-ties"),
        Sample((nan, 2, (3, 3)), name="2d-nan"),
        Sample((neg_inf, 2, (3, 2)), name="2d--inf"),
        Sample((ties(1, 2, 5, 7, 6), 3, (2, 3, 4)), name="3d-ties"),
        Sample((ties(2, 5, 4, 6), 3, (3, None, 4)), name="3d-unbatched-none"),
    ]


def _unpool_indices(rng, lead, pooled, kernel, size):
    """Indices as max pooling (stride = kernel, no padding) of a `size` input would give."""
    grids = np.meshgrid(*[np.arange(o) for o in pooled], indexing="ij")
    flat = np.zeros(tuple(lead) + tuple(pooled), dtype=np.int64)
    for d, (grid, k) in enumerate(zip(grids, kernel)):
        pos = grid * k + rng.integers(0, k, tuple(lead) + tuple(pooled))
        flat = flat * size[d] + pos
    return flat


def _unpool_samples(rng):
    return [
        Sample(
            (_r(rng, 2, 3, 3, 3), _unpool_indices(rng, (2, 3), (3, 3), (2, 2), (6, 6)), 2),
            {"kernel_size": 2},
            name="2d",
        ),
        Sample(
            (_r(rng, 1, 2, 3, 2), _unpool_indices(rng, (1, 2), (3, 2), (2, 3), (7, 7)), 2),
            {"kernel_size": (2, 3), "output_size": (7, 7)},
            name="2d-output-size",
        ),
        Sample(
            (_r(rng, 2, 3, 4), _unpool_indices(rng, (2, 3), (4,), (2,), (9,)), 1),
            {"kernel_size": 2, "output_size": (1, 1, 9)},
            name="1d",
        ),
        Sample(
            (_r(rng, 2, 2, 2, 3), _unpool_indices(rng, (2,), (2, 2, 3), (2, 2, 2), (4, 4, 6)), 3),
            {"kernel_size": 2},
            name="3d-unbatched",
        ),
    ]


def _unary_np(name):
    return lambda x: getattr(np, name)(x)


# --- recurrences (Note [Fused recurrence] in ember/ops/rnn.py) --------------------------------
def _recurrence(mode, nonlinearity="tanh"):
    """ember: one direction of one layer; output, then the final state(s), along dim 0."""
    import ember.ops.rnn as R

    def call(x, h0, *rest, reverse=False, lengths=None):
        if mode == "LSTM":
            y, h, c = R.lstm_layer(x, h0, *rest, reverse=reverse, lengths=lengths)
            finals = [h, c]
        elif mode == "GRU":
            y, h = R.gru_layer(x, h0, *rest, reverse=reverse, lengths=lengths)
            finals = [h]
        else:
            y, h = R.rnn_layer(
                x, h0, *rest, nonlinearity=nonlinearity, reverse=reverse, lengths=lengths
            )
            finals = [h]
        return S.cat([y] + [f.unsqueeze(0) for f in finals], 0)

    return call


def _recurrence_torch(mode, nonlinearity="tanh"):
    """PyTorch: the same through torch.nn.LSTM/GRU/RNN with the given weights (a reversed
    direction as the forward one over the time-flipped sequence)."""

    def call(x, h0, *rest, reverse=False, lengths=None):
        import torch

        c0, weights = (rest[0], rest[1:]) if mode == "LSTM" else (None, rest)
        kwargs = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
        module = getattr(torch.nn, mode)(x.shape[-1], h0.shape[-1], **kwargs).to(x.dtype)
        names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        params = dict(zip(names, weights))
        if reverse:
            x = x.flip(0)
        inp = x
        if lengths is not None:
            inp = torch.nn.utils.rnn.pack_padded_sequence(x, list(lengths), enforce_sorted=False)
        hx = (h0[None], c0[None]) if mode == "LSTM" else h0[None]
        out, finals = torch.func.functional_call(module, params, (inp, hx))
        if lengths is not None:
            out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]
        if reverse:
            out = out.flip(0)
        finals = list(finals) if mode == "LSTM" else [finals]
        return torch.cat([out] + finals, 0)

    return call


def _recurrence_samples(gates, cell=False):
    def samples(rng):
        T, B, F, H = 4, 3, 2, 3

        def args(t=T):
            state = [_r(rng, B, H) for _ in range(2 if cell else 1)]
            w = [_r(rng, gates * H, F) * 0.5, _r(rng, gates * H, H) * 0.5]
            return (_r(rng, t, B, F), *state, *w, _r(rng, gates * H), _r(rng, gates * H))

        return [
            Sample(args(), name="forward"),
            Sample(args(), {"reverse": True}, name="reverse"),
            Sample(args(), {"lengths": (2, 4, 1)}, name="lengths"),
            Sample(args(1), name="one-step"),
        ]

    return samples


def _recurrence_row(name, mode, gates, ops, nonlinearity="tanh"):
    return OpRow(
        name,
        ops,
        _recurrence(mode, nonlinearity),
        _recurrence_samples(gates, cell=mode == "LSTM"),
        _recurrence_torch(mode, nonlinearity),
        atol=1e-5,
        errors=(
            ErrorCase(
                (
                    np.ones((4, 3, 2)),
                    *[np.ones((2, 3))] * (2 if mode == "LSTM" else 1),
                    np.ones((gates * 3, 2)),
                    np.ones((gates * 3, 3)),
                ),
                {},
                ShapeError,
                "initial state must be",
            ),
        ),
    )


def _unary_in(name, low, high, edge=None):
    """A row for a float unary op (torch's name) on samples drawn inside its domain."""

    def samples(rng):
        out = [
            Sample((rng.uniform(low, high, (3, 4)),), name="2d"),
            Sample((rng.uniform(low, high, (4, 3)),), noncontiguous=True, name="noncontiguous"),
            Sample((np.asarray(rng.uniform(low, high)).reshape(()),), name="0d"),
            Sample((np.zeros((0, 3)),), name="empty"),
        ]
        if edge is not None:
            out.append(Sample((np.array(edge, dtype=np.float64),), name="edge", grad=False))
        return out

    method = lambda x: getattr(x, name)()  # noqa: E731
    ref = getattr(
        np,
        {
            "asin": "arcsin",
            "acos": "arccos",
            "atan": "arctan",
            "asinh": "arcsinh",
            "acosh": "arccosh",
            "atanh": "arctanh",
        }.get(name, name),
    )
    return OpRow(name, (name,), method, samples, method, ref, gradgrad=True)


def _bitwise_samples(rng):
    return [
        Sample((rng.integers(-100, 100, (3, 4)), rng.integers(-100, 100, (3, 4))), name="int"),
        Sample((rng.integers(-100, 100, (2, 3, 4)), rng.integers(0, 100, (4,))), name="bcast"),
        Sample((rng.integers(-100, 100, (3, 4)), 6), name="scalar"),
        Sample((rng.random((3, 4)) > 0.5, rng.random((3, 4)) > 0.5), name="bool"),
        Sample((rng.random((3, 4)) > 0.5, True), name="bool-scalar"),
    ]


def _moments_samples(rng):
    return [
        Sample((_r(rng, 3, 4),), {}, name="all"),
        Sample((_r(rng, 3, 4), 1), {}, name="dim"),
        Sample((_r(rng, 2, 3, 4), (0, 2)), {"keepdim": True, "correction": 0}, name="dims-keep"),
        Sample((_r(rng, 3, 4), 0, False), {}, name="unbiased-positional"),
        Sample((_r(rng, 4, 3),), {"dim": 1, "correction": 2}, noncontiguous=True, name="nc"),
    ]


def _values_and_indices(pair):
    """cummax/cummin's (values, indices) as one tensor: the indices as float offsets."""
    values, indices = pair
    return values + indices.to(values.dtype) * 1000


def _cum_extreme_samples(rng):
    ties = np.array([[1.0, 3.0, 2.0, 3.0, 0.5, 3.0], [2.0, 2.0, 1.0, 1.0, 4.0, -1.0]])
    return [
        Sample((_r(rng, 3, 5), 1), name="dim1"),
        Sample((_r(rng, 4, 3), 0), noncontiguous=True, name="dim0"),
        Sample((ties, 1), name="ties", grad=False),  # a kink: torch's gradient only
        Sample((np.array([1.0, np.nan, 0.0, np.nan, 5.0]), 0), name="nan", grad=False),
        Sample((np.array(2.5), 0), name="0d"),
        Sample((np.zeros((0, 3)), 1), name="empty"),
        Sample((np.array([[3, 1, 4, 1, 5]]), 1), name="int", grad=False),
    ]


def _scatter_reduce_samples(rng):
    index = np.array([[0, 1, 0], [2, 2, 0], [1, 3, 3]])
    out = []
    for reduce in ("sum", "prod", "mean", "amax", "amin"):
        for include_self in (True, False):
            out.append(
                Sample(
                    (_r(rng, 3, 4), 1, index, _r(rng, 3, 3)),
                    {"reduce": reduce, "include_self": include_self},
                    name=f"{reduce}-{'self' if include_self else 'noself'}",
                )
            )
    out += [
        Sample(
            (np.array([1.0, 2.0, 0.0]), 0, np.array([0, 0, 1, 2]), np.array([0.0, 3.0, 0.0, 0.0])),
            {"reduce": "prod"},
            name="prod-zeros",
        ),
        Sample(
            (np.array([1.0, 2.0, 3.0]), 0, np.array([0, 0, 2]), np.array([2.0, 2.0, 3.0])),
            {"reduce": "amax"},
            name="ties",
            grad=False,
        ),
        Sample(
            (np.array([1, 2, 3]), 0, np.array([0, 0, 2]), np.array([4, 5, 1])),
            {"reduce": "mean"},
            name="int-mean",
        ),
    ]
    return out


ROWS: list[OpRow] = [
    # --- elementwise unary
    _unary("neg", lambda x: -x, lambda x: -x, np.negative),
    _unary("abs", lambda x: x.abs(), lambda x: x.abs(), np.abs, gradgrad=False),
    _unary("sign", lambda x: x.sign(), lambda x: x.sign(), np.sign, gradgrad=False),
    _unary("exp", lambda x: x.exp(), lambda x: x.exp(), np.exp, edge=[-100.0, 0.0, 80.0]),
    _unary("log", lambda x: x.log(), lambda x: x.log(), np.log, low=0.1, edge=[0.0, 1e-30, 1.0]),
    _unary("log1p", lambda x: x.log1p(), lambda x: x.log1p(), np.log1p, low=0.1),
    _unary("log2", lambda x: x.log2(), lambda x: x.log2(), np.log2, low=0.1, edge=[0.0, 1.0]),
    _unary("expm1", lambda x: x.expm1(), lambda x: x.expm1(), np.expm1),
    _unary("sqrt", lambda x: x.sqrt(), lambda x: x.sqrt(), np.sqrt, low=0.1),
    _unary("rsqrt", lambda x: x.rsqrt(), lambda x: x.rsqrt(), lambda x: 1 / np.sqrt(x), low=0.1),
    _unary(
        "reciprocal", lambda x: x.reciprocal(), lambda x: x.reciprocal(), np.reciprocal, low=0.5
    ),
    _unary("sin", lambda x: x.sin(), lambda x: x.sin(), np.sin),
    _unary("cos", lambda x: x.cos(), lambda x: x.cos(), np.cos),
    _unary("tanh", lambda x: x.tanh(), lambda x: x.tanh(), np.tanh, edge=[-50.0, 0.0, 50.0]),
    _unary(
        "sigmoid",
        lambda x: x.sigmoid(),
        lambda x: x.sigmoid(),
        lambda x: 1 / (1 + np.exp(-x)),
        edge=[-800.0, 0.0, 800.0],
    ),
    _unary(
        "relu", lambda x: x.relu(), lambda x: x.relu(), lambda x: np.maximum(x, 0), gradgrad=False
    ),
    _unary(
        "erf",
        lambda x: x.erf(),
        lambda x: x.erf(),
        _erf_ref,
        edge=[-7.0, -1.0, -0.5, 0.0, 1e-8, 0.999, 1.0, 3.0, 7.0],
    ),
    _unary("floor", lambda x: x.floor(), lambda x: x.floor(), np.floor, gradgrad=False),
    _unary("ceil", lambda x: x.ceil(), lambda x: x.ceil(), np.ceil, gradgrad=False),
    _unary("trunc", lambda x: x.trunc(), lambda x: x.trunc(), np.trunc, gradgrad=False),
    OpRow(
        "round",
        ("round",),
        lambda x, **k: x.round(**k),
        unary_samples(),
        lambda x, **k: x.round(**k),
        lambda x, **k: np.round(x, **k),
        gradgrad=False,
    ),
    OpRow(
        "isnan",
        ("isnan", "isinf", "isfinite"),
        lambda x: ember.stack([x.isnan(), x.isinf(), x.isfinite()]),
        lambda rng: [Sample((np.array([1.0, np.nan, np.inf, -np.inf]),))],
        lambda x: _t("stack")([x.isnan(), x.isinf(), x.isfinite()]),
        lambda x: np.stack([np.isnan(x), np.isinf(x), np.isfinite(x)]),
        grad=False,
    ),
    OpRow(
        "logical_not",
        ("logical_not",),
        lambda x: x.logical_not(),
        _bool1,
        lambda x: x.logical_not(),
        np.logical_not,
        grad=False,
    ),
    # --- binary
    _binary("add", lambda a, b: a + b, lambda a, b: a + b, np.add),
    _binary("sub", lambda a, b: a - b, lambda a, b: a - b, np.subtract),
    _binary("mul", lambda a, b: a * b, lambda a, b: a * b, np.multiply),
    _binary("div", lambda a, b: a / b, lambda a, b: a / b, np.divide, positive_b=True),
    OpRow(
        "pow",
        ("pow",),
        lambda a, b: a**b,
        lambda rng: [
            Sample((_r(rng, 3, 4, low=0.5), _r(rng, 3, 4))),
            Sample((_r(rng, 3, 4, low=0.5), 2.0)),
            Sample((_r(rng, 3, 4), 3)),
            # Note [Zero-safe gradients]: x ** 0 at x = 0 has gradient 0, as in torch
            Sample((np.array([0.0, 1.0, -2.0]), 0.0), name="zero-exponent", grad=False),
            Sample(
                (np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0])),
                name="zero-exponent-tensor",
                grad=False,
            ),
        ],
        lambda a, b: a**b,
        np.power,
        gradgrad=True,
    ),
    _binary(
        "maximum",
        lambda a, b: ember.maximum(a, b),
        lambda a, b: _t("maximum")(a, _tt(b)),
        np.maximum,
        gradgrad=False,
    ),
    _binary(
        "minimum",
        lambda a, b: ember.minimum(a, b),
        lambda a, b: _t("minimum")(a, _tt(b)),
        np.minimum,
        gradgrad=False,
    ),
    _binary("hypot", ember.hypot, lambda a, b: _t("hypot")(a, _tt(b)), np.hypot),
    OpRow(
        "remainder",
        ("remainder",),
        lambda a, b: a % b,
        binary_samples(positive_b=True),
        lambda a, b: a % b,
        np.mod,
        errors=(
            _BROADCAST_ERROR,
            # integer division by zero raises, as in torch
            ErrorCase((np.array([4, 5]), np.array([2, 0])), {}, ZeroDivisionError, "remainder"),
        ),
        int_args=(),
    ),
    OpRow(
        "floor_divide",
        ("floor_divide",),
        lambda a, b: a // b,
        lambda rng: [
            *binary_samples(positive_b=True)(rng),
            Sample((np.array([4.0, -1.0]), 0.0), name="float-by-zero", grad=False),
        ],
        lambda a, b: a // b,
        np.floor_divide,
        grad=False,
        errors=(
            _BROADCAST_ERROR,
            ErrorCase((np.array([4, 5]), 0), {}, ZeroDivisionError, "floor_divide"),
        ),
    ),
    OpRow(
        "compare",
        ("eq", "ne", "lt", "le", "gt", "ge"),
        lambda a, b: ember.stack([a == b, a != b, a < b, a <= b, a > b, a >= b]),
        _cmp_samples,
        lambda a, b: _t("stack")([a == b, a != b, a < b, a <= b, a > b, a >= b]),
        lambda a, b: np.stack(np.broadcast_arrays(a == b, a != b, a < b, a <= b, a > b, a >= b)),
        grad=False,
    ),
    OpRow(
        "logical",
        ("logical_and", "logical_or", "logical_xor"),
        lambda a, b: ember.stack(
            [ember.logical_and(a, b), ember.logical_or(a, b), ember.logical_xor(a, b)]
        ),
        _bool_samples,
        lambda a, b: _t("stack")([a & b, a | b, a ^ b]),
        lambda a, b: np.stack(np.broadcast_arrays(a & b, a | b, a ^ b)),
        grad=False,
    ),
    OpRow(
        "where",
        ("where",),
        lambda c, a, b: ember.where(c, a, b),
        lambda rng: [
            Sample((rng.random((3, 4)) > 0.5, _r(rng, 3, 4), _r(rng, 4))),
            Sample((rng.random((3, 1)) > 0.5, _r(rng, 1, 4), 0.0)),
        ],
        _t("where"),
        np.where,
        gradgrad=True,
    ),
    OpRow(
        "clamp",
        ("clamp",),
        lambda x, **k: x.clamp(**k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {"min": -0.5, "max": 0.5}),
            Sample((_r(rng, 3, 4),), {"min": 0.0}),
            Sample((_r(rng, 3, 4),), {"max": 0.1}),
        ],
        lambda x, **k: x.clamp(**k),
        lambda x, min=None, max=None: np.clip(x, min, max),
    ),
    OpRow(
        "cast",
        ("cast",),
        lambda x: x.to(ember.float16).to(ember.float64) * 1.0,
        unary_samples(),
        lambda x: x.half().double(),
        lambda x: x.astype(np.float16).astype(np.float64),
        atol=1e-3,
        gradgrad=False,
        finite_differences=False,
    ),
    # x.view(dtype): the bytes read as another dtype (Note [Bit views]); no gradient. Samples
    # run in float32 and float64, so strided layouts are in tests/core/test_tensor.py
    OpRow(
        "view_dtype",
        ("bitcast",),
        lambda x, target: x.view(getattr(ember, target)),
        lambda rng: [
            Sample((_r(rng, 3, 4), "int32"), name="same-size"),
            Sample((_r(rng, 3, 4), "int16"), name="smaller"),
            Sample((_r(rng, 3, 4), "float64"), name="larger"),
            Sample((_r(rng, 2, 3, 4), "uint8"), name="bytes"),
        ],
        lambda x, target: x.view(getattr(__import__("torch"), target)),
        lambda x, target: x.view(np.dtype(target)),
        grad=False,
        errors=(
            ErrorCase(
                (np.ones((2, 3)), "float64"),
                {},
                ShapeError,
                r"viewing float32 as float64 needs the last dim to be divisible "
                r"by 2, got shape \(2, 3\)",
            ),
            ErrorCase((np.ones(()), "float16"), {}, ShapeError, "needs a tensor of at least 1 dim"),
        ),
    ),
    # --- reductions
    OpRow(
        "sum",
        ("sum",),
        lambda x, **k: x.sum(**k),
        lambda rng: [
            *_reduce_samples(rng),
            Sample((np.full((4, 1024), 0.1),), {"dim": 1}, name="float16", dtype=np.float16),
        ],
        lambda x, **k: x.sum(**k),
        lambda x, dim=None, keepdim=False: np.sum(x, axis=dim, keepdims=keepdim),
        gradgrad=True,
        errors=_dim_err("sum"),
    ),
    OpRow(
        "mean",
        ("sum",),
        lambda x, **k: x.mean(**k),
        lambda rng: [
            *_reduce_samples(rng),
            # Note [Half-precision accumulation]: 4,096 x 20.0 sums to 81,920 > float16's max
            Sample((np.full(4096, 20.0),), {}, name="float16", grad=False, dtype=np.float16),
        ],
        lambda x, **k: x.mean(**k),
        lambda x, dim=None, keepdim=False: np.mean(x, axis=dim, keepdims=keepdim),
    ),
    OpRow(
        "var",
        ("sum",),
        lambda x, **k: x.var(**k),
        _reduce_samples,
        lambda x, **k: x.var(**k),
        lambda x, dim=None, keepdim=False: np.var(x, axis=dim, keepdims=keepdim, ddof=1),
        gradgrad=True,
    ),
    OpRow(
        "std",
        ("sum", "sqrt"),
        lambda x, **k: x.std(**k),
        lambda rng: [
            *_reduce_samples(rng),
            Sample((np.full((2, 3), 2.5),), {"dim": 1}, name="equal-values", grad=False),
            Sample((_r(rng, 64) * 300,), {}, name="float16", grad=False, dtype=np.float16),
        ],
        lambda x, **k: x.std(**k),
        lambda x, dim=None, keepdim=False: np.std(x, axis=dim, keepdims=keepdim, ddof=1),
    ),
    OpRow(
        "norm",
        ("sum", "sqrt", "abs", "amax", "pow", "where"),
        lambda x, **k: x.norm(**k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}, name="2"),
            Sample((_r(rng, 3, 4),), {"p": 1, "dim": 1}, name="1"),
            Sample((_r(rng, 3, 4),), {"p": 3, "dim": 0, "keepdim": True}, name="3"),
            Sample((_r(rng, 3, 4),), {"p": float("inf"), "dim": 1}, name="inf"),
            Sample((np.array([0.0, 1.5, -2.0, 0.0]),), {"p": 0}, name="0", grad=False),
            Sample((np.zeros((2, 3)),), {"dim": 1}, name="zeros", grad=False),
            Sample((np.zeros((2, 3)),), {"p": 3}, name="zeros-p3", grad=False),
            Sample((np.full(4096, 20.0),), {}, name="float16", grad=False, dtype=np.float16),
        ],
        lambda x, **k: x.norm(**k),
    ),
    OpRow(
        "normalize",
        ("sum", "sqrt", "maximum", "div"),
        lambda x, **k: ember.nn.functional.normalize(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}),
            Sample((_r(rng, 3, 4),), {"dim": 0, "p": 1.0}),
            Sample((np.array([[0.0, 0.0], [3.0, 4.0]]),), {}, name="zero-row", grad=False),
        ],
        lambda x, **k: _t("nn.functional.normalize")(x, **k),
    ),
    OpRow(
        "prod",
        ("prod", "cumprod"),
        lambda x, **k: x.prod(**k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}),
            Sample((_r(rng, 3, 4),), {"dim": 1}),
            Sample((np.array([[1.5, 0.0, 2.0], [0.0, 0.0, 3.0]]),), {"dim": 1}, name="zeros"),
            Sample((np.array(1.7),), {}, name="0d"),
            Sample((np.array(-0.7),), {"dim": 0}, name="0d-dim"),
        ],
        lambda x, **k: x.prod(**k),
        lambda x, dim=None, keepdim=False: np.prod(x, axis=dim, keepdims=keepdim),
    ),
    OpRow(
        "amax",
        ("amax",),
        lambda x, **k: x.amax(**k),
        _reduce_samples,
        lambda x, **k: _t("amax")(x, **k) if k else x.amax(),
        lambda x, dim=None, keepdim=False: np.max(x, axis=dim, keepdims=keepdim),
        gradgrad=False,
    ),
    OpRow(
        "amin",
        ("amin",),
        lambda x, **k: x.amin(**k),
        _reduce_samples,
        lambda x, **k: _t("amin")(x, **k) if k else x.amin(),
        lambda x, dim=None, keepdim=False: np.min(x, axis=dim, keepdims=keepdim),
        gradgrad=False,
    ),
    OpRow(
        "max_dim",
        ("argmax", "gather"),
        lambda x, **k: x.max(**k)[0],
        _one_dim,
        lambda x, **k: x.max(**k)[0],
        grad=True,
        gradgrad=False,
    ),
    OpRow(
        "argmax",
        ("argmax", "argmin"),
        lambda x, **k: ember.stack([x.argmax(**k), x.argmin(**k)]),
        _one_dim,
        lambda x, **k: _t("stack")([x.argmax(**k), x.argmin(**k)]),
        grad=False,
    ),
    OpRow(
        "all_any",
        ("all", "any"),
        lambda x, **k: ember.stack([x.all(**k), x.any(**k)]),
        lambda rng: [
            Sample((rng.random((3, 4)) > 0.3,), {"dim": 1}),
            Sample((rng.random((3, 4)) > 0.3,), {}),
        ],
        lambda x, **k: _t("stack")([x.all(**k), x.any(**k)]),
        grad=False,
    ),
    OpRow(
        "cumsum",
        ("cumsum",),
        lambda x, **k: x.cumsum(**k),
        _one_dim_nokeep := (
            lambda rng: [Sample((_r(rng, 3, 4),), {"dim": 1}), Sample((_r(rng, 2, 3),), {"dim": 0})]
        ),
        lambda x, **k: x.cumsum(**k),
        lambda x, dim: np.cumsum(x, axis=dim),
        gradgrad=True,
    ),
    OpRow(
        "cumprod",
        ("cumprod",),
        lambda x, **k: x.cumprod(**k),
        lambda rng: [Sample((_r(rng, 3, 4, low=0.5),), {"dim": 1})],
        lambda x, **k: x.cumprod(**k),
        lambda x, dim: np.cumprod(x, axis=dim),
    ),
    OpRow(
        "logsumexp",
        ("amax", "exp", "log"),
        lambda x, **k: x.logsumexp(**k),
        _one_dim_nokeep,
        lambda x, **k: x.logsumexp(**k),
        gradgrad=True,
    ),
    # --- movement
    OpRow(
        "reshape",
        ("reshape",),
        lambda x: x.reshape(4, -1),
        lambda rng: [Sample((_r(rng, 2, 6),)), Sample((_r(rng, 6, 2),), noncontiguous=True)],
        lambda x: x.reshape(4, -1),
        lambda x: x.reshape(4, -1),
        gradgrad=True,
        errors=(ErrorCase((np.ones((2, 5)),), {}, ValueError, "invalid for input"),),
    ),
    OpRow(
        "permute",
        ("permute",),
        lambda x: x.permute(2, 0, 1),
        lambda rng: [Sample((_r(rng, 2, 3, 4),))],
        lambda x: x.permute(2, 0, 1),
        lambda x: x.transpose(2, 0, 1),
        gradgrad=True,
    ),
    OpRow(
        "transpose",
        ("permute",),
        lambda x: x.transpose(0, 1).T.mT,
        lambda rng: [Sample((_r(rng, 2, 3, 4),))],
        lambda x: x.transpose(0, 1).permute(2, 1, 0).mT,
    ),
    OpRow(
        "expand",
        ("expand",),
        lambda x: x.expand(2, 3, 4),
        lambda rng: [Sample((_r(rng, 3, 1),)), Sample((_r(rng, 4),))],
        lambda x: x.expand(2, 3, 4),
        lambda x: np.broadcast_to(x, (2, 3, 4)),
        gradgrad=True,
        errors=(ErrorCase((np.ones((3, 2)),), {}, ValueError, "cannot expand"),),
    ),
    OpRow(
        "squeeze",
        ("reshape",),
        lambda x: x.unsqueeze(0).squeeze(2).flatten(),
        lambda rng: [Sample((_r(rng, 3, 1, 2),))],
        lambda x: x.unsqueeze(0).squeeze(2).flatten(),
    ),
    OpRow(
        "cat",
        ("cat",),
        lambda a, b: ember.cat([a, b, a], 1),
        lambda rng: [
            Sample((_r(rng, 2, 3), _r(rng, 2, 1))),
            Sample((_r(rng, 2, 0), _r(rng, 2, 2)), name="empty"),
        ],
        lambda a, b: _t("cat")([a, b, a], 1),
        lambda a, b: np.concatenate([a, b, a], 1),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((2, 3)), np.ones((3, 3))), {}, ValueError, "same shape except in dim 1"
            ),
        ),
    ),
    OpRow(
        "stack",
        ("cat",),
        lambda a, b: ember.stack([a, b], -1),
        lambda rng: [Sample((_r(rng, 2, 3), _r(rng, 2, 3)))],
        lambda a, b: _t("stack")([a, b], -1),
        lambda a, b: np.stack([a, b], -1),
    ),
    OpRow(
        "split",
        ("getitem",),
        lambda x: x.split([1, 3], 1)[1] * 2 + x.chunk(2, 1)[0].sum(),
        lambda rng: [Sample((_r(rng, 4, 4),))],
        lambda x: x.split([1, 3], 1)[1] * 2 + x.chunk(2, 1)[0].sum(),
    ),
    OpRow(
        "flip",
        ("flip",),
        lambda x: x.flip((0, 2)),
        lambda rng: [Sample((_r(rng, 2, 3, 4),))],
        lambda x: x.flip((0, 2)),
        lambda x: np.flip(x, (0, 2)),
    ),
    OpRow(
        "roll",
        ("roll",),
        lambda x: x.roll((1, -2), (0, 1)),
        lambda rng: [Sample((_r(rng, 3, 4),))],
        lambda x: x.roll((1, -2), (0, 1)),
        lambda x: np.roll(x, (1, -2), (0, 1)),
    ),
    OpRow(
        "pad", ("pad",), lambda x, p, **k: S.pad(x, p, **k), _pad_samples, _torch_pad, gradgrad=True
    ),
    OpRow(
        "tril_triu",
        ("tril", "triu"),
        lambda x: x.tril(-1) * 2 + x.triu(1),
        lambda rng: [Sample((_r(rng, 4, 4),)), Sample((_r(rng, 2, 3, 5),))],
        lambda x: x.tril(-1) * 2 + x.triu(1),
        lambda x: np.tril(x, -1) * 2 + np.triu(x, 1),
    ),
    OpRow(
        "diagonal",
        ("diagonal", "view_scatter"),
        lambda x, o, a, b: x.diagonal(o, a, b) * 2,
        lambda rng: [
            Sample((_r(rng, 3, 4), 0, 0, 1), name="main"),
            Sample((_r(rng, 3, 4), 1, 0, 1), noncontiguous=True, name="above"),
            Sample((_r(rng, 2, 3, 4), -1, 2, 0), name="batched-below"),
            Sample((_r(rng, 3, 4), 5, 0, 1), name="empty"),
        ],
        lambda x, o, a, b: x.diagonal(o, a, b) * 2,
        lambda x, o, a, b: np.diagonal(x, o, a, b) * 2,
        gradgrad=True,
        errors=(ErrorCase((np.ones(3), 0, 0, 1), {}, ValueError, "at least 2 dims"),),
    ),
    OpRow(
        "view_scatter",
        ("view_scatter", "diagonal", "getitem"),
        _view_scatter,
        lambda rng: [
            Sample((_r(rng, 3, 4), _r(rng, 3), "diagonal"), name="diagonal"),
            Sample((_r(rng, 2, 3, 4), _r(rng, 2, 3), "diagonal-batched"), name="diagonal-batched"),
            Sample((_r(rng, 3, 5), _r(rng, 3, 2), "slice"), noncontiguous=True, name="slice"),
        ],
        _view_scatter,
        _view_scatter_ref,
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((3, 4)), np.ones(4), "diagonal"), {}, ValueError, "does not fit the view"
            ),
        ),
    ),
    OpRow(
        "clone",
        ("copy",),
        lambda x: x.clone() * 1.0 + x.contiguous(),
        lambda rng: [Sample((_r(rng, 4, 3),), noncontiguous=True)],
        lambda x: x.clone() * 1.0 + x.contiguous(),
    ),
    OpRow(  # strided: a copy; contiguous: the tensor itself, eager (compiled: the op)
        "contiguous",
        ("contiguous",),
        lambda x: x.contiguous(),
        unary_samples(),
        lambda x: x.contiguous(),
    ),
    # --- indexing
    OpRow(
        "getitem",
        ("getitem", "index_add"),
        lambda x, kind: _getitem(x, kind),
        lambda rng: [
            Sample((_r(rng, 3, 4), k), name=k)
            for k in ("basic", "int", "advanced", "bool", "mixed")
        ],
        lambda x, kind: _getitem_torch(x, kind),
        lambda x, kind: _getitem(x, kind),
        gradgrad=True,
        errors=(ErrorCase((np.ones((1, 3)), "int"), {}, IndexError, "out of bounds"),),
    ),
    OpRow(
        "setitem",
        ("index_put",),
        lambda x, v, kind: _setitem(x, v, kind),
        lambda rng: [
            Sample((_r(rng, 3, 4), _r(rng, 2), "slice")),
            Sample((_r(rng, 3, 4), _r(rng, 4), "tensor")),
        ],
        lambda x, v, kind: _setitem(x, v, kind),
        lambda x, v, kind: _setitem(x, v, kind),
    ),
    OpRow(
        "gather",
        ("gather", "scatter_add"),
        lambda x, d, i: x.gather(d, i),
        _gather_samples,
        lambda x, d, i: x.gather(d, i),
        lambda x, d, i: np.take_along_axis(x, i, d),
        int_args=(2,),
        gradgrad=True,
        errors=(
            ErrorCase((np.ones(3), 0, np.array([-1])), {}, IndexError, "gather: index -1"),
            ErrorCase((np.ones(3), 0, np.array([3])), {}, IndexError, "gather: index 3"),
        ),
    ),
    OpRow(
        "scatter",
        ("scatter",),
        lambda x, d, i, s: x.scatter(d, i, s),
        _scatter_samples,
        lambda x, d, i, s: x.scatter(d, i, s),
        int_args=(2,),
    ),
    OpRow(
        "scatter_add",
        ("scatter_add",),
        lambda x, d, i, s: x.scatter_add(d, i, s),
        _scatter_add_samples,
        lambda x, d, i, s: x.scatter_add(d, i, s),
        int_args=(2,),
    ),
    OpRow(
        "index_select",
        ("getitem", "check_index"),
        lambda x, i: x.index_select(1, i),
        lambda rng: [Sample((_r(rng, 3, 4), np.array([3, 0, 3])))],
        lambda x, i: x.index_select(1, i),
        lambda x, i: x[:, i],
        int_args=(1,),
        errors=(
            ErrorCase((np.ones((2, 3)), np.array([-1])), {}, IndexError, "index_select: index -1"),
            ErrorCase((np.ones((2, 3)), np.array([3])), {}, IndexError, "index_select: index 3"),
        ),
    ),
    OpRow(
        "narrow",
        ("getitem",),
        lambda x, start, length: x.narrow(0, start, length),
        lambda rng: [
            Sample((_r(rng, 5, 2), 1, 3), name="middle"),
            Sample((_r(rng, 5, 2), -2, 2), name="negative-start"),
            Sample((_r(rng, 5, 2), 5, 0), name="empty-at-end"),
        ],
        lambda x, start, length: x.narrow(0, start, length),
        errors=(
            ErrorCase((np.ones(4), 3, 2), {}, IndexError, r"start \(3\) \+ length \(2\)"),
            ErrorCase((np.ones(4), 5, 0), {}, IndexError, "start 5 is out of range"),
            ErrorCase((np.ones(4), 0, -1), {}, IndexError, "length must be non-negative"),
        ),
    ),
    OpRow(
        "masked_fill",
        ("where",),
        lambda x, m: x.masked_fill(m, -1.5),
        lambda rng: [Sample((_r(rng, 3, 4), rng.random((3, 4)) > 0.5))],
        lambda x, m: x.masked_fill(m, -1.5),
        lambda x, m: np.where(m, -1.5, x),
    ),
    OpRow(
        "one_hot",
        ("eq", "check_index"),
        lambda i: S.one_hot(i, 5),
        lambda rng: [Sample((np.array([0, 3, 4, 1]),))],
        lambda i: _t("nn.functional.one_hot")(i, 5),
        lambda i: np.eye(5, dtype=np.int64)[i],
        grad=False,
        int_args=(0,),
        errors=(
            ErrorCase((np.array([0, 5]),), {}, IndexError, "one_hot: index 5 is out of range"),
            ErrorCase((np.array([-1]),), {}, IndexError, "one_hot: index -1 is out of range"),
        ),
    ),
    OpRow(
        "embedding",
        ("getitem", "index_add", "check_index"),
        lambda i, w: S.embedding(i, w),
        lambda rng: [Sample((np.array([[0, 2], [2, 3]]), _r(rng, 4, 3)))],
        lambda i, w: _t("nn.functional.embedding")(i, w),
        lambda i, w: w[i],
        int_args=(0,),
        errors=(
            # Note [Index ranges]: -1 is refused (numpy would give the last row)
            ErrorCase((np.array([-1]), np.ones((3, 2))), {}, IndexError, "embedding: index -1"),
            ErrorCase((np.array([0, 3]), np.ones((3, 2))), {}, IndexError, "embedding: index 3"),
        ),
    ),
    # the scaled gradient is not the derivative, so no finite differences; torch is the check
    OpRow(
        "embedding_scale_grad_by_freq",
        ("getitem", "index_add", "where", "isfinite"),
        lambda i, w, **kw: S.embedding(i, w, scale_grad_by_freq=True, **kw),
        lambda rng: [
            Sample((np.array([[0, 2, 2], [2, 3, 0]]), _r(rng, 4, 3)), name="basic"),
            Sample((np.array([1, 1, 1, 3]), _r(rng, 4, 3)), {"padding_idx": 3}, name="padding"),
        ],
        lambda i, w, **kw: _t("nn.functional.embedding")(i, w, scale_grad_by_freq=True, **kw),
        lambda i, w, **kw: w[i],
        int_args=(0,),
        finite_differences=False,
        errors=(
            ErrorCase(
                (np.array([0, 1]), np.ones((3, 2))),
                {"sparse": True},
                NotImplementedError,
                "sparse=True is ember.nn.functional.embedding.s",
            ),
        ),
    ),
    OpRow(
        "sort",
        ("argsort", "gather"),
        lambda x: x.sort(-1, descending=True)[0] + x.topk(2)[0].sum(),
        lambda rng: [Sample((_r(rng, 3, 4),))],
        lambda x: x.sort(-1, descending=True)[0] + x.topk(2)[0].sum(),
    ),
    OpRow(
        "topk",
        ("argsort", "gather", "getitem"),
        lambda x, k, **kw: ember.stack(list(x.topk(k, **kw)[0:1])) * 1.0,
        lambda rng: [
            Sample((_r(rng, 3, 4), 2), name="rows"),
            Sample((np.array(3.0), 1), name="0d"),
            Sample((np.array([1.0, np.nan, 3.0, np.nan]), 3), name="nan-largest", grad=False),
            Sample(
                (np.array([1.0, np.nan, 3.0]), 2),
                {"largest": False},
                name="nan-smallest",
                grad=False,
            ),
        ],
        lambda x, k, **kw: _t("stack")(list(x.topk(k, **kw)[0:1])) * 1.0,
    ),
    OpRow(
        "nonzero",
        ("nonzero",),
        lambda x: x.nonzero(),
        lambda rng: [Sample((np.array([[0.0, 1.0], [2.0, 0.0]]),))],
        lambda x: x.nonzero(),
        lambda x: np.argwhere(x),
        grad=False,
    ),
    # --- linear algebra
    OpRow(
        "matmul",
        ("matmul",),
        lambda a, b: a @ b,
        lambda rng: [
            Sample((_r(rng, 3, 4), _r(rng, 4, 2)), name="2d"),
            Sample((_r(rng, 2, 3, 4), _r(rng, 4, 5)), name="batched-broadcast"),
            Sample((_r(rng, 2, 1, 3, 4), _r(rng, 3, 4, 2)), name="batch-broadcast"),
            Sample((_r(rng, 4), _r(rng, 4, 3)), name="vec-mat"),
            Sample((_r(rng, 2, 3, 4), _r(rng, 4)), name="mat-vec"),
            Sample((_r(rng, 4), _r(rng, 4)), name="dot"),
            Sample((_r(rng, 3, 4), _r(rng, 4, 2)), noncontiguous=True, name="noncontiguous"),
        ],
        lambda a, b: a @ b,
        np.matmul,
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((2, 11, 512)), np.ones((768, 768))),
                {},
                ValueError,
                "inner dimensions 512 and 768 differ",
            ),
        ),
    ),
    OpRow(
        "einsum",
        ("einsum",),
        lambda a, b, eq: ember.einsum(eq, a, b),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 2, 4, 5), "bij,bjk->bik")),
            Sample((_r(rng, 3, 4), _r(rng, 4), "ij,j->i")),
            Sample((_r(rng, 3, 4), _r(rng, 5), "ij,k->ik")),
            Sample((_r(rng, 2, 3, 4), _r(rng, 4, 3), "...ij,ji->...")),
        ],
        lambda a, b, eq: _t("einsum")(eq, a, b),
        lambda a, b, eq: np.einsum(eq, a, b),
        gradgrad=True,
    ),
    # repeated subscripts (Note [Repeated subscripts] in ember/ops/linalg.py): the gradient
    # lands on the diagonal; the equation comes last
    OpRow(
        "einsum_repeated_subscripts",
        ("einsum", "where", "reshape", "expand"),
        lambda *a: ember.einsum(a[-1], *a[:-1]),
        lambda rng: [
            Sample((_r(rng, 3, 3), "ii->i"), name="diagonal"),
            Sample((_r(rng, 4, 4), "ii->"), name="trace"),
            Sample((_r(rng, 4, 4), "ii"), name="implicit-trace"),
            Sample((_r(rng, 3, 3, 2), "iij->j"), name="iij"),
            Sample((_r(rng, 3, 2, 3), "iji->ij"), name="iji"),
            Sample((_r(rng, 2, 3, 3), "bii->b"), name="batched-trace"),
            Sample((_r(rng, 2, 2, 2), "iii->i"), name="triple"),
            Sample((_r(rng, 3, 3), "ii->i"), noncontiguous=True, name="noncontiguous"),
            Sample((_r(rng, 3, 4, 4), _r(rng, 3, 4), "bii,bi->b"), name="with-operand"),
            Sample((_r(rng, 3, 3, 2), _r(rng, 2, 5), "iij,jk->ik"), name="iij-matmul"),
            Sample((_r(rng, 3, 3), _r(rng, 3, 3), "ii,jj->ij"), name="two-diagonals"),
            Sample((_r(rng, 2, 3, 3), "...ii->...i"), name="ellipsis"),
        ],
        lambda *a: _t("einsum")(a[-1], *a[:-1]),
        lambda *a: np.einsum(a[-1], *a[:-1]),
        gradgrad=True,
    ),
    OpRow(
        "outer",
        ("mul",),
        lambda a, b: ember.outer(a, b),
        lambda rng: [Sample((_r(rng, 3), _r(rng, 4)))],
        _t("outer"),
        np.outer,
    ),
    OpRow(
        "bmm",
        ("matmul",),
        lambda a, b: ember.bmm(a, b),
        lambda rng: [Sample((_r(rng, 2, 3, 4), _r(rng, 2, 4, 2)))],
        _t("bmm"),
        np.matmul,
        errors=(
            ErrorCase(
                (np.ones((2, 3, 4)), np.ones((3, 4, 2))), {}, ValueError, "batch sizes differ"
            ),
        ),
    ),
    # --- convolution and pooling
    OpRow(
        "conv2d",
        ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"),
        lambda x, w, **k: C.conv2d(x, w, **k),
        _conv_samples,
        lambda x, w, **k: _t("nn.functional.conv2d")(x, w, **k),
        gradgrad=True,
        atol=1e-4,
        errors=(
            ErrorCase(
                (np.ones((1, 3, 5, 5)), np.ones((2, 2, 3, 3))),
                {},
                ValueError,
                "input has 3 channels",
            ),
        ),
    ),
    OpRow(
        "conv1d",
        ("conv2d",),
        lambda x, w, **k: C.conv1d(x, w, **k),
        lambda rng: [Sample((_r(rng, 2, 3, 9), _r(rng, 4, 3, 3)), {"stride": 2, "padding": 1})],
        lambda x, w, **k: _t("nn.functional.conv1d")(x, w, **k),
        atol=1e-4,
    ),
    OpRow(
        "max_pool2d",
        ("max_pool2d", "max_pool2d_grad"),
        lambda x, **k: C.max_pool2d(x, **k),
        lambda rng: [
            Sample((_r(rng, 2, 3, 6, 6),), {"kernel_size": 2}),
            Sample((_r(rng, 1, 2, 7, 7),), {"kernel_size": 3, "stride": 2, "padding": 1}),
            Sample((_r(rng, 1, 2, 7, 7),), {"kernel_size": 2, "ceil_mode": True}),
            Sample(
                (_r(rng, 1, 2, 8, 7),),
                {
                    "kernel_size": (2, 3),
                    "stride": (1, 2),
                    "padding": 1,
                    "dilation": 2,
                    "ceil_mode": True,
                },
                name="dilation-ceil",
            ),
            Sample((_r(rng, 2, 7, 6),), {"kernel_size": 3, "stride": 1}, name="unbatched"),
        ],
        lambda x, **k: _t("nn.functional.max_pool2d")(x, **k),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 1, 5, 5)),),
                {"kernel_size": 2, "padding": 2},
                ValueError,
                "max_pool2d: padding .* at most half the kernel",
            ),
            ErrorCase(
                (np.ones((5, 5)),),
                {"kernel_size": 2},
                ValueError,
                "max_pool2d: expected a 3-D or 4-D input",
            ),
        ),
    ),
    OpRow(
        "max_pool_indices",
        ("max_pool_indices",),
        lambda x, nd, **k: getattr(C, f"max_pool{nd}d")(x, return_indices=True, **k)[1],
        _pool_index_samples,
        lambda x, nd, **k: _t(f"nn.functional.max_pool{nd}d")(x, return_indices=True, **k)[1],
        grad=False,
    ),
    OpRow(
        "max_pool1d_3d",
        ("max_pool_indices", "gather", "max_pool2d", "max_pool2d_grad"),
        lambda x, nd, **k: getattr(C, f"max_pool{nd}d")(x, **k),
        lambda rng: [
            Sample((_r(rng, 2, 3, 9), 1), {"kernel_size": 3, "stride": 2, "padding": 1}, name="1d"),
            Sample(
                (_r(rng, 2, 9), 1),
                {"kernel_size": 2, "dilation": 2, "ceil_mode": True},
                name="1d-unbatched",
            ),
            Sample((_r(rng, 1, 2, 4, 5, 6), 3), {"kernel_size": 2}, name="3d"),
            Sample(
                (_r(rng, 1, 2, 5, 5, 6), 3),
                {"kernel_size": (3, 2, 3), "stride": 2, "padding": (1, 0, 1), "ceil_mode": True},
                name="3d-pad-ceil",
            ),
        ],
        lambda x, nd, **k: _t(f"nn.functional.max_pool{nd}d")(x, **k),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((4, 4, 4)), 3),
                {"kernel_size": 2},
                ValueError,
                "max_pool3d: expected a 4-D or 5-D input",
            ),
        ),
    ),
    OpRow(
        "max_unpool",
        ("max_unpool", "gather"),
        lambda x, i, nd, **k: getattr(C, f"max_unpool{nd}d")(x, i, **k),
        _unpool_samples,
        lambda x, i, nd, **k: _t(f"nn.functional.max_unpool{nd}d")(x, i, **k),
        int_args=(1,),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 3), dtype=np.int64), 2),
                {"kernel_size": 2},
                ValueError,
                r"max_unpool2d: indices of shape \(1, 1, 2, 3\) must have the "
                r"input's shape \(1, 1, 2, 2\)",
            ),
            ErrorCase(
                (np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), dtype=np.int64), 2),
                {"kernel_size": 2, "output_size": (6, 4)},
                ValueError,
                "max_unpool2d: invalid output_size .*dim 0 must be between 2 and 6",
            ),
            ErrorCase(
                (np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), dtype=np.int64), 2),
                {"kernel_size": 2, "output_size": (1, 4, 4)},
                ValueError,
                "max_unpool2d: output_size should have 2 or 4 elements",
            ),
            ErrorCase(
                (np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16, dtype=np.int64), 2),
                {"kernel_size": 2},
                IndexError,
                r"max_unpool2d: index 16 is out of range .*\[0, 16\)",
            ),
        ),
    ),
    OpRow(
        "avg_pool2d",
        ("conv2d", "pad"),
        lambda x, **k: C.avg_pool2d(x, **k),
        lambda rng: [
            Sample((_r(rng, 2, 3, 6, 6),), {"kernel_size": 2}),
            Sample((_r(rng, 1, 2, 7, 7),), {"kernel_size": 3, "stride": 2, "padding": 1}),
            Sample(
                (_r(rng, 1, 2, 7, 7),), {"kernel_size": 3, "padding": 1, "count_include_pad": False}
            ),
            Sample(
                (_r(rng, 1, 2, 8, 7),),
                {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                name="ceil",
            ),
            Sample(
                (_r(rng, 1, 2, 8, 7),),
                {
                    "kernel_size": (3, 2),
                    "stride": (2, 3),
                    "padding": 1,
                    "ceil_mode": True,
                    "count_include_pad": False,
                },
                name="ceil-exclude-pad",
            ),
            Sample(
                (_r(rng, 1, 2, 6, 7),),
                {"kernel_size": 2, "stride": 3, "ceil_mode": True, "divisor_override": 3},
                name="ceil-divisor",
            ),
            Sample((_r(rng, 2, 5, 5),), {"kernel_size": 2, "ceil_mode": True}, name="unbatched"),
        ],
        lambda x, **k: _t("nn.functional.avg_pool2d")(x, **k),
        atol=1e-4,
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 1, 4, 4)),),
                {"kernel_size": 2, "divisor_override": 0},
                ValueError,
                "avg_pool2d: divisor_override must be non-zero",
            ),
        ),
    ),
    OpRow(
        "avg_pool1d",
        ("conv2d", "pad"),
        lambda x, **k: C.avg_pool1d(x, **k),
        lambda rng: [
            Sample(
                (_r(rng, 2, 3, 9),),
                {
                    "kernel_size": 3,
                    "stride": 2,
                    "padding": 1,
                    "ceil_mode": True,
                    "count_include_pad": False,
                },
            ),
            Sample(
                (_r(rng, 3, 8),),
                {"kernel_size": 3, "stride": 2, "ceil_mode": True},
                name="unbatched",
            ),
        ],
        lambda x, **k: _t("nn.functional.avg_pool1d")(x, **k),
        atol=1e-4,
    ),
    OpRow(
        "avg_pool3d",
        ("conv2d", "pad"),
        lambda x, **k: C.avg_pool3d(x, **k),
        lambda rng: [
            Sample((_r(rng, 2, 2, 4, 4, 6),), {"kernel_size": 2}),
            Sample(
                (_r(rng, 1, 2, 5, 6, 5),),
                {"kernel_size": (3, 2, 3), "stride": (2, 1, 2), "padding": 1, "ceil_mode": True},
                name="ceil",
            ),
            Sample(
                (_r(rng, 1, 2, 5, 6, 5),),
                {
                    "kernel_size": 3,
                    "stride": 2,
                    "padding": 1,
                    "ceil_mode": True,
                    "count_include_pad": False,
                },
                name="ceil-exclude-pad",
            ),
            Sample(
                (_r(rng, 2, 4, 5, 4),),
                {"kernel_size": 2, "stride": 3, "ceil_mode": True, "divisor_override": 3},
                name="unbatched-divisor",
            ),
        ],
        lambda x, **k: _t("nn.functional.avg_pool3d")(x, **k),
        atol=1e-4,
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 1, 4, 4, 4)),),
                {"kernel_size": 2, "divisor_override": 0},
                ValueError,
                "avg_pool3d: divisor_override must be non-zero",
            ),
            ErrorCase(
                (np.ones((4, 4, 4)),),
                {"kernel_size": 2},
                ValueError,
                "avg_pool3d: expected a 4-D or 5-D input",
            ),
        ),
    ),
    OpRow(
        "adaptive_avg_pool",
        ("matmul",),
        lambda x, nd, s: getattr(C, f"adaptive_avg_pool{nd}d")(x, s),
        lambda rng: [
            Sample((_r(rng, 2, 3, 10), 1, 4), name="1d"),
            Sample((_r(rng, 3, 7), 1, 7), name="1d-unbatched-identity"),
            Sample((_r(rng, 1, 2, 6, 6), 2, 3), name="2d-divisible"),
            Sample((_r(rng, 1, 2, 7, 5), 2, (3, 2)), name="2d-overlap"),
            Sample((_r(rng, 2, 7, 5), 2, (None, 3)), name="2d-unbatched-none"),
            Sample((_r(rng, 1, 2, 5, 7, 6), 3, (2, 3, 4)), name="3d"),
            Sample((_r(rng, 2, 3, 4, 5), 3, 1), name="3d-unbatched-global"),
        ],
        lambda x, nd, s: _t(f"nn.functional.adaptive_avg_pool{nd}d")(x, s),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 2, 4, 4)), 2, (2, 2, 2)),
                {},
                ValueError,
                "adaptive_avg_pool2d: output_size must be an int or 2 ints",
            ),
            ErrorCase(
                (np.ones((4,)), 1, 2),
                {},
                ValueError,
                "adaptive_avg_pool1d: expected a 2-D or 3-D input",
            ),
        ),
    ),
    OpRow(
        "adaptive_max_pool",
        ("max_pool_indices", "getitem", "gather"),
        lambda x, nd, s: getattr(C, f"adaptive_max_pool{nd}d")(x, s),
        lambda rng: [
            Sample((_r(rng, 2, 3, 10), 1, 4), name="1d"),
            Sample((_r(rng, 1, 2, 6, 6), 2, 3), name="2d-divisible"),
            Sample((_r(rng, 1, 2, 7, 5), 2, (3, 2)), name="2d-overlap"),
            Sample((_r(rng, 2, 7, 5), 2, (None, 3)), name="2d-unbatched-none"),
            Sample((_r(rng, 1, 2, 5, 7, 6), 3, (2, 3, 4)), name="3d"),
            Sample((_r(rng, 2, 3, 4, 5), 3, 1), name="3d-unbatched-global"),
        ],
        lambda x, nd, s: _t(f"nn.functional.adaptive_max_pool{nd}d")(x, s),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 2, 4, 4, 4)), 3, (2, 2)),
                {},
                ValueError,
                "adaptive_max_pool3d: output_size must be an int or 3 ints",
            ),
        ),
    ),
    OpRow(
        "adaptive_max_pool_indices",
        ("max_pool_indices", "getitem"),
        lambda x, nd, s: getattr(C, f"adaptive_max_pool{nd}d")(x, s, return_indices=True)[1],
        _adaptive_index_samples,
        lambda x, nd, s: _t(f"nn.functional.adaptive_max_pool{nd}d")(x, s, return_indices=True)[1],
        grad=False,
    ),
    # --- composites
    OpRow(
        "binary_cross_entropy",
        ("binary_cross_entropy",),
        lambda x, t, **k: N.binary_cross_entropy(x, t, **k),
        lambda rng: [
            Sample((rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))), name="mean"),
            Sample(
                (rng.uniform(0.05, 0.95, (5,)), rng.uniform(0, 1, (5,))),
                {"reduction": "none"},
                name="none",
            ),
            # saturated probabilities: log clamped at -100, gradient finite (torch's rule)
            Sample(
                (np.array([0.0, 1.0, 0.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 0.0, 1.0])),
                {"reduction": "sum"},
                name="saturated",
                grad=False,
            ),
        ],
        lambda x, t, **k: _t("nn.functional.binary_cross_entropy")(x, t, **k),
        errors=(
            ErrorCase(
                (np.array([1.5, 0.5]), np.array([1.0, 0.0])),
                {},
                ValueError,
                "binary_cross_entropy: all elements of input should be between 0 and 1",
            ),
            ErrorCase(
                (np.array([0.5, 0.5]), np.array([1.0, 0.0, 1.0])),
                {},
                ShapeError,
                "target size",
            ),
        ),
    ),
    OpRow(
        "softplus",
        ("log1p", "exp", "maximum", "abs", "where"),
        lambda x, **k: N.softplus(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}),
            Sample((_r(rng, 3, 4) * 10,), {"beta": 2.0, "threshold": 5.0}),
            Sample(
                (np.array([12.0, -30.0, 0.0, 25.0]),),
                {},
                name="float16",
                grad=False,
                dtype=np.float16,
            ),
        ],
        lambda x, **k: _t("nn.functional.softplus")(x, **k),
        gradgrad=True,
    ),
    OpRow(
        "softmax",
        ("fused_softmax", "fused_softmax_grad", "exp", "sum", "amax"),
        lambda x, dim: x.softmax(dim),
        lambda rng: [
            Sample((_r(rng, 3, 4), -1)),
            Sample((_r(rng, 3, 4), 0)),
            Sample((np.ones((0, 3)), 0), name="empty"),
            Sample((_r(rng, 2, 5) * 30, -1), name="float16", grad=False, dtype=np.float16),
        ],
        lambda x, dim: x.softmax(dim),
        gradgrad=True,
    ),
    OpRow(
        "log_softmax",
        ("exp", "log", "sum"),
        lambda x, dim: x.log_softmax(dim),
        lambda rng: [
            Sample((_r(rng, 3, 4), -1)),
            Sample((np.array([[1000.0, 0.0, -1000.0]]), 1), name="extreme"),
        ],
        lambda x, dim: x.log_softmax(dim),
        gradgrad=True,
    ),
    OpRow(
        "gelu",
        ("fused_gelu", "fused_gelu_grad"),
        lambda x, a: N.gelu(x, a),
        lambda rng: [
            Sample((_r(rng, 3, 4), "none")),
            Sample((_r(rng, 3, 4), "tanh")),
            Sample((_r(rng, 2, 3, 4) * 3, "none"), noncontiguous=True, name="noncontiguous"),
            Sample((_r(rng).reshape(()), "tanh"), name="0d"),
        ],
        lambda x, a: _t("nn.functional.gelu")(x, approximate=a),
        gradgrad=True,
    ),
    # Note [Fused Transformer ops]: each fused composite above, its bias / residual / mask
    # form, and its decomposition (`<name>_reference`) against torch
    OpRow(
        "gelu_bias",
        ("fused_gelu", "fused_gelu_grad"),
        lambda x, b, a: N.gelu(x, a, bias=b),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 4), "none")),
            Sample((_r(rng, 3, 4) * 2, _r(rng, 4), "tanh")),
        ],
        lambda x, b, a: _t("nn.functional.gelu")(x + b, approximate=a),
        gradgrad=True,
    ),
    OpRow(
        "gelu_reference",
        ("erf", "tanh"),
        lambda x, a: N.gelu_reference(x, a),
        lambda rng: [Sample((_r(rng, 3, 4), "none")), Sample((_r(rng, 3, 4), "tanh"))],
        lambda x, a: _t("nn.functional.gelu")(x, approximate=a),
        gradgrad=True,
    ),
    OpRow(
        "softmax_reference",
        ("exp", "sum", "amax"),
        lambda x, dim: N.softmax_reference(x, dim),
        lambda rng: [Sample((_r(rng, 3, 4), -1)), Sample((_r(rng, 3, 4), 0))],
        lambda x, dim: x.softmax(dim),
        gradgrad=True,
    ),
    OpRow(
        "masked_softmax",
        ("fused_softmax", "fused_softmax_grad"),
        lambda s, m, scale: _fused.fused_softmax(s, m, scale),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4, 5), _r(rng, 2, 1, 1, 5), 0.5), name="bert-mask"),
            Sample((_r(rng, 3, 4, 5), _r(rng, 4, 5), 2.0), name="per-query-mask"),
            Sample((_r(rng, 2, 3, 5), _r(rng, 5), 1.0), noncontiguous=False, name="row-mask"),
        ],
        lambda s, m, scale: (s * scale + m).softmax(-1),
        gradgrad=True,
    ),
    OpRow(
        "fused_dropout",
        ("fused_dropout",),
        lambda x, seed, p: _fused.apply(_fused.DROPOUT, x, seed, p=p),
        lambda rng: [
            Sample((_r(rng, 6, 7), np.array(12345), 0.3)),
            Sample((_r(rng, 3, 4, 5), np.array(7), 0.5), noncontiguous=True, name="noncontiguous"),
        ],
        ref=lambda x, seed, p: _fused._dropout_forward(np, x, seed, p),
        gradgrad=True,
        int_args=(1,),
    ),
    OpRow(
        "residual_layer_norm",
        ("fused_layer_norm", "fused_layer_norm_input_grad", "fused_layer_norm_param_grad"),
        lambda x, r, w, b: N.residual_layer_norm(x, r, (4,), w, b),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 2, 3, 4), _r(rng, 4), _r(rng, 4))),
            Sample(
                (_r(rng, 5, 4), _r(rng, 5, 4), _r(rng, 4), _r(rng, 4)),
                noncontiguous=True,
                name="noncontiguous",
            ),
        ],
        lambda x, r, w, b: _t("nn.functional.layer_norm")(x + r, (4,), w, b),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(  # Note [Dropout, add and norm in one pass]: inference (no dropout), dense bias
        "dropout_add_layer_norm",
        (
            "fused_dropout_add_layer_norm",
            "fused_dropout_add_layer_norm_input_grad",
            "fused_dropout_add_layer_norm_param_grad",
        ),
        lambda x, r, w, b, db: _dropout_norm.dropout_add_layer_norm(
            x, r, 4, w, b, 0.1, training=False, input_bias=db
        ),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 2, 3, 4), _r(rng, 4), _r(rng, 4), _r(rng, 4))),
            Sample(
                (_r(rng, 5, 4), _r(rng, 5, 4), _r(rng, 4), _r(rng, 4), _r(rng, 4)),
                noncontiguous=True,
                name="noncontiguous",
            ),
        ],
        lambda x, r, w, b, db: _t("nn.functional.layer_norm")(x + db + r, (4,), w, b),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(  # training: fused_dropout's hashed mask, checked against the NumPy reference
        "dropout_add_layer_norm_dropout",
        (
            "fused_dropout_add_layer_norm",
            "fused_dropout_add_layer_norm_input_grad",
            "fused_dropout_add_layer_norm_param_grad",
            "fused_dropout",
        ),
        lambda x, r, w, b, db, seed, p: _fused.apply(
            _dropout_norm.DROPOUT_ADD_LAYER_NORM, x, r, w, b, db, seed, p=p, biased=True
        ),
        lambda rng: [
            Sample(
                (_r(rng, 3, 8), _r(rng, 3, 8), _r(rng, 8), _r(rng, 8), _r(rng, 8), np.array(5), 0.3)
            ),
            Sample(
                (
                    _r(rng, 2, 3, 4),
                    _r(rng, 2, 3, 4),
                    _r(rng, 4),
                    _r(rng, 4),
                    _r(rng, 4),
                    np.array(12345),
                    0.5,
                ),
                noncontiguous=True,
                name="noncontiguous",
            ),
        ],  # fmt: skip
        ref=lambda x, r, w, b, db, seed, p: _dropout_norm._forward(
            np, x, r, w, b, db, seed, p=p, biased=True
        ),
        gradgrad=True,
        int_args=(5,),
        atol=1e-4,
    ),
    OpRow(  # Note [Row-blocked feed-forward]: BERT's feed-forward block as one op
        "feed_forward_layer_norm",
        (
            "fused_feed_forward",
            "linear",
            "fused_gelu",
            "fused_gelu_grad",
            "fused_dropout_add_layer_norm_input_grad",
            "fused_dropout_add_layer_norm_param_grad",
        ),
        lambda x, w1, b1, w2, b2, w, b, approximate="none": _feed_forward.feed_forward_layer_norm(
            x, w1, b1, w2, b2, 4, w, b, approximate=approximate
        ),
        _feed_forward_samples,
        _feed_forward_torch,
        atol=1e-4,
        errors=(
            ErrorCase(
                tuple(np.ones(s) for s in ((2, 4), (8, 4), (8,), (8, 4), (4,), (4,), (4,))),
                {},
                ShapeError,
                "feed_forward_layer_norm: expected weights",
            ),
            ErrorCase(
                tuple(np.ones(s) for s in ((2, 4), (8, 4), (8,), (4, 8), (4,), (4,), (4,))),
                {"approximate": "sigmoid"},
                ValueError,
                "approximate must be 'none' or 'tanh'",
            ),
        ),
    ),
    OpRow(
        "feed_forward_layer_norm_reference",
        ("linear", "fused_gelu", "rsqrt", "sum"),
        lambda x, w1, b1, w2, b2, w, b, approximate="none": (
            _feed_forward.feed_forward_layer_norm_reference(
                x, w1, b1, w2, b2, 4, w, b, approximate=approximate
            )
        ),
        _feed_forward_samples,
        _feed_forward_torch,
        atol=1e-4,
    ),
    OpRow(
        "layer_norm_reference",
        ("rsqrt", "sum"),
        lambda x, w, b: N.layer_norm_reference(x, (4,), w, b),
        lambda rng: [Sample((_r(rng, 2, 3, 4), _r(rng, 4), _r(rng, 4)))],
        lambda x, w, b: _t("nn.functional.layer_norm")(x, (4,), w, b),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(
        "layer_norm",
        ("fused_layer_norm", "fused_layer_norm_input_grad", "fused_layer_norm_param_grad"),
        lambda x, w, b: N.layer_norm(x, (4,), w, b),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 4), _r(rng, 4))),
            Sample(
                (np.array([[300.0, -300.0, 300.0, -300.0]]), np.ones(4), np.zeros(4)),
                name="float16",
                grad=False,
                dtype=np.float16,
            ),
        ],
        lambda x, w, b: _t("nn.functional.layer_norm")(x, (4,), w, b),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(
        "batch_norm",
        ("batch_norm_train", "batch_norm_input_grad", "batch_norm_weight_grad", "batch_norm_stats"),
        lambda x, w, b: N.batch_norm(
            x, x.new_zeros((x.shape[1],)), x.new_ones((x.shape[1],)), w, b, True
        ),
        lambda rng: [
            Sample((_r(rng, 4, 3, 2, 3) * 2 + 1, _r(rng, 3), _r(rng, 3)), name="4d"),
            Sample((_r(rng, 5, 2), _r(rng, 2), _r(rng, 2)), name="2d"),
            Sample(
                (_r(rng, 3, 2, 4), _r(rng, 2), _r(rng, 2)), noncontiguous=True, name="noncontiguous"
            ),
        ],
        lambda x, w, b: _t("nn.functional.batch_norm")(x, None, None, w, b, True),
        gradgrad=True,
        atol=1e-4,
        errors=(
            ErrorCase(
                (np.ones((4, 3, 5, 5)), np.ones(2), np.ones(3)),
                {},
                ShapeError,
                "weight and bias must have shape",
            ),
        ),
    ),
    OpRow(
        "batch_norm_reference",
        ("sum", "rsqrt"),
        lambda x, w, b: N.batch_norm_reference(x, None, None, w, b, True),
        lambda rng: [Sample((_r(rng, 4, 3, 2, 3), _r(rng, 3), _r(rng, 3)))],
        lambda x, w, b: _t("nn.functional.batch_norm")(x, None, None, w, b, True),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(
        "cross_entropy",
        ("softmax_cross_entropy", "softmax_cross_entropy_grad", "gather"),
        lambda x, t, **k: N.cross_entropy(x, t, **k),
        _ce_samples,
        lambda x, t, **k: _t("nn.functional.cross_entropy")(x, t, **k),
        gradgrad=True,
    ),
    OpRow(
        "cross_entropy_reference",
        ("gather", "exp", "log"),
        lambda x, t, **k: N.cross_entropy_reference(x, t, **k),
        _ce_samples,
        lambda x, t, **k: _t("nn.functional.cross_entropy")(x, t, **k),
    ),
    OpRow(
        "linear",
        ("linear",),
        lambda x, w, *b: L.linear(x, w, *b),
        lambda rng: [
            Sample((_r(rng, 4, 3), _r(rng, 5, 3), _r(rng, 5)), name="bias"),
            Sample((_r(rng, 2, 4, 3), _r(rng, 5, 3)), name="3d-no-bias"),
            Sample((_r(rng, 3), _r(rng, 5, 3), _r(rng, 5)), name="1d"),
            Sample(
                (_r(rng, 4, 3), _r(rng, 5, 3), _r(rng, 5)), noncontiguous=True, name="noncontiguous"
            ),
        ],
        lambda x, w, *b: _t("nn.functional.linear")(x, w, *b),
        lambda x, w, *b: x @ w.T + (b[0] if b else 0),
        gradgrad=True,
        errors=(
            ErrorCase((np.ones((2, 4)), np.ones((5, 3))), {}, ValueError, "last dim 4 != weight"),
        ),
    ),
    OpRow(
        "linear_reference",
        ("matmul",),
        lambda x, w, b: L.linear_reference(x, w, b),
        lambda rng: [Sample((_r(rng, 2, 4, 3), _r(rng, 5, 3), _r(rng, 5)))],
        lambda x, w, b: _t("nn.functional.linear")(x, w, b),
    ),
    OpRow(
        "cross_entropy_weight",
        ("gather",),
        _ce_weight,
        lambda rng: [
            Sample(
                (_r(rng, 4, 5), np.array([1, -100, 3, 0]), _r(rng, 5, low=0.1)), {}, name="weight"
            ),
            Sample(
                (_r(rng, 4, 5), rng.integers(0, 5, 4), _r(rng, 5, low=0.1)),
                {"label_smoothing": 0.2},
                name="weight-smoothing",
            ),
        ],
        _ce_weight_torch,
        const_args=(2,),
    ),
    OpRow(
        "scaled_dot_product_attention",
        (
            "fused_attention",
            "fused_attention_grad",
            "matmul",
            "fused_softmax",
            "fused_softmax_grad",
            "where",
        ),
        _sdpa,
        _sdpa_samples,
        _sdpa_torch,
        gradgrad=True,
        atol=1e-5,
    ),
    OpRow(
        "scaled_dot_product_attention_reference",
        ("matmul", "fused_softmax", "fused_softmax_grad", "where"),
        lambda q, k, v, mask=None, **kw: N.scaled_dot_product_attention_reference(
            q, k, v, attn_mask=mask, **kw
        ),
        _sdpa_samples,
        _sdpa_torch,
        gradgrad=True,
        atol=1e-5,
    ),
    OpRow(
        "fused_attention",
        ("fused_attention", "fused_attention_grad", "fused_softmax", "fused_softmax_grad"),
        lambda q, k, v, m: _fused.apply(_fused.ATTENTION, q, k, v, m, scale=0.5, masked=True),
        lambda rng: [
            Sample(
                (
                    _r(rng, 2, 2, 4, 3),
                    _r(rng, 2, 2, 5, 3),
                    _r(rng, 2, 2, 5, 2),
                    _r(rng, 2, 1, 1, 5),
                ),
                name="bert-mask",
            ),
            Sample(
                (_r(rng, 3, 4, 3), _r(rng, 3, 6, 3), _r(rng, 3, 6, 5), _r(rng, 4, 6)),
                noncontiguous=True,
                name="per-query-mask",
            ),
        ],  # fmt: skip
        lambda q, k, v, m: _t("nn.functional.scaled_dot_product_attention")(
            q, k, v, attn_mask=m, scale=0.5
        ),
        ref=lambda q, k, v, m: _fused._attention_forward(np, q, k, v, m, scale=0.5, masked=True),
        gradgrad=True,
    ),
    OpRow(
        "fused_attention_dropout",
        (
            "fused_attention",
            "fused_attention_grad",
            "fused_dropout",
            "fused_softmax",
            "fused_softmax_grad",
        ),
        lambda q, k, v, m, seed, p: _fused.apply(
            _fused.ATTENTION, q, k, v, m, seed, scale=0.5, masked=True, p=p
        ),
        lambda rng: [
            Sample(
                (
                    _r(rng, 2, 3, 4),
                    _r(rng, 2, 5, 4),
                    _r(rng, 2, 5, 6),
                    _r(rng, 3, 5),
                    np.array(12345),
                    0.3,
                )
            ),
            Sample(
                (
                    _r(rng, 2, 2, 4, 3),
                    _r(rng, 2, 2, 4, 3),
                    _r(rng, 2, 2, 4, 2),
                    _r(rng, 2, 1, 1, 4),
                    np.array(7),
                    0.5,
                ),
                name="bert-mask",
            ),
        ],  # fmt: skip
        ref=lambda q, k, v, m, seed, p: _fused._attention_forward(
            np, q, k, v, m, seed, scale=0.5, masked=True, p=p
        ),
        gradgrad=True,
        int_args=(4,),
    ),
    _recurrence_row("lstm_layer", "LSTM", 4, ("lstm_recurrence", "lstm_recurrence_grad")),
    _recurrence_row("gru_layer", "GRU", 3, ("gru_recurrence", "gru_recurrence_grad")),
    _recurrence_row("rnn_tanh_layer", "RNN", 1, ("rnn_recurrence", "rnn_recurrence_grad")),
    _recurrence_row("rnn_relu_layer", "RNN", 1, ("rnn_recurrence",), "relu"),
    # --- activations (compositions)
    OpRow(
        "hardsigmoid",
        ("clamp",),
        lambda x: N.hardsigmoid(x * 4.0),
        unary_samples(),
        lambda x: _t("nn.functional.hardsigmoid")(x * 4.0),
    ),
    OpRow(
        "hardswish",
        ("clamp", "mul"),
        lambda x: N.hardswish(x * 4.0),
        unary_samples(),
        lambda x: _t("nn.functional.hardswish")(x * 4.0),
    ),
    OpRow(
        "softsign",
        ("abs", "div"),
        N.softsign,
        unary_samples(),
        lambda x: _t("nn.functional.softsign")(x),
        lambda x: x / (1 + np.abs(x)),
        gradgrad=True,
    ),
    OpRow(
        "celu",
        ("expm1", "where"),
        lambda x, alpha=1.0: N.celu(x, alpha),
        lambda rng: [Sample((_r(rng, 3, 4),)), Sample((_r(rng, 3, 4),), {"alpha": 0.5})],
        lambda x, alpha=1.0: _t("nn.functional.celu")(x, alpha),
        gradgrad=True,
    ),
    OpRow(
        "selu",
        ("expm1", "where"),
        N.selu,
        unary_samples(),
        lambda x: _t("nn.functional.selu")(x),
        gradgrad=True,
    ),
    OpRow(
        "mish",
        ("tanh", "log1p"),
        N.mish,
        unary_samples(edge=[-30.0, 0.0, 30.0]),
        lambda x: _t("nn.functional.mish")(x),
        gradgrad=True,
    ),
    OpRow(
        "softmin",
        ("exp", "sum"),
        lambda x, dim: N.softmin(x, dim),
        lambda rng: [Sample((_r(rng, 3, 4), -1)), Sample((_r(rng, 3, 4), 0))],
        lambda x, dim: _t("nn.functional.softmin")(x, dim),
        gradgrad=True,
    ),
    OpRow(
        "normalize",
        ("sum", "div", "maximum"),
        lambda x, **k: ember.nn.functional.normalize(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {"p": 2.0, "dim": 1}),
            Sample((_r(rng, 3, 4),), {"p": 1.0, "dim": 0}),
            # p=0 counts nonzeros: a finite difference at a zero entry changes the count
            Sample(
                (np.array([[0.0, 1.5, -2.0], [0.0, 0.0, 3.0]]),), {"p": 0.0, "dim": 1}, grad=False
            ),
        ],
        lambda x, **k: _t("nn.functional.normalize")(x, **k),
    ),
    # --- transposed / 3-D convolutions, unfold, fold, interpolate (compositions)
    OpRow(
        "conv_transpose2d",
        ("conv2d_input_grad",),
        lambda x, w, b, **k: C.conv_transpose2d(x, w, b, **k),
        lambda rng: [
            Sample((_r(rng, 2, 4, 3, 4), _r(rng, 4, 3, 3, 2), _r(rng, 3)), {"stride": 2}),
            Sample(
                (_r(rng, 1, 4, 3, 3), _r(rng, 4, 1, 2, 2), _r(rng, 2)),
                {"stride": (2, 1), "padding": 1, "output_padding": (1, 0), "groups": 2},
                name="groups",
            ),
        ],
        lambda x, w, b, **k: _t("nn.functional.conv_transpose2d")(x, w, b, **k),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(
        "conv3d",
        ("conv2d",),
        lambda x, w, b, **k: C.conv3d(x, w, b, **k),
        lambda rng: [
            Sample(
                (_r(rng, 1, 2, 4, 3, 4), _r(rng, 3, 2, 2, 2, 3), _r(rng, 3)),
                {"stride": (2, 1, 1), "padding": (1, 0, 1)},
            )
        ],
        lambda x, w, b, **k: _t("nn.functional.conv3d")(x, w, b, **k),
        atol=1e-4,
    ),
    OpRow(
        "conv_transpose3d",
        ("conv2d_input_grad", "pad"),
        lambda x, w, b, **k: C.conv_transpose3d(x, w, b, **k),
        lambda rng: [
            Sample(
                (_r(rng, 1, 2, 2, 3, 2), _r(rng, 2, 2, 2, 2, 2), _r(rng, 2)),
                {"stride": (2, 1, 2), "padding": (1, 0, 0), "output_padding": (1, 0, 1)},
            )
        ],
        lambda x, w, b, **k: _t("nn.functional.conv_transpose3d")(x, w, b, **k),
        atol=1e-4,
    ),
    OpRow(
        "unfold_fold",
        ("conv2d", "conv2d_input_grad"),
        lambda x: C.fold(
            C.unfold(x, (2, 3), padding=1, stride=(2, 1)) * 1.5,
            (4, 5),
            (2, 3),
            padding=1,
            stride=(2, 1),
        ),
        lambda rng: [Sample((_r(rng, 2, 3, 4, 5),))],
        lambda x: _t("nn.functional.fold")(
            _t("nn.functional.unfold")(x, (2, 3), padding=1, stride=(2, 1)) * 1.5,
            (4, 5),
            (2, 3),
            padding=1,
            stride=(2, 1),
        ),
        gradgrad=True,
    ),
    OpRow(
        "interpolate",
        ("matmul",),
        lambda x, **k: ember.nn.functional.interpolate(x, **k),
        lambda rng: [
            Sample((_r(rng, 1, 2, 3, 4),), {"scale_factor": 2, "mode": "nearest"}),
            Sample((_r(rng, 1, 2, 3, 4),), {"size": (5, 3), "mode": "bilinear"}),
            Sample(
                (_r(rng, 1, 2, 4, 4),),
                {"size": (6, 7), "mode": "bicubic", "align_corners": True},
                name="bicubic",
            ),
            Sample((_r(rng, 2, 3, 5),), {"scale_factor": 1.5, "mode": "linear"}, name="1d"),
        ],
        lambda x, **k: _t("nn.functional.interpolate")(x, **k),
        gradgrad=True,
    ),
    # --- random (statistical checks; no gradients)
    OpRow(
        "uniform",
        ("uniform",),
        lambda: ember.rand(2000, 50),
        lambda rng: [Sample(())],
        grad=False,
        random=True,
    ),
    OpRow(
        "normal",
        ("normal",),
        lambda: ember.randn(2000, 50),
        lambda rng: [Sample(())],
        grad=False,
        random=True,
    ),
    OpRow(
        "randint",
        ("randint",),
        lambda: ember.randint(0, 10, (1000,)).float(),
        lambda rng: [Sample(())],
        grad=False,
        random=True,
    ),
    OpRow(
        "randperm",
        ("randperm",),
        lambda: ember.randperm(100).sort()[0].float(),
        lambda rng: [Sample(())],
        grad=False,
        random=True,
    ),
    OpRow(
        "bernoulli",
        ("bernoulli",),
        lambda: ember.bernoulli(ember.full((4000,), 0.25)),
        lambda rng: [Sample(())],
        grad=False,
        random=True,
    ),
    OpRow(
        "to_device",
        ("to_device", "assign"),
        lambda x: x.to("cpu") * 1.0 + ember.zeros(tuple(x.shape), dtype=x.dtype).copy_(x),
        lambda rng: [Sample((_r(rng, 3, 4),))],
        lambda x: x.to("cpu") * 1.0 + x.clone(),
    ),
    # --- issue 18: inverse and hyperbolic trig, log10, exp2, binary math, bitwise ops
    _unary_in("asin", -0.9, 0.9, edge=[-1.0, 0.0, 1.0]),
    _unary_in("acos", -0.9, 0.9, edge=[-1.0, 0.0, 1.0]),
    _unary_in("atan", -3.0, 3.0, edge=[-1e30, 0.0, 1e30]),
    _unary_in("sinh", -3.0, 3.0, edge=[-100.0, 0.0, 100.0]),
    _unary_in("cosh", -3.0, 3.0, edge=[-100.0, 0.0, 100.0]),
    _unary_in("asinh", -3.0, 3.0, edge=[-1e15, 0.0, 1e15]),
    _unary_in("acosh", 1.1, 4.0, edge=[1.0, 1e15]),
    _unary_in("atanh", -0.9, 0.9, edge=[-1.0, 0.0, 1.0]),
    _unary_in("log10", 0.1, 4.0, edge=[0.0, 1.0, 1e30]),
    _unary_in("exp2", -3.0, 3.0, edge=[-200.0, 0.0, 100.0]),
    OpRow(
        "trig_aliases",
        ("asin", "acos", "atan", "asinh", "acosh", "atanh", "atan2"),
        lambda x: ember.stack(
            [
                x.arcsin(),
                ember.arccos(x),
                x.arctan(),
                ember.arcsinh(x),
                (x + 2).arccosh(),
                x.arctanh(),
                ember.arctan2(x, x + 1),
            ]
        ),
        lambda rng: [Sample((rng.uniform(-0.9, 0.9, (3, 4)),))],
        lambda x: _t("stack")(
            [
                x.arcsin(),
                _t("arccos")(x),
                x.arctan(),
                _t("arcsinh")(x),
                (x + 2).arccosh(),
                x.arctanh(),
                _t("arctan2")(x, x + 1),
            ]
        ),
    ),
    OpRow(
        "atan2",
        ("atan2",),
        ember.atan2,
        lambda rng: [
            *binary_samples()(rng),
            Sample(
                (np.array([0.0, 1.0, -1.0, 0.0, 2.0, -2.0]), np.array([0.0, 0.0, 0.0, -1, -3, -3])),
                name="axes-and-quadrants",
                grad=False,
            ),
        ],
        lambda a, b: _t("atan2")(a, _tt(b)),
        np.arctan2,
        gradgrad=True,
        errors=(_BROADCAST_ERROR,),
    ),
    OpRow(
        "copysign",
        ("copysign",),
        ember.copysign,
        lambda rng: [
            *binary_samples()(rng),
            Sample(
                (np.array([1.0, -2.0, 0.0, 3.0]), np.array([-0.0, 0.0, -1.0, -0.0])),
                name="signed-zeros",
                grad=False,
            ),
        ],
        lambda a, b: _t("copysign")(a, b),
        np.copysign,
        gradgrad=False,
        errors=(_BROADCAST_ERROR,),
    ),
    OpRow(
        "fmod",
        ("fmod",),
        ember.fmod,
        lambda rng: [
            *binary_samples(positive_b=True)(rng),
            Sample(
                (np.array([-7.5, 7.5, -7.5, 7.5]), np.array([2.0, 2.0, -2.0, -2.0])),
                name="signs",
                grad=False,
            ),
            Sample((np.array([-7, 7, -7, 7, 0]), np.array([3, 3, -3, -3, 5])), name="int"),
        ],
        lambda a, b: _t("fmod")(a, b),
        np.fmod,
        gradgrad=False,
        errors=(
            _BROADCAST_ERROR,
            ErrorCase((np.array([4, 5]), np.array([2, 0])), {}, ZeroDivisionError, "fmod"),
        ),
    ),
    OpRow(
        "remainder_signs",
        ("remainder",),
        lambda a, b: ember.remainder(a, b),
        lambda rng: [
            Sample(
                (np.array([-7.5, 7.5, -7.5, 7.5]), np.array([2.0, 2.0, -2.0, -2.0])),
                name="signs",
                grad=False,
            ),
            Sample((np.array([-7, 7, -7, 7, 0]), np.array([3, 3, -3, -3, 5])), name="int"),
            Sample((np.array([-7, 7, -7, 7]), -3), name="int-scalar"),
        ],
        lambda a, b: _t("remainder")(a, b),
        np.remainder,
        grad=False,
    ),
    OpRow(
        "logaddexp",
        ("logaddexp",),
        ember.logaddexp,
        lambda rng: [
            *binary_samples()(rng),
            Sample(
                (
                    np.array([-np.inf, 0.0, 800.0, -800.0]),
                    np.array([-np.inf, -np.inf, 800.0, -801.0]),
                ),
                name="edge",
                grad=False,
            ),
        ],
        lambda a, b: _t("logaddexp")(a, _tt(b)),
        np.logaddexp,
        gradgrad=True,
        errors=(_BROADCAST_ERROR,),
    ),
    OpRow(
        "logaddexp2",
        ("logaddexp2", "exp2"),
        ember.logaddexp2,
        lambda rng: [
            *binary_samples()(rng),
            Sample(
                (
                    np.array([-np.inf, 0.0, 800.0, -800.0]),
                    np.array([-np.inf, -np.inf, 800.0, -801.0]),
                ),
                name="edge",
                grad=False,
            ),
        ],
        lambda a, b: _t("logaddexp2")(a, _tt(b)),
        np.logaddexp2,
        gradgrad=True,
        errors=(_BROADCAST_ERROR,),
    ),
    OpRow(
        "bitwise",
        ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not"),
        lambda a, b: ember.stack(
            [
                a & b,
                a | b,
                a ^ b,
                ~a,
                ember.bitwise_and(a, b),
                a.bitwise_or(b),
                ember.bitwise_xor(a, b),
                ember.bitwise_not(a),
            ]
        ),
        _bitwise_samples,
        lambda a, b: _t("stack")(
            [
                a & b,
                a | b,
                a ^ b,
                ~a,
                _t("bitwise_and")(a, b),
                a.bitwise_or(b),
                _t("bitwise_xor")(a, b),
                _t("bitwise_not")(a),
            ]
        ),
        lambda a, b: np.stack(
            np.broadcast_arrays(a & b, a | b, a ^ b, ~a, a & b, a | b, a ^ b, ~a)
        ),
        grad=False,
        errors=(
            ErrorCase((np.ones(3), np.ones(3)), {}, RuntimeError, "bitwise_and: takes integer"),
            ErrorCase((np.ones(3), 1), {}, NotImplementedError, "bitwise_and: .*got float32"),
        ),
    ),
    OpRow(
        "bitwise_shift",
        ("bitwise_left_shift", "bitwise_right_shift"),
        lambda a, b: ember.stack(
            [a << b, a >> b, ember.bitwise_left_shift(a, b), a.bitwise_right_shift(b)]
        ),
        lambda rng: [
            Sample((rng.integers(-100, 100, (3, 4)), rng.integers(0, 6, (3, 4))), name="same"),
            Sample((rng.integers(-100, 100, (2, 3, 4)), rng.integers(0, 6, (4,))), name="bcast"),
            Sample((rng.integers(-100, 100, (3, 4)), 2), name="scalar"),
        ],
        lambda a, b: _t("stack")(
            [a << b, a >> b, _t("bitwise_left_shift")(a, b), a.bitwise_right_shift(b)]
        ),
        lambda a, b: np.stack(np.broadcast_arrays(a << b, a >> b, a << b, a >> b)),
        grad=False,
        errors=(ErrorCase((np.ones(3), 1), {}, RuntimeError, "bitwise_left_shift: takes integer"),),
    ),
    OpRow(
        "isclose",
        ("eq", "isnan", "isfinite", "abs", "le", "logical_or", "logical_and", "where"),
        lambda a, b, **k: ember.isclose(a, b, **k),
        lambda rng: [
            Sample(
                (
                    np.array([1.0, np.nan, np.inf, 1e-9, -np.inf, 1.0, 2.0]),
                    np.array([1.0 + 1e-6, np.nan, np.inf, 0.0, np.inf, 1.1, 2.00001]),
                ),
                {},
            ),
            Sample(
                (np.array([1.0, np.nan, 1.0]), np.array([1.0, np.nan, 1.2])),
                {"equal_nan": True, "rtol": 0.1, "atol": 0.0},
                name="equal-nan",
            ),
            Sample(
                (np.array([1.0, 2.0]), np.array([1.0, 2.1])), {"rtol": 0, "atol": 0}, name="exact"
            ),
            Sample((np.array([1, 2, 5]), np.array([1, 3, 3])), {"atol": 1}, name="int"),
            Sample((_r(rng, 2, 3), _r(rng, 3)), {"atol": 1.0}, name="broadcast"),
        ],
        lambda a, b, **k: _t("isclose")(a, b, **k),
        grad=False,
        errors=(ErrorCase((np.ones(2), np.ones(2)), {"rtol": -1.0}, ValueError, "isclose: rtol"),),
    ),
    OpRow(
        "std_mean",
        ("sum", "sqrt"),
        lambda x, *a, **k: ember.stack(list(ember.std_mean(x, *a, **k))),
        _moments_samples,
        lambda x, *a, **k: _t("stack")(list(_t("std_mean")(x, *a, **k))),
    ),
    OpRow(
        "var_mean",
        ("sum",),
        lambda x, *a, **k: ember.stack(list(ember.var_mean(x, *a, **k))),
        _moments_samples,
        lambda x, *a, **k: _t("stack")(list(_t("var_mean")(x, *a, **k))),
        gradgrad=True,
    ),
    OpRow(
        "cummax",
        ("cum_extreme_index", "gather"),
        lambda x, dim: _values_and_indices(ember.cummax(x, dim)),
        _cum_extreme_samples,
        lambda x, dim: _values_and_indices(_t("cummax")(x, dim)),
        errors=(ErrorCase((np.ones((2, 3)),), {"dim": 2}, IndexError, "cummax: dim 2"),),
    ),
    OpRow(
        "cummin",
        ("cum_extreme_index", "gather"),
        lambda x, dim: _values_and_indices(x.cummin(dim)),
        _cum_extreme_samples,
        lambda x, dim: _values_and_indices(x.cummin(dim)),
    ),
    OpRow(
        "logcumsumexp",
        ("logcumsumexp",),
        lambda x, dim: x.logcumsumexp(dim),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {"dim": 1}),
            Sample((_r(rng, 2, 3, 4),), {"dim": 0}, name="dim0"),
            Sample((_r(rng, 4, 3),), {"dim": -1}, noncontiguous=True, name="noncontiguous"),
            Sample((np.array(0.5),), {"dim": 0}, name="0d"),
            Sample(
                (np.array([-1000.0, 0.0, 1000.0, -np.inf]),), {"dim": 0}, name="wide", grad=False
            ),
        ],
        lambda x, dim: _t("logcumsumexp")(x, dim),
        lambda x, dim: np.logaddexp.accumulate(x, axis=dim) if x.ndim else x,
        gradgrad=True,
    ),
    OpRow(
        "diag",
        ("cat", "reshape", "getitem", "pad", "diagonal", "copy"),
        lambda x, *a: ember.diag(x, *a),
        lambda rng: [
            Sample((_r(rng, 4),), name="1d"),
            Sample((_r(rng, 3), 2), name="1d-above"),
            Sample((_r(rng, 3), -1), name="1d-below"),
            Sample((_r(rng, 3, 4),), name="2d"),
            Sample((_r(rng, 4, 3), -2), noncontiguous=True, name="2d-below"),
            Sample((_r(rng, 3, 4), 5), name="2d-outside"),
            Sample((np.array([1, 2, 3]), 1), name="int"),
        ],
        lambda x, *a: _t("diag")(x, *a),
        lambda x, k=0: np.diag(x, k),
        gradgrad=True,
        errors=(ErrorCase((np.ones((2, 2, 2)),), {}, RuntimeError, "diag: input must be 1-D"),),
    ),
    OpRow(
        "repeat_interleave",
        ("reshape", "expand", "getitem", "check_index", "cumsum", "scatter_add"),
        lambda x, r, **k: x.repeat_interleave(r, **k),
        lambda rng: [
            Sample((_r(rng, 2, 3), 2), name="flat"),
            Sample((_r(rng, 2, 3), 3), {"dim": 1}, name="int-dim"),
            # equal counts: the ONNX export check draws fresh counts from the sample's values
            Sample(
                (_r(rng, 3, 2), np.array([2, 2, 2])), {"dim": 0, "output_size": 6}, name="tensor"
            ),
            Sample((_r(rng, 3, 2), np.array([2])), {"dim": -1, "output_size": 4}, name="one"),
            Sample(
                (_r(rng, 4, 3), np.array([3, 3, 3])),
                {"dim": 1, "output_size": 9},
                noncontiguous=True,
                name="noncontiguous",
            ),
        ],
        lambda x, r, **k: x.repeat_interleave(r, **k),
        gradgrad=True,
        int_args=(1,),
        errors=(
            ErrorCase(
                (np.ones((3, 2)), np.array([1, 2])),
                {"dim": 0},
                RuntimeError,
                "repeat_interleave: repeats has 2 counts",
            ),
            ErrorCase(
                (np.ones((3, 2)), 2), {"dim": 0, "output_size": 5}, RuntimeError, "output_size is 5"
            ),
        ),
    ),
    OpRow(
        "unfold",
        ("unfold", "index_add"),
        lambda x, *a: x.unfold(*a),
        lambda rng: [
            Sample((_r(rng, 7), 0, 2, 2), name="1d"),
            Sample((_r(rng, 3, 8), 1, 3, 2), name="overlap"),
            Sample((_r(rng, 5, 4), 0, 5, 1), noncontiguous=True, name="whole"),
            Sample((_r(rng, 2, 6, 3), -2, 2, 3), name="middle"),
            Sample((np.array(1.5), 0, 1, 1), name="0d"),
        ],
        lambda x, *a: x.unfold(*a),
        gradgrad=True,
        errors=(
            ErrorCase((np.ones((2, 3)), 1, 4, 1), {}, RuntimeError, "maximum size for dim"),
            ErrorCase((np.ones((2, 3)), 1, 2, 0), {}, RuntimeError, "step is 0"),
        ),
    ),
    OpRow(
        "meshgrid",
        ("reshape", "expand"),
        lambda *xs, **k: ember.stack(list(ember.meshgrid(*xs, **k))),
        lambda rng: [
            Sample((_r(rng, 3), _r(rng, 4)), {"indexing": "ij"}, name="ij"),
            Sample((_r(rng, 3), _r(rng, 4)), {"indexing": "xy"}, name="xy"),
            Sample((_r(rng, 2), _r(rng, 3), _r(rng, 4)), {"indexing": "xy"}, name="xy3"),
            Sample((_r(rng, 2), np.array(0.5)), {"indexing": "ij"}, name="0d"),
        ],
        lambda *xs, **k: _t("stack")(list(_t("meshgrid")(*xs, **k))),
        errors=(ErrorCase((np.ones(2), np.ones(2)), {"indexing": "yx"}, ValueError, "meshgrid"),),
    ),
    OpRow(
        "scatter_reduce",
        ("scatter_reduce", "scatter_add", "scatter", "gather"),
        lambda x, d, i, s, **k: x.scatter_reduce(d, i, s, **k),
        _scatter_reduce_samples,
        lambda x, d, i, s, **k: x.scatter_reduce(d, i, s, **k),
        int_args=(2,),
        gradgrad=False,
        errors=(
            ErrorCase(
                (np.ones(3), 0, np.array([3]), np.ones(1)),
                {"reduce": "sum"},
                RuntimeError,
                "scatter_reduce: index 3 is out of range",
            ),
            ErrorCase(
                (np.ones(3), 0, np.array([0]), np.ones(1)),
                {"reduce": "max"},
                ValueError,
                "reduce must be",
            ),
        ),
    ),
    OpRow(
        "scatter_with_reduce",
        ("scatter_reduce",),
        lambda x, d, i, s, **k: x.scatter(d, i, s, **k),
        lambda rng: [
            Sample(
                (_r(rng, 3, 4), 1, np.array([[0, 1], [2, 0], [1, 1]]), _r(rng, 3, 2)),
                {"reduce": "add"},
                name="add",
            ),
            Sample(
                (_r(rng, 3, 4), 0, np.array([[0, 1, 2, 0], [0, 1, 1, 2]]), _r(rng, 2, 4)),
                {"reduce": "multiply"},
                name="multiply",
            ),
            Sample(
                (_r(rng, 3, 4), 1, np.array([[0, 0], [3, 3], [1, 2]]), 1.5),
                {"reduce": "multiply"},
                name="value",
            ),
        ],
        lambda x, d, i, s, **k: x.scatter(d, i, s, **k),
        int_args=(2,),
        grad=False,  # torch has no derivative for scatter(reduce=); scatter_reduce has ours
    ),
    OpRow(
        "gather_range",
        ("gather",),
        lambda x, d, i: ember.gather(x, d, i),
        lambda rng: [Sample((_r(rng, 3, 4), 1, np.array([[0, 3], [1, 2], [2, 2]])))],
        lambda x, d, i: _t("gather")(x, d, i),
        int_args=(2,),
        errors=(
            ErrorCase(
                (np.ones((2, 3)), 1, np.array([[0, 3]])),
                {},
                RuntimeError,
                "gather: index 3 is out of range for a dim of size 3",
            ),
            ErrorCase(
                (np.ones((2, 3)), 1, np.array([[0, -1]])), {}, IndexError, "gather: index -1"
            ),
        ),
    ),
    OpRow(
        "one_hot_range",
        ("check_index", "eq", "cast"),
        lambda i, n: ember.nn.functional.one_hot(i, n),
        lambda rng: [Sample((np.array([0, 2, 1]), 4))],
        lambda i, n: _t("nn.functional.one_hot")(i, n),
        grad=False,
        int_args=(0,),
        errors=(ErrorCase((np.array([0, 4]), 4), {}, RuntimeError, "one_hot: index 4 .* size 4"),),
    ),
    OpRow(
        "index_select_range",
        ("getitem", "check_index"),
        lambda x, d, i: ember.index_select(x, d, i),
        lambda rng: [Sample((_r(rng, 3, 4), 1, np.array([3, 0, 3])))],
        lambda x, d, i: _t("index_select")(x, d, i),
        int_args=(2,),
        errors=(
            ErrorCase(
                (np.ones((2, 3)), 0, np.array([2])),
                {},
                RuntimeError,
                "index_select: index 2 is out of range for a dim of size 2",
            ),
        ),
    ),
]


# --- issue 18 (ops18b): mode, spatial and distance composites ----------------------------------
def _mode_samples(rng):
    ties = np.round(rng.standard_normal((4, 7)))
    return [
        Sample((_r(rng, 3, 5),), {"dim": 1}, name="distinct"),
        Sample((ties,), {"dim": 1}, name="ties", grad=False),
        Sample((ties,), {"dim": 0, "keepdim": True}, name="ties-dim0", grad=False),
        Sample(
            (np.round(_r(rng, 5, 4)),), {"dim": 0}, noncontiguous=True, name="noncontig", grad=False
        ),
        Sample((np.zeros((3, 0)),), {"dim": 0}, name="empty"),
    ]


def _lp_pool_samples(nd):
    # odd p over positive inputs: a window whose sum of x^p is negative gives 0 and, as in
    # torch, a NaN gradient (pow(0, 1/p)'s infinite slope times relu's zero)
    def samples(rng):
        if nd == 1:
            return [
                Sample((_r(rng, 2, 3, 6), 2, 2), name="p2"),
                Sample((_r(rng, 2, 3, 7, low=0.5), 1.5, 3), {"stride": 2, "ceil_mode": True}),
                Sample(
                    (_r(rng, 3, 6, low=0.1), 3, 3),
                    {"stride": 1},
                    noncontiguous=True,
                    name="unbatched",
                ),
                Sample((_r(rng, 1, 2, 5), float("inf"), 2), name="inf"),
            ]
        if nd == 2:
            return [
                Sample((_r(rng, 1, 2, 4, 5, low=0.1), 3, (2, 2)), {"stride": 1}, name="p3"),
                Sample((_r(rng, 2, 4, 4), 2, 2), noncontiguous=True, name="unbatched"),
                Sample((_r(rng, 1, 2, 4, 4), float("-inf"), 2), name="-inf"),
            ]
        return [Sample((_r(rng, 1, 2, 2, 4, 4, low=0.1), 2, (2, 2, 2)), name="p2")]

    return samples


def _lp_pool_row(nd):
    name = f"lp_pool{nd}d"
    return OpRow(
        name,
        ("conv2d", "pow", "sign", "relu", "abs", "max_pool2d"),
        lambda x, p, k, **kw: getattr(ember.nn.functional, name)(x, p, k, **kw),
        _lp_pool_samples(nd),
        lambda x, p, k, **kw: _t(f"nn.functional.{name}")(x, p, k, **kw),
        errors=(
            ErrorCase(
                (np.ones((1, 2) + (4,) * nd), 0, 2), {}, ValueError, f"{name}: norm_type must"
            ),
        ),
    )


def _pixel_samples(rng):
    return [
        Sample((_r(rng, 1, 8, 2, 3), 2), name="4d"),
        Sample((_r(rng, 2, 3, 9, 2, 2), 3), name="5d"),
        Sample((_r(rng, 4, 3, 2), 2), noncontiguous=True, name="3d-noncontiguous"),
        Sample((np.zeros((0, 4, 2, 2)), 2), name="empty"),
    ]


def _unpixel_samples(rng):
    return [
        Sample((_r(rng, 1, 2, 4, 6), 2), name="4d"),
        Sample((_r(rng, 2, 1, 1, 6, 3), 3), name="5d"),
        Sample((_r(rng, 4, 4, 2), 2), noncontiguous=True, name="3d-noncontiguous"),
    ]


def _instance_norm_samples(rng):
    return [
        Sample((_r(rng, 2, 3, 5), _r(rng, 3), _r(rng, 3), None, None), name="1d-affine"),
        Sample((_r(rng, 2, 3, 4, 4), None, None, None, None), name="2d"),
        Sample((_r(rng, 2, 3, 3, 4), None, None, None, None), noncontiguous=True, name="noncontig"),
        Sample(
            (_r(rng, 2, 3, 4), _r(rng, 3), None, _r(rng, 3), _r(rng, 3, low=0.5)),
            name="running-stats-updated",
        ),
        Sample(
            (_r(rng, 2, 3, 4), _r(rng, 3), _r(rng, 3), _r(rng, 3), _r(rng, 3, low=0.5)),
            {"use_input_stats": False},
            name="running-stats-used",
        ),
    ]


def _instance_norm(lib_f):
    def call(x, w, b, rm, rv, **kw):
        return lib_f().instance_norm(x, rm, rv, w, b, **kw)

    return call


def _t_module(name):
    import importlib

    return importlib.import_module(f"torch.{name}")


def _lrn_samples(rng):
    return [
        Sample((_r(rng, 2, 5, 4), 3), name="3d"),
        Sample((_r(rng, 2, 5, 3, 3), 2), {"alpha": 0.5, "beta": 0.6, "k": 2.0}, name="4d"),
        Sample((_r(rng, 1, 4, 2, 2, 2), 4), noncontiguous=True, name="5d"),
    ]


def _cosine_samples(rng):
    return [
        Sample((_r(rng, 3, 4), _r(rng, 3, 4)), name="dim1"),
        Sample((_r(rng, 2, 3, 4), _r(rng, 4)), {"dim": -1}, name="broadcast"),
        Sample((_r(rng, 4, 3), _r(rng, 4, 3)), {"dim": 0}, noncontiguous=True, name="dim0"),
    ]


def _pairwise_samples(rng):
    return [
        Sample((_r(rng, 3, 4), _r(rng, 3, 4)), name="p2"),
        Sample((_r(rng, 3, 4), _r(rng, 4)), {"p": 1.0, "keepdim": True}, name="p1-broadcast"),
        Sample((_r(rng, 2, 3, 4), _r(rng, 2, 3, 4)), {"p": 3.0}, name="p3"),
    ]


def _pdist_samples(rng):
    return [
        Sample((_r(rng, 5, 3),), name="p2"),
        Sample((_r(rng, 4, 3),), {"p": 1}, name="p1"),
        Sample((_r(rng, 4, 3),), {"p": 3.5}, name="p3.5"),
        Sample((_r(rng, 4, 3),), {"p": float("inf")}, name="inf"),
        Sample((_r(rng, 4, 2),), {"p": 0}, name="p0", grad=False),
        Sample((_r(rng, 3, 4),), noncontiguous=True, name="noncontiguous"),
        Sample((_r(rng, 1, 3),), name="one-row"),
    ]


def _cdist_samples(rng):
    return [
        Sample((_r(rng, 3, 4), _r(rng, 5, 4)), name="p2"),
        Sample((_r(rng, 2, 3, 4), _r(rng, 1, 5, 4)), {"p": 1.0}, name="p1-batch"),
        Sample((_r(rng, 3, 2), _r(rng, 2, 2)), {"p": float("inf")}, name="inf"),
        Sample((_r(rng, 30, 3), _r(rng, 4, 3)), name="p2-matmul"),
        Sample(
            (_r(rng, 3, 3), _r(rng, 4, 3)),
            {"compute_mode": "use_mm_for_euclid_dist"},
            name="p2-matmul-forced",
        ),
        Sample((_r(rng, 4, 3), _r(rng, 2, 3)), {"p": 0.5}, noncontiguous=True, name="p0.5"),
    ]


_ISSUE18B_ROWS = [
    OpRow(
        "mode",
        ("argsort", "gather", "cum_extreme_index", "argmax", "cat", "ne", "eq", "where"),
        lambda x, **k: x.mode(**k).values,
        _mode_samples,
        lambda x, **k: x.mode(**k).values,
        errors=(
            ErrorCase((np.zeros((0, 3)),), {"dim": 0}, IndexError, r"mode\(\): expected reduction"),
        ),
    ),
    OpRow(
        "mode_indices",
        ("argsort", "gather", "cum_extreme_index", "argmax"),
        lambda x, **k: ember.mode(x, **k).indices,
        _mode_samples,
        lambda x, **k: x.mode(**k).indices,
        grad=False,
    ),
    _lp_pool_row(1),
    _lp_pool_row(2),
    _lp_pool_row(3),
    OpRow(
        "pixel_shuffle",
        ("reshape", "permute"),
        lambda x, r: ember.nn.functional.pixel_shuffle(x, r),
        _pixel_samples,
        lambda x, r: _t("nn.functional.pixel_shuffle")(x, r),
        gradgrad=True,
        errors=(
            ErrorCase(
                (np.ones((1, 5, 2, 2)), 2), {}, RuntimeError, r"input.size\(-3\)=5 is not div"
            ),
            ErrorCase((np.ones((4, 2)), 2), {}, RuntimeError, "at least 3 dimensions"),
        ),
    ),
    OpRow(
        "pixel_unshuffle",
        ("reshape", "permute"),
        lambda x, r: ember.pixel_unshuffle(x, r),
        _unpixel_samples,
        lambda x, r: _t("pixel_unshuffle")(x, r),
        errors=(
            ErrorCase((np.ones((1, 1, 3, 4)), 2), {}, RuntimeError, "height to be divisible by"),
        ),
    ),
    OpRow(
        "instance_norm",
        ("batch_norm_train", "rsqrt"),
        _instance_norm(lambda: ember.nn.functional),
        _instance_norm_samples,
        _instance_norm(lambda: _t_module("nn.functional")),
        const_args=(3, 4),
        atol=1e-4,
        errors=(
            ErrorCase(
                (np.ones((2, 3, 1)), None, None, None, None),
                {},
                ValueError,
                "more than 1 spatial element",
            ),
        ),
    ),
    OpRow(
        "local_response_norm",
        ("conv2d", "pad", "pow"),
        lambda x, size, **k: ember.nn.functional.local_response_norm(x, size, **k),
        _lrn_samples,
        lambda x, size, **k: _t("nn.functional.local_response_norm")(x, size, **k),
        errors=(ErrorCase((np.ones((2, 3)), 2), {}, RuntimeError, "3D or higher"),),
    ),
    OpRow(
        "cosine_similarity",
        ("sum", "sqrt", "clamp", "div"),
        lambda a, b, **k: ember.cosine_similarity(a, b, **k),
        _cosine_samples,
        lambda a, b, **k: _t("cosine_similarity")(a, b, **k),
        gradgrad=True,
        errors=(_BROADCAST_ERROR,),
    ),
    OpRow(
        "pairwise_distance",
        ("sub", "sum", "sqrt", "abs", "pow"),
        lambda a, b, **k: ember.nn.functional.pairwise_distance(a, b, **k),
        _pairwise_samples,
        lambda a, b, **k: _t("nn.functional.pairwise_distance")(a, b, **k),
    ),
    OpRow(
        "pdist",
        ("getitem", "sub", "sum", "sqrt", "abs", "pow", "amax"),
        lambda x, **k: ember.pdist(x, **k),
        _pdist_samples,
        lambda x, **k: _t("pdist")(x, **k),
        errors=(
            ErrorCase((np.ones((2, 3, 4)),), {}, RuntimeError, "pdist only supports 2D"),
            ErrorCase((np.ones((2, 3)),), {"p": -1}, RuntimeError, "non-negative p"),
        ),
    ),
    OpRow(
        "cdist",
        ("sub", "sum", "sqrt", "abs", "pow", "amax", "matmul", "clamp"),
        lambda a, b, **k: ember.cdist(a, b, **k),
        _cdist_samples,
        lambda a, b, **k: _t("cdist")(a, b, **k),
        errors=(
            ErrorCase(
                (np.ones((2, 3)), np.ones((2, 4))), {}, RuntimeError, "same number of columns"
            ),
            ErrorCase((np.ones(3), np.ones((2, 3))), {}, RuntimeError, "at least 2D"),
        ),
    ),
]
ROWS.extend(_ISSUE18B_ROWS)


# --- issue 18 (ops18b): linear algebra (ember/ops/linalg_ext.py) ------------------------------
def _well_conditioned(rng, *shape):
    n = shape[-1]
    return _r(rng, *shape) + 3 * np.eye(n)


def _spd_array(rng, n):
    x = _r(rng, n, n)
    return x @ x.T + 3 * np.eye(n)


def _square_samples(rng):
    return [
        Sample((_well_conditioned(rng, 4, 4),), name="4x4"),
        Sample((_well_conditioned(rng, 2, 3, 3),), name="batch"),
        Sample((_well_conditioned(rng, 3, 3),), noncontiguous=True, name="noncontiguous"),
        Sample((_well_conditioned(rng, 1, 1),), name="1x1"),
    ]


def _solve_samples(rng):
    return [
        Sample((_well_conditioned(rng, 4, 4), _r(rng, 4, 2)), name="matrix"),
        Sample((_well_conditioned(rng, 3, 3), _r(rng, 3)), name="vector"),
        Sample((_well_conditioned(rng, 2, 3, 3), _r(rng, 3, 2)), name="broadcast-b"),
        Sample((_well_conditioned(rng, 3, 3), _r(rng, 2, 3, 1)), name="broadcast-a"),
        Sample((_well_conditioned(rng, 3, 3), _r(rng, 2, 3)), {"left": False}, name="right"),
        Sample((_well_conditioned(rng, 4, 4), _r(rng, 4, 3)), noncontiguous=True, name="nonc"),
    ]


def _rect_samples(rng):
    return [
        Sample((_r(rng, 5, 3),), name="tall"),
        Sample((_r(rng, 3, 5),), name="wide"),
        Sample((_r(rng, 2, 4, 4),), name="batch-square"),
        Sample((_r(rng, 4, 3),), noncontiguous=True, name="noncontiguous"),
    ]


def _spd(lib, x):
    return x @ x.mT + 3 * lib.eye(x.shape[-1], dtype=x.dtype)


def _sym(x):
    return (x + x.mT) * 0.5


def _lib(module):
    """`ember` or `torch` by the tensor's type, for functions written once for both."""

    def pick(x):
        if isinstance(x, ember.Tensor):
            return ember
        import torch

        return torch

    return pick(module)


_SQUARE_ERRORS = (
    ErrorCase((np.ones((2, 3)),), {}, RuntimeError, "must be batches of square matrices"),
    ErrorCase((np.ones(3),), {}, RuntimeError, "at least 2 dimensions"),
)

_LINALG_ROWS = [
    OpRow(
        "linalg_solve",
        ("linalg_solve",),
        lambda a, b, **k: ember.linalg.solve(a, b, **k),
        _solve_samples,
        lambda a, b, **k: _t("linalg.solve")(a, b, **k),
        gradgrad=True,
        atol=1e-4,
        errors=(
            ErrorCase(
                (np.zeros((3, 3)), np.ones((3, 1))), {}, RuntimeError, "linalg.solve: the solver"
            ),
            ErrorCase((np.eye(3), np.ones((4, 1))), {}, RuntimeError, "incompatible shapes"),
        ),
    ),
    OpRow(
        "linalg_inv",
        ("linalg_solve",),
        lambda a: ember.linalg.inv(a),
        _square_samples,
        lambda a: _t("linalg.inv")(a),
        gradgrad=True,
        atol=1e-4,
        errors=_SQUARE_ERRORS
        + (
            ErrorCase(
                (np.array([[1, 2], [3, 4]]),), {}, TypeError, "expected a float32 or float64"
            ),
        ),
        int_args=(),
    ),
    OpRow(
        "linalg_det",
        ("linalg_det",),
        lambda a: ember.linalg.det(a),
        _square_samples,
        lambda a: _t("linalg.det")(a),
        gradgrad=True,
        atol=1e-4,
        rtol=1e-4,
        errors=_SQUARE_ERRORS,
    ),
    OpRow(
        "linalg_slogdet",
        ("linalg_slogdet",),
        lambda a: ember.linalg.slogdet(a).logabsdet,
        _square_samples,
        lambda a: _t("linalg.slogdet")(a).logabsdet,
        atol=1e-4,
    ),
    OpRow(
        "linalg_slogdet_sign",
        ("linalg_slogdet",),
        lambda a: ember.linalg.slogdet(-a).sign,
        _square_samples,
        lambda a: _t("linalg.slogdet")(-a).sign,
        grad=False,
    ),
    OpRow(
        "linalg_cholesky",
        ("linalg_cholesky", "linalg_solve"),
        lambda x, **k: ember.linalg.cholesky(_spd(ember, x), **k),
        lambda rng: [
            Sample((_r(rng, 4, 4),), name="4x4"),
            Sample((_r(rng, 2, 3, 3),), {"upper": True}, name="batch-upper"),
            Sample((_r(rng, 3, 3),), noncontiguous=True, name="noncontiguous"),
        ],
        lambda x, **k: _t("linalg.cholesky")(_spd(_lib(x), x), **k),
        gradgrad=True,
        atol=1e-4,
    ),
    OpRow(
        "linalg_cholesky_raw",
        ("linalg_cholesky",),
        lambda x: ember.linalg.cholesky(x),
        lambda rng: [Sample((_spd_array(rng, 3),))],
        lambda x: _t("linalg.cholesky")(x),
        grad=False,  # reads the lower triangle only: checked through the symmetric rows above
        atol=1e-4,
        errors=(
            ErrorCase((-np.eye(3),), {}, RuntimeError, "linalg.cholesky: .*not positive-definite"),
        ),
    ),
    OpRow(
        "linalg_eigh_values",
        ("linalg_eigh",),
        lambda x, **k: ember.linalg.eigh(_sym(x), **k).eigenvalues,
        lambda rng: [
            Sample((_r(rng, 4, 4),), name="4x4"),
            Sample((_r(rng, 2, 3, 3),), {"UPLO": "U"}, name="batch-upper"),
            Sample((_r(rng, 3, 3),), noncontiguous=True, name="noncontiguous"),
        ],
        lambda x, **k: _t("linalg.eigh")(_sym(x), **k).eigenvalues,
        atol=1e-4,
    ),
    OpRow(
        "linalg_eigh_vectors",
        ("linalg_eigh",),
        lambda x: ember.linalg.eigh(_sym(x)).eigenvectors ** 2,  # free of the signs
        lambda rng: [Sample((_r(rng, 4, 4),), name="4x4"), Sample((_r(rng, 2, 3, 3),))],
        lambda x: _t("linalg.eigh")(_sym(x)).eigenvectors ** 2,
        atol=1e-4,
    ),
    OpRow(
        "linalg_svd_values",
        ("linalg_svd",),
        lambda x: ember.linalg.svdvals(x),
        _rect_samples,
        lambda x: _t("linalg.svdvals")(x),
        atol=1e-4,
        errors=(ErrorCase((np.ones(3),), {}, RuntimeError, "at least 2 dimensions"),),
    ),
    OpRow(
        "linalg_svd_vectors",
        ("linalg_svd",),
        lambda x, **k: _svd_invariant(ember.linalg.svd(x, **k)),
        lambda rng: [
            Sample((_r(rng, 5, 3),), {"full_matrices": False}, name="tall"),
            Sample((_r(rng, 3, 5),), {"full_matrices": False}, name="wide"),
            Sample((_r(rng, 4, 3),), {"full_matrices": True}, name="tall-full"),
            Sample((_r(rng, 2, 3, 4),), {"full_matrices": True}, name="wide-full-batch"),
            Sample((_r(rng, 3, 3),), {"full_matrices": False}, noncontiguous=True, name="nonc"),
        ],
        lambda x, **k: _svd_invariant(_t("linalg.svd")(x, **k)),
        atol=1e-4,
    ),
    OpRow(
        "linalg_qr",
        ("linalg_qr", "linalg_solve"),
        lambda x, **k: _qr_both(ember.linalg.qr(x, **k)),
        lambda rng: [
            Sample((_r(rng, 5, 3),), name="tall"),
            Sample((_r(rng, 3, 5),), name="wide"),
            Sample((_r(rng, 2, 3, 3),), name="batch-square"),
            Sample((_r(rng, 3, 4),), {"mode": "complete"}, name="wide-complete"),
            Sample((_r(rng, 4, 3),), noncontiguous=True, name="noncontiguous"),
        ],
        lambda x, **k: _qr_both(_t("linalg.qr")(x, **k)),
        atol=1e-4,
        errors=(ErrorCase((np.ones((3, 3)),), {"mode": "full"}, ValueError, "mode must be"),),
    ),
    OpRow(
        "linalg_pinv",
        ("linalg_svd",),
        lambda x: ember.linalg.pinv(x),
        _rect_samples,
        lambda x: _t("linalg.pinv")(x),
        atol=1e-4,
    ),
    OpRow(
        "linalg_lstsq",
        ("linalg_svd",),
        lambda a, b: ember.linalg.lstsq(a, b).solution,
        lambda rng: [
            Sample((_r(rng, 5, 3), _r(rng, 5, 2)), name="tall"),
            Sample((_r(rng, 2, 4, 4) + 3 * np.eye(4), _r(rng, 2, 4, 1)), name="batch-square"),
        ],
        lambda a, b: _t("linalg.lstsq")(a, b).solution,
        atol=1e-4,
    ),
    OpRow(
        "linalg_matrix_norm",
        ("linalg_svd", "sum", "amax", "abs"),
        lambda x, **k: ember.linalg.matrix_norm(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {"ord": "fro"}, name="fro"),
            Sample((_r(rng, 3, 4),), {"ord": "nuc"}, name="nuc"),
            Sample((_r(rng, 2, 3, 4),), {"ord": 2}, name="2"),
            Sample((_r(rng, 4, 3),), {"ord": -2, "keepdim": True}, name="-2"),
            Sample((_r(rng, 3, 4),), {"ord": 1}, name="1"),
            Sample((_r(rng, 3, 4),), {"ord": float("-inf")}, name="-inf"),
            Sample((_r(rng, 2, 3, 4),), {"ord": float("inf"), "dim": (0, 2)}, name="inf-dims"),
        ],
        lambda x, **k: _t("linalg.matrix_norm")(x, **k),
        atol=1e-4,
    ),
    OpRow(
        "linalg_vector_norm",
        ("sum", "sqrt", "abs", "pow", "amax"),
        lambda x, **k: ember.linalg.vector_norm(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}, name="2-all"),
            Sample((_r(rng, 3, 4),), {"ord": 1, "dim": 1}, name="1"),
            Sample((_r(rng, 3, 4),), {"ord": 3.5, "dim": (0, 1), "keepdim": True}, name="3.5"),
            Sample((_r(rng, 3, 4),), {"ord": float("inf"), "dim": 0}, name="inf"),
            Sample((_r(rng, 3, 4),), {"ord": -1.5, "dim": 1}, name="-1.5"),
            Sample((_r(rng, 4, 3),), {"ord": 2, "dim": -1}, noncontiguous=True, name="nonc"),
        ],
        lambda x, **k: _t("linalg.vector_norm")(x, **k),
    ),
    OpRow(
        "linalg_norm",
        ("sum", "sqrt", "linalg_svd"),
        lambda x, **k: ember.linalg.norm(x, **k),
        lambda rng: [
            Sample((_r(rng, 3, 4),), {}, name="default"),
            Sample((_r(rng, 3, 4),), {"ord": "nuc"}, name="nuc"),
            Sample((_r(rng, 4),), {"ord": 1}, name="vector-1"),
            Sample((_r(rng, 2, 3, 4),), {"dim": 1}, name="dim"),
        ],
        lambda x, **k: _t("linalg.norm")(x, **k),
        atol=1e-4,
    ),
    OpRow(
        "linalg_cross",
        ("cat", "mul", "sub"),
        lambda a, b, **k: ember.linalg.cross(a, b, **k),
        lambda rng: [
            Sample((_r(rng, 4, 3), _r(rng, 4, 3)), name="rows"),
            Sample((_r(rng, 3, 2), _r(rng, 3, 1)), {"dim": 0}, name="dim0-broadcast"),
        ],
        lambda a, b, **k: _t("linalg.cross")(a, b, **k),
        errors=(
            ErrorCase((np.ones((2, 4)), np.ones((2, 4))), {}, RuntimeError, "must have length 3"),
        ),
    ),
    OpRow(
        "linalg_matrix_power",
        ("matmul", "linalg_solve"),
        lambda a, n: ember.linalg.matrix_power(a, n),
        lambda rng: [
            Sample((_well_conditioned(rng, 3, 3) / 3, 3), name="3"),
            Sample((_well_conditioned(rng, 2, 3, 3) / 3, -2), name="-2"),
            Sample((_r(rng, 3, 3), 0), name="0"),
        ],
        lambda a, n: _t("linalg.matrix_power")(a, n),
        atol=1e-4,
    ),
    OpRow(
        "linalg_solve_triangular",
        ("linalg_solve", "triu", "tril"),
        lambda a, b, **k: ember.linalg.solve_triangular(a, b, **k),
        lambda rng: [
            Sample((_well_conditioned(rng, 3, 3), _r(rng, 3, 2)), {"upper": True}, name="upper"),
            Sample(
                (_well_conditioned(rng, 3, 3), _r(rng, 2, 3)),
                {"upper": False, "left": False, "unitriangular": True},
                name="lower-right-unit",
            ),
        ],
        lambda a, b, **k: _t("linalg.solve_triangular")(a, b, **k),
        atol=1e-4,
    ),
    OpRow(
        "kron",
        ("mul", "reshape"),
        lambda a, b: ember.kron(a, b),
        lambda rng: [
            Sample((_r(rng, 2, 3), _r(rng, 3, 2)), name="2d"),
            Sample((_r(rng, 2, 2, 2), _r(rng, 3)), name="mixed-ndim"),
        ],
        lambda a, b: _t("kron")(a, b),
    ),
    OpRow(
        "tensordot",
        ("matmul", "permute", "reshape"),
        lambda a, b, **k: ember.tensordot(a, b, **k),
        lambda rng: [
            Sample((_r(rng, 2, 3, 4), _r(rng, 3, 4, 5)), {"dims": 2}, name="int"),
            Sample((_r(rng, 3, 2, 4), _r(rng, 4, 3)), {"dims": ([0, 2], [1, 0])}, name="lists"),
        ],
        lambda a, b, **k: _t("tensordot")(a, b, **k),
        errors=(
            ErrorCase(
                (np.ones((2, 3)), np.ones((4, 2))), {"dims": 1}, RuntimeError, "need to match"
            ),
        ),
    ),
    OpRow(
        "matrix_products",
        ("matmul", "mul", "add", "sum"),
        lambda c, a, b, v: (
            ember.addmm(c, a, b, beta=0.5, alpha=2.0)
            + ember.addmv(c[0], a, v).unsqueeze(0)
            + ember.addr(c, a[:, 0], b[0], alpha=3.0)
            + a.trace()
            + ember.inner(a, b.mT)
            + ember.mv(a, v).unsqueeze(1)
            + ember.dist(a, b.mT, 3)
            + ember.vdot(v, v)
        ),
        lambda rng: [Sample((_r(rng, 3, 3), _r(rng, 3, 3), _r(rng, 3, 3), _r(rng, 3)))],
        lambda c, a, b, v: (
            _t("addmm")(c, a, b, beta=0.5, alpha=2.0)
            + _t("addmv")(c[0], a, v).unsqueeze(0)
            + _t("addr")(c, a[:, 0], b[0], alpha=3.0)
            + a.trace()
            + _t("inner")(a, b.mT)
            + _t("mv")(a, v).unsqueeze(1)
            + _t("dist")(a, b.mT, 3)
            + _t("vdot")(v, v)
        ),
    ),
    OpRow(
        "batch_matrix_products",
        ("matmul", "mul", "add", "sum"),
        lambda c, a, b: ember.baddbmm(c, a, b, beta=2.0) + ember.addbmm(c[0], a, b, alpha=0.5),
        lambda rng: [Sample((_r(rng, 2, 3, 4), _r(rng, 2, 3, 5), _r(rng, 2, 5, 4)))],
        lambda c, a, b: _t("baddbmm")(c, a, b, beta=2.0) + _t("addbmm")(c[0], a, b, alpha=0.5),
    ),
]

_LINALG_ROWS += [
    OpRow(
        "block_diag",
        ("cat",),
        lambda a, b, c: ember.block_diag(a, b, c),
        lambda rng: [Sample((_r(rng, 2, 3), _r(rng, 4), np.array(1.5)))],
        lambda a, b, c: _t("block_diag")(a, b, c),
        errors=(
            ErrorCase((np.ones((2, 2, 2)), np.ones(2), np.ones(1)), {}, RuntimeError, "2 or fewer"),
        ),
    ),
    OpRow(
        "cartesian_prod",
        ("reshape", "expand", "cat"),
        lambda a, b: ember.cartesian_prod(a, b),
        lambda rng: [Sample((_r(rng, 3), _r(rng, 2)))],
        lambda a, b: _t("cartesian_prod")(a, b),
    ),
    OpRow(
        "vander",
        ("pow",),
        lambda x, **k: ember.vander(x, **k),
        lambda rng: [
            Sample((_r(rng, 4),), {"N": 3}, name="decreasing"),
            Sample((_r(rng, 3),), {"increasing": True}, name="increasing"),
        ],
        # torch.vander's own backward fails (an in-place cumprod): its linalg form is the check
        lambda x, N=None, increasing=False: (
            _t("linalg.vander")(x, N=N).flip(-1) if not increasing else _t("linalg.vander")(x, N=N)
        ),
    ),
    OpRow(
        "diagflat",
        ("pad", "reshape", "cat"),
        lambda x, **k: ember.diagflat(x, **k),
        lambda rng: [
            Sample((_r(rng, 2, 2),), name="matrix"),
            Sample((_r(rng, 3),), {"offset": -1}, name="below"),
        ],
        lambda x, **k: _t("diagflat")(x, **k),
    ),
    OpRow(
        "linalg_tensorinv",
        ("linalg_solve",),
        lambda a: ember.linalg.tensorinv(a, ind=1),
        lambda rng: [Sample((_well_conditioned(rng, 4, 4).reshape(4, 2, 2),))],
        lambda a: _t("linalg.tensorinv")(a, ind=1),
        atol=1e-4,
    ),
]


def _svd_invariant(usv):
    """U diag(S) Vh with the signs of the singular vectors cancelled: the product of the
    first k columns and rows, and the squares of U's (torch and LAPACK may pick other signs)."""
    u, s, vh = usv
    k = s.shape[-1]
    product = (u[..., :k] * s.unsqueeze(-2)) @ vh[..., :k, :]
    squares = u[..., :k] ** 2
    return product.reshape(tuple(product.shape[:-2]) + (-1,)).sum(-1) + squares.sum((-2, -1))


def _qr_both(qr):
    q, r = qr
    return q.reshape(tuple(q.shape[:-2]) + (-1,)).sum(-1) * 0.5 + r.sum((-2, -1))


ROWS.extend(_LINALG_ROWS)


def rows_by_name() -> dict:
    return {row.name: row for row in ROWS}


def covered_ops() -> set:
    return {op for row in ROWS for op in row.ops}


def row_rng(row: OpRow) -> np.random.Generator:
    """The generator a row's samples are drawn from (Note [Op table]): seeded by its name."""
    return np.random.default_rng(zlib.crc32(row.name.encode()))
