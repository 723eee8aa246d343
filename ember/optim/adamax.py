"""Adamax: Adam with the infinity norm (Kingma and Ba, 2014, section 7)."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.ops.elementwise import maximum
from ember.optim._functional import addcdiv_, addcmul_, lerp_
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
        _check_adam_args(lr, betas, eps, weight_decay)
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


def _moment_step(param: Tensor, grad: Tensor, state: dict, group: dict) -> tuple[int, Tensor]:
    """The step NAdam and RAdam share with Adam: count the step, negate the gradient for
    `maximize`, apply weight decay (L2 into the gradient, or decoupled into the parameter),
    and update the first and second moments `exp_avg` / `exp_avg_sq` in place. Returns the
    step number and the gradient as the moments saw it."""
    step_t = state["step"]
    step_t.add_(1)
    lr, weight_decay = group["lr"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if group["maximize"]:
        grad = -grad
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    lerp_(state["exp_avg"], grad, 1 - beta1)
    addcmul_(state["exp_avg_sq"].mul_(beta2), grad, grad, 1 - beta2)
    return step_t.item(), grad


def _check_adam_args(lr, betas, eps, weight_decay) -> None:
    if lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps < 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if weight_decay < 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
