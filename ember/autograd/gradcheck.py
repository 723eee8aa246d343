"""Numerical gradient checks (central differences, float64), as in torch.autograd.gradcheck."""

from __future__ import annotations

import numpy as np


def numerical_jacobian_vjp(fn, inputs, cotangent, eps=1e-6):
    """d<cotangent, fn(inputs)>/d input_i by central differences, for every float input.

    Inputs are perturbed in place through their arrays (works for non-contiguous views too);
    grad mode stays as it is, so `fn` may itself differentiate (second-order checks)."""

    def value():
        out = fn(*inputs)
        return float((np.asarray(out._data, dtype=np.float64) * cotangent).sum())

    grads = []
    for x in inputs:
        if not (hasattr(x, "_data") and x.dtype.is_floating_point):
            grads.append(None)
            continue
        data = x._data
        g = np.zeros(data.shape, dtype=np.float64)
        for index in np.ndindex(*data.shape):
            orig = data[index]
            data[index] = orig + eps
            plus = value()
            data[index] = orig - eps
            minus = value()
            data[index] = orig
            g[index] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Compare autograd's VJP of `fn` with central differences (inputs should be float64)."""
    from ember.autograd import grad
    from ember.tensor import Tensor, _wrap

    inputs = tuple(inputs)
    out = fn(*inputs)
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(out.shape)
    diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    analytic = grad(out, diff, _wrap(cotangent.astype(out._data.dtype)), allow_unused=True)
    numeric = numerical_jacobian_vjp(fn, inputs, cotangent, eps)
    numeric = [n for x, n in zip(inputs, numeric) if isinstance(x, Tensor) and x.requires_grad]
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        a = np.zeros_like(n) if a is None else np.asarray(a._data, dtype=np.float64)
        if not np.allclose(a, n, atol=atol, rtol=rtol):
            if raise_exception:
                err = np.abs(a - n).max()
                raise AssertionError(
                    f"gradcheck: input {i}: analytic and numerical gradients "
                    f"differ by up to {err:.3g}\nanalytic:\n{a}\nnumerical:\n{n}"
                )
            return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """gradcheck of the first-order VJP (second-order gradients)."""
    from ember.autograd import grad
    from ember.tensor import Tensor, _wrap

    inputs = tuple(inputs)
    out = fn(*inputs)
    rng = np.random.default_rng(seed + 1)
    cot = _wrap(rng.standard_normal(out.shape).astype(out._data.dtype))
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first_order(*xs):
        o = fn(*xs)
        gs = grad(o, [xs[i] for i in diff_idx], cot, create_graph=True, allow_unused=True)
        total = None
        for g in gs:
            if g is None:
                continue
            s = (g * g).sum()
            total = s if total is None else total + s
        return total

    return gradcheck(first_order, inputs, eps, atol, rtol, seed)
