"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from ember.optim.optimizer import dense_equivalent, Optimizer, required
from ember.tensor import Tensor


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's algorithm).

    For each parameter p with gradient g, at step t::

        g = -g                                   if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        if momentum != 0:
            b = g                                if t == 1
            b = momentum * b + (1 - dampening) * g   otherwise
            g = g + momentum * b                 if nesterov, else g = b
        p = p - lr * g

    A sparse gradient (Note [Sparse gradients]) is taken as its dense equivalent, which gives
    torch's sparse update; with weight_decay it is refused, as torch refuses it.

    Example:
        >>> import ember, ember.nn as nn
        >>> model = nn.Linear(2, 1)
        >>> opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> model(ember.ones(4, 2)).sum().backward()
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach=None,
        differentiable: bool = False,
        fused=None,
    ) -> None:
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def sparse_gradient(self, grad, group: dict):
        return dense_equivalent(self, grad, group)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {}  # the momentum buffer appears at the first step, as in PyTorch

    def rule(self, ops, p, g, state, group):
        """The algorithm of the class docstring, once (Note [Optimizer structure])."""
        if group["maximize"]:
            g = -g
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if weight_decay != 0:
            g = g + p * weight_decay
        new = {}
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:  # the first step: the buffer starts as the gradient
                buf = g
            else:
                damping = 1 - group["dampening"]
                buf = buf * momentum + (g if damping == 1 else g * damping)
            new["momentum_buffer"] = buf
            g = g + buf * momentum if group["nesterov"] else buf
        return p + g * -group["lr"], new
