"""`ember.linalg`: torch.linalg's names over ember's linear algebra (a face: names only).

The functions live in ember/ops/linalg_ext.py (solvers and decompositions as primitives over
the backend's LAPACK, Note [Packed decompositions]; the rest composites) and
ember/ops/linalg.py (matmul).

Example:
    >>> import ember
    >>> A = ember.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> x = ember.linalg.solve(A, ember.tensor([1.0, 2.0]))
    >>> [round(v, 4) for v in (A @ x).tolist()]
    [1.0, 2.0]
"""

from ember._util.errors import LinAlgError as LinAlgError
from ember.ops.linalg import matmul as matmul
from ember.ops.linalg_ext import cholesky as cholesky
from ember.ops.linalg_ext import cholesky_ex as cholesky_ex
from ember.ops.linalg_ext import cond as cond
from ember.ops.linalg_ext import cross as cross
from ember.ops.linalg_ext import det as det
from ember.ops.linalg_ext import eigh as eigh
from ember.ops.linalg_ext import eigvalsh as eigvalsh
from ember.ops.linalg_ext import inv as inv
from ember.ops.linalg_ext import inv_ex as inv_ex
from ember.ops.linalg_ext import lstsq as lstsq
from ember.ops.linalg_ext import matrix_exp as matrix_exp
from ember.ops.linalg_ext import matrix_norm as matrix_norm
from ember.ops.linalg_ext import matrix_power as matrix_power
from ember.ops.linalg_ext import matrix_rank as matrix_rank
from ember.ops.linalg_ext import multi_dot as multi_dot
from ember.ops.linalg_ext import norm as norm
from ember.ops.linalg_ext import pinv as pinv
from ember.ops.linalg_ext import qr as qr
from ember.ops.linalg_ext import slogdet as slogdet
from ember.ops.linalg_ext import solve as solve
from ember.ops.linalg_ext import solve_ex as solve_ex
from ember.ops.linalg_ext import solve_triangular as solve_triangular
from ember.ops.linalg_ext import svd as svd
from ember.ops.linalg_ext import svdvals as svdvals
from ember.ops.linalg_ext import tensorinv as tensorinv
from ember.ops.linalg_ext import tensorsolve as tensorsolve
from ember.ops.linalg_ext import vander as vander
from ember.ops.linalg_ext import vecdot as vecdot
from ember.ops.linalg_ext import vector_norm as vector_norm


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """The diagonals of the matrices in A, as torch.linalg.diagonal (dims default to the last
    two)."""
    return A.diagonal(offset, dim1, dim2)


__all__ = [
    "LinAlgError",
    "cholesky",
    "cholesky_ex",
    "cond",
    "cross",
    "det",
    "diagonal",
    "eigh",
    "eigvalsh",
    "inv",
    "inv_ex",
    "lstsq",
    "matmul",
    "matrix_exp",
    "matrix_norm",
    "matrix_power",
    "matrix_rank",
    "multi_dot",
    "norm",
    "pinv",
    "qr",
    "slogdet",
    "solve",
    "solve_ex",
    "solve_triangular",
    "svd",
    "svdvals",
    "tensorinv",
    "tensorsolve",
    "vander",
    "vecdot",
    "vector_norm",
]
