"""`Module`: the base class of layers and models, with PyTorch's names (STYLE.md habit 8).

A Module keeps three ordered registries filled by attribute assignment: `_parameters`
(Parameters), `_buffers` (tensors that are state but not trained, e.g. BatchNorm's running
statistics) and `_modules` (child Modules). Everything else (`parameters()`, `state_dict()`,
`to()`, `train()`...) walks these registries. No hooks, no other attribute magic.

Note [Module attribute mirror]: `module.weight` and `module.fc1` are read on every forward, often
hundreds of times per call of a model. Were they found only through `__getattr__` (after the
instance dict and the class missed), each read would cost a failed lookup, an AttributeError
and a Python call (~0.55 us against ~0.04 us for a plain attribute). So each registry is a
`_Registry`, an OrderedDict that mirrors every change of its entries into its module's
instance dict (what `__getattr__` would answer: the first of `_parameters`, `_buffers`,
`_modules` that holds the name), and plain attribute lookup finds them there. The registries
stay the truth: every way of changing one (`reg[k] = v`, `del`, `pop`, `popitem`, `clear`,
`update`, `setdefault`, `|=`, assigning a new registry to `_parameters`) updates the mirror, a
copy or a pickle of a registry is a plain OrderedDict-like registry bound to no module, and
`__setstate__` (unpickling, `copy.deepcopy`) binds the registries to the new module and
rebuilds its mirror. A registry refers to its module weakly, so a model is freed as soon as
its last reference goes, as before. `__getattr__` stays, for registries that are plain dicts.

Note [Module paths in errors]: `Module.__call__` keeps a stack of the modules being called. When
a forward raises a shape, dtype or value error, the innermost module rewrites the message once
to start with its path from the outermost called module and a short description, e.g.
`fc1 (Linear 784→128): input (32, 64) last dim 64 ≠ in_features 784`; the outer calls let the
annotated error pass. Layers check their inputs up front (`_check_input`) so that the message
speaks the layer's language rather than the failing op's.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

from ember import dtypes as _dt
from ember._util.errors import EmberError
from ember.autograd.grad_mode import no_grad
from ember.nn.parameter import Buffer, Parameter
from ember.tensor import Tensor


class _IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (
            f"_IncompatibleKeys(missing_keys={self.missing_keys}, "
            f"unexpected_keys={self.unexpected_keys})"
        )


class _CallStack(threading.local):
    def __init__(self):
        self.modules: list = []


_calls = _CallStack()
_REGISTRIES = ("_parameters", "_buffers", "_modules")  # __getattr__'s order


def _mirror(module_dict: dict, name: str) -> None:
    """Set `module_dict[name]` to what `__getattr__` answers for `name`, or drop it (Note
    [Module attribute mirror])."""
    for registry in _REGISTRIES:
        r = module_dict.get(registry)
        if r is not None and name in r:
            module_dict[name] = r[name]
            return
    module_dict.pop(name, None)


class _Registry(OrderedDict):
    """A Module's parameters, buffers or children, mirrored into the module's instance dict
    (Note [Module attribute mirror])."""

    __slots__ = ("_owner",)

    def __init__(self, owner=None, items=()):
        super().__init__()
        self._owner = None if owner is None else weakref.ref(owner)
        for key, value in items:
            OrderedDict.__setitem__(self, key, value)

    def _module_dict(self):
        owner = self._owner
        module = None if owner is None else owner()
        if module is None:
            return None
        d = module.__dict__
        for registry in _REGISTRIES:  # bound but replaced by another registry: no mirror
            if d.get(registry) is self:
                return d
        return None

    def _changed(self, keys) -> None:
        d = self._module_dict()
        if d is not None:
            for key in keys:
                _mirror(d, key)

    def __setitem__(self, key, value):
        OrderedDict.__setitem__(self, key, value)
        self._changed((key,))

    def __delitem__(self, key):
        OrderedDict.__delitem__(self, key)
        self._changed((key,))

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key in self:
            value = OrderedDict.pop(self, key)
            self._changed((key,))
            return value
        if default is _Registry._MISSING:
            raise KeyError(key)
        return default

    def popitem(self, last: bool = True):
        key, value = OrderedDict.popitem(self, last)
        self._changed((key,))
        return key, value

    def clear(self):
        keys = list(self)
        OrderedDict.clear(self)
        self._changed(keys)

    def update(self, *args, **kwargs):
        for key, value in OrderedDict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return OrderedDict.__getitem__(self, key)

    def __ior__(self, other):
        self.update(other)
        return self

    def copy(self):
        return _Registry(None, self.items())

    def __reduce__(self):
        # a copy or a pickle is bound to no module; Module.__setstate__ binds it
        return (_Registry, (), None, None, iter(self.items()))


def _bind_registries(module) -> None:
    """Make the module's registries `_Registry`s bound to it and rebuild its mirror (Note
    [Module attribute mirror])."""
    d = module.__dict__
    names = set()
    for registry in _REGISTRIES:
        r = d.get(registry)
        if r is None:
            continue
        if type(r) is _Registry and r._owner is None:  # a copy's or a pickle's: bind it
            r._owner = weakref.ref(module)
        elif type(r) is not _Registry or r._module_dict() is not d:  # another module's
            r = _Registry(module, r.items())
            d[registry] = r
        names.update(r)
    for name in names:
        _mirror(d, name)


_ANNOTATED = "_ember_module_path_added"


def _module_path(stack) -> str:
    """Dotted path of stack[-1] inside stack[0] (Note [Module paths in errors])."""
    names = []
    for parent, child in zip(stack, stack[1:]):
        for name, m in parent._modules.items():
            if m is child:
                names.append(name)
                break
        else:
            for name, m in parent.named_modules():
                if m is child and name:
                    names.append(name)
                    break
            else:
                names.append(f"<{type(child).__name__}>")
    return ".".join(names)


def _annotate(error: BaseException, module: "Module") -> BaseException:
    path = _module_path(_calls.modules)
    label = module._error_label()
    prefix = f"{path} ({label})" if path else label
    if str(error).startswith(f"{label}: "):  # the layer named itself already: say it once
        prefix = path
    message = f"{prefix}: {error}" if prefix else str(error)
    try:
        new = type(error)(message)
    except Exception:  # an exception type with another constructor: keep it, prefix its args
        error.args = (message,) + tuple(error.args[1:])
        new = error
    setattr(new, _ANNOTATED, True)
    return new


class Module:
    """Base class of all layers and models.

    Example:
        >>> import ember, ember.nn as nn
        >>> class MLP(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1 = nn.Linear(4, 8)
        ...         self.fc2 = nn.Linear(8, 2)
        ...     def forward(self, x):
        ...         return self.fc2(ember.relu(self.fc1(x)))
        >>> [name for name, _ in MLP().named_parameters()]
        ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """

    training: bool
    _version: int = 1

    def __init__(self, *args, **kwargs) -> None:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", _Registry(self))
        object.__setattr__(self, "_buffers", _Registry(self))
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", _Registry(self))

    def __setstate__(self, state) -> None:
        """Unpickling and `copy.deepcopy`: the state, then registries bound to this module
        (Note [Module attribute mirror])."""
        self.__dict__.update(state)
        _bind_registries(self)

    # --- forward -------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function'
        )

    def __call__(self, *args, **kwargs):
        stack = _calls.modules
        stack.append(self)
        try:
            return self.forward(*args, **kwargs)
        except (EmberError, ValueError, TypeError, IndexError) as error:
            if getattr(error, _ANNOTATED, False):
                raise
            raise _annotate(error, self).with_traceback(error.__traceback__) from None
        finally:
            stack.pop()

    def _error_label(self) -> str:
        """Short description used in error messages, e.g. 'Linear 784→128'."""
        return type(self).__name__

    # --- registration --------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._remove_from(name, self.__dict__, self._buffers, self._modules)
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter "
                    f"'{name}' (ember.nn.Parameter or None expected)"
                )
            params[name] = None
            return
        if isinstance(value, Module):
            modules = self.__dict__.get("_modules")
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._remove_from(name, self.__dict__, self._parameters, self._buffers)
            modules[name] = value
            return
        modules = self.__dict__.get("_modules")
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module "
                    f"'{name}' (ember.nn.Module or None expected)"
                )
            modules[name] = None
            return
        buffers = self.__dict__.get("_buffers")
        if isinstance(value, Buffer):
            self.register_buffer(name, value, value.persistent)
            return
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                    f"(ember.Tensor or None expected)"
                )
            buffers[name] = value
            return
        if name in _REGISTRIES and isinstance(value, dict):
            # a new registry replaces the old one: the old one's names leave the mirror
            d = self.__dict__
            old = d.get(name)
            d[name] = value
            for key in () if old is None else list(old):
                _mirror(d, key)
            _bind_registries(self)
            return
        object.__setattr__(self, name, value)

    @staticmethod
    def _remove_from(name, *dicts):
        for d in dicts:
            if name in d:
                del d[name]

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            r = d.get(registry)
            if r is not None and name in r:
                return r[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(
            set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules)
        )

    def _check_name(self, name: str, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f'{kind} name can\'t contain "." or be empty, got {name!r}')
        if hasattr(self, name) and not any(
            name in r for r in (self._parameters, self._buffers, self._modules)
        ):
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter "
                f"'{name}' (ember.nn.Parameter or None required)"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer "
                f"'{name}' (ember.Tensor or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(
                    f"{type(module).__name__} has no submodule {part!r} (looking for {target!r})"
                )
            module = module._modules[part]
        return module

    def get_parameter(self, target: str) -> Parameter:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._parameters:
            raise AttributeError(f"{type(module).__name__} has no parameter {name!r}")
        return module._parameters[name]

    # --- iteration -----------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry: str, prefix: str, recurse: bool, remove_duplicate=True):
        seen = set()
        modules = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else [(prefix, self)]
        )
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ):
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # --- modes and bulk changes ----------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad = p.grad.detach()
                p.grad.zero_()

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call `fn` on every submodule (children first) and then on self, as PyTorch does."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _apply_to_tensors(self, fn: Callable[[Tensor], Tensor]) -> "Module":
        """Replace each parameter's and buffer's data by fn(data), keeping the objects (so an
        optimizer built before `.to()` still holds the right parameters)."""
        with no_grad():
            for module in self.modules():
                for p in module._parameters.values():
                    if p is None:
                        continue
                    p.array = fn(p).array
                    if p.grad is not None:
                        p.grad.array = fn(p.grad).array
                for _name, b in module._buffers.items():
                    if b is not None:
                        b.array = fn(b).array
        return self

    def to(self, *args, **kwargs) -> "Module":
        """to(device) | to(dtype) | to(device, dtype) | to(tensor): floating point parameters and
        buffers are cast to `dtype`; everything moves to `device`."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to: unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif isinstance(a, _dt.DType):
                dtype = a
            else:
                try:
                    dtype = _dt.as_dtype(a)
                except TypeError:
                    device = a
        if dtype is not None:
            dtype = _dt.as_dtype(dtype)
            if not dtype.is_floating_point:
                raise TypeError(f"nn.Module.to only accepts floating point dtypes, got {dtype}")

        def convert(t: Tensor) -> Tensor:
            out = t
            if device is not None:
                out = out.to(device)
            if dtype is not None and out.is_floating_point():
                out = out.to(dtype)
            return out

        return self._apply_to_tensors(convert)

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device=None) -> "Module":
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self) -> "Module":
        return self.to(_dt.float32)

    def double(self) -> "Module":
        return self.to(_dt.float64)

    def half(self) -> "Module":
        return self.to(_dt.float16)

    def bfloat16(self) -> "Module":
        """Parameters and buffers in bfloat16, computing in float32 (Note [Half-precision
        weights])."""
        return self.to(_dt.bfloat16)

    # --- state dict ----------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """Parameters and persistent buffers by dotted name (detached unless keep_vars)."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy tensors from `state_dict` into this module's parameters and buffers.

        Returns (missing_keys, unexpected_keys). Keys whose shapes differ are never loaded; with
        `strict` any missing, unexpected or shape-mismatched key raises a RuntimeError that
        lists them all (nothing is copied in that case)."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(
                f"load_state_dict: expected a dict-like object, got {type(state_dict).__name__}"
            )
        own = {}
        for prefix, module in self.named_modules():
            dot = prefix + "." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    own[dot + name] = (module, name, p)
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    own[dot + name] = (module, name, b)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        mismatched = []
        for key, (_module, _name, target) in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            shape = tuple(value.shape) if hasattr(value, "shape") else None
            if shape is None:
                mismatched.append((key, f"expected a tensor, got {type(value).__name__}"))
            elif shape != tuple(target.shape):
                mismatched.append(
                    (
                        key,
                        f"copying a param with shape {shape} from checkpoint, the shape in "
                        f"current model is {tuple(target.shape)}",
                    )
                )
        errors = []
        if strict:
            if missing:
                errors.append(
                    "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + "."
                )
            if unexpected:
                errors.append(
                    "Unexpected key(s) in state_dict: "
                    + ", ".join(f'"{k}"' for k in unexpected)
                    + "."
                )
        errors += [f"size mismatch for {k}: {why}." for k, why in mismatched]
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        with no_grad():
            for key, (module, name, target) in own.items():
                if key not in state_dict:
                    continue
                value = state_dict[key]
                if not isinstance(value, Tensor):
                    from ember.tensor import tensor as _tensor

                    value = _tensor(value)
                if assign:
                    if name in module._parameters:
                        module._parameters[name] = Parameter(
                            value.to(target.dtype), target.requires_grad
                        )
                    else:
                        module._buffers[name] = value.to(target.dtype)
                else:
                    target.copy_(value)
        return _IncompatibleKeys(missing, unexpected)

    # --- printing ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        child_lines = _child_lines(self._modules)
        main = self._get_name() + "("
        if lines and not child_lines and len(lines) == 1:
            return main + lines[0] + ")"
        body = lines + child_lines
        if not body:
            return main + ")"
        return main + "\n  " + "\n  ".join(body) + "\n)"


def _indent(text: str) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first] + ["  " + line for line in rest])


def _child_lines(modules) -> list:
    lines = []
    for name, module in modules.items():
        lines.append(f"({name}): " + _indent(repr(module)))
    return lines
