"""SparseAdam: Adam's update on the rows a sparse gradient holds (torch.optim.SparseAdam)."""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.grad_mode import no_grad
from ember.optim.optimizer import Optimizer, SparseGradientError
from ember.tensor import Tensor, zeros_like


class SparseAdam(Optimizer):
    r"""Adam for sparse gradients (`nn.Embedding(sparse=True)`), as PyTorch computes it: only
    the rows present in the gradient move, and only their moments decay ("lazy Adam").

    State per parameter: `step` (an int), `exp_avg` (m), `exp_avg_sq` (v), dense. At each step
    t, with the gradient coalesced to rows R and values g (negated if maximize)::

        m[R] = m[R] + (1 - beta1) * (g - m[R])
        v[R] = v[R] + (1 - beta2) * (g * g - v[R])
        step_size = lr * sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p[R] = p[R] - step_size * m[R] / (sqrt(v[R]) + eps)

    Dense gradients are refused (torch's RuntimeError; use Adam), as are the other
    optimizers' sparse ones except SGD and Adagrad (Note [Sparse gradients] in
    ember/autograd/sparse.py).

    Example:
        >>> import ember, ember.nn as nn
        >>> table = nn.Embedding(10, 3, sparse=True)
        >>> opt = ember.optim.SparseAdam(table.parameters(), lr=0.1)
        >>> table(ember.tensor([1, 4, 1])).sum().backward()
        >>> table.weight.grad.is_sparse
        True
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {"step": 0, "exp_avg": zeros_like(param), "exp_avg_sq": zeros_like(param)}

    def step(self, closure=None):
        """One update of every parameter with a (sparse) gradient; returns closure's loss."""
        loss = None
        if closure is not None:
            from ember.autograd.grad_mode import enable_grad

            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if not p.grad.is_sparse:
                        raise SparseGradientError(
                            "SparseAdam does not support dense gradients, please consider Adam "
                            "instead"
                        )
                    state = self.state[p]
                    if not state:
                        state.update(self.init_state(p, group))
                    state["step"] += 1
                    self._update_rows(p, p.grad, state, group)
        return loss

    def _update_rows(self, param: Tensor, grad, state: dict, group: dict) -> None:
        grad = grad.coalesce()  # the update is not linear: each row once
        if grad._nnz() == 0:
            return
        rows = grad._indices().numpy()[0]
        g = grad._values().numpy()
        if group["maximize"]:
            g = -g
        beta1, beta2 = group["betas"]
        p, m, v = param.array, state["exp_avg"].array, state["exp_avg_sq"].array
        old_m, old_v = m[rows], v[rows]
        m_update = (g - old_m) * (1 - beta1)
        v_update = (g * g - old_v) * (1 - beta2)
        m[rows] = old_m + m_update
        v[rows] = old_v + v_update
        numer = m_update + old_m
        denom = np.sqrt(v_update + old_v) + group["eps"]
        t = state["step"]
        step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        p[rows] = p[rows] + (-step_size * (numer / denom)).astype(p.dtype)
        for tensor in (param, state["exp_avg"], state["exp_avg_sq"]):
            tensor._bump_version("SparseAdam.step")
