"""L3: automatic differentiation (define-by-run), grad modes, custom Functions, checks."""

from __future__ import annotations

from ember.autograd.grad_mode import (
    enable_grad as enable_grad,
    inference_mode as inference_mode,
    is_grad_enabled as is_grad_enabled,
    no_grad as no_grad,
    set_grad_enabled as set_grad_enabled,
)
from ember.autograd.function import Function as Function, FunctionCtx as FunctionCtx
from ember.autograd.gradcheck import gradcheck as gradcheck, gradgradcheck as gradgradcheck
from ember._util.errors import AutogradError as AutogradError
from ember.autograd.engine import _accumulate_into, backward as _run

import numpy as _np


def _seed_grads(outputs, grad_outputs, who):
    seeds = []
    for i, out in enumerate(outputs):
        g = grad_outputs[i] if grad_outputs is not None else None
        if g is None:
            data = out._data
            if data.size != 1:
                raise AutogradError(
                    f"{who}: grad can be implicitly created only for scalar outputs; output "
                    f"{i} has shape {tuple(out.shape)} - pass a gradient of that shape"
                )
            if type(data) is _np.ndarray:  # ones_like without the creation machinery
                seeds.append(_tensor._wrap(_np.ones(data.shape, data.dtype)))
                continue
            g = _tensor.ones_like(out)
        elif not isinstance(g, _tensor.Tensor):
            g = _tensor.tensor(g, dtype=out.dtype)
        if tuple(g.shape) != tuple(out.shape):
            raise AutogradError(
                f"{who}: gradient shape {tuple(g.shape)} does not match output "
                f"shape {tuple(out.shape)}"
            )
        seeds.append(g)
    return seeds


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate gradients of `tensors` into the `.grad` of the leaves they depend on."""
    if isinstance(tensors, _tensor.Tensor):
        tensors = [tensors]
    if isinstance(grad_tensors, _tensor.Tensor):
        grad_tensors = [grad_tensors]
    for t in tensors:
        if not t.requires_grad:
            raise AutogradError(
                "backward: element 0 of tensors does not require grad and does not have a "
                "grad_fn (did you compute it under no_grad(), or forget requires_grad=True?)"
            )
    seeds = _seed_grads(tensors, grad_tensors, "backward")
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is not None:
        inputs = [inputs] if isinstance(inputs, _tensor.Tensor) else list(inputs)
        grads = _run(
            tensors,
            seeds,
            retain_graph,
            create_graph,
            inputs=inputs,
            accumulate=False,
            allow_unused=True,
        )
        for t, g in zip(inputs, grads):
            if g is not None:
                _accumulate_into(t, g, create_graph)
        return
    _run(tensors, seeds, retain_graph, create_graph)


def grad(
    outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False
):
    """Gradients of `outputs` with respect to `inputs`, returned (not accumulated)."""

    single_input = isinstance(inputs, _tensor.Tensor)
    outputs = [outputs] if isinstance(outputs, _tensor.Tensor) else list(outputs)
    inputs = [inputs] if single_input else list(inputs)
    if isinstance(grad_outputs, _tensor.Tensor):
        grad_outputs = [grad_outputs]
    for t in inputs:
        if not t.requires_grad:
            raise AutogradError("grad: one of the differentiated tensors does not require grad")
    seeds = _seed_grads(outputs, grad_outputs, "grad")
    if retain_graph is None:
        retain_graph = create_graph
    return _run(
        outputs,
        seeds,
        retain_graph,
        create_graph,
        inputs=inputs,
        accumulate=False,
        allow_unused=allow_unused,
    )


from ember import tensor as _tensor  # noqa: E402  (circular: tensor imports autograd)
