"""Adam and AdamW (decoupled weight decay), with AMSGrad."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.ops.elementwise import maximum
from ember.optim._functional import addcdiv_, addcmul_, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), as PyTorch computes it.

    State per parameter: `step`, `exp_avg` (m), `exp_avg_sq` (v), and `max_exp_avg_sq` with
    amsgrad. For each parameter p with gradient g, at step t::

        g = -g                                   if maximize
        p = p * (1 - lr * weight_decay)          if decoupled (AdamW)
        g = g + weight_decay * p                 elif weight_decay != 0 (Adam, L2)
        m = lerp(m, g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        denom = sqrt(v_hat) / sqrt(1 - beta2^t) + eps
        p = p - (lr / (1 - beta1^t)) * m / denom

    Example:
        >>> import ember, ember.nn as nn
        >>> model = nn.Linear(2, 1)
        >>> opt = ember.optim.Adam(model.parameters(), lr=1e-3)
        >>> model(ember.ones(4, 2)).sum().backward()
        >>> opt.step(); opt.zero_grad()
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, foreach=None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused=None, decoupled_weight_decay: bool = False) -> None:
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
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay or self._decoupled)
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        state = {"step": tensor(0.0, dtype=_dt.float32),
                 "exp_avg": zeros_like(param),
                 "exp_avg_sq": zeros_like(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_like(param)
        return state

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        step_t = state["step"]
        step_t.add_(1)
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        lerp_(exp_avg, grad, 1 - beta1)
        addcmul_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if group["amsgrad"]:
            max_sq = state["max_exp_avg_sq"]
            max_sq.copy_(maximum(max_sq, exp_avg_sq))
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        addcdiv_(param, exp_avg, denom, -step_size)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): the Adam update of `Adam`, with
    `p = p * (1 - lr * weight_decay)` applied before it instead of adding the L2 gradient.
    Default weight_decay is 1e-2, as in PyTorch."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach=None, capturable: bool = False, differentiable: bool = False,
                 fused=None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
