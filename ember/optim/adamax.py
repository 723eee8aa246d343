"""Adamax: Adam with the infinity norm (Kingma and Ba, 2014, section 7)."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.ops.elementwise import maximum
from ember.optim._functional import addcdiv_, lerp_
from ember.optim.adam import check_adam_args
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


class Adamax(Optimizer):
    r"""Adamax, as PyTorch computes it.

    State per parameter: `step`, `exp_avg` (m), `exp_inf` (u). For each parameter p with
    gradient g, at step t::

        g = -g                                   if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        m = lerp(m, g, 1 - beta1)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1^t) * m / u
    """

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach=None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_adam_args(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {
            "step": tensor(0.0, dtype=_dt.float32),
            "exp_avg": zeros_like(param),
            "exp_inf": zeros_like(param),
        }

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        step_t = state["step"]
        step_t.add_(1)
        beta1, beta2 = group["betas"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        lerp_(exp_avg, grad, 1 - beta1)
        exp_inf.copy_(maximum(exp_inf.mul_(beta2), grad.abs().add_(group["eps"])))
        clr = group["lr"] / (1 - beta1 ** step_t.item())
        addcdiv_(param, exp_avg, exp_inf, -clr)
