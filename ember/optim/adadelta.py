"""Adadelta (Zeiler, 2012)."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.optim._functional import addcmul_
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


class Adadelta(Optimizer):
    r"""Adadelta, as PyTorch computes it.

    State per parameter: `step`, `square_avg` (v), `acc_delta` (u). For each parameter p with
    gradient g::

        g = -g                                   if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        v = rho * v + (1 - rho) * g * g
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta

    Example:
        >>> import ember, ember.nn as nn
        >>> model = nn.Linear(2, 1)
        >>> opt = ember.optim.Adadelta(model.parameters())
        >>> model(ember.ones(4, 2)).sum().backward()
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach=None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {
            "step": tensor(0.0, dtype=_dt.float32),
            "square_avg": zeros_like(param),
            "acc_delta": zeros_like(param),
        }

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        state["step"].add_(1)
        rho, eps = group["rho"], group["eps"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        addcmul_(square_avg.mul_(rho), grad, grad, 1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        addcmul_(acc_delta.mul_(rho), delta, delta, 1 - rho)
        param.add_(delta, alpha=-group["lr"])
