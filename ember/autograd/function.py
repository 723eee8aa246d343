"""Custom differentiable functions: subclass `Function` with static `forward(ctx, ...)` and
`backward(ctx, *grads)`, call `MyFunction.apply(...)`.

Example:
    >>> import ember
    >>> class Square(ember.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x * g
"""

from __future__ import annotations

import weakref

from ember._util.errors import AutogradError, user_location
from ember.autograd.engine import OWN_OUTPUT, Node
from ember.autograd.grad_mode import _state, no_grad


class FunctionCtx:
    def __init__(self):
        self._saved = ()
        self._versions = ()
        self._freed = False
        self.needs_input_grad = ()
        # Note [Saved outputs of Functions]: the output while a backward runs, else a weak
        # reference to it and its data
        self._output = None
        self._output_ref = None
        self._output_data = None

    def save_for_backward(self, *tensors):
        self._saved = tensors
        versions = []
        for t in tensors:
            if t is None:
                continue
            if t._version is None:
                t._version = [0, None]
            versions.append((t, t._version, t._version[0], t._node))
        self._versions = tuple(versions)

    @property
    def saved_tensors(self):
        if self._freed:
            raise AutogradError(
                "saved_tensors: the tensors saved by this Function were freed after the first "
                "backward. Pass retain_graph=True to the first backward() if you need them again."
            )
        saved = self._saved
        if self._output_ref is None:
            return saved
        out = self._output
        if out is None:
            out = self._output_ref()
            if out is None:
                from ember.tensor import _wrap

                out = _wrap(self._output_data)
        return tuple(out if t is OWN_OUTPUT else t for t in saved)

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value: bool):
        pass


class _FunctionOp:
    """Plays the OpDef role for one custom Function class in the backward graph."""

    view = False
    stateful = False
    slot_gradient = None  # Note [Slot gradients] in ember/autograd/engine.py: runs its backward
    eager_vjp = None  # Note [Eager VJPs] in ember/autograd/engine.py: likewise

    def __init__(self, cls, ctx, n_inputs):
        self.name = cls.__name__
        self._cls = cls
        self._ctx = ctx
        self._n = n_inputs

    def vjp(self, g, out, *inputs):
        ctx = self._ctx
        ctx._output = out  # Note [Saved outputs of Functions]
        try:
            grads = self._cls.backward(ctx, g)
        finally:
            ctx._output = None
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) < self._n:
            grads = grads + (None,) * (self._n - len(grads))
        if len(grads) != self._n:
            raise AutogradError(
                f"{self.name}.backward returned {len(grads)} gradients for {self._n} inputs"
            )
        return grads

    def release(self):
        """Drop the ctx's saved tensors once a backward without retain_graph has used them,
        as built-in ops drop theirs (Note [Autograd graph] in ember/autograd/engine.py)."""
        ctx = self._ctx
        ctx._saved = ctx._versions = ()
        ctx._output_ref = ctx._output_data = None
        ctx._freed = True


class Function:
    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("Function subclasses must implement forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("Function subclasses must implement backward(ctx, ...)")

    @classmethod
    def apply(cls, *args, **kwargs):
        from ember.tensor import Tensor

        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if not (_state.enabled and any(ctx.needs_input_grad)):
            return out
        if not isinstance(out, Tensor):
            raise AutogradError(
                f"{cls.__name__}.forward must return one Tensor to be "
                f"differentiable, got {type(out).__name__}"
            )
        if out._node is not None or out is args[0] if args else False:
            out = out.detach()
        op = _FunctionOp(cls, ctx, len(args))
        edges = tuple(
            (a._node if a._node is not None else a)
            if isinstance(a, Tensor) and a.requires_grad
            else None
            for a in args
        )
        in_meta = tuple((tuple(a.shape), a.dtype) if isinstance(a, Tensor) else None for a in args)
        node = Node(op, {}, tuple(None for _ in args), edges, in_meta, user_location(2))
        result = out.detach() if out._base is not None else out
        versions = list(ctx._versions)
        if any(t is result for t in ctx._saved):
            # Note [Saved outputs of Functions]: no reference from the node to its output
            ctx._saved = tuple(OWN_OUTPUT if t is result else t for t in ctx._saved)
            ctx._output_ref = weakref.ref(result)
            ctx._output_data = node.out_data = result._data
            versions = [
                (None, counter, value, OWN_OUTPUT) if t is result else (t, counter, value, made)
                for t, counter, value, made in versions
            ]
            ctx._versions = tuple(versions)
        node.versions = versions
        result._node = node
        result._requires_grad = True
        return result
