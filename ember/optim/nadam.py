"""NAdam: Adam with Nesterov momentum (Dozat, 2016), with PyTorch's momentum decay."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.optim._functional import addcdiv_
from ember.optim.adam import adam_moment_step, check_adam_args
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


class NAdam(Optimizer):
    r"""NAdam, as PyTorch computes it.

    State per parameter: `step`, `mu_product` (float32, as PyTorch keeps it), `exp_avg` (m),
    `exp_avg_sq` (v). For each parameter p with gradient g, at step t::

        g = -g                                   if maximize
        p = p * (1 - lr * weight_decay)          if decoupled_weight_decay
        g = g + weight_decay * p                 elif weight_decay != 0
        mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96^((t + 1) * momentum_decay))
        mu_product = mu_product * mu_t
        m = lerp(m, g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2^t)) + eps
        p = p - lr * (1 - mu_t) / (1 - mu_product) * g / denom
        p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    """

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach=None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_adam_args(lr, betas, eps, weight_decay)
        if momentum_decay < 0.0:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {
            "step": tensor(0.0, dtype=_dt.float32),
            "mu_product": tensor(1.0, dtype=_dt.float32),
            "exp_avg": zeros_like(param),
            "exp_avg_sq": zeros_like(param),
        }

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        step, grad = adam_moment_step(param, grad, state, group)
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        decay = group["momentum_decay"]
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * decay)))
        mu_product = state["mu_product"]
        mu_product.mul_(mu)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        denom = exp_avg_sq.div(1 - beta2**step).sqrt().add_(group["eps"])
        product = mu_product.item()
        product_next = product * mu_next
        addcdiv_(param, grad, denom, -lr * (1.0 - mu) / (1.0 - product))
        addcdiv_(param, exp_avg, denom, (-lr * mu_next) / (1.0 - product_next))
