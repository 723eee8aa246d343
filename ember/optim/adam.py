"""Adam and AdamW (decoupled weight decay), with AMSGrad; the argument checks and the moment
update that the rest of the Adam family (Adamax, NAdam, RAdam) shares."""

from __future__ import annotations

import numpy as np

from ember import dtypes as _dt
from ember.optim._functional import addcmul_, lerp_
from ember.optim.optimizer import Optimizer, lerp
from ember.tensor import Tensor, tensor, zeros_like


# Note [Compiled Adam step]: `Adam.rule` on NumPy arrays makes about a dozen passes over each
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


# Note [Multi-tensor Adam step]: the compiled step (Note [Compiled Adam step]) runs over all
# of a group's parameters at once, as PyTorch's foreach/fused Adam does: each parameter's
# arrays are cut into pieces of `_PIECE` elements, and the pieces of every parameter are
# handed to the parallel pool (Note [Parallel kernels] in ember/backend/parallel.py), each
# piece one call of the same kernel with that parameter's scalars. Every element's update is
# the same float operations on the same values whichever thread runs its piece, so the result
# is bit for bit the one-parameter-at-a-time serial step (tests/optim/test_optim_parity.py):
# at 2 threads MiniLM's AdamW step (22.7M parameters) takes half the time, and checkpoints
# resume to the same bits at any thread count.
_PIECE = 1 << 17


def _compiled_step(p, g, m, v):
    """The compiled step for these arrays (Note [Compiled Adam step]), or None."""
    if not (p.dtype == g.dtype == m.dtype == v.dtype and p.dtype in (np.float32, np.float64)):
        return None
    if not all(a.flags.c_contiguous for a in (p, g, m, v)):
        return None
    from ember.backend import numba_kernels

    return numba_kernels.jit_source(_ADAM_SOURCE, "adam_step")


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), as PyTorch computes it. Sparse gradients are refused (SparseAdam
    takes them).

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
        check_adam_args(lr, betas, eps, weight_decay)
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

    def rule(self, ops, p, g, state, group):
        """The algorithm of the class docstring, once (Note [Optimizer structure])."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        step = state["step"] + 1
        if group["maximize"]:
            g = -g
        if weight_decay != 0 and group["decoupled_weight_decay"]:
            p = p * (1 - lr * weight_decay)
        elif weight_decay != 0:
            g = g + p * weight_decay
        m = lerp(state["exp_avg"], g, 1 - beta1)
        v = state["exp_avg_sq"] * beta2 + (g * (1 - beta2)) * g
        new = {"step": step, "exp_avg": m, "exp_avg_sq": v}
        if group["amsgrad"]:
            v = new["max_exp_avg_sq"] = ops.maximum(state["max_exp_avg_sq"], v)
        # the bias corrections in float64 (a graph value when compiled), then the param dtype
        t = ops.float64(step)
        neg_step_size = ops.like(-(lr / (1 - beta1**t)), p)
        bias_correction2_sqrt = ops.like((1 - beta2**t) ** 0.5, p)
        return p + (m * neg_step_size) / (ops.sqrt(v) / bias_correction2_sqrt + eps), new

    sparse_message = "does not support sparse gradients, please consider SparseAdam instead"

    def _kernel_for(self, param: Tensor, grad: Tensor, state: dict, group: dict):
        """The compiled step for this parameter (Note [Compiled Adam step]), or None: the
        common case only (no amsgrad, no maximize, contiguous float arrays, 1 - beta1 < 0.5)."""
        if group["maximize"] or group["amsgrad"] or 1 - group["betas"][0] >= 0.5:
            return None
        return _compiled_step(
            param.array, grad.array, state["exp_avg"].array, state["exp_avg_sq"].array
        )

    @staticmethod
    def _count_and_scalars(param: Tensor, state: dict, group: dict) -> tuple:
        """Count the step; the kernel's scalar arguments for it, in the parameter's dtype."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        f = param.array.dtype.type
        weight_decay = group["weight_decay"]
        decoupled = weight_decay != 0 and group["decoupled_weight_decay"]
        step_t = state["step"]
        step_t.array += 1
        step = float(step_t.array)
        return (
            decoupled,
            f(1 - lr * weight_decay),
            weight_decay != 0 and not decoupled,
            f(weight_decay),
            f(1 - beta1),
            f(beta2),
            f(1 - beta2),
            f((1 - beta2**step) ** 0.5),
            f(eps),
            f(-(lr / (1 - beta1**step))),
        )

    def update_arrays(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        """`rule` on the NumPy arrays; with numba, the common case is one compiled pass of it
        (Note [Compiled Adam step])."""
        self.update_group_arrays([(param, grad, state)], group)

    def update_group_arrays(self, items: list, group: dict) -> None:
        """The compiled step over all of `items` at once, on the parallel pool (Note
        [Multi-tensor Adam step]); `rule` on the arrays for parameters it does not cover."""
        from ember.backend import parallel

        calls, size, kernel = [], 0, None
        for param, grad, state in items:
            kernel_here = self._kernel_for(param, grad, state, group)
            if kernel_here is None:
                Optimizer.update_arrays(self, param, grad, state, group)
                continue
            kernel = kernel_here  # one dispatcher for every dtype (jit_source's cache)
            arrays = (param.array, grad.array, state["exp_avg"].array, state["exp_avg_sq"].array)
            calls.append(
                (*(a.reshape(-1) for a in arrays), *self._count_and_scalars(param, state, group))
            )
            size += param.array.size
        if size > _PIECE and parallel.parallel_worth(size):
            parallel.run_chunks(kernel, [piece for call in calls for piece in _pieces(call)])
        else:  # one thread: one call per parameter
            for args in calls:
                kernel(*args)


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


def _pieces(call: tuple) -> list:
    """One kernel call's arguments cut into calls over `_PIECE` elements (Note [Multi-tensor
    Adam step])."""
    n = call[0].shape[0]
    if n <= _PIECE:
        return [call]
    return [(*(a[lo : lo + _PIECE] for a in call[:4]), *call[4:]) for lo in range(0, n, _PIECE)]


def adam_moment_step(param: Tensor, grad: Tensor, state: dict, group: dict) -> tuple[int, Tensor]:
    """The step NAdam and RAdam share with Adam, in place on Tensors: count the step, negate
    the gradient for `maximize`, apply weight decay (L2 into the gradient, or decoupled into
    the parameter), and update the first and second moments `exp_avg` / `exp_avg_sq` in place.
    Returns the step number and the gradient as the moments saw it."""
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


def check_adam_args(lr, betas, eps, weight_decay) -> None:
    """PyTorch's argument checks of the Adam family (Adam, AdamW, Adamax, NAdam, RAdam)."""
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
