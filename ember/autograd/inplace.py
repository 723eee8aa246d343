"""L3: the in-place machinery of Tensor: version counters, PyTorch's in-place rules, and the
rewrite of a view's base history (Note [Views and in-place] in ember/tensor.py).

`InplaceMixin` is a base class of `Tensor`; every in-place method (`add_`, `x[i] = v`, the
generated `exp_`, `__iadd__`; Note [Op surface]) ends in `_inplace(op, *args)`.
"""

from __future__ import annotations

import builtins

import numpy as np

from ember._util.errors import AutogradError, at_user_line, user_location
from ember.autograd.grad_mode import _state
from ember import dtypes as _dt
from ember.backend import runs_eagerly
from ember.ops import random as _R


class InplaceMixin:
    """Writing into a tensor: `_inplace` and the checks around it."""

    __slots__ = ()

    def _check_writable(self, name):
        if type(self._data) is np.ndarray and not self._data.flags.writeable:
            raise RuntimeError(
                at_user_line(
                    f"{name}: this tensor is a broadcast (expanded) view whose elements share "
                    f"memory; call .clone() before writing to it"
                )
            )

    def _bump_version(self, name):
        if self._version is None:
            self._version = [1, (name, user_location(3))]
        else:
            self._version[0] += 1
            self._version[1] = (name, user_location(3))

    def _inplace(self, op, *args, _name=None, **attrs):
        """Run `op(self, *args)` and write the result into self (Note [Saved tensor versions],
        Note [Views and in-place])."""
        name = _name or op.name + "_"
        if self._view is not None and self._view[3] != self._version[0]:
            _dispatch.refresh_view(self)
        needs_graph = _state.enabled and self._records_inplace(args)
        if needs_graph:
            self._check_inplace(name)
        if not runs_eagerly(self._data):
            # staged (Note [Staging backends]): traced values are never overwritten, but self's
            # version moves: the op saves an alias of self's current value with its own counter
            current = self
            if needs_graph:
                current = _wrap(self._data)
                current._requires_grad = self._requires_grad
                current._node = self._node
            result = apply(op, current, *args, **attrs)
            if self._view is not None:  # the write lands in the base: rebind its traced value
                base, steps = _dispatch.view_chain(self)
                _graph_assign(base, apply(_S.VIEW_SCATTER, base, result, steps=steps), needs_graph)
            _graph_assign(self, result, needs_graph)
            self._bump_version(name)
            return self
        if needs_graph:
            # the op's VJP may need self's old value, which the write below overwrites
            snapshot = _wrap(self._data.copy())
            snapshot._requires_grad = self._requires_grad
            snapshot._node = self._node
            result = apply(op, snapshot, *args, **attrs)
        else:
            result = apply(op, self, *args, **attrs)
        data = self._data
        if type(data) is np.ndarray and not data.flags.writeable:
            self._check_writable(name)
        out = result._data
        if out.dtype != self._data.dtype:
            if not np.can_cast(out.dtype, self._data.dtype, "same_kind"):
                raise TypeError(
                    at_user_line(
                        f"{name}: result type {_DT_OF[out.dtype].name} can't be cast to the "
                        f"tensor's dtype {self.dtype.name}"
                    )
                )
        if out.shape != self._data.shape:
            raise ValueError(
                at_user_line(
                    f"{name}: the result has shape {out.shape} but the tensor being written has "
                    f"shape {self._data.shape} (in-place ops cannot broadcast the written tensor)"
                )
            )
        np.copyto(self._data, out, casting="unsafe") if type(
            self._data
        ) is np.ndarray else self._backend().xp.copyto(self._data, out)
        self._bump_version(name)
        if needs_graph:
            if self._view is None:
                _move_retained(self, result._node)
                self._node = result._node  # the result's node now describes self
                self._requires_grad = True
            else:
                _rebase_history(self, result)
        return self

    def _records_inplace(self, args) -> bool:
        """Whether autograd records an in-place op on self with these operands."""
        if not _state.enabled:
            return False
        if self._requires_grad or builtins.any(
            isinstance(a, Tensor) and a.requires_grad for a in args
        ):
            return True
        # a view made under no_grad of a base that requires grad (PyTorch counts it as
        # requiring grad; _check_inplace refuses it)
        return self._view is not None and self._made_without_grad() and self._base._requires_grad

    def _made_without_grad(self) -> bool:
        """Whether this view, or a view it was made from, was made under no_grad."""
        view = self._view
        while view is not None:
            if not view[4]:
                return True
            view = view[0]._view
        return False

    def _check_inplace(self, name):
        """PyTorch's rules for an in-place op that autograd records."""
        if self._view is not None:
            if self._made_without_grad():
                raise AutogradError(
                    at_user_line(
                        f"{name}: a view was created in no_grad mode and is being modified in "
                        f"place with grad mode enabled; this is ambiguous, so it is forbidden (as "
                        f"in PyTorch). Make both the view and the in-place op inside the no_grad "
                        f"block (not tracked) or both outside it (tracked)"
                    )
                )
            if self._requires_grad and self._base._node is None:
                raise AutogradError(
                    at_user_line(
                        f"{name}: a view of a leaf Variable that requires grad is being used in an "
                        f"in-place operation; wrap it in `with ember.no_grad():` or clone the leaf "
                        f"first"
                    )
                )
        elif self._node is None and self._requires_grad:
            raise AutogradError(
                at_user_line(
                    f"{name}: a leaf tensor that requires grad is used in an in-place "
                    f"operation; wrap it in `with ember.no_grad():` or use an out-of-place op"
                )
            )

    # --- random fills (nn.init) ----------------------------------------------------------
    def uniform_(self, a=0.0, b=1.0, generator=None):
        return self._fill_random(
            _R.uniform(tuple(self.shape), a, b, self.dtype, generator, self.device)
        )

    def normal_(self, mean=0.0, std=1.0, generator=None):
        return self._fill_random(
            _R.normal(tuple(self.shape), mean, std, self.dtype, generator, self.device)
        )

    def bernoulli_(self, p=0.5, generator=None):
        return self._fill_random(
            (
                _R.uniform(
                    tuple(self.shape), dtype=_dt.float64, generator=generator, device=self.device
                )
                < p
            ).to(self.dtype)
        )

    def random_(self, low=0, high=None, generator=None):
        if high is None:
            low, high = 0, low if low else 2**24
        return self._fill_random(
            _R.randint(low, high, tuple(self.shape), self.dtype, generator, self.device)
        )

    def exponential_(self, lambd=1.0, generator=None):
        u = _R.uniform(tuple(self.shape), dtype=_dt.float64, generator=generator)
        return self._fill_random((-(1.0 - u).log() / lambd).to(self.dtype))

    def _fill_random(self, values):
        if _state.enabled and self._requires_grad and self._node is None:
            from ember.autograd.grad_mode import no_grad

            with no_grad():  # PyTorch's nn.init runs these under no_grad
                return self._fill_random(values)
        self._check_writable("random fill")
        self._data[...] = values._data
        self._bump_version("random fill")
        return self


def _rebase_history(view, result):
    """An in-place op wrote `result` into `view`: the base's history becomes a view_scatter of
    its old history and `result` (PyTorch's CopySlices); the view's own history is regenerated
    from the base's when next used (Note [Views and in-place])."""
    base, steps = _dispatch.view_chain(view)
    new_base = _wrap(base._data)
    _dispatch._record(_S.VIEW_SCATTER, (base, result), {"steps": steps}, new_base)
    _move_retained(base, new_base._node)
    base._node = new_base._node
    base._requires_grad = True


def _move_retained(t, node):
    """retain_grad() follows the tensor to its new history, as in PyTorch."""
    old = t._node
    if old is not None and old.retained is not None and old.retained() is t:
        node.retained = old.retained
        old.retained = None


def _graph_assign(target, result, recorded=True):
    """In-place op on a staging backend: the traced value of `target` becomes `result`'s, and
    so does its history when autograd records the op (as eager: a write under no_grad keeps it)."""
    target._data = result._data
    if recorded:
        target._node = result._node
        target._requires_grad = result._requires_grad


def bind_late_names() -> None:
    """Import what this module needs from modules that import it (called by ember/tensor.py
    once Tensor and the dispatcher exist)."""
    global _dispatch, apply, _S, _DT_OF, Tensor, _wrap
    from ember.autograd import dispatch as _dispatch
    from ember.autograd.dispatch import apply
    from ember.ops import shape as _S
    from ember.tensor import _DT_OF, Tensor, _wrap
