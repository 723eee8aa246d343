"""Linear algebra beyond matmul: the decompositions and solvers of `torch.linalg` as primitives
over the backend's `xp.linalg` (LAPACK through NumPy on the CPU), and the composites built on
them (inv, pinv, lstsq, matrix_rank, norms, cross, matrix_power, ...), with `ember.linalg`
(a face) re-exporting them under torch.linalg's names.

Note [Packed decompositions]: a primitive has one output (Note [OpDef]), so a decomposition with
several (eigh's eigenvalues and eigenvectors, svd's U, S, Vh, qr's Q and R) is one primitive
whose output packs them, flattened and concatenated on the last dim, with a public wrapper that
slices them apart. Slices of the unused parts get zero gradients, so the VJP always sees every
part's gradient, and is torch's formula for all parts at once (FunctionsManual.cpp:
svd_backward, linalg_eig_backward with is_hermitian, linalg_qr_backward, cholesky_backward).
The VJPs are written with ember ops, `linalg_solve` included, so they trace and differentiate
again.

Gradients are those of torch for well-conditioned inputs. As in torch, the gradient of eigh,
svd and qr is defined only where eigenvalues / singular values are distinct, and the
eigenvector / singular-vector signs are LAPACK's (checks use sign-free functions of them).
det's gradient uses the inverse, so a singular matrix gets a LinAlgError in backward (torch
goes through an SVD there).

ONNX: `linalg_det` and `linalg_slogdet` lower to ONNX's Det; ONNX has no solver or
decomposition operator (torch.onnx refuses aten::linalg_solve, linalg_eigh, linalg_svd,
linalg_qr and linalg_cholesky too), so those five primitives have no lowering and the exporter
names them (tests/onnx/test_onnx_export.py lists them).
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import (
    DTypeError,
    LinAlgError,
    ShapeError,
    ValueOutOfRange,
    at_user_line,
)
from ember.ops import elementwise as E
from ember.ops import reduce as R
from ember.ops import shape as S
from ember.ops.elementwise import unbroadcast
from ember.ops.linalg import inner_1d, matmul
from ember.ops.registry import apply, broadcast_shapes, defop, onnx_lowering, public, same_dtype

__all__ = [
    "solve",
    "inv",
    "det",
    "slogdet",
    "logdet",
    "cholesky",
    "eigh",
    "eigvalsh",
    "svd",
    "svdvals",
    "qr",
    "pinv",
    "lstsq",
    "matrix_rank",
    "vector_norm",
    "matrix_norm",
    "norm",
    "cross",
    "matrix_power",
    "multi_dot",
    "vecdot",
    "solve_triangular",
    "cond",
    "vander",
    "diag_embed",
]

SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])
EighResult = namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = namedtuple("SVDResult", ["U", "S", "Vh"])
QRResult = namedtuple("QRResult", ["Q", "R"])
LstsqResult = namedtuple("LstsqResult", ["solution", "residuals", "rank", "singular_values"])


# --- checks -------------------------------------------------------------------------------------
def _float_matrix(op, a, square=True, name="A"):
    """Refuse what torch.linalg refuses: non-float dtypes, fewer than 2 dims, non-square."""
    if a.dtype not in (_dt.float32, _dt.float64):
        raise DTypeError(
            f"{op}: expected a float32 or float64 tensor as {name}, got {a.dtype} "
            f"(torch: 'Expected a floating point or complex tensor as input')"
        )
    if a.ndim < 2:
        raise ShapeError(
            f"{op}: {name} must have at least 2 dimensions, got shape {tuple(a.shape)}"
        )
    if square and a.shape[-1] != a.shape[-2]:
        raise ShapeError(
            f"{op}: {name} must be batches of square matrices, but they are "
            f"{a.shape[-2]} by {a.shape[-1]} matrices (shape {tuple(a.shape)})"
        )


def _lapack(op, message):
    """Run xp.linalg's call, turning LAPACK's failures into ember's LinAlgError."""

    def call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except np.linalg.LinAlgError as error:
            raise LinAlgError(f"{op}: {message} (LAPACK: {error})") from None

    return call


def _eye_like(a, n):
    return a.new_tensor(np.eye(n), dtype=a.dtype)


def diag_embed(x, offset=0, dim1=-2, dim2=-1):
    """A tensor whose (dim1, dim2) diagonals hold the last dim of x, as torch.diag_embed
    (offset 0 and the last two dims: the common use)."""
    if offset != 0 or (dim1, dim2) not in ((-2, -1), (x.ndim - 1, x.ndim)):
        raise NotImplementedError(
            at_user_line("diag_embed: only offset=0 with dim1=-2, dim2=-1 is supported")
        )
    n = x.shape[-1]
    return x.unsqueeze(-1) * _eye_like(x, n)


# --- solve --------------------------------------------------------------------------------------
def _solve_shape(a, b):
    if len(a) < 2 or a[-1] != a[-2]:
        raise ShapeError(f"linalg_solve: A must be square matrices, got {tuple(a)}")
    if len(b) < 2 or b[-2] != a[-1]:
        raise ShapeError(
            f"linalg_solve: incompatible shapes of A and B for the equation AX = B "
            f"({a[-2]}x{a[-1]} and {b[-2] if len(b) > 1 else '?'}x{b[-1] if b else '?'})"
        )
    return broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])) + (a[-1], b[-1])


def _solve_forward(xp, a, b):
    batch = xp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = xp.broadcast_to(a, batch + a.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    call = _lapack("linalg.solve", "the solver failed because the input matrix is singular")
    return call(xp.linalg.solve, a, b)


def _solve_vjp(g, x, a, b):
    gb = apply(SOLVE, a.mT, g)
    ga = -(gb @ x.mT)
    return unbroadcast(ga, a), unbroadcast(gb, b)


SOLVE = defop(
    "linalg_solve",
    _solve_forward,
    _solve_vjp,
    shape=_solve_shape,
    dtype=lambda a, b: a,
    promote="common",
    save_output=True,
    doc="X with A X = B for square A (..., n, n) and B (..., n, k), batch dims broadcast.",
)


# --- det and slogdet (ONNX Det) -----------------------------------------------------------------
def _square_batch(a, **attrs):
    if len(a) < 2 or a[-1] != a[-2]:
        raise ShapeError(f"det: expected square matrices (..., n, n), got {tuple(a)}")
    return tuple(a[:-2])


def _inverse_transposed(a):
    n = a.shape[-1]
    return apply(SOLVE, a.mT, _eye_like(a, n).expand(tuple(a.shape)))


def _det_vjp(g, d, a):
    return ((g * d).unsqueeze(-1).unsqueeze(-1) * _inverse_transposed(a),)


DET = defop(
    "linalg_det",
    lambda xp, a: xp.asarray(xp.linalg.det(a), dtype=a.dtype),
    _det_vjp,
    shape=_square_batch,
    dtype=same_dtype,
    save_output=True,
    doc="The determinant of square matrices (..., n, n).",
)


@onnx_lowering("linalg_det")
def _det_onnx(b, a):
    return b.op("Det", a)


def _slogdet_forward(xp, a):
    sign, logabs = xp.linalg.slogdet(a)
    return xp.stack([xp.asarray(sign, dtype=a.dtype), xp.asarray(logabs, dtype=a.dtype)], -1)


def _slogdet_vjp(g, out, a):
    return (g[..., 1].unsqueeze(-1).unsqueeze(-1) * _inverse_transposed(a),)


SLOGDET = defop(
    "linalg_slogdet",
    _slogdet_forward,
    _slogdet_vjp,
    shape=lambda a: _square_batch(a) + (2,),
    dtype=same_dtype,
    doc="(sign, log|det|) of square matrices, stacked on a last dim of 2 "
    "(Note [Packed decompositions]).",
)


@onnx_lowering("linalg_slogdet")
def _slogdet_onnx(b, a):
    d = b.op("Det", a)
    sign = b.op("Unsqueeze", b.op("Sign", d), b.const(np.array([-1], dtype=np.int64)))
    logabs = b.op("Unsqueeze", b.op("Log", b.op("Abs", d)), b.const(np.array([-1], np.int64)))
    return b.op("Concat", sign, logabs, axis=-1)


# --- cholesky -----------------------------------------------------------------------------------
def _cholesky_vjp(g, lower, a):
    # torch's cholesky_backward: gA = L^-H Phi(L^H gL) L^-1, Phi taking the lower triangle with
    # the diagonal halved, symmetrised
    p = S.tril(lower.mT @ g)
    p = (p + S.tril(p, -1).mT) * 0.5
    left = apply(SOLVE, lower.mT, p)  # L^-H P
    return (apply(SOLVE, lower.mT, left.mT).mT,)  # (L^-H P) L^-1


def _cholesky_forward(xp, a):
    call = _lapack(
        "linalg.cholesky",
        "the factorization could not be completed because the input is not positive-definite",
    )
    return call(xp.linalg.cholesky, a)


CHOLESKY = defop(
    "linalg_cholesky",
    _cholesky_forward,
    _cholesky_vjp,
    shape=lambda a: tuple(a),
    dtype=same_dtype,
    save_output=True,
    doc="The lower Cholesky factor L of symmetric positive-definite A = L L^T.",
)


# --- eigh ----------------------------------------------------------------------------------------
def _eigh_forward(xp, a, uplo):
    w, v = xp.linalg.eigh(a, UPLO=uplo)
    return xp.concatenate([w[..., None, :], v], axis=-2)


def _eigh_vjp(g, out, a, uplo):
    # Note [Packed decompositions]: row 0 holds the eigenvalues, rows 1.. the eigenvectors
    w, v = out[..., 0, :], out[..., 1:, :]
    gw, gv = g[..., 0, :], g[..., 1:, :]
    vgv = v.mT @ gv
    vgv = (vgv - vgv.mT) * 0.5
    n = w.shape[-1]
    eye = _eye_like(w, n)
    gaps = w.unsqueeze(-2) - w.unsqueeze(-1) + eye  # E_ij = w_j - w_i, ones on the diagonal
    inner = vgv / gaps * (1 - eye) + diag_embed(gw)
    return (v @ inner @ v.mT,)


EIGH = defop(
    "linalg_eigh",
    _eigh_forward,
    _eigh_vjp,
    shape=lambda a, uplo: tuple(a[:-2]) + (a[-1] + 1, a[-1]),
    dtype=same_dtype,
    save_output=True,
    save_inputs=False,
    doc="Eigenvalues (ascending) and eigenvectors of symmetric matrices, packed as rows "
    "(Note [Packed decompositions]).",
)


# --- svd -----------------------------------------------------------------------------------------
def _svd_sizes(m, n, full):
    k = builtins.min(m, n)
    return k, (m if full else k), (n if full else k)


def _svd_forward(xp, a, full_matrices):
    call = _lapack("linalg.svd", "the algorithm failed to converge")
    u, s, vh = call(xp.linalg.svd, a, full_matrices=full_matrices)
    batch = a.shape[:-2]
    return xp.concatenate([u.reshape(batch + (-1,)), s, vh.reshape(batch + (-1,))], axis=-1).astype(
        a.dtype, copy=False
    )


def _svd_shape(a, full_matrices):
    m, n = a[-2], a[-1]
    k, ku, kv = _svd_sizes(m, n, full_matrices)
    return tuple(a[:-2]) + (m * ku + k + kv * n,)


def _svd_unpack(packed, m, n, full):
    k, ku, kv = _svd_sizes(m, n, full)
    batch = tuple(packed.shape[:-1])
    u = packed[..., : m * ku].reshape(batch + (m, ku))
    s = packed[..., m * ku : m * ku + k]
    vh = packed[..., m * ku + k :].reshape(batch + (kv, n))
    return u, s, vh


def _svd_vjp(g, out, a, full_matrices):
    m, n = a.shape[-2], a.shape[-1]
    u, s, vh = _svd_unpack(out, m, n, full_matrices)
    gu, gs, gvh = _svd_unpack(g, m, n, full_matrices)
    k = s.shape[-1]
    if full_matrices:  # the extra columns of U and rows of Vh say nothing about A
        u, gu = u[..., :k], gu[..., :k]
        vh, gvh = vh[..., :k, :], gvh[..., :k, :]
    v, gv = vh.mT, gvh.mT
    uhgu = u.mT @ gu
    uhgu = uhgu - uhgu.mT
    vhgv = v.mT @ gv
    vhgv = vhgv - vhgv.mT
    eye = _eye_like(s, k)
    s2 = s * s
    gaps = s2.unsqueeze(-2) - s2.unsqueeze(-1) + eye
    inner = (uhgu * s.unsqueeze(-2) + s.unsqueeze(-1) * vhgv) / gaps * (1 - eye) + diag_embed(gs)
    if m > k:
        ga = u @ inner
        gu_sinv = gu / s.unsqueeze(-2)
        ga = (ga + gu_sinv - u @ (u.mT @ gu_sinv)) @ vh
    elif n > k:
        ga = inner @ vh
        sinv_gvh = gvh / s.unsqueeze(-1)
        ga = u @ (ga + sinv_gvh - (sinv_gvh @ v) @ vh)
    else:
        ga = u @ inner @ vh
    return (ga,)


SVD = defop(
    "linalg_svd",
    _svd_forward,
    _svd_vjp,
    shape=_svd_shape,
    dtype=same_dtype,
    save_output=True,
    doc="U, S, Vh of A = U diag(S) Vh, flattened and packed on the last dim "
    "(Note [Packed decompositions]).",
)


# --- qr -------------------------------------------------------------------------------------------
def _qr_sizes(m, n, mode):
    k = builtins.min(m, n)
    return (m if mode == "complete" else k), (m if mode == "complete" else k)


def _qr_forward(xp, a, mode):
    q, r = xp.linalg.qr(a, mode=mode)
    batch = a.shape[:-2]
    return xp.concatenate([q.reshape(batch + (-1,)), r.reshape(batch + (-1,))], axis=-1)


def _qr_shape(a, mode):
    m, n = a[-2], a[-1]
    kq, kr = _qr_sizes(m, n, mode)
    return tuple(a[:-2]) + (m * kq + kr * n,)


def _qr_unpack(packed, m, n, mode):
    kq, kr = _qr_sizes(m, n, mode)
    batch = tuple(packed.shape[:-1])
    q = packed[..., : m * kq].reshape(batch + (m, kq))
    r = packed[..., m * kq :].reshape(batch + (kr, n))
    return q, r


def _qr_vjp(g, out, a, mode):
    m, n = a.shape[-2], a.shape[-1]
    if mode == "complete" and m > n:
        raise NotImplementedError(
            at_user_line(
                "linalg.qr: the QR decomposition is not differentiable when mode='complete' "
                "and nrows > ncols (as in torch)"
            )
        )
    q, r = _qr_unpack(out, m, n, mode)
    gq, gr = _qr_unpack(g, m, n, mode)
    ga = gr @ r.mT - q.mT @ gq
    if m >= n:
        sym = S.triu(ga)
        sym = sym + sym.mT
        sym = sym - diag_embed(sym.diagonal(0, -2, -1) * 0.5)
        ga = q @ sym + gq
        return (apply(SOLVE, r, ga.mT).mT,)  # ga R^-T
    skew = S.tril(-ga - (-ga).mT)
    ga = q @ skew
    ga = apply(SOLVE, r[..., :m], ga.mT).mT
    pad = ga.new_zeros(tuple(ga.shape[:-1]) + (n - m,))
    return (S.cat([ga, pad], -1) + q @ gr,)


QR = defop(
    "linalg_qr",
    _qr_forward,
    _qr_vjp,
    shape=_qr_shape,
    dtype=same_dtype,
    save_output=True,
    save_inputs=False,
    doc="Q and R of A = Q R, flattened and packed on the last dim (Note [Packed decompositions]).",
)


# --- public: solvers and decompositions ----------------------------------------------------------
def solve(A, B, *, left=True):
    """X with A X = B (left=True) or X A = B, as torch.linalg.solve: A (*, n, n) is
    invertible, B (*, n, k) or a vector (*, n); batch dims broadcast.

    Example:
        >>> import ember
        >>> A = ember.tensor([[2.0, 0.0], [0.0, 4.0]])
        >>> ember.linalg.solve(A, ember.tensor([2.0, 2.0])).tolist()
        [1.0, 0.5]
    """
    _float_matrix("linalg.solve", A)
    if not left:
        return solve(A.mT, B.mT).mT
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    if vector:
        return apply(SOLVE, A, B.unsqueeze(-1)).squeeze(-1)
    return apply(SOLVE, A, B)


def solve_ex(A, B, *, left=True, check_errors=False):
    """(solve(A, B), info) as torch.linalg.solve_ex; info is 0 (a failure raises)."""
    x = solve(A, B, left=left)
    return x, A.new_zeros(tuple(A.shape[:-2]), dtype=_dt.int32)


def inv(A):
    """The inverse of square matrices (*, n, n), as torch.linalg.inv (a solve against I).

    Example:
        >>> import ember
        >>> ember.linalg.inv(ember.tensor([[2.0, 0.0], [0.0, 4.0]])).tolist()
        [[0.5, 0.0], [0.0, 0.25]]
    """
    _float_matrix("linalg.inv", A)
    return apply(SOLVE, A, _eye_like(A, A.shape[-1]).expand(tuple(A.shape)))


def inv_ex(A, *, check_errors=False):
    """(inv(A), info) as torch.linalg.inv_ex; info is 0 (a failure raises)."""
    return inv(A), A.new_zeros(tuple(A.shape[:-2]), dtype=_dt.int32)


def det(A):
    """The determinant of square matrices (*, n, n), as torch.linalg.det.

    Example:
        >>> import ember
        >>> ember.linalg.det(ember.tensor([[1.0, 2.0], [3.0, 4.0]])).item()
        -2.0...
    """
    _float_matrix("linalg.det", A)
    return apply(DET, A)


def slogdet(A):
    """(sign, log|det|) of square matrices, as torch.linalg.slogdet: no overflow for large n.

    Example:
        >>> import ember
        >>> sign, logabsdet = ember.linalg.slogdet(ember.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> sign.item(), round(logabsdet.item(), 4)
        (-1.0, 0.6931)
    """
    _float_matrix("linalg.slogdet", A)
    packed = apply(SLOGDET, A)
    return SlogdetResult(packed[..., 0], packed[..., 1])


def logdet(A):
    """log det A, as torch.logdet: NaN where det < 0, -inf where it is 0."""
    sign, logabs = slogdet(A)
    return E.where(sign < 0, math.nan, logabs)


def cholesky(A, *, upper=False):
    """The Cholesky factor of symmetric positive-definite matrices, as torch.linalg.cholesky:
    lower L with A = L L^T (upper=True: U = L^T). Only the lower triangle of A is read; a
    matrix that is not positive-definite raises LinAlgError.

    Example:
        >>> import ember
        >>> ember.linalg.cholesky(ember.tensor([[4.0, 2.0], [2.0, 2.0]])).tolist()
        [[2.0, 0.0], [1.0, 1.0]]
    """
    _float_matrix("linalg.cholesky", A)
    lower = apply(CHOLESKY, A)
    return lower.mT if upper else lower


def cholesky_ex(A, *, upper=False, check_errors=False):
    """(cholesky(A), info) as torch.linalg.cholesky_ex; info is 0 (a failure raises)."""
    return cholesky(A, upper=upper), A.new_zeros(tuple(A.shape[:-2]), dtype=_dt.int32)


def eigh(A, UPLO="L"):
    """(eigenvalues, eigenvectors) of symmetric matrices, as torch.linalg.eigh: eigenvalues
    ascending, eigenvectors as columns; only the `UPLO` triangle of A is read.

    Example:
        >>> import ember
        >>> values, vectors = ember.linalg.eigh(ember.tensor([[2.0, 1.0], [1.0, 2.0]]))
        >>> [round(v, 4) for v in values.tolist()]
        [1.0, 3.0]
    """
    _float_matrix("linalg.eigh", A)
    if UPLO not in ("L", "U"):
        raise ValueError(at_user_line(f"linalg.eigh: UPLO must be 'L' or 'U', got {UPLO!r}"))
    packed = apply(EIGH, A, uplo=UPLO)
    return EighResult(packed[..., 0, :], packed[..., 1:, :])


def eigvalsh(A, UPLO="L"):
    """The eigenvalues (ascending) of symmetric matrices, as torch.linalg.eigvalsh."""
    return eigh(A, UPLO).eigenvalues


def svd(A, full_matrices=True, *, driver=None):
    """(U, S, Vh) with A = U diag(S) Vh, as torch.linalg.svd: S descending; full_matrices
    (the default, as torch) gives square U and Vh, else the reduced (m, k) and (k, n).

    Example:
        >>> import ember
        >>> U, S, Vh = ember.linalg.svd(ember.tensor([[3.0, 0.0], [0.0, -2.0]]))
        >>> S.tolist()
        [3.0, 2.0]
    """
    _float_matrix("linalg.svd", A, square=False)
    m, n = A.shape[-2], A.shape[-1]
    full = bool(full_matrices)
    return SVDResult(*_svd_unpack(apply(SVD, A, full_matrices=full), m, n, full))


def svdvals(A, *, driver=None):
    """The singular values (descending) of matrices, as torch.linalg.svdvals."""
    return svd(A, full_matrices=False).S


def qr(A, mode="reduced"):
    """(Q, R) with A = Q R, as torch.linalg.qr: mode 'reduced' (Q (m, k)), 'complete'
    (Q (m, m)) or 'r' (R only; Q is empty).

    Example:
        >>> import ember
        >>> Q, R = ember.linalg.qr(ember.tensor([[3.0, 1.0], [4.0, 2.0]]))
        >>> [round(abs(v), 4) for v in R.diagonal().tolist()]
        [5.0, 0.4]
    """
    _float_matrix("linalg.qr", A, square=False)
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(
            at_user_line(f"linalg.qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
        )
    m, n = A.shape[-2], A.shape[-1]
    q, r = _qr_unpack(apply(QR, A, mode="complete" if mode == "complete" else "reduced"), m, n,
                      "complete" if mode == "complete" else "reduced")  # fmt: skip
    if mode == "r":
        return QRResult(A.new_zeros((0,)), r.detach())
    return QRResult(q, r)


def _default_rtol(A, atol, rtol):
    if rtol is not None:
        return rtol
    if atol is not None and atol > 0:
        return 0.0
    return float(np.finfo(np.float32 if A.dtype == _dt.float32 else np.float64).eps) * builtins.max(
        A.shape[-2], A.shape[-1]
    )


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    """The Moore-Penrose pseudo-inverse, as torch.linalg.pinv: through the SVD, singular values
    at or below max(atol, rtol * the largest) are dropped.

    Example:
        >>> import ember
        >>> ember.linalg.pinv(ember.tensor([[1.0, 0.0], [0.0, 0.0]])).tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """
    _float_matrix("linalg.pinv", A, square=False)
    u, s, vh = svd(A, full_matrices=False)
    rtol = _default_rtol(A, atol, rtol)
    cutoff = R.amax(s, -1, keepdim=True) * rtol if s.shape[-1] else s
    if atol is not None:
        cutoff = E.maximum(cutoff, atol)
    keep = s > cutoff.detach()
    s_inv = E.where(keep, 1.0 / E.where(keep, s, 1.0), 0.0)
    return (vh.mT * s_inv.unsqueeze(-2)) @ u.mT


def matrix_rank(A, *, atol=None, rtol=None, hermitian=False):
    """The number of singular values above max(atol, rtol * the largest), as
    torch.linalg.matrix_rank (int64)."""
    _float_matrix("linalg.matrix_rank", A, square=False)
    s = svdvals(A.detach())
    rtol = _default_rtol(A, atol, rtol)
    cutoff = R.amax(s, -1, keepdim=True) * rtol
    if atol is not None:
        cutoff = E.maximum(cutoff, atol)
    return (s > cutoff).to(_dt.int64).sum(-1)


def lstsq(A, B, rcond=None, *, driver=None):
    """The least-squares solution of A X = B, as torch.linalg.lstsq: (solution, residuals,
    rank, singular_values). As torch's default CPU driver 'gelsy': residuals (the squared
    residual per column) only where m > n and A has full rank, rank always, singular values
    only for drivers 'gelsd' and 'gelss'.

    Example:
        >>> import ember
        >>> A = ember.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> ember.linalg.lstsq(A, ember.tensor([[1.0], [1.0], [2.0]])).solution.tolist()
        [[1.0...], [1.0...]]
    """
    _float_matrix("linalg.lstsq", A, square=False)
    if driver not in (None, "gels", "gelsy", "gelsd", "gelss"):
        raise ValueError(
            at_user_line(
                f"linalg.lstsq: driver must be one of None, 'gels', 'gelsy', 'gelsd', 'gelss', "
                f"got {driver!r}"
            )
        )
    vector = B.ndim == A.ndim - 1
    b = B.unsqueeze(-1) if vector else B
    if b.shape[-2] != A.shape[-2]:
        raise ShapeError(
            f"linalg.lstsq: input.size(-2) should match other.size(-2), got {A.shape[-2]} and "
            f"{b.shape[-2]}"
        )
    m, n = A.shape[-2], A.shape[-1]
    solution = pinv(A, rtol=rcond) @ b
    rank = matrix_rank(A, rtol=rcond)
    residuals = A.new_zeros((0,))
    # the default driver ('gelsy' on the CPU) gives no residuals; the others give them only
    # where A has full rank, a data-dependent shape (eager only)
    if m > n and driver not in (None, "gelsy") and bool((rank == n).all()):
        residuals = ((A @ solution - b) ** 2).sum(-2)
    values = svdvals(A) if driver in ("gelsd", "gelss") else A.new_zeros((0,))
    if driver == "gels":
        rank = A.new_zeros((0,), dtype=_dt.int64)
    if vector:
        solution = solution.squeeze(-1)
    return LstsqResult(solution, residuals, rank, values)


# --- norms ---------------------------------------------------------------------------------------
def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """The vector ord-norm over `dim` (all elements for None), as torch.linalg.vector_norm:
    ord any real number, inf or -inf (0 counts non-zeros); the gradient at 0 is 0.

    Example:
        >>> import ember
        >>> ember.linalg.vector_norm(ember.tensor([3.0, -4.0])).item()
        5.0
    """
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise DTypeError(
            f"linalg.vector_norm: expected a floating point or complex tensor as input, got "
            f"{x.dtype}"
        )
    if isinstance(ord, str):
        raise ValueError(at_user_line(f"linalg.vector_norm: ord must be a number, got {ord!r}"))
    if ord < 0 and ord != -math.inf:
        total = (E.abs(x) ** ord).sum(dim, keepdim)
        return total ** (1.0 / ord)
    return R.norm(x, ord, dim, keepdim)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """The matrix norm over the two dims `dim`, as torch.linalg.matrix_norm: 'fro', 'nuc'
    (the sum of singular values), inf / -inf (max / min row sum of |A|), 1 / -1 (column
    sums), 2 / -2 (largest / smallest singular value).

    Example:
        >>> import ember
        >>> A = ember.tensor([[1.0, -2.0], [3.0, 4.0]])
        >>> ember.linalg.matrix_norm(A, 1).item(), ember.linalg.matrix_norm(A, float("inf")).item()
        (6.0, 7.0)
    """
    if dtype is not None:
        A = A.to(dtype)
    _float_matrix("linalg.matrix_norm", A, square=False)
    if isinstance(dim, int) or len(dim) != 2:
        raise ValueError(at_user_line(f"linalg.matrix_norm: dim must be a 2-tuple, got {dim}"))
    rows = R.normalize_dims(dim[0], A.ndim, "linalg.matrix_norm")[0]
    cols = R.normalize_dims(dim[1], A.ndim, "linalg.matrix_norm")[0]
    if rows == cols:
        raise ValueError(at_user_line(f"linalg.matrix_norm: dims must be different, got {dim}"))
    if ord == "fro":
        return R.norm(A, 2, (rows, cols), keepdim)
    if ord in ("nuc", 2, -2):
        moved = S.movedim(A, (rows, cols), (-2, -1))
        s = svdvals(moved)
        out = s.sum(-1) if ord == "nuc" else (R.amax(s, -1) if ord == 2 else R.amin(s, -1))
        if keepdim:
            for d in sorted((rows, cols)):
                out = out.unsqueeze(d)
        return out
    if ord in (math.inf, -math.inf, 1, -1):
        summed, reduced = (cols, rows) if ord in (math.inf, -math.inf) else (rows, cols)
        sums = E.abs(A).sum(summed, keepdim=True)
        out = (R.amax if ord > 0 else R.amin)(sums, reduced, keepdim=True)
        if not keepdim:
            out = out.squeeze(builtins.max(rows, cols)).squeeze(builtins.min(rows, cols))
        return out
    raise ValueError(at_user_line(f"linalg.matrix_norm: order {ord!r} not supported"))


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.norm: a vector norm (1-D input, an int dim, or ord None over everything)
    or a matrix norm (2-D input or a pair of dims with ord given)."""
    if isinstance(dim, int):
        dim = (dim,)
    if ord is None:
        if dim is not None and len(dim) == 2:
            return matrix_norm(A, "fro", dim, keepdim, dtype=dtype)
        return vector_norm(A, 2, dim, keepdim, dtype=dtype)
    if (dim is None and A.ndim == 2) or (dim is not None and len(dim) == 2):
        return matrix_norm(A, ord, dim if dim is not None else (-2, -1), keepdim, dtype=dtype)
    if dim is None and A.ndim != 1:
        raise ShapeError(
            f"linalg.norm: input must be 1-D or 2-D when dim is None and ord is given, got "
            f"shape {tuple(A.shape)}"
        )
    return vector_norm(A, ord, dim, keepdim, dtype=dtype)


def cond(A, p=None):
    """The condition number of square (or, for p in None/2/-2, any) matrices, as
    torch.linalg.cond."""
    if p in (None, 2, -2):
        s = svdvals(A)
        ratio = s[..., 0] / s[..., -1]
        return ratio if p != -2 else 1.0 / ratio
    return matrix_norm(A, p) * matrix_norm(inv(A), p)


# --- composites ---------------------------------------------------------------------------------
def cross(a, b, dim=-1):
    """The 3-vector cross product along `dim` (size 3), batch dims broadcast, as
    torch.linalg.cross.

    Example:
        >>> import ember
        >>> x, y = ember.tensor([1.0, 0.0, 0.0]), ember.tensor([0.0, 1.0, 0.0])
        >>> ember.linalg.cross(x, y).tolist()
        [0.0, 0.0, 1.0]
    """
    shape = broadcast_shapes(tuple(a.shape), tuple(b.shape))
    a, b = a.expand(shape), b.expand(shape)
    (d,) = R.normalize_dims(dim, len(shape), "linalg.cross")
    if shape[d] != 3:
        raise ShapeError(
            f"linalg.cross: inputs dimension {dim} must have length 3. Got {a.shape[d]} and "
            f"{b.shape[d]}"
        )
    a0, a1, a2 = (a.narrow(d, i, 1) for i in range(3))
    b0, b1, b2 = (b.narrow(d, i, 1) for i in range(3))
    return S.cat([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], d)


def matrix_power(A, n):
    """A multiplied by itself n times, as torch.linalg.matrix_power (n = 0: the identity;
    n < 0: powers of the inverse), by repeated squaring."""
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ShapeError(
            f"linalg.matrix_power: expected square matrices (*, n, n), got {tuple(A.shape)}"
        )
    n = int(n)
    if n == 0:
        return _eye_like(A, A.shape[-1]).expand(tuple(A.shape)) * 1
    if n < 0:
        A, n = inv(A), -n
    result, base = None, A
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


def multi_dot(tensors):
    """The product of a chain of matrices (the first may be 1-D, a row; the last 1-D, a
    column), as torch.linalg.multi_dot."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError(at_user_line("multi_dot(): expected at least 2 tensors but got 1"))
    out = tensors[0]
    for t in tensors[1:]:
        out = matmul(out, t)
    return out


def vecdot(x, y, *, dim=-1):
    """The dot product of vectors along `dim`, batch dims broadcast, as torch.linalg.vecdot."""
    return (x * y).sum(dim)


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    """X with A X = B (or X A = B) for triangular A, as torch.linalg.solve_triangular: only
    A's `upper` or lower triangle is read (and its diagonal taken as ones with
    unitriangular), so the gradient lies in that triangle too."""
    _float_matrix("linalg.solve_triangular", A)
    n = A.shape[-1]
    tri = S.triu(A, 1 if unitriangular else 0) if upper else S.tril(A, -1 if unitriangular else 0)
    if unitriangular:
        tri = tri + _eye_like(A, n)
    if not left:
        return apply(SOLVE, tri.mT, B.mT).mT
    return apply(SOLVE, tri, B)


def vander(x, *, N=None):
    """The Vandermonde matrix [x^0, x^1, ..., x^(N-1)] over the last dim, as
    torch.linalg.vander (increasing powers)."""
    n = x.shape[-1] if N is None else int(N)
    if n <= 1:
        raise ValueOutOfRange(f"linalg.vander: N must be greater than 1, got {n}")
    powers = x.new_tensor(np.arange(n), dtype=x.dtype)
    return x.unsqueeze(-1) ** powers


# --- torch.* and Tensor methods (torch's older names and the BLAS-style products) ---------------
@public("det")
def _det(input):
    """The determinant of square matrices (torch.det = torch.linalg.det)."""
    return det(input)


@public("inverse")
def inverse(input):
    """The inverse of square matrices (torch.inverse = torch.linalg.inv)."""
    return inv(input)


@public("logdet")
def _logdet(input):
    """log det A (NaN where det < 0), as torch.logdet."""
    return logdet(input)


@public("slogdet")
def _slogdet(input):
    """(sign, log|det|), as torch.slogdet."""
    return slogdet(input)


@public("cholesky")
def _cholesky(input, upper=False):
    """The Cholesky factor, as torch.cholesky (deprecated there for torch.linalg.cholesky)."""
    return cholesky(input, upper=upper)


@public("qr")
def _qr(input, some=True):
    """(Q, R), as torch.qr: reduced when `some`, else complete."""
    return qr(input, "reduced" if some else "complete")


SvdResult = namedtuple("SvdResult", ["U", "S", "V"])


@public("svd")
def _svd(input, some=True, compute_uv=True):
    """(U, S, V) with A = U diag(S) V^T, as torch.svd (V, not Vh; reduced when `some`;
    without compute_uv, U and V are zero-filled as torch's)."""
    u, s, vh = svd(input, full_matrices=not some)
    if not compute_uv:
        return SvdResult(u.detach() * 0, s, vh.mT.detach() * 0)
    return SvdResult(u, s, vh.mT)


@public("pinverse")
def pinverse(input, rcond=1e-15):
    """The pseudo-inverse with singular values below rcond * the largest dropped, as
    torch.pinverse."""
    return pinv(input, rtol=rcond)


@public("matrix_power")
def _matrix_power(input, n):
    """input multiplied by itself n times, as torch.matrix_power."""
    return matrix_power(input, n)


@public("cross")
def _cross(input, other, dim=None):
    """The 3-vector cross product along `dim`, as torch.cross: without dim, along the first
    dim of size 3 (torch's default)."""
    if dim is None:
        shape = broadcast_shapes(tuple(input.shape), tuple(other.shape))
        sizes = [i for i, n in enumerate(shape) if n == 3]
        if not sizes:
            raise ShapeError(f"cross: no dimension of size 3 in input {tuple(shape)}")
        dim = sizes[0]
    return cross(input, other, dim)


@public("trace")
def trace(input):
    """The sum of the main diagonal of a 2-D tensor, as torch.trace.

    Example:
        >>> import ember
        >>> ember.tensor([[1.0, 2.0], [3.0, 4.0]]).trace().item()
        5.0
    """
    if input.ndim != 2:
        raise ShapeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    return input.diagonal().sum()


@public("kron")
def kron(input, other):
    """The Kronecker product, as torch.kron (the shorter shape is padded with leading 1s).

    Example:
        >>> import ember
        >>> ember.kron(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 10.0])).tolist()
        [1.0, 10.0, 2.0, 20.0]
    """
    nd = builtins.max(input.ndim, other.ndim)
    a = input.reshape((1,) * (nd - input.ndim) + tuple(input.shape))
    b = other.reshape((1,) * (nd - other.ndim) + tuple(other.shape))
    a = a.reshape(tuple(x for n in a.shape for x in (n, 1)))
    b = b.reshape(tuple(x for n in b.shape for x in (1, n)))
    return (a * b).reshape(tuple(m * n for m, n in zip(input_shape(a), input_shape(b))))


def input_shape(paired):
    """The sizes at the even positions of an interleaved (n0, 1, n1, 1, ...) shape."""
    shape = tuple(paired.shape)
    return tuple(builtins.max(shape[i], shape[i + 1]) for i in range(0, len(shape), 2))


@public("tensordot", method=False)
def tensordot(a, b, dims=2):
    """Sum of products over the last `dims` dims of a and the first of b (or the listed dims
    pairs), as torch.tensordot.

    Example:
        >>> import ember
        >>> ember.tensordot(ember.ones(2, 3, 4), ember.ones(3, 4, 5)).shape
        ember.Size([2, 5])
    """
    if isinstance(dims, int):
        if dims < 0:
            raise ValueError(at_user_line(f"tensordot expects dims >= 0, but got dims={dims}"))
        dims_a = list(range(a.ndim - dims, a.ndim))
        dims_b = list(range(dims))
    else:
        dims_a, dims_b = dims
        dims_a = [dims_a] if isinstance(dims_a, int) else list(dims_a)
        dims_b = [dims_b] if isinstance(dims_b, int) else list(dims_b)
    dims_a = [d % builtins.max(a.ndim, 1) for d in dims_a]
    dims_b = [d % builtins.max(b.ndim, 1) for d in dims_b]
    if len(dims_a) != len(dims_b):
        raise ShapeError(
            f"tensordot: both dimension lists should have same length, got {dims_a} and {dims_b}"
        )
    for da, db in zip(dims_a, dims_b):
        if a.shape[da] != b.shape[db]:
            raise ShapeError(
                f"tensordot: contracted dimensions need to match, but first has size "
                f"{a.shape[da]} in dim {da} and second has size {b.shape[db]} in dim {db}"
            )
    free_a = [d for d in range(a.ndim) if d not in dims_a]
    free_b = [d for d in range(b.ndim) if d not in dims_b]
    k = math.prod(a.shape[d] for d in dims_a)
    left = a.permute(*free_a, *dims_a).reshape(-1, k)
    right = b.permute(*dims_b, *free_b).reshape(k, -1)
    out_shape = tuple(a.shape[d] for d in free_a) + tuple(b.shape[d] for d in free_b)
    return (left @ right).reshape(out_shape)


@public("mv")
def mv(input, vec):
    """Matrix (n, m) times vector (m,), as torch.mv."""
    if input.ndim != 2 or vec.ndim != 1:
        raise ShapeError(
            f"mv: expected a matrix and a vector, got {tuple(input.shape)} and {tuple(vec.shape)}"
        )
    return matmul(input, vec)


@public("vdot")
def vdot(input, other):
    """The dot product of two 1-D tensors (torch.vdot; real dtypes: no conjugation)."""
    return inner_1d(input, other, "vdot")


@public("inner")
def inner(input, other):
    """The sum of products over the last dim of both, as torch.inner (a scalar operand
    multiplies)."""
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    if input.shape[-1] != other.shape[-1]:
        raise ShapeError(
            f"inner: last dimensions must match, got {tuple(input.shape)} and {tuple(other.shape)}"
        )
    return tensordot(input, other, ([input.ndim - 1], [other.ndim - 1]))


@public("dist")
def dist(input, other, p=2):
    """The p-norm of input - other over all elements, as torch.dist."""
    return R.norm(input - other, p)


def _scaled_sum(input, product, beta, alpha, op):
    if beta == 0:  # torch: input is ignored (NaN in it does not propagate)
        return product * alpha if alpha != 1 else product
    out = input * beta if beta != 1 else input
    return out + (product * alpha if alpha != 1 else product)


@public("addmm")
def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2), as torch.addmm."""
    if mat1.ndim != 2 or mat2.ndim != 2:
        raise ShapeError(
            f"addmm: mat1 and mat2 must be matrices, got {tuple(mat1.shape)} and "
            f"{tuple(mat2.shape)}"
        )
    return _scaled_sum(input, matmul(mat1, mat2), beta, alpha, "addmm")


@public("addmv")
def addmv(input, mat, vec, *, beta=1, alpha=1):
    """beta * input + alpha * (mat @ vec), as torch.addmv."""
    return _scaled_sum(input, mv(mat, vec), beta, alpha, "addmv")


@public("addr")
def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """beta * input + alpha * outer(vec1, vec2), as torch.addr."""
    if vec1.ndim != 1 or vec2.ndim != 1:
        raise ShapeError(
            f"addr: expected 1-D vectors, got {tuple(vec1.shape)} and {tuple(vec2.shape)}"
        )
    return _scaled_sum(input, vec1.unsqueeze(-1) * vec2, beta, alpha, "addr")


@public("baddbmm")
def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (batch1 @ batch2) per batch, as torch.baddbmm."""
    if batch1.ndim != 3 or batch2.ndim != 3:
        raise ShapeError(
            f"baddbmm: batch1 and batch2 must be 3-D, got {tuple(batch1.shape)} and "
            f"{tuple(batch2.shape)}"
        )
    return _scaled_sum(input, matmul(batch1, batch2), beta, alpha, "baddbmm")


@public("addbmm")
def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * the sum over the batch of batch1[i] @ batch2[i], as
    torch.addbmm."""
    if batch1.ndim != 3 or batch2.ndim != 3:
        raise ShapeError(
            f"addbmm: batch1 and batch2 must be 3-D, got {tuple(batch1.shape)} and "
            f"{tuple(batch2.shape)}"
        )
    return _scaled_sum(input, matmul(batch1, batch2).sum(0), beta, alpha, "addbmm")


@public("chain_matmul", method=False)
def chain_matmul(*matrices):
    """The product of 2-D matrices in order, as torch.chain_matmul."""
    if len(matrices) == 1:
        return matrices[0] * 1
    return multi_dot(matrices)


@public("ger")
def ger(input, vec2):
    """The outer product of two vectors (torch.ger, an alias of torch.outer)."""
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


@public("diag_embed")
def _diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """A tensor whose last-two-dim diagonals hold input's last dim, as torch.diag_embed."""
    return diag_embed(input, offset, dim1, dim2)


@public("cholesky_solve")
def cholesky_solve(input, input2, upper=False):
    """X with A X = input for A = L L^T given its Cholesky factor input2 (L, or U with upper),
    as torch.cholesky_solve."""
    lower = input2.mT if upper else input2
    return solve_triangular(lower.mT, solve_triangular(lower, input, upper=False), upper=True)


@public("cholesky_inverse")
def cholesky_inverse(input, upper=False):
    """The inverse of A = L L^T (or U^T U) from its Cholesky factor, as
    torch.cholesky_inverse."""
    n = input.shape[-1]
    return cholesky_solve(_eye_like(input, n).expand(tuple(input.shape)), input, upper)


TriangularSolveResult = namedtuple("TriangularSolveResult", ["solution", "cloned_coefficient"])


@public("triangular_solve")
def triangular_solve(input, A, upper=True, transpose=False, unitriangular=False):
    """(X, A) with op(A) X = input for triangular A, as torch.triangular_solve (deprecated
    there for torch.linalg.solve_triangular)."""
    tri = A.mT if transpose else A
    x = solve_triangular(tri, input, upper=upper != transpose, unitriangular=unitriangular)
    return TriangularSolveResult(x, A * 1)


# --- more of torch's matrix builders and torch.linalg's tensor forms -----------------------------
@public("block_diag", method=False)
def block_diag(*tensors):
    """The block-diagonal matrix of 0-, 1- or 2-D tensors (a 1-D tensor is one row), as
    torch.block_diag.

    Example:
        >>> import ember
        >>> ember.block_diag(ember.tensor([[1.0]]), ember.tensor([2.0, 3.0])).tolist()
        [[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]
    """
    blocks = []
    for i, t in enumerate(tensors):
        if t.ndim > 2:
            raise ShapeError(
                f"block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has "
                f"{t.ndim} dimensions"
            )
        blocks.append(t.reshape(1, -1) if t.ndim < 2 else t)
    if not blocks:
        raise ValueError(at_user_line("block_diag: expected at least one tensor"))
    dtype = _dt.result_type(*[b.dtype for b in blocks])
    blocks = [b.to(dtype) for b in blocks]
    width = builtins.sum(b.shape[1] for b in blocks)
    rows, left = [], 0
    for b in blocks:
        r, c = b.shape
        rows.append(S.cat([b.new_zeros((r, left)), b, b.new_zeros((r, width - left - c))], 1))
        left += c
    return S.cat(rows, 0)


@public("cartesian_prod", method=False)
def cartesian_prod(*tensors):
    """Every combination of the elements of 1-D tensors, one per row, as
    torch.cartesian_prod (itertools.product order).

    Example:
        >>> import ember
        >>> ember.cartesian_prod(ember.tensor([1, 2]), ember.tensor([3, 4])).tolist()
        [[1, 3], [1, 4], [2, 3], [2, 4]]
    """
    for i, t in enumerate(tensors):
        if t.ndim != 1:
            raise ShapeError(
                f"cartesian_prod: expect a 1D vector, but got shape {tuple(t.shape)} (input {i})"
            )
    if len(tensors) == 1:
        return tensors[0] * 1 if tensors[0].dtype.is_floating_point else tensors[0].clone()
    grids = S.meshgrid(*tensors, indexing="ij")
    return S.stack([g.reshape(-1) for g in grids], 1)


@public("vander", method=False)
def _vander(x, N=None, increasing=False):
    """The Vandermonde matrix of a 1-D tensor, as torch.vander: columns x^(N-1) ... x^0
    (increasing: x^0 ... x^(N-1))."""
    if x.ndim != 1:
        raise ShapeError(f"vander: x must be a one-dimensional tensor, got {tuple(x.shape)}")
    n = x.shape[0] if N is None else int(N)
    if n < 0:
        raise ValueOutOfRange(f"vander: N must be non-negative, got {n}")
    powers = np.arange(n) if increasing else np.arange(n)[::-1].copy()
    return x.unsqueeze(-1) ** x.new_tensor(powers, dtype=x.dtype)


@public("diagflat")
def diagflat(input, offset=0):
    """The flattened input as the `offset` diagonal of a square matrix, as torch.diagflat."""
    return S.diag(input.reshape(-1), offset)


def tensorinv(A, ind=2):
    """The inverse of A with respect to tensordot over `ind` dims, as torch.linalg.tensorinv:
    A's first `ind` dims multiply to the product of the rest."""
    if ind <= 0:
        raise ValueError(at_user_line(f"linalg.tensorinv: ind must be positive, got {ind}"))
    rows, cols = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    if math.prod(rows) != math.prod(cols):
        raise ShapeError(
            f"linalg.tensorinv: expected the product of the first {ind} dims of A "
            f"({math.prod(rows)}) to equal the product of the rest ({math.prod(cols)})"
        )
    return inv(A.reshape(math.prod(rows), -1)).reshape(cols + rows)


def tensorsolve(A, B, dims=None):
    """X with tensordot(A, X, X.ndim) = B, as torch.linalg.tensorsolve (`dims` of A moved to
    the end first)."""
    if dims is not None:
        A = S.movedim(A, tuple(dims), tuple(range(A.ndim - len(dims), A.ndim)))
    rest = tuple(A.shape[B.ndim :])
    x = solve(A.reshape(B.numel(), -1), B.reshape(-1))
    return x.reshape(rest)


@public("matrix_exp")
def matrix_exp(A):
    """The matrix exponential of square matrices, as torch.linalg.matrix_exp: the Taylor
    series of A / 2^s (norm <= 1/2, 18 terms, below float64 rounding) squared s times.
    The gradient is the series' own (within rounding of torch's). s is read from A's norm,
    so a compiled graph cannot take it (the compiler says so)."""
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ShapeError(
            f"linalg.matrix_exp: A must be batches of square matrices, got {tuple(A.shape)}"
        )
    if not A.dtype.is_floating_point:
        raise DTypeError(f"linalg.matrix_exp: expected a floating point tensor, got {A.dtype}")
    n = A.shape[-1]
    if A.numel() == 0:
        return A * 1
    norm = float(R.amax(E.abs(A).sum(-2)).detach())  # the largest 1-norm in the batch
    squarings = builtins.max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0
    scaled = A / (2.0**squarings)
    eye = _eye_like(A, n)
    term = eye.expand(tuple(A.shape))
    result = term
    for k in range(1, 19):
        term = (term @ scaled) / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result
