"""RMSprop (Hinton), optionally centered and with momentum."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.optim._functional import addcdiv_, addcmul_, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


class RMSprop(Optimizer):
    r"""RMSprop, as PyTorch computes it.

    State per parameter: `step`, `square_avg` (v), `momentum_buffer` (b) with momentum,
    `grad_avg` (m) when centered. For each parameter p with gradient g::

        g = -g                                   if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        v = alpha * v + (1 - alpha) * g * g
        if centered: m = lerp(m, g, 1 - alpha); avg = sqrt(v - m * m) + eps
        else:        avg = sqrt(v) + eps
        if momentum > 0: b = momentum * b + g / avg; p = p - lr * b
        else:            p = p - lr * g / avg
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach=None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if alpha < 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        state = {"step": tensor(0.0, dtype=_dt.float32), "square_avg": zeros_like(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = zeros_like(param)
        return state

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        if group["maximize"]:
            grad = -grad
        state["step"].add_(1)
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        square_avg = state["square_avg"]
        addcmul_(square_avg.mul_(alpha), grad, grad, 1 - alpha)
        if group["centered"]:
            grad_avg = lerp_(state["grad_avg"], grad, 1 - alpha)
            avg = (square_avg + (grad_avg * -1.0) * grad_avg).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            addcdiv_(buf.mul_(group["momentum"]), grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            addcdiv_(param, grad, avg, -lr)
