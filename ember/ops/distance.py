"""Distances and similarities between vectors, as PyTorch has them: `cosine_similarity`,
`pairwise_distance`, `pdist` (every pair of rows of one matrix) and `cdist` (every row of one
batch of matrices against every row of another).

All are composites of elementwise ops, reductions (`norm`, zero-safe: the gradient at a zero
distance is 0, as torch's) and indexing, so they differentiate, trace and export through the
primitives underneath.
"""

from __future__ import annotations

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import DTypeError, ShapeError, ValueOutOfRange, at_user_line
from ember.ops import elementwise as E
from ember.ops import reduce as R
from ember.ops.linalg import matmul
from ember.ops.registry import broadcast_shapes, public

__all__ = ["cosine_similarity", "pairwise_distance", "pdist", "cdist"]


def _float(x):
    return x if x.dtype.is_floating_point else x.to(_dt.get_default_dtype())


@public("cosine_similarity", method=False)
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """x1 . x2 / (max(|x1|, eps) max(|x2|, eps)) along `dim` of the broadcast shape, as
    torch.cosine_similarity (each input divided by its norm first, for stability; the
    clamp to `eps` passes the norm's gradient through, as torch's in-place clamp does).

    Example:
        >>> import ember
        >>> a = ember.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> b = ember.tensor([[0.0, 2.0], [2.0, 2.0]])
        >>> [round(v, 4) for v in cosine_similarity(a, b).tolist()]
        [0.0, 1.0]
    """
    shape = broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    x1, x2 = _float(x1).expand(shape), _float(x2).expand(shape)
    (d,) = R.normalize_dims(dim, len(shape), "cosine_similarity")
    norms = []
    for x in (x1, x2):
        n = R.norm(x, 2, d, keepdim=True)
        norms.append(n + (E.clamp(n, min=eps) - n).detach())
    return ((x1 / norms[0]) * (x2 / norms[1])).sum(d)


@public("pairwise_distance", method=False)
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """The p-norm of x1 - x2 + eps over the last dim (of the broadcast shape), as
    torch.pairwise_distance: one distance per pair of rows.

    Example:
        >>> import ember
        >>> d = pairwise_distance(ember.tensor([[0.0, 0.0]]), ember.tensor([[3.0, 4.0]]), eps=0)
        >>> d.tolist()
        [5.0]
    """
    ndim = max(x1.ndim, x2.ndim)
    diff = _float(x1) - _float(x2) + eps
    if ndim == 0:
        return E.abs(diff) if p != 0 else (diff != 0).to(diff.dtype)
    return R.norm(diff, p, ndim - 1, keepdim)


def _check_p(op, p):
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(at_user_line(f"{op}: p must be a number, got {p!r}"))
    if p < 0:
        raise ValueOutOfRange(f"{op} only supports non-negative p values, got p={p}")


@public("pdist", method=False)
def pdist(input, p=2):
    """The p-norm distance between every pair of rows of an (N, M) matrix: the N(N-1)/2
    entries above the diagonal of cdist(input, input), row by row, as torch.pdist.

    Example:
        >>> import ember
        >>> pdist(ember.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])).tolist()
        [5.0, 1.0, 4.242640495300293]
    """
    _check_p("pdist", p)
    if input.ndim != 2:
        raise ShapeError(
            f"pdist only supports 2D tensors, got: {input.ndim}D (shape {tuple(input.shape)})"
        )
    if not input.dtype.is_floating_point:
        raise DTypeError(f"pdist only supports floating-point dtypes, got {input.dtype}")
    n = input.shape[0]
    rows, cols = np.triu_indices(n, 1)
    first = input[input.new_tensor(rows, dtype=_dt.int64)]
    second = input[input.new_tensor(cols, dtype=_dt.int64)]
    return R.norm(first - second, p, 1)


_CDIST_MODES = (
    "use_mm_for_euclid_dist_if_necessary",
    "use_mm_for_euclid_dist",
    "donot_use_mm_for_euclid_dist",
)


@public("cdist", method=False)
def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """The p-norm distance between each row of x1 (B..., P, M) and each row of x2
    (B..., R, M): a (B..., P, R) tensor, batch dims broadcast, as torch.cdist.

    For p = 2, `compute_mode` chooses, as in torch, between the direct differences and
    |a|^2 + |b|^2 - 2 a.b with a matrix product (faster for many rows, less exact for close
    points): "use_mm_for_euclid_dist_if_necessary" (the default) takes the product when P or
    R exceeds 25.

    Example:
        >>> import ember
        >>> cdist(ember.tensor([[0.0, 0.0]]), ember.tensor([[3.0, 4.0], [1.0, 0.0]])).tolist()
        [[5.0, 1.0]]
    """
    _check_p("cdist", p)
    if compute_mode not in _CDIST_MODES:
        raise ValueError(
            at_user_line(f"cdist: compute_mode must be one of {_CDIST_MODES}, got {compute_mode!r}")
        )
    for name, x in (("X1", x1), ("X2", x2)):
        if x.ndim < 2:
            raise ShapeError(f"cdist only supports at least 2D tensors, {name} got: {x.ndim}D")
        if not x.dtype.is_floating_point:
            raise DTypeError(f"cdist only supports floating-point dtypes, {name} got {x.dtype}")
    if x1.shape[-1] != x2.shape[-1]:
        raise ShapeError(
            f"cdist: X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} "
            f"X2: {x2.shape[-1]}"
        )
    batch = broadcast_shapes(tuple(x1.shape[:-2]), tuple(x2.shape[:-2]))
    x1 = x1.expand(batch + tuple(x1.shape[-2:]))
    x2 = x2.expand(batch + tuple(x2.shape[-2:]))
    rows1, rows2 = x1.shape[-2], x2.shape[-2]
    use_mm = p == 2 and (
        compute_mode == "use_mm_for_euclid_dist"
        or (compute_mode == _CDIST_MODES[0] and (rows1 > 25 or rows2 > 25))
    )
    if use_mm:
        square1 = (x1 * x1).sum(-1, keepdim=True)
        square2 = (x2 * x2).sum(-1, keepdim=True)
        inner = matmul(x1, x2.mT)
        return R.sqrt_zero_safe(E.clamp(square1 + square2.mT - inner * 2, min=0.0))
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    return R.norm(diff, p, -1)
