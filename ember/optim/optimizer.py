"""`Optimizer`: parameter groups, per-parameter state, and PyTorch-compatible state dicts.

Note [Optimizer structure] (STYLE.md habit 9, after MLX's `init_single`/`apply_single`): an
optimizer subclass writes two things per parameter,
- `init_state(param, group) -> dict`: the state it keeps (moments, step count...), and
- `rule(ops, param, grad, state, group) -> (new param, {state key: new value})`: one step of the
  algorithm, written once, out of place, with arithmetic operators and the few functions of
  `ops` (`sqrt`, `maximum`, `float64`, `like`), as the class docstring writes it out.
The base class applies the rule under `no_grad` for every parameter that has a gradient, in
one of two ways, both from that one definition:
- `update` runs it on Tensors (`TENSOR_OPS`) and writes the results into the parameter and
  the state with `copy_`: the reference, used on any backend and when a step is compiled (the
  writes become the graph's in-place updates, Note [Staging backends]);
- `update_arrays` runs it on the raw NumPy arrays (`ARRAY_OPS`: no dispatch) and copies the
  results back, for CPU tensors in eager mode unless the group says `fused=False`; a subclass
  may first try a compiled kernel of the same rule (Note [Compiled Adam step]), and may take a
  group's parameters all at once (`update_group_arrays`, Note [Multi-tensor Adam step]).
Scalars take the parameter's dtype as the Tensor ops cast Python numbers, so both ways give the
same bits, and the tests check the trajectories against each other and against PyTorch.
The
state dict has PyTorch's layout: `{"state": {index: {...}}, "param_groups": [{..., "params":
[indices]}]}` with parameters numbered in group order, so a state dict round-trips through
PyTorch's `Optimizer.load_state_dict` by converting the tensors.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Callable, Iterable

import numpy as np

from ember import backend as _backend
from ember import dtypes as _dt
from ember import ops as _ops
from ember._util.errors import EmberError
from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor, zeros_like


class SparseGradientError(EmberError, RuntimeError):
    """An optimizer got a gradient of a layout it does not support (torch: RuntimeError)."""


def dense_equivalent(optimizer, grad, group: dict):
    """A sparse gradient as the dense one that gives the same update, for optimizers whose
    update of a zero-gradient row is none (Note [Sparse gradients]); weight decay would update
    every row, and torch refuses it, so this does too."""
    if group.get("weight_decay", 0) != 0:
        raise SparseGradientError(
            f"{type(optimizer).__name__}: the weight_decay option is not compatible with sparse "
            "gradients (as in torch); set weight_decay=0 or use dense gradients"
        )
    return grad.to_dense()


class _TensorOps:
    """What a `rule` needs beyond operators, on Tensors (Note [Optimizer structure])."""

    sqrt = staticmethod(_ops.sqrt)
    maximum = staticmethod(_ops.maximum)

    @staticmethod
    def float64(x):
        """A step count as a float64 value (a Tensor: a compiled step counts its own)."""
        return x.to(_dt.float64)

    @staticmethod
    def like(x, param):
        """A scalar in the parameter's dtype."""
        return x.to(param.dtype) if isinstance(x, Tensor) else x


class _ArrayOps:
    """What a `rule` needs beyond operators, on NumPy arrays (the fused eager path)."""

    sqrt = staticmethod(np.sqrt)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def float64(x):
        return float(x)

    @staticmethod
    def like(x, param):
        return param.dtype.type(x)


TENSOR_OPS = _TensorOps()
ARRAY_OPS = _ArrayOps()


def lerp(start, end, weight: float):
    """start + weight (end - start), as PyTorch evaluates it (the other end for weight >= 0.5)."""
    if weight < 0.5:
        return start + (end - start) * weight
    return end - (end - start) * (1.0 - weight)


class _RequiredParameter:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class: holds `param_groups` (list of dicts with a "params" list and the options) and
    `state` (a dict from parameter to its state dict)."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict) -> None:
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError(
                f"params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {type(params).__name__}"
            )
        param_groups = list(params)
        if not param_groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (missing options take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, "
                "but the ordering of tensors in sets will change between runs; use "
                "a list instead"
            )
        else:
            param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is "
                    f"{type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    f"parameter group didn't specify a value of required "
                    f"optimization parameter {name}"
                )
            param_group.setdefault(name, default)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        ids = [id(p) for p in param_group["params"]]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        if seen & set(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad = p.grad.detach()
                    p.grad.zero_()

    # Note [Sparse gradients] (ember/autograd/sparse.py): an optimizer whose update of a row
    # with zero gradient is no update (SGD, Adagrad) takes a sparse gradient as its dense
    # equivalent; the others refuse it, as torch does, and SparseAdam takes only sparse ones.
    sparse_message = "does not support sparse gradients"

    def sparse_gradient(self, grad, group: dict):
        """The dense gradient `step` uses for a sparse one, or torch's RuntimeError."""
        raise SparseGradientError(f"{type(self).__name__} {self.sparse_message}")

    # --- the algorithm (Note [Optimizer structure]) --------------------------------------------
    def init_state(self, param: Tensor, group: dict) -> dict:
        return {}

    def rule(self, ops, param, grad, state: dict, group: dict):
        """One step, out of place: (new param, {state key: new value}) (Note [Optimizer
        structure])."""
        raise NotImplementedError

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        """`rule` on Tensors, written back in place (the reference; compiled steps trace it)."""
        new_param, new_state = self.rule(TENSOR_OPS, param, grad, state, group)
        for key, value in new_state.items():
            old = state.get(key)
            if old is None:  # a concrete buffer, which a compiled step then writes in place
                state[key] = zeros_like(param).copy_(value)
            else:
                old.copy_(value)
        param.copy_(new_param)

    def update_arrays(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        """`rule` on the NumPy arrays (no dispatch, no Tensors), copied back in place."""
        arrays = {k: v.array if isinstance(v, Tensor) else v for k, v in state.items()}
        new_param, new_state = self.rule(ARRAY_OPS, param.array, grad.array, arrays, group)
        for key, value in new_state.items():
            old = state.get(key)
            if old is None:
                state[key] = Tensor.from_array(np.array(value, dtype=param.array.dtype, copy=True))
            else:
                np.copyto(old.array, value)
                old._bump_version(type(self).__name__ + ".step")
        np.copyto(param.array, new_param)

    def update_group_arrays(self, items: list, group: dict) -> None:
        """`update_arrays` for each (param, grad, state) of a group; a subclass may update
        them all at once (Note [Multi-tensor Adam step])."""
        for param, grad, state in items:
            self.update_arrays(param, grad, state, group)

    def step(self, closure: Callable[[], Any] | None = None):
        """Apply one update to every parameter that has a gradient; returns closure's loss."""
        loss = None
        if closure is not None:
            from ember.autograd.grad_mode import enable_grad

            with enable_grad():
                loss = closure()
        has_rule = type(self).rule is not Optimizer.rule  # else `update` is written by hand
        name = type(self).__name__ + ".step"
        _guard_state(self)
        with no_grad():
            for group in self.param_groups:
                use_fused = has_rule and group.get("fused") is not False
                on_arrays = []
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    if grad.is_sparse:
                        grad = self.sparse_gradient(grad, group)
                    state = self.state[p]
                    if not state:
                        state.update(self.init_state(p, group))
                    if (  # Note [Staging backends]: the fused kernel writes NumPy memory
                        use_fused
                        and type(p.array) is np.ndarray
                        and type(grad.array) is np.ndarray
                        and _backend.runs_eagerly(p.array)
                    ):
                        on_arrays.append((p, grad, state))
                    else:
                        self.update(p, grad, state, group)
                if on_arrays:
                    self.update_group_arrays(on_arrays, group)
                    for p, _, _ in on_arrays:
                        p._bump_version(name)
        return loss

    # --- state dicts -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"state": {index: state}, "param_groups": [options + "params": [indices]]}; the
        tensors in it are the live state (as in PyTorch), not copies."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                if id(p) not in index:
                    index[id(p)] = len(index)
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = self.state[p]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load options and state saved by `state_dict` (from ember, or PyTorch's converted)."""
        state_dict = copy.deepcopy(_shallow_tensors(state_dict))
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the "
                f"optimizer has {len(groups)}"
            )
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has "
                    f"{len(s['params'])} parameters, the optimizer's has "
                    f"{len(g['params'])}"
                )
        id_map = {}
        for g, s in zip(groups, saved_groups):
            for saved_id, p in zip(s["params"], g["params"]):
                id_map[saved_id] = p
        new_state: defaultdict = defaultdict(dict)
        for key, value in state_dict["state"].items():
            key = int(key) if isinstance(key, str) and key.isdigit() else key
            if key not in id_map:
                raise KeyError(
                    f"loaded state dict has state for parameter {key}, which is not "
                    f"in any parameter group"
                )
            p = id_map[key]
            new_state[p] = {k: _cast_state(p, k, v) for k, v in value.items()}
        new_groups = []
        for g, s in zip(groups, saved_groups):
            s = dict(s)
            s["params"] = g["params"]
            new_groups.append(s)
        self.state = new_state
        self.param_groups = new_groups


def _state_signature(ref):
    opt = ref()
    if opt is None:
        return None
    return sum(len(s) for s in opt.state.values())


def _guard_state(optimizer) -> None:
    """The update branches on whether each parameter's state exists yet (SGD's momentum buffer
    starts as the first gradient): a staging backend (a compiled step, Note [Staging backends])
    keeps the state's layout, and its graph holds only while the layout stays the same; a
    compiled step retraces once the first step has created the state (Note [Optimizer
    structure])."""
    import weakref

    ref = weakref.ref(optimizer)
    _backend.guard(("optimizer state", id(optimizer)), lambda: _state_signature(ref))


def _shallow_tensors(state_dict: dict) -> dict:
    # deep-copying ember tensors copies their arrays; torch tensors are converted by the caller
    return state_dict


def _cast_state(param: Tensor, key: str, value):
    """State tensors follow the parameter's dtype and device, except the step count."""
    if not isinstance(value, Tensor):
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
            from ember.tensor import tensor

            value = tensor(value.detach().cpu().numpy())
        else:
            return value
    if key == "step":
        return value
    if value.is_floating_point():
        value = value.to(param.dtype)
    return value.to(param.device)
