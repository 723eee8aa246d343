"""Whole-module checkpoints: the class allow-list (`add_safe_globals`, `safe_globals`) and the
encoding of an `ember.nn.Module` as class path + plain attributes + tensors, never pickle.

Note [Whole-module checkpoints]: `ember.save(model, path)` writes the ordinary checkpoint
layout (Note [Checkpoint layout]) with each Module in the tree replaced by a node
    {"__module__": {"id": n, "class": "ember.nn.modules.linear.Linear",
                    "attrs": {...}, "parameters": {...}, "buffers": {...},
                    "non_persistent": [...], "modules": {name: node | None}}}
("class" is the class's `__module__` + "." + `__qualname__`). "attrs" holds what the class's
`__init__` stored besides tensors and submodules (in_features, padding, training...): plain
values, containers of them, tensors, dtypes, plus three tagged kinds: {"__function__": path}
(an activation function), {"__parameter__": {...}} (a Parameter held in a plain attribute,
the same object as the registered one) and {"__config__": {"class": path, "data": {...}}}
(a configuration object rebuilt by `cls.from_dict(data)`). Anything else makes `save` refuse,
naming the attribute's path and type: nothing is silently dropped. A module met twice (shared
submodules) is {"__module_ref__": n} the second time; a tensor met twice is stored once.
Loading rebuilds each module by `cls.__new__(cls)`, `Module.__init__` and restoring the
recorded state; no `__init__` of the class runs, and no code named by the file runs beyond
importing ember's own modules. A class (or function, or config class) is rebuilt only if it
is allowed: ember's own (`ember.nn.*`, `ember.transformers.*`; functions also from
`ember.ops.*`), or registered with `add_safe_globals` / inside `with safe_globals([...])`,
as torch's `weights_only` unpickler does. Otherwise the load fails naming the class and how
to allow it. `load(path, weights_only=False)` is the caller's statement that the file is
trusted, as it is for torch.load (whose full unpickler then runs whatever the file names): ember
then also imports a class or function recorded outside the allow-list by its path, and still
builds nothing but `ember.nn.Module` subclasses, configs with `from_dict`, and functions kept as
attributes (never called). Such files carry the metadata "ember.checkpoint": "2"; state-dict
files stay layout "1". `load(path, weights_only=True)` refuses them, as torch 2.6+ does for
full modules.
"""

from __future__ import annotations

import contextlib
import importlib

__all__ = [
    "UnsafeClassError",
    "add_safe_globals",
    "clear_safe_globals",
    "get_safe_globals",
    "safe_globals",
]

# full dotted name ("pkg.mod.Class") -> the object registered for it
_SAFE: dict[str, object] = {}

# ember's own classes load without registration (Note [Whole-module checkpoints]).
_EMBER_CLASS_PREFIXES = ("ember.nn.", "ember.transformers.")
_EMBER_FUNCTION_PREFIXES = ("ember.nn.", "ember.transformers.", "ember.ops.")
_PLAIN = (int, float, str, bool, type(None))


class UnsafeClassError(ValueError):
    """A whole-module checkpoint names a class or function outside the allow-list."""


def _full_name(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _entries(objects, where: str):
    if not isinstance(objects, (list, tuple)):
        raise TypeError(f"{where}: expected a list of classes or functions, got {objects!r}")
    for item in objects:
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise TypeError(f"{where}: expected (object, 'module.Name') pairs, got {item!r}")
            yield item[1], item[0]
        elif hasattr(item, "__module__") and hasattr(item, "__qualname__"):
            yield _full_name(item), item
        else:
            raise TypeError(
                f"{where}: {item!r} ({type(item).__name__}) is not a class or function; "
                "pass classes (or (object, 'module.Name') pairs)"
            )


def add_safe_globals(safe_globals: list) -> None:
    """Allow these classes (and functions) in whole-module checkpoints that `ember.load` reads.

    As `torch.serialization.add_safe_globals`: each item is a class or function, or an
    `(object, "module.Name")` pair naming it as the file does.

    Example:
        >>> import ember
        >>> class MyNet(ember.nn.Module): ...
        >>> ember.serialization.add_safe_globals([MyNet])
        >>> MyNet in ember.serialization.get_safe_globals()
        True
        >>> ember.serialization.clear_safe_globals()
    """
    _SAFE.update(dict(_entries(safe_globals, "add_safe_globals")))


def get_safe_globals() -> list:
    """The classes and functions added by `add_safe_globals` (and live `safe_globals` blocks)."""
    return [obj if _full_name(obj) == name else (obj, name) for name, obj in _SAFE.items()]


def clear_safe_globals() -> None:
    """Forget every class and function added by `add_safe_globals`."""
    _SAFE.clear()


@contextlib.contextmanager
def safe_globals(safe_globals: list):
    """Allow these classes (and functions) inside a `with` block only.

    Example:
        >>> import ember
        >>> class MyNet(ember.nn.Module): ...
        >>> with ember.serialization.safe_globals([MyNet]):
        ...     MyNet in ember.serialization.get_safe_globals()
        True
    """
    added = dict(_entries(safe_globals, "safe_globals"))
    before = {name: _SAFE[name] for name in added if name in _SAFE}
    _SAFE.update(added)
    try:
        yield
    finally:
        for name in added:
            _SAFE.pop(name, None)
        _SAFE.update(before)


# --------------------------------------------------------------------------- saving


def _importable(obj, kind: str, path: str) -> str:
    """The full name of `obj`, checked to lead back to `obj` itself."""
    import sys

    name = _full_name(obj)
    target = sys.modules.get(obj.__module__)
    for part in obj.__qualname__.split("."):
        target = getattr(target, part, None)
    if target is not obj:
        raise TypeError(
            f"ember.save: the {kind} {name} at {path} cannot be imported back by that name "
            "(defined inside a function, or renamed?); define it at a module's top level"
        )
    return name


class ModuleEncoder:
    """Turns Modules in a checkpoint tree into nodes (Note [Whole-module checkpoints])."""

    def __init__(self, encode_value):
        self._encode_value = encode_value  # the checkpoint encoder's `encode(value, path)`
        self._ids: dict[int, int] = {}
        self._keep: list = []
        self.used = False

    def encode_other(self, value, path: str):
        """A node for a Module, function or config at `path`; None when it is none of these."""
        from ember.nn import Module

        if isinstance(value, Module):
            return self._module(value, path)
        return None

    def _module(self, module, path: str):
        self.used = True
        known = self._ids.get(id(module))
        if known is not None:
            return {"__module_ref__": known}
        node_id = len(self._ids)
        self._ids[id(module)] = node_id
        self._keep.append(module)
        label = f"'{path}'" if path else "the top level"
        cls_name = _importable(type(module), "class", label)
        attrs = {}
        registries = (module._parameters, module._buffers, module._modules)
        for key, value in module.__dict__.items():
            if key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers"):
                continue
            if any(key in r for r in registries):  # Note [Module attribute mirror]
                continue
            attrs[key] = self._attr(value, _join(path, key))
        params = {
            key: None if value is None else self._parameter(value, _join(path, key))
            for key, value in module._parameters.items()
        }
        buffers = {
            key: self._encode_value(value, _join(path, key))
            for key, value in module._buffers.items()
        }
        children = {
            key: None if child is None else self._module(child, _join(path, key))
            for key, child in module._modules.items()
        }
        return {
            "__module__": {
                "id": node_id,
                "class": cls_name,
                "attrs": attrs,
                "parameters": params,
                "buffers": buffers,
                "non_persistent": sorted(module._non_persistent_buffers),
                "modules": children,
            }
        }

    def _parameter(self, param, path: str):
        return {
            "tensor": self._encode_value(param, path),
            "requires_grad": bool(param.requires_grad),
        }

    def _attr(self, value, path: str):
        import types

        from ember.nn import Parameter

        if isinstance(value, _PLAIN):
            return self._encode_value(value, path)
        if isinstance(value, Parameter):  # e.g. a list of the module's own parameters
            return {"__parameter__": self._parameter(value, path)}
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
            return {"__function__": _importable(value, "function", f"'{path}'")}
        if hasattr(value, "to_dict") and hasattr(type(value), "from_dict"):
            return {
                "__config__": {
                    "class": _importable(type(value), "class", f"'{path}'"),
                    "data": self._plain(value.to_dict(), path),
                }
            }
        if isinstance(value, (list, tuple)):
            items = [self._attr(v, _join(path, i)) for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            if not any(k.startswith("__") and k.endswith("__") for k in value):
                return {k: self._attr(v, _join(path, k)) for k, v in value.items()}
        try:
            return self._plain(value, path)
        except TypeError:
            raise TypeError(
                f"ember.save: cannot save attribute '{path}' of type "
                f"{type(value).__module__}.{type(value).__qualname__}; a saved Module holds "
                "plain values (int, float, str, bool, None, tuples/lists/dicts of them), "
                "tensors, dtypes, submodules, functions and configs (save model.state_dict() "
                "instead, or store the value in a form ember can save)"
            ) from None

    def _plain(self, value, path: str):
        return self._encode_value(value, path)


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


# --------------------------------------------------------------------------- loading


def _resolve(name, kind: str, prefixes, source: str, trusted: bool = False):
    """The allowed class or function called `name`, or an UnsafeClassError saying how to allow.
    `trusted` (weights_only=False) imports any recorded path (Note [Whole-module checkpoints])."""
    if not isinstance(name, str):
        raise ValueError(f"ember.load: {source!r}: a {kind} name is {name!r}; the file is damaged")
    registered = _SAFE.get(name)
    if registered is not None:
        return registered
    module_name, _, qualname = name.rpartition(".")
    while module_name:
        if trusted or module_name.startswith(prefixes) or module_name + "." in prefixes:
            try:
                target = importlib.import_module(module_name)
            except ImportError:
                module_name, _, head = module_name.rpartition(".")
                qualname = f"{head}.{qualname}"
                continue
            for part in qualname.split("."):
                target = getattr(target, part, None)
            if target is not None and getattr(target, "__module__", None) == module_name:
                return target
            break
        break
    short = name.rpartition(".")[2]
    raise UnsafeClassError(
        f"ember.load: {source!r} holds a {kind} {name}, which is not allowed to load: only "
        f"ember's own classes load without asking. If you trust the file, allow it with "
        f"ember.serialization.add_safe_globals([{short}]) or inside "
        f"`with ember.serialization.safe_globals([{short}]):` (import {short} first), or "
        "load it with weights_only=False"
        + (f" (which was given, but {name} cannot be imported)" if trusted else "")
    )


class ModuleDecoder:
    """Rebuilds Modules from nodes (Note [Whole-module checkpoints])."""

    def __init__(self, decode_value, source: str, trusted: bool = False):
        self._decode_value = decode_value
        self._source = source
        self._trusted = trusted
        self._made: dict[int, object] = {}
        self._params: dict[int, object] = {}

    def decode_tag(self, tag: str, payload):
        """The object for a tagged node, or NotImplemented when the tag is not one of ours."""
        if tag == "__module__":
            return self._module(payload)
        if tag == "__module_ref__":
            if payload not in self._made:
                raise ValueError(f"module reference {payload!r} comes before its module")
            return self._made[payload]
        if tag == "__parameter__":
            return self._parameter(payload)
        if tag == "__function__":
            return _resolve(
                payload, "function", _EMBER_FUNCTION_PREFIXES, self._source, self._trusted
            )
        if tag == "__config__":
            cls = _resolve(
                payload["class"], "config class", _EMBER_CLASS_PREFIXES, self._source, self._trusted
            )
            if not isinstance(cls, type) or not hasattr(cls, "from_dict"):
                raise ValueError(f"{payload['class']} is not a config class")
            return cls.from_dict(self._decode_value(payload["data"]))
        return NotImplemented

    def _module(self, node):
        from ember.nn import Module

        cls = _resolve(node["class"], "class", _EMBER_CLASS_PREFIXES, self._source, self._trusted)
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise UnsafeClassError(
                f"ember.load: {self._source!r}: {node['class']} is not an ember.nn.Module "
                "subclass; refusing to build it"
            )
        module = cls.__new__(cls)
        Module.__init__(module)
        self._made[node["id"]] = module
        for key, value in node["attrs"].items():
            object.__setattr__(module, key, self._decode_value(value))
        for key, value in node["parameters"].items():
            if value is None:
                module._parameters[key] = None
                continue
            module._parameters[key] = self._parameter(value)
        for key, value in node["buffers"].items():
            module._buffers[key] = self._decode_value(value)
        module._non_persistent_buffers.update(node["non_persistent"])
        for key, value in node["modules"].items():
            module._modules[key] = None if value is None else self._decode_value(value)
        return module

    def _parameter(self, node):
        from ember.nn import Parameter

        tensor = self._decode_value(node["tensor"])
        made = self._params.get(id(tensor))  # a tied parameter comes back as one object
        if made is None:
            made = (Parameter(tensor, requires_grad=bool(node["requires_grad"])), tensor)
            self._params[id(tensor)] = made
        return made[0]
