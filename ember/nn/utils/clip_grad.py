"""Gradient clipping as in PyTorch's `torch.nn.utils.clip_grad`, done in place under no_grad.

Note [Fused gradient clipping]: `clip_grad_norm_` over a model's gradients is, written with
ember ops (the reference, `foreach=False`), a norm per gradient (a square, a sum, a root: three
passes and two temporaries over each), a stack, and a multiply whose result is copied back:
about 60 ms a step for MiniLM's 22.7M gradient values, against PyTorch's ~11 ms. The fused path
(the default for dense, C-contiguous float32/float64 NumPy gradients of one dtype, with numba;
2-norm) makes two passes over the memory in all:
- one read: a compiled kernel sums the squares of each block of `_BLOCK` values (each run
  of 256 in the gradients' dtype, in vector registers, the runs' sums in float64); the blocks
  of every gradient are spread over the parallel pool (Note [Parallel kernels] in
  ember/backend/parallel.py), each block's sum lands in its own slot, and the total is
  `math.fsum` of the slots (exactly rounded, so independent of order), its square root rounded
  to the gradients' dtype. The blocks are fixed, whatever the thread count, so the norm is the
  same bits at 1 and 2 threads, from run to run (a resumed training run equals an
  uninterrupted one). The reference sums float32 squares in float32 and stacks float32 norms,
  so the two totals may differ by a few float32 ulps (on 11.7M random normal float32 values
  the fused sum of squares was within 1e-11 of the exact sum);
- one read and write: the in-place multiply by the clipping coefficient, computed from the
  total with the reference's float ops (`max_norm / (total + 1e-6)`, clamped at 1, in the
  gradients' dtype), as NumPy multiplies on slices on the pool (elementwise: the same bits as
  one serial multiply). When the coefficient is 1 the pass is skipped: x * 1 is x.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ember import backend as _backend
from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor, tensor

# Note [Fused gradient clipping]: values per block of the sum of squares (fixed, so the norm
# does not depend on the thread count), and blocks per task handed to the parallel pool
_BLOCK = 1 << 16
_BLOCKS_PER_TASK = 8

_SUM_SQUARES_SOURCE = """
def sum_squares(x, out, offset, first, last, block):
    n = x.shape[0]
    for k in range(first, last):
        lo = k * block
        hi = min(lo + block, n)
        total = 0.0
        for start in range(lo, hi, 256):
            piece = x[start : min(start + 256, hi)]
            partial = piece.dtype.type(0)
            for i in range(piece.shape[0]):
                partial += piece[i] * piece[i]
            total += np.float64(partial)
        out[offset + k] = total
"""


def _sum_squares_kernel():
    from ember.backend import numba_kernels

    # reassoc lets LLVM keep several partial sums in vector registers; the compiled order is
    # fixed, so the result is the same bits on every call
    return numba_kernels.jit_source(_SUM_SQUARES_SOURCE, "sum_squares", fastmath={"reassoc"})


def _fusable(grads, norm_type, foreach) -> bool:
    """Whether the fused path of Note [Fused gradient clipping] applies to these gradients."""
    if foreach is False or norm_type != 2.0:
        return False
    dtype = None
    for g in grads:
        if g.is_sparse:
            return False
        a = g.array
        if type(a) is not np.ndarray or not a.flags.c_contiguous:
            return False
        if dtype is None:
            dtype = a.dtype
            if dtype not in (np.float32, np.float64):
                return False
        elif a.dtype != dtype:
            return False
    return _backend.runs_eagerly(grads[0].array)


def _tasks(arrays):
    """(array, first block, last block, slot offset) tasks covering every array's blocks, and
    the number of slots."""
    tasks, slots = [], 0
    for a in arrays:
        blocks = max(1, -(-a.size // _BLOCK))
        for first in range(0, blocks, _BLOCKS_PER_TASK):
            tasks.append((a, first, min(first + _BLOCKS_PER_TASK, blocks), slots))
        slots += blocks
    return tasks, slots


def _fused_clip(grads, max_norm: float, error_if_nonfinite: bool):
    """Note [Fused gradient clipping]; None when numba is not available."""
    kernel = _sum_squares_kernel()
    if kernel is None:
        return None
    from ember.backend import parallel

    arrays = [g.array.reshape(-1) for g in grads]
    tasks, slots = _tasks(arrays)
    sums = np.zeros(slots, np.float64)
    argsets = [(a, sums, offset, first, last, _BLOCK) for a, first, last, offset in tasks]
    size = sum(a.size for a in arrays)
    if parallel.parallel_worth(size):
        parallel.run_chunks(kernel, argsets)
    else:
        for args in argsets:
            kernel(*args)
    dtype = arrays[0].dtype.type
    try:
        total = dtype(math.sqrt(math.fsum(sums.tolist())))
    except OverflowError:  # float64 squares whose sum passes the largest float
        total = dtype(math.inf)
    if error_if_nonfinite and not math.isfinite(total):
        _nonfinite(2.0, total)
    with np.errstate(all="ignore"):  # as the Tensor ops: inf or nan totals give nan/0 scales
        coef = min(dtype(max_norm) / (total + dtype(1e-6)), dtype(1.0))
    if coef != 1.0 or coef != coef:  # x * 1 is x: no pass needed
        pieces = [(a[lo * _BLOCK : last * _BLOCK],) for a, lo, last, _ in tasks]
        scale = dtype(coef)

        def multiply(x):
            np.multiply(x, scale, out=x)

        with np.errstate(all="ignore"):  # inf * 0 is nan, as with the Tensor ops
            if parallel.parallel_worth(size):
                parallel.run_chunks(multiply, pieces)
            else:
                for a in arrays:
                    multiply(a)
        for g in grads:
            g._bump_version("clip_grad_norm_")
    return tensor(total, dtype=grads[0].dtype)


def _nonfinite(norm_type, total):
    raise RuntimeError(
        f"clip_grad_norm_: the total norm of order {norm_type} of the "
        f"gradients is non-finite ({total}), so it cannot be "
        f"clipped; set error_if_nonfinite=False to skip this check"
    )


def _grads(parameters) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach=None,
) -> Tensor:
    """Scale all gradients together so that their joint `norm_type` norm is at most max_norm.

    Returns the total norm before clipping (a 0-d tensor). The scale is
    min(1, max_norm / (total_norm + 1e-6)), as in PyTorch. Dense float gradients of one dtype
    take one fused, parallel pass for the norm and one for the scaling (Note [Fused gradient
    clipping]); `foreach=False` asks for the per-gradient reference.

    Example:
        >>> import ember
        >>> w = ember.ones(4, requires_grad=True)
        >>> (w * 3.0).sum().backward()
        >>> round(ember.nn.utils.clip_grad_norm_([w], 1.0).item(), 3)
        6.0
    """
    grads = _grads(parameters)
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not grads:
        return tensor(0.0)
    if _fusable(grads, norm_type, foreach):
        total = _fused_clip(grads, max_norm, error_if_nonfinite)
        if total is not None:
            return total
    with no_grad():
        # a sparse gradient's norm is its coalesced values' (Note [Sparse gradients])
        dense = [g.coalesce()._values().reshape(-1) if g.is_sparse else g for g in grads]
        dense = [g if g.numel() else g.new_zeros((1,)) for g in dense]
        if norm_type == math.inf:
            norms = [g.abs().amax() for g in dense]
            total = norms[0] if len(norms) == 1 else _stack_reduce(norms, "max")
        else:
            norms = [g.norm(norm_type) for g in dense]
            total = _stack_reduce(norms, "sum", norm_type)
        if error_if_nonfinite and not math.isfinite(total.item()):
            _nonfinite(norm_type, total.item())
        coef = max_norm / (total + 1e-6)
        coef = coef.clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
    return total


def _stack_reduce(norms, how, p=None):
    from ember.ops.shape import stack

    s = stack([n.to(norms[0].dtype) for n in norms])
    if how == "max":
        return s.amax()
    return s.norm(p)


def clip_grad_value_(
    parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach=None
) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    from ember.ops.shape import cat

    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec[offset : offset + n].reshape(tuple(p.shape)))
            offset += n
