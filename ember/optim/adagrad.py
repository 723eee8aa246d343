"""Adagrad (Duchi et al.) with learning-rate decay."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.optim._functional import addcdiv_, addcmul_
from ember.optim.optimizer import Optimizer, dense_equivalent
from ember.tensor import Tensor, full_like, tensor


class Adagrad(Optimizer):
    r"""Adagrad, as PyTorch computes it.

    State per parameter: `step`, `sum` (s, starting at initial_accumulator_value). For each
    parameter p with gradient g, at step t::

        g = -g                                   if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach=None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused=None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if lr_decay < 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if initial_accumulator_value < 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)
        # PyTorch creates Adagrad's state eagerly, in the constructor
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.init_state(p, group)

    def sparse_gradient(self, grad, group: dict):
        return dense_equivalent(self, grad, group)  # Note [Sparse gradients]

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {
            "step": tensor(0.0, dtype=_dt.float32),
            "sum": full_like(param, group["initial_accumulator_value"]),
        }

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        step_t = state["step"]
        step_t.add_(1)
        step = step_t.item()
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        state_sum = addcmul_(state["sum"], grad, grad)
        std = state_sum.sqrt().add_(group["eps"])
        addcdiv_(param, grad, std, -clr)
