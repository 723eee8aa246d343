"""In-place helpers shared by the optimizers, each evaluating in the same order as PyTorch's CPU
kernel so that trajectories agree to float32 rounding (Note [Optimizer structure])."""

from __future__ import annotations

from ember.tensor import Tensor


def lerp_(t: Tensor, end: Tensor, weight: float) -> Tensor:
    """t + w (end - t) for w < 0.5, else end - (end - t)(1 - w): PyTorch's lerp."""
    if weight < 0.5:
        return t.add_((end - t) * weight)
    return t.copy_(end - (end - t) * (1.0 - weight))


def addcmul_(t: Tensor, a: Tensor, b: Tensor, value: float = 1.0) -> Tensor:
    """t + value * a * b, evaluated as (value * a) * b."""
    return t.add_((a * value) * b if value != 1.0 else a * b)


def addcdiv_(t: Tensor, a: Tensor, b: Tensor, value: float = 1.0) -> Tensor:
    """t + value * a / b, evaluated as (value * a) / b."""
    return t.add_((a * value) / b if value != 1.0 else a / b)
