"""Gradient clipping as in PyTorch's `torch.nn.utils.clip_grad`, done in place under no_grad."""

from __future__ import annotations

import math
from typing import Iterable

from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor, tensor


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
    min(1, max_norm / (total_norm + 1e-6)), as in PyTorch.

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
            raise RuntimeError(
                f"clip_grad_norm_: the total norm of order {norm_type} of the "
                f"gradients is non-finite ({total.item()}), so it cannot be "
                f"clipped; set error_if_nonfinite=False to skip this check"
            )
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
