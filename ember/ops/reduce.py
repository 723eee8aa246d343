"""Reduction primitives (sum, prod, amax, amin, argmax, argmin, all, any, cumsum, cumprod) and
their composites (mean, var, std, logsumexp, max/min with indices).

Note [Reduction dims]: wrappers canonicalise `dim` to a sorted tuple of non-negative ints, or
None for all dims, so attributes are hashable and rules see one form.
"""

from __future__ import annotations

import builtins

from ember import dtypes as _dt
from ember._util.errors import (
    DTypeError,
    IndexOutOfRange,
    ShapeIndexError,
    at_user_line,
)
from ember.ops.elementwise import _LATE
from ember.ops.registry import (
    REGISTRY,
    apply,
    bool_dtype,
    defop,
    int64_dtype,
    onnx_lowering,
    public,
    same_dtype,
)

__all__ = [
    "sum",
    "prod",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "all",
    "any",
    "cumsum",
    "cumprod",
    "mean",
    "var",
    "std",
    "norm",
    "sqrt_zero_safe",
    "logsumexp",
    "max",
    "min",
    "normalize_dims",
]


def normalize_dims(dim, ndim: int, op: str = "reduce"):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        d = int(d)
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexOutOfRange(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
        out.append(d % builtins.max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dims} repeats a dimension")
    return tuple(sorted(out))


def _axis(dim, ndim):
    if dim is None or not ndim:
        return None
    if dim and builtins.max(dim) < ndim:
        return dim
    return tuple(d for d in dim if d < ndim)


def _reduced_shape(shape, dim=None, keepdim=False, **attrs):
    if dim is None:
        return tuple(1 for _ in shape) if keepdim else ()
    if not shape:
        return ()
    return tuple(1 if i in dim else n for i, n in enumerate(shape) if keepdim or i not in dim)


def _sum_dtype(dtype, **attrs):
    return dtype if dtype.is_floating_point else _dt.int64


def _expand_back(g, x, dim, keepdim):
    """Broadcast a reduced gradient back over the reduced dims of `x`."""
    if dim is None and not keepdim and x.shape:  # a 0-d gradient broadcasts as it is
        return apply(_LATE.EXPAND, g, shape=tuple(x.shape))
    if not keepdim:
        g = g.reshape(_reduced_shape(x.shape, dim, True))
    return g.expand(tuple(x.shape))


# Note [Half-precision accumulation]: as in PyTorch, float16 reductions and normalisations
# accumulate in float32 and round once at the end: the sum of 4,096 x 20.0 is 81,920 (inf
# in float16 only because the result is), and mean, var, std, norm, softmax and layer_norm of
# float16 inputs compute in float32 and return float16, so no partial sum overflows.
def _sum_forward(xp, x, dim, keepdim):
    if x.dtype == xp.float16:
        return _half_sum(xp, x, dim, keepdim)
    dtype = None if x.dtype.kind == "f" else xp.int64
    return xp.sum(x, axis=_axis(dim, x.ndim), keepdims=keepdim, dtype=dtype)


def _half_sum_kernel(xp, x, dim, keepdim):
    out = xp.sum(x, axis=_axis(dim, x.ndim), keepdims=keepdim, dtype=xp.float32)
    return xp.asarray(out).astype(xp.float16)  # inf where the sum is out of range


def _half_sum(xp, x, dim, keepdim):
    from ember.backend.numpy_backend import quiet

    return quiet(_half_sum_kernel)(xp, x, dim, keepdim)


SUM = defop(
    "sum",
    _sum_forward,
    lambda g, y, x, dim, keepdim: (_expand_back(g, x, dim, keepdim),),
    shape=_reduced_shape,
    dtype=_sum_dtype,
    save_inputs=False,
    # fused reductions (Note [Fusion]): the float64 accumulator's start and its update
    template=("0.0", "{acc} += {0}"),
)


@SUM.def_kernel("numpy")
def _sum_numpy(xp, x, dim, keepdim):
    """np.sum's own reduction (add.reduce) without its Python wrappers (small tensors)."""
    if x.dtype == xp.float16:
        return _half_sum(xp, x, dim, keepdim)
    dtype = None if x.dtype.kind == "f" else xp.int64
    return xp.add.reduce(x, _axis(dim, x.ndim), dtype, None, keepdim)


def _prod_forward(xp, x, dim, keepdim):
    dtype = None if x.dtype.kind == "f" else xp.int64
    return xp.prod(x, axis=_axis(dim, x.ndim), keepdims=keepdim, dtype=dtype)


def _prod_vjp(g, y, x, dim, keepdim):
    # The product of all other elements, without dividing (exact when x has zeros): exclusive
    # cumulative products from the left and from the right.
    if not x.shape:  # a 0-d product is its input
        return (g,)
    if dim is None:
        flat = x.reshape(-1)
        return (_expand_back(g, x, None, keepdim) * _others_product(flat, 0).reshape(x.shape),)
    (d,) = dim
    return (_expand_back(g, x, dim, keepdim) * _others_product(x, d),)


def _others_product(x, d):
    from ember.ops.shape import cat, flip, narrow

    n = x.shape[d]
    if n == 1:
        return x * 0 + 1
    ones = x.narrow(d, 0, 1) * 0 + 1
    left = cat([ones, cumprod(narrow(x, d, 0, n - 1), d)], d)
    right = flip(cat([ones, cumprod(narrow(flip(x, (d,)), d, 0, n - 1), d)], d), (d,))
    return left * right


PROD = defop("prod", _prod_forward, _prod_vjp, shape=_reduced_shape, dtype=_sum_dtype)


def _extreme_vjp(g, y, x, dim, keepdim):
    # amax/amin spread the gradient evenly over ties (as PyTorch's amax and max() do).
    y_full = _expand_back(y, x, dim, keepdim)
    mask = (x == y_full).to(g.dtype)
    count = mask.sum(dim, keepdim=True)
    return (_expand_back(g, x, dim, keepdim) * mask / count,)


AMAX = defop(
    "amax",
    lambda xp, x, dim, keepdim: xp.max(x, axis=_axis(dim, x.ndim), keepdims=keepdim),
    _extreme_vjp,
    shape=_reduced_shape,
    dtype=same_dtype,
    save_output=True,
    template=("-np.inf", "if {acc} == {acc} and not ({0} <= {acc}): {acc} = {0}"),
)
AMIN = defop(
    "amin",
    lambda xp, x, dim, keepdim: xp.min(x, axis=_axis(dim, x.ndim), keepdims=keepdim),
    _extreme_vjp,
    shape=_reduced_shape,
    dtype=same_dtype,
    save_output=True,
    template=("np.inf", "if {acc} == {acc} and not ({0} >= {acc}): {acc} = {0}"),
)


def _arg_forward(fn):
    def forward(xp, x, dim, keepdim):
        if dim is None:
            r = getattr(xp, fn)(x.reshape(-1))
            return xp.asarray(r, dtype=xp.int64).reshape((1,) * x.ndim if keepdim else ())
        return getattr(xp, fn)(x, axis=dim[0] if x.ndim else None, keepdims=keepdim).astype(
            xp.int64, copy=False
        )

    return forward


ARGMAX = defop("argmax", _arg_forward("argmax"), shape=_reduced_shape, dtype=int64_dtype)
ARGMIN = defop("argmin", _arg_forward("argmin"), shape=_reduced_shape, dtype=int64_dtype)
ALL = defop(
    "all",
    lambda xp, x, dim, keepdim: xp.all(x, axis=_axis(dim, x.ndim), keepdims=keepdim),
    shape=_reduced_shape,
    dtype=bool_dtype,
)
ANY = defop(
    "any",
    lambda xp, x, dim, keepdim: xp.any(x, axis=_axis(dim, x.ndim), keepdims=keepdim),
    shape=_reduced_shape,
    dtype=bool_dtype,
)


# ONNX lowerings of the reductions (Note [ONNX lowerings] in ember.ops.registry)
def _onnx_reduction(onnx_type, via=None):
    def lower(b, x, dim, keepdim):
        x_var = b.ins[0]
        if via is not None:  # all/any: reduce 0/1 integers, then back to bool
            x = b.op("Cast", x, to=b.onnx_type(via))
        elif x_var.dtype != b.out.dtype:  # integer sums accumulate in int64
            x = b.op("Cast", x, to=b.onnx_type(b.out.dtype))
        if x_var.ndim == 0:
            out = b.op("Identity", x)
        else:
            axes = list(range(x_var.ndim)) if dim is None else list(dim)
            out = b.reduce(onnx_type, x, axes, keepdim)
        return b.op("Cast", out, to=b.onnx_type("bool")) if via is not None else out

    return lower


REGISTRY["sum"].onnx = _onnx_reduction("ReduceSum")
REGISTRY["prod"].onnx = _onnx_reduction("ReduceProd")
REGISTRY["amax"].onnx = _onnx_reduction("ReduceMax")
REGISTRY["amin"].onnx = _onnx_reduction("ReduceMin")
REGISTRY["all"].onnx = _onnx_reduction("ReduceMin", via="int32")
REGISTRY["any"].onnx = _onnx_reduction("ReduceMax", via="int32")


def _onnx_arg(onnx_type):
    def lower(b, x, dim, keepdim):
        if dim is None or b.ins[0].ndim == 0:
            flat = b.op("Reshape", x, b.ints([-1]))
            out = b.op(onnx_type, flat, axis=0, keepdims=0)
            return b.op("Reshape", out, b.ints([1] * b.ins[0].ndim if keepdim else []))
        return b.op(onnx_type, x, axis=dim[0], keepdims=int(keepdim))

    return lower


REGISTRY["argmax"].onnx = _onnx_arg("ArgMax")
REGISTRY["argmin"].onnx = _onnx_arg("ArgMin")


def _cum_shape(shape, dim):
    return tuple(shape)


def _cumsum_forward(xp, x, dim):
    dtype = None if x.dtype.kind == "f" else xp.int64
    return xp.cumsum(x, axis=dim if x.ndim else None, dtype=dtype).reshape(x.shape)


def _reverse_cumsum(g, dim):
    from ember.ops.shape import flip

    return flip(cumsum(flip(g, (dim,)), dim), (dim,))


CUMSUM = defop(
    "cumsum",
    _cumsum_forward,
    lambda g, y, x, dim: (_reverse_cumsum(g, dim) if g.ndim else g,),
    shape=_cum_shape,
    dtype=_sum_dtype,
    save_inputs=False,
)


@onnx_lowering("cumsum")
def _cumsum_onnx(b, x, dim):
    if b.ins[0].dtype != b.out.dtype:
        x = b.op("Cast", x, to=b.onnx_type(b.out.dtype))
    if b.ins[0].ndim == 0:
        return b.op("Identity", x)
    return b.op("CumSum", x, b.const(dim, "int64"))


def _cumprod_forward(xp, x, dim):
    dtype = None if x.dtype.kind == "f" else xp.int64
    return xp.cumprod(x, axis=dim if x.ndim else None, dtype=dtype).reshape(x.shape)


CUMPROD = defop(
    "cumprod",
    _cumprod_forward,
    # d/dx_i of y_j = y_j / x_i for i <= j (inputs assumed non-zero here; `prod`
    # does not rely on this rule for its zero-safe gradient)
    lambda g, y, x, dim: ((_reverse_cumsum(g * y, dim) / x) if g.ndim else g,),
    shape=_cum_shape,
    dtype=_sum_dtype,
    save_output=True,
)


@onnx_lowering("cumprod")
def _cumprod_onnx(b, x, dim):
    """ONNX has no cumulative product; a Scan multiplies step by step along `dim` as NumPy's
    cumprod does (Note [ONNX loops] in ember.onnx), so the products are the same."""
    if b.ins[0].dtype != b.out.dtype:
        x = b.op("Cast", x, to=b.onnx_type(b.out.dtype))
    shapes = b.shapes_of(b.ins[0])
    if b.ins[0].ndim == 0 or builtins.all(s[dim] == 0 for s in shapes):
        return b.op("Identity", x)
    rest = b.ints_across([list(s[:dim]) + list(s[dim + 1 :]) for s in shapes])
    one = b.op("Cast", b.op("ConstantOfShape", rest), to=b.onnx_type(b.out.dtype))
    one = b.op("Add", one, b.const(1, b.out.dtype))

    def body(state, x_t):
        product = b.op("Mul", state, x_t)
        return [product], [product]

    _, out = b.scan(body, [one], [x], [b.out.dtype], [b.out.dtype], [b.out.dtype],
                    input_axes=[dim], output_axes=[dim])  # fmt: skip
    return out


# --- wrappers -----------------------------------------------------------------------------------
def _norm(x, dim, op):
    return normalize_dims(dim, x.ndim, op)


@SUM.public("sum")
def sum(x, dim=None, keepdim=False, dtype=None):  # noqa: A001
    out = apply(SUM, x, dim=_norm(x, dim, "sum"), keepdim=bool(keepdim))
    return out if dtype is None else out.to(dtype)


@PROD.public("prod")
def prod(x, dim=None, keepdim=False, dtype=None):
    if dim is not None and not isinstance(dim, int):
        raise TypeError(f"prod: dim must be an int or None, got {dim!r}")
    out = apply(PROD, x, dim=_norm(x, dim, "prod"), keepdim=bool(keepdim))
    return out if dtype is None else out.to(dtype)


def nonempty_reduction(x, dims, op: str):
    """Refuse, as torch does (IndexError), a max-like reduction over a dim of size 0, or over
    every dim of an empty tensor; reducing a non-empty dim of an empty tensor gives an empty
    result. `dims` are normalized dims (None: all)."""
    if x.numel():
        return
    shape = tuple(x.shape)
    if dims is None:
        raise ShapeIndexError(
            f"{op}(): expected a reduction dim to be specified for an empty tensor of shape "
            f"{shape} (the result has no value); pass dim="
        )
    for d in dims:
        if shape and shape[d] == 0:
            raise ShapeIndexError(
                f"{op}(): expected reduction dim {d} to have non-zero size, got shape {shape}"
            )


@AMAX.public("amax")
def amax(x, dim=None, keepdim=False):
    dims = _norm(x, dim, "amax")
    nonempty_reduction(x, dims, "amax")
    return apply(AMAX, x, dim=dims, keepdim=bool(keepdim))


@AMIN.public("amin")
def amin(x, dim=None, keepdim=False):
    dims = _norm(x, dim, "amin")
    nonempty_reduction(x, dims, "amin")
    return apply(AMIN, x, dim=dims, keepdim=bool(keepdim))


@ARGMAX.public("argmax")
def argmax(x, dim=None, keepdim=False):
    if dim is not None and not isinstance(dim, int):
        raise TypeError(f"argmax: dim must be an int or None, got {dim!r}")
    dims = _norm(x, dim, "argmax")
    nonempty_reduction(x, dims, "argmax")
    return apply(ARGMAX, x, dim=dims, keepdim=bool(keepdim))


@ARGMIN.public("argmin")
def argmin(x, dim=None, keepdim=False):
    if dim is not None and not isinstance(dim, int):
        raise TypeError(f"argmin: dim must be an int or None, got {dim!r}")
    dims = _norm(x, dim, "argmin")
    nonempty_reduction(x, dims, "argmin")
    return apply(ARGMIN, x, dim=dims, keepdim=bool(keepdim))


@ALL.public("all")
def all(x, dim=None, keepdim=False):  # noqa: A001
    return apply(ALL, x, dim=_norm(x, dim, "all"), keepdim=bool(keepdim))


@ANY.public("any")
def any(x, dim=None, keepdim=False):  # noqa: A001
    return apply(ANY, x, dim=_norm(x, dim, "any"), keepdim=bool(keepdim))


@CUMSUM.public("cumsum")
def cumsum(x, dim, dtype=None):
    (d,) = normalize_dims(dim, x.ndim, "cumsum")
    out = apply(CUMSUM, x, dim=d)
    return out if dtype is None else out.to(dtype)


@CUMPROD.public("cumprod")
def cumprod(x, dim, dtype=None):
    (d,) = normalize_dims(dim, x.ndim, "cumprod")
    out = apply(CUMPROD, x, dim=d)
    return out if dtype is None else out.to(dtype)


def _count(x, dims):
    n = 1
    for d in range(x.ndim) if dims is None else dims:
        n *= x.shape[d]
    return n


def _is_half(x) -> bool:
    return x.dtype == _dt.float16


@public("mean")
def mean(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise DTypeError(
            f"mean: input dtype must be floating point, got {x.dtype}; "
            "pass dtype=ember.float32 or cast first"
        )
    if _is_half(x):  # Note [Half-precision accumulation]
        return mean(x.to(_dt.float32), dim, keepdim).to(x.dtype)
    dims = _norm(x, dim, "mean")
    return sum(x, dims, keepdim) / _count(x, dims)


@public("var")
def var(x, dim=None, correction=1, keepdim=False, unbiased=None):
    if unbiased is not None:
        correction = 1 if unbiased else 0
    if not x.dtype.is_floating_point:
        raise DTypeError(f"var: input dtype must be floating point, got {x.dtype}")
    if _is_half(x):  # Note [Half-precision accumulation]
        return var(x.to(_dt.float32), dim, correction, keepdim).to(x.dtype)
    dims = _norm(x, dim, "var")
    centered = x - mean(x, dims, keepdim=True)
    return sum(centered * centered, dims, keepdim) / (_count(x, dims) - correction)


def sqrt_zero_safe(s):
    """sqrt(s) for s >= 0 whose gradient is 0 where s == 0 (torch's norm and std backward),
    not 0 * inf = nan (Note [Zero-safe gradients] in ember/ops/elementwise.py)."""
    from ember.ops.elementwise import where

    nonzero = s != 0  # nan stays nan
    return where(nonzero, where(nonzero, s, 1.0).sqrt(), 0.0)


@public("std")
def std(x, dim=None, correction=1, keepdim=False, unbiased=None):
    if _is_half(x):  # Note [Half-precision accumulation]
        return std(x.to(_dt.float32), dim, correction, keepdim, unbiased).to(x.dtype)
    return sqrt_zero_safe(var(x, dim, correction, keepdim, unbiased))


@public("norm")
def norm(x, p=2, dim=None, keepdim=False):
    """The vector p-norm over `dim` (all elements for None), as `torch.norm`: p may be any
    number, inf, -inf, 0 (the count of non-zeros) or 'fro'. The gradient at a zero vector
    is 0, as in torch."""
    from ember.ops.elementwise import abs as abs_, where

    if _is_half(x):  # Note [Half-precision accumulation]
        return norm(x.to(_dt.float32), p, dim, keepdim).to(x.dtype)
    if p == "fro":
        p = 2
    if isinstance(p, str) or not isinstance(p, (int, float)):
        raise ValueError(f"norm: p must be a number or 'fro', got {p!r}")
    if p == 2:
        return sqrt_zero_safe((x * x).sum(dim, keepdim))
    if p == 1:
        return abs_(x).sum(dim, keepdim)
    if p == float("inf"):
        return abs_(x).amax(dim, keepdim)
    if p == float("-inf"):
        return abs_(x).amin(dim, keepdim)
    if p == 0:
        return (x != 0).to(x.dtype).sum(dim, keepdim)  # the count: no gradient, as torch
    total = (abs_(x) ** p).sum(dim, keepdim)
    nonzero = total != 0
    return where(nonzero, where(nonzero, total, 1.0) ** (1.0 / p), 0.0)


@public("logsumexp")
def logsumexp(x, dim, keepdim=False):
    from ember.ops.elementwise import isinf, where

    dims = _norm(x, dim, "logsumexp")
    m = amax(x, dims, keepdim=True).detach()
    m = where(isinf(m), 0.0, m)
    out = (x - m).exp().sum(dims, keepdim=True).log() + m
    return out if keepdim else out.reshape(_reduced_shape(x.shape, dims, False))


class _ValuesIndices(tuple):
    """(values, indices) with attribute access, like torch.return_types.max."""

    __slots__ = ()

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]

    def __repr__(self) -> str:
        return f"ember.return_types(\nvalues={self[0]!r},\nindices={self[1]!r})"


def _max_min(x, dim, keepdim, other, arg_fn, full_fn, name):
    from ember.ops.elementwise import maximum, minimum
    from ember.ops.shape import gather

    if other is not None:
        return (maximum if name == "max" else minimum)(x, other)
    if dim is None:
        nonempty_reduction(x, None, name)
        return full_fn(x)
    nonempty_reduction(x, normalize_dims(dim, x.ndim, name), name)
    idx = arg_fn(x, dim, keepdim=True)
    d = normalize_dims(dim, x.ndim, name)[0] if x.ndim else 0
    values = gather(x, d, idx) if x.ndim else x
    if not keepdim and x.ndim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return _ValuesIndices((values, idx))


@public("max")
def max(x, dim=None, keepdim=False, *, other=None):  # noqa: A001
    """max(x) -> value (gradient spread over ties); max(x, dim) -> (values, indices)."""
    if not isinstance(dim, (int, type(None))):  # max(a, b) elementwise, as torch.max(a, b)
        dim, other = None, dim
    return _max_min(x, dim, keepdim, other, argmax, amax, "max")


@public("min")
def min(x, dim=None, keepdim=False, *, other=None):  # noqa: A001
    if not isinstance(dim, (int, type(None))):
        dim, other = None, dim
    return _max_min(x, dim, keepdim, other, argmin, amin, "min")


@public("nansum")
def nansum(x, dim=None, keepdim=False, dtype=None):
    """sum treating NaN as zero (the gradient at a NaN is zero), as torch.nansum."""
    from ember.ops.elementwise import isnan, where

    if x.dtype.is_floating_point:
        x = where(isnan(x), 0.0, x)
    return sum(x, dim, keepdim, dtype)


@public("nanmean")
def nanmean(x, dim=None, keepdim=False, dtype=None):
    """mean over the non-NaN elements, as torch.nanmean (NaN where a slice has none)."""
    from ember.ops.elementwise import isnan

    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise DTypeError(f"nanmean: input dtype must be floating point, got {x.dtype}")
    count = sum((~isnan(x)).to(x.dtype), dim, keepdim)
    return nansum(x, dim, keepdim) / count


def _median(x, dim, keepdim, name, skip_nan):
    from ember.ops.elementwise import isnan, where
    from ember.ops.shape import argsort, gather

    if x.ndim == 0:
        return _ValuesIndices((x, x.new_zeros((), dtype=_dt.int64)))
    (d,) = normalize_dims(dim, x.ndim, name)
    n = x.shape[d]
    if n == 0:
        raise IndexOutOfRange(f"{name}: cannot take the median of an empty dim {d}")
    order = argsort(x, d, stable=True)  # NaN sorts last
    nan = isnan(x) if x.dtype.is_floating_point else None
    if skip_nan and nan is not None:  # the lower median of each slice's non-NaN values
        kept = n - sum(nan.to(_dt.int64), d, True)
        k = where(kept > 0, (kept - 1) // 2, (n - 1) // 2)  # all NaN: torch's middle NaN
        idx = gather(order, d, k)
    else:
        k = (n - 1) // 2
        idx = order.narrow(d, k, 1)
        if nan is not None:  # a NaN in the slice: the median is NaN, at the first NaN
            idx = where(any(nan, d, True), argmax(nan.to(_dt.int8), d, True), idx)
    values = gather(x, d, idx)
    if not keepdim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return _ValuesIndices((values, idx))


@public("median")
def median(x, dim=None, keepdim=False):
    """The lower median: median(x) -> value (NaN if any); median(x, dim) -> (values,
    indices), as torch.median; the gradient goes to the chosen element."""
    if dim is None:
        return _median(x.reshape(-1), 0, False, "median", False)[0]
    return _median(x, dim, keepdim, "median", False)


@public("nanmedian")
def nanmedian(x, dim=None, keepdim=False):
    """median ignoring NaN (NaN only where a slice is all NaN), as torch.nanmedian."""
    if dim is None:
        return _median(x.reshape(-1), 0, False, "nanmedian", True)[0]
    return _median(x, dim, keepdim, "nanmedian", True)


@public("mode")
def mode(x, dim=-1, keepdim=False):
    """(values, indices): the most frequent value along `dim` and the index of its last
    occurrence, as `torch.mode` on the CPU; among equally frequent values the smallest wins,
    and each NaN counts once (it never equals another). The gradient flows to the chosen
    element.

    Sorting does the counting (stable, so the last element of a run of equal values has the
    largest original index): the running count within each run peaks first at the end of the
    smallest most frequent run.

    Example:
        >>> import ember
        >>> values, indices = ember.tensor([[1.0, 2.0, 2.0], [3.0, 1.0, 3.0]]).mode(1)
        >>> values.tolist(), indices.tolist()
        ([2.0, 3.0], [2, 2])
    """
    import numpy as np

    from ember.ops.elementwise import where
    from ember.ops.shape import argsort, cat, gather

    if x.ndim == 0:
        return _ValuesIndices((x * 1, x.new_zeros((), dtype=_dt.int64)))
    (d,) = normalize_dims(dim, x.ndim, "mode")
    nonempty_reduction(x, (d,), "mode")
    n = x.shape[d]
    if x.numel() == 0:  # another dim is empty: an empty result, no sorting
        values = amax(x, d, keepdim)
        return _ValuesIndices((values, values.new_zeros(tuple(values.shape), dtype=_dt.int64)))
    order = argsort(x, d, stable=True)
    ordered = gather(x, d, order)
    first = ordered.narrow(d, 0, 1) == ordered.narrow(d, 0, 1)  # True (False for NaN)
    starts = cat([first | True, ordered.narrow(d, 1, n - 1) != ordered.narrow(d, 0, n - 1)], d)
    along = [1] * x.ndim
    along[d] = n
    position = x.new_tensor(np.arange(n).reshape(along), dtype=_dt.int64)
    run_start = cummax(where(starts, position, 0), d)[0]
    best = argmax(position - run_start, d, keepdim=True)  # the first longest run's end
    indices = gather(order, d, best)
    values = gather(x, d, indices)
    if not keepdim:
        values, indices = values.squeeze(d), indices.squeeze(d)
    return _ValuesIndices((values, indices))


# --- issue 18: std_mean / var_mean, cummax / cummin, logcumsumexp -------------------------------
def _moments_args(op, dim, unbiased, correction):
    """torch's std_mean/var_mean overloads: (x, unbiased), (x, dim, unbiased, keepdim) and
    (x, dim, *, correction, keepdim)."""
    if isinstance(dim, bool):  # std_mean(x, True): the old `unbiased` overload
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise ValueError(at_user_line(f"{op}: pass either unbiased or correction, not both"))
    if unbiased is not None:
        correction = 1 if unbiased else 0
    return dim, 1 if correction is None else correction


@public("var_mean", method=False)
def var_mean(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(variance, mean) over `dim` in one call, as `torch.var_mean`.

    Example:
        >>> import ember
        >>> v, m = ember.var_mean(ember.tensor([1.0, 2.0, 3.0, 4.0]))
        >>> round(v.item(), 4), m.item()
        (1.6667, 2.5)
    """
    dim, correction = _moments_args("var_mean", dim, unbiased, correction)
    return var(x, dim, correction, keepdim), mean(x, dim, keepdim)


@public("std_mean", method=False)
def std_mean(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(standard deviation, mean) over `dim` in one call, as `torch.std_mean`.

    Example:
        >>> import ember
        >>> s, m = ember.std_mean(ember.tensor([[1.0, 3.0], [2.0, 6.0]]), dim=1, correction=0)
        >>> s.tolist(), m.tolist()
        ([1.0, 2.0], [2.0, 4.0])
    """
    dim, correction = _moments_args("std_mean", dim, unbiased, correction)
    return std(x, dim, correction, keepdim), mean(x, dim, keepdim)


def _cum_extreme_index_forward(xp, x, dim, largest):
    # Note [Running extremes]: as torch's cummax/cummin, a tie moves the index to the later
    # element, and a NaN wins (the index of the latest NaN). An element is a candidate where it
    # equals the running extreme at its own position (or is NaN); the index at j is the last
    # candidate at or before j.
    if x.ndim == 0:
        return xp.zeros((), dtype=xp.int64)
    running = (xp.maximum if largest else xp.minimum).accumulate(x, axis=dim)
    candidate = x == running
    if x.dtype.kind == "f":
        candidate = candidate | xp.isnan(x)
    shape = [1] * x.ndim
    shape[dim] = x.shape[dim]
    positions = xp.arange(x.shape[dim], dtype=xp.int64).reshape(shape)
    return xp.maximum.accumulate(xp.where(candidate, positions, 0), axis=dim)


CUM_EXTREME_INDEX = defop(
    "cum_extreme_index",
    _cum_extreme_index_forward,
    shape=lambda s, dim, largest: tuple(s),
    dtype=int64_dtype,
    save_inputs=False,
    doc="The index of the running max (largest=True) or min along dim, ties to the later "
    "element, NaN winning (Note [Running extremes]); cummax/cummin gather with it.",
)


@onnx_lowering("cum_extreme_index")
def _cum_extreme_index_onnx(b, x, dim, largest):
    # Note [Running extremes] in O(n^2): element i counts for position j when i <= j
    import numpy as np

    shape = b.ins[0].shape
    if not shape:
        return b.const(0, "int64")
    if 0 in shape:
        return b.const(np.zeros(shape, np.int64))
    n = shape[dim]
    rank = len(shape)
    # x at axis `dim` against a new axis `dim + 1` (the positions j): mask[i, j] = i <= j
    tri = np.triu(np.ones((n, n), dtype=bool)).reshape((n, n) + (1,) * (rank - dim - 1))
    mask = b.const(tri, "bool")
    xi = b.op("Unsqueeze", x, b.ints([dim + 1]))
    kind = b.ins[0].dtype.kind
    if kind == "f":
        fill = float("-inf") if largest else float("inf")
    else:
        info = np.iinfo(b.ins[0].dtype)
        fill = int(info.min if largest else info.max)
    masked = b.op("Where", mask, xi, b.const(fill, b.ins[0].dtype))
    running = b.reduce("ReduceMax" if largest else "ReduceMin", masked, [dim], False)
    candidate = b.op("Equal", x, running)
    if kind == "f":
        candidate = b.op("Or", candidate, b.op("IsNaN", x))
    positions = b.const(np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (rank - dim - 1)))
    where = b.op("Where", candidate, positions, b.const(0, "int64"))
    spread = b.op("Where", mask, b.op("Unsqueeze", where, b.ints([dim + 1])), b.const(0, "int64"))
    return b.reduce("ReduceMax", spread, [dim], False)


def _cum_extreme(x, dim, largest, name):
    from ember.ops.shape import gather

    (d,) = normalize_dims(dim, x.ndim, name)
    if x.ndim == 0:
        return _ValuesIndices((x * 1, apply(CUM_EXTREME_INDEX, x, dim=0, largest=largest)))
    index = apply(CUM_EXTREME_INDEX, x, dim=d, largest=largest)
    return _ValuesIndices((gather(x, d, index), index))


@public("cummax")
def cummax(x, dim):
    """(values, indices) of the running maximum along `dim`, as `torch.cummax`: ties take the
    later index and NaN propagates; the gradient flows to the element each value came from.

    Example:
        >>> import ember
        >>> values, indices = ember.cummax(ember.tensor([1.0, 3.0, 2.0, 3.0]), dim=0)
        >>> values.tolist(), indices.tolist()
        ([1.0, 3.0, 3.0, 3.0], [0, 1, 1, 3])
    """
    return _cum_extreme(x, dim, True, "cummax")


@public("cummin")
def cummin(x, dim):
    """(values, indices) of the running minimum along `dim`, as `torch.cummin`."""
    return _cum_extreme(x, dim, False, "cummin")


def _logcumsumexp_forward(xp, x, dim):
    if x.ndim == 0:
        return x.copy()
    return xp.logaddexp.accumulate(x, axis=dim)


def _logcumsumexp_vjp(g, y, x, dim):
    # torch's rule (after TensorFlow's): the positive and negative parts of g in log space,
    # each summed from the right with logcumsumexp itself, so nothing overflows
    from ember.ops.elementwise import where
    from ember.ops.shape import flip

    if x.ndim == 0:
        return (g,)
    lowest = -3.0e38 if g.dtype.itemsize <= 4 else -1.0e308

    def from_right(v):
        return flip(apply(LOGCUMSUMEXP, flip(v, (dim,)), dim=dim), (dim,))

    log_abs = where(g == 0, 1.0, g.abs()).log()
    positive = where(g > 0, log_abs, lowest)
    negative = where(g < 0, log_abs, lowest)
    return ((from_right(positive - y) + x).exp() - (from_right(negative - y) + x).exp(),)


LOGCUMSUMEXP = defop(
    "logcumsumexp",
    _logcumsumexp_forward,
    _logcumsumexp_vjp,
    shape=lambda s, dim: tuple(s),
    dtype=lambda d, dim: d,
    promote="float",
    save_output=True,
    quiet=True,
)


@onnx_lowering("logcumsumexp")
def _logcumsumexp_onnx(b, x, dim):
    # out[j] = logsumexp(x[i] for i <= j), in O(n^2): each position subtracts its own running
    # maximum, so wide ranges neither overflow nor underflow
    import numpy as np

    shape = b.ins[0].shape
    if not shape or 0 in shape:
        return b.op("Identity", x)
    n = shape[dim]
    tri = np.triu(np.ones((n, n), dtype=bool)).reshape((n, n) + (1,) * (len(shape) - dim - 1))
    dt = b.out.dtype
    masked = b.op(
        "Where", b.const(tri, "bool"), b.op("Unsqueeze", x, b.ints([dim + 1])),
        b.const(float("-inf"), dt),
    )  # fmt: skip
    high = b.reduce("ReduceMax", masked, [dim], True)
    high = b.op("Where", b.op("IsInf", high), b.const(0, dt), high)
    total = b.reduce("ReduceSum", b.op("Exp", b.op("Sub", masked, high)), [dim], True)
    out = b.op("Add", b.op("Log", total), high)
    return b.op("Squeeze", out, b.ints([dim]))


@LOGCUMSUMEXP.public("logcumsumexp")
def logcumsumexp(x, dim):
    """log(cumsum(exp(x))) along `dim` without overflow, as `torch.logcumsumexp`.

    Example:
        >>> import ember
        >>> ember.logcumsumexp(ember.tensor([0.0, 0.0, 1000.0]), dim=0).tolist()
        [0.0, 0.6931471824645996, 1000.0]
    """
    (d,) = normalize_dims(dim, x.ndim, "logcumsumexp")
    return apply(LOGCUMSUMEXP, x, dim=d)
