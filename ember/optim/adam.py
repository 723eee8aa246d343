"""Adam and AdamW (decoupled weight decay), with AMSGrad."""

from __future__ import annotations

import numpy as np

from ember import backend as _backend
from ember import dtypes as _dt
from ember.ops.elementwise import maximum
from ember.optim._functional import addcdiv_, addcmul_, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor, tensor, zeros_like


# Note [Compiled Adam step]: the NumPy `update_arrays` makes about a dozen passes over each
# parameter-sized array; with numba (the `fast` extra) the common case (no amsgrad, no
# maximize, contiguous float32/float64 arrays) is one pass that computes, per element, the
# same float operations in the same order with the same parameter-dtype scalars, so the same
# bits (tests/optim/test_optim_parity.py compares them). For a 22M-parameter BERT the step
# reads and writes each array once instead of about four times.
_ADAM_SOURCE = """
def adam_step(p, g, m, v, decoupled, decay, l2, weight_decay, c1, beta2, c2, bc2, eps, neg):
    for i in range(p.shape[0]):
        gi = g[i]
        pi = p[i]
        if decoupled:
            pi = pi * decay
        elif l2:
            gi = gi + pi * weight_decay
        mi = m[i] + (gi - m[i]) * c1
        vi = v[i] * beta2 + (gi * c2) * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi + (mi * neg) / (np.sqrt(vi) / bc2 + eps)
"""


def _compiled_step(p, g, m, v):
    """The compiled step for these arrays (Note [Compiled Adam step]), or None."""
    if not (p.dtype == g.dtype == m.dtype == v.dtype and p.dtype in (np.float32, np.float64)):
        return None
    if not all(a.flags.c_contiguous for a in (p, g, m, v)):
        return None
    from ember.backend import numba_kernels

    return numba_kernels.jit_source(_ADAM_SOURCE, "adam_step")


def _scratch(optimizer: Optimizer, param: Tensor):
    """Two work arrays per parameter, kept outside `state` (which must stay PyTorch's)."""
    scratch = optimizer.__dict__.setdefault("_scratch", {})
    pair = scratch.get(id(param))
    if pair is None or pair[0].shape != param._data.shape or pair[0].dtype != param._data.dtype:
        pair = scratch[id(param)] = (np.empty_like(param._data), np.empty_like(param._data))
    return pair


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

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach=None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused=None,
        decoupled_weight_decay: bool = False,
    ) -> None:
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
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay or self._decoupled,
        )
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict) -> dict:
        state = {
            "step": tensor(0.0, dtype=_dt.float32),
            "exp_avg": zeros_like(param),
            "exp_avg_sq": zeros_like(param),
        }
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
        step = _backend.host_values(step_t._data)
        if step is None:
            # staged (compiled): the step count is a graph value, so the bias corrections are
            # too (in float64, then rounded to the parameter's dtype as the eager scalars are)
            step = step_t.to(_dt.float64)
            step_size = (lr / (1 - beta1**step)).to(param.dtype)
            bias_correction2_sqrt = (1 - beta2**step).sqrt().to(param.dtype)
        else:
            step = step.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
        if group["amsgrad"]:
            max_sq = state["max_exp_avg_sq"]
            max_sq.copy_(maximum(max_sq, exp_avg_sq))
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        if isinstance(step_size, Tensor):  # traced: (value * a) / b with a graph value
            param.add_((exp_avg * -step_size) / denom)
        else:
            addcdiv_(param, exp_avg, denom, -step_size)

    def update_arrays(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        """`update` fused on NumPy arrays, in the same evaluation order (Note [Optimizer
        structure]); scalars are cast to the parameter's dtype as PyTorch's kernels do.
        With numba, the common case is one compiled pass (Note [Compiled Adam step])."""
        p, g = param._data, grad._data
        m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
        f = p.dtype.type
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        decoupled = weight_decay != 0 and group["decoupled_weight_decay"]
        l2 = weight_decay != 0 and not decoupled
        step_t = state["step"]
        step_t._data += 1
        step = float(step_t._data)
        bias_correction2_sqrt = f((1 - beta2**step) ** 0.5)
        neg_step_size = f(-(lr / (1 - beta1**step)))
        kernel = None if group["maximize"] or group["amsgrad"] else _compiled_step(p, g, m, v)
        if kernel is not None:
            kernel(
                p.reshape(-1),
                g.reshape(-1),
                m.reshape(-1),
                v.reshape(-1),
                decoupled,
                f(1 - lr * weight_decay),
                l2,
                f(weight_decay),
                f(1 - beta1),
                f(beta2),
                f(1 - beta2),
                bias_correction2_sqrt,
                f(eps),
                neg_step_size,
            )
            return
        buf, tmp = _scratch(self, param)
        if group["maximize"]:
            g = np.negative(g, out=tmp)
        if decoupled:
            np.multiply(p, f(1 - lr * weight_decay), out=p)
        elif l2:
            g = np.add(g, np.multiply(p, f(weight_decay), out=buf), out=tmp)
        # m = lerp(m, g, 1 - beta1) = m + (1 - beta1) (g - m)
        np.subtract(g, m, out=buf)
        buf *= f(1 - beta1)
        m += buf
        # v = beta2 v + ((1 - beta2) g) g
        v *= f(beta2)
        np.multiply(g, f(1 - beta2), out=buf)
        buf *= g
        v += buf
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]._data
            np.maximum(vmax, v, out=vmax)
            v = vmax
        np.sqrt(v, out=buf)
        buf /= bias_correction2_sqrt
        buf += f(eps)
        np.multiply(m, neg_step_size, out=tmp)
        tmp /= buf
        p += tmp


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): the Adam update of `Adam`, with
    `p = p * (1 - lr * weight_decay)` applied before it instead of adding the L2 gradient.
    Default weight_decay is 1e-2, as in PyTorch."""

    _decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach=None,
        capturable: bool = False,
        differentiable: bool = False,
        fused=None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
