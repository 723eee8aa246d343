"""The op surface: Tensor methods, operators and `ember.*` / `ember.ops.*` functions, built
from the registry.

Note [Op surface]: an op's public names are facts of its OpDef (`methods`, `functions`,
`operators`, `inplace`, `api`; Note [OpDef]), and a composite's are given where it is defined
(`@public(...)` in ember.ops.registry). From them this module builds, once all ops are
registered (`install`, at the end of `ember/ops/__init__.py`) and again whenever an op is
registered later:
- `OpMixin`, the base class of `Tensor`, holding a method per name: the op's `api` function
  itself (its first argument is `self`), else a generated `apply(op, self, *others)`; the
  reflected operators (`__radd__`) swap the operands; in-place names call
  `self._inplace(op, ...)` (Note [Views and in-place] in ember/tensor.py);
- the function table (`functions()`) that `ember/__init__.py` and `ember/ops/__init__.py`
  re-export, and that the modules of the ops (`ember.ops.elementwise.exp`) resolve names from.
A method `Tensor` defines in its own body overrides the mixin's (view(dtype), the bool-only
`&`, conversions). Two providers of one name are an error at import. Generated functions call
the dispatcher installed by L3 (`bind`), read from a module global at each call, so eager
dispatch costs no more than a hand-written method.

Note [NumPy argument names]: torch's argument parser takes NumPy's names for two parameters of
every native function and Tensor method: `axis` for `dim` and `keepdims` for `keepdim`
(`torch.sum(x, axis=0, keepdims=True)`, `x.softmax(axis=-1)`, `torch.cat(ts, axis=1)`). ember
accepts them in this one place: every public function or method whose signature has `dim` or
`keepdim` is wrapped once by `numpy_names`, which renames the aliases before the call (giving
both names is a TypeError, as in torch). The wrapper keeps the op's name, doc and signature
(`__wrapped__`), and costs one dict check on calls without keywords. Ops do not handle the
aliases themselves, so an op registered later gets them too.
"""

from __future__ import annotations

import functools
import inspect

from ember.ops import registry as _registry

__all__ = ["OpMixin", "functions", "function", "install", "refresh", "bind", "numpy_names"]

_apply = _registry.apply  # the eager dispatcher once L3 binds it (`bind`)
_REFLECTED = {
    "__radd__",
    "__rsub__",
    "__rmul__",
    "__rtruediv__",
    "__rfloordiv__",
    "__rmod__",
    "__rpow__",
    "__rmatmul__",
    "__rand__",
    "__ror__",
    "__rxor__",
    "__rlshift__",
    "__rrshift__",
}
_functions: dict = {}
_methods: dict = {}
_generated: dict = {}  # (op name, name, kind) -> generated function, made once
_aliased: dict = {}  # id(function) -> (function, its numpy_names wrapper), made once
_NUMPY_NAMES = (("axis", "dim"), ("keepdims", "keepdim"))
_built = False


class OpMixin:
    """Tensor methods and operators of every public op (Note [Op surface])."""

    __slots__ = ()


def bind(dispatcher) -> None:
    """Route the generated methods and functions to `dispatcher(op, *args, **attrs)`."""
    global _apply
    _apply = dispatcher


def _arity(op) -> int | None:
    try:
        params = list(inspect.signature(op.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty for p in params):
        return None
    return len(params)


def _made(kind, op, name):
    key = (op.name, name, kind)
    fn = _generated.get(key)
    if fn is None:
        fn = _generated[key] = kind(op, name)
    return fn


def _generic(op, name):
    """`apply(op, ...)` as a function of the op's operands."""
    n = _arity(op)
    if n == 1:

        def fn(x):
            return _apply(op, x)
    elif n == 2:

        def fn(a, b):
            return _apply(op, a, b)
    elif n == 3:

        def fn(a, b, c):
            return _apply(op, a, b, c)
    else:

        def fn(*args, **attrs):
            return _apply(op, *args, **attrs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = getattr(op.forward, "__module__", __name__)
    fn.__doc__ = op.doc or f"The `{op.name}` op, elementwise (Note [Op surface])."
    return fn


def _reflected(op, name):
    def fn(self, other):
        return _apply(op, other, self)

    fn.__name__ = fn.__qualname__ = name
    return fn


def _inplace(op, name):
    def fn(self, *args, **attrs):
        return self._inplace(op, *args, **attrs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"In-place `{op.name}`: writes the result into this tensor."
    return fn


def numpy_names(fn):
    """`fn` taking `axis=` for `dim=` and `keepdims=` for `keepdim=` as torch does (Note [NumPy
    argument names]); `fn` itself where its signature has neither."""
    made = _aliased.get(id(fn))
    if made is not None and made[0] is fn:
        return made[1]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    renames = {
        alias: name for alias, name in _NUMPY_NAMES if name in params and alias not in params
    }
    wrapper = fn
    if renames:

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs and not renames.keys().isdisjoint(kwargs):
                for alias, name in renames.items():
                    if alias in kwargs:
                        if name in kwargs:
                            raise TypeError(
                                f"{fn.__name__}(): got both {name!r} and its NumPy alias "
                                f"{alias!r}; pass one"
                            )
                        kwargs[name] = kwargs.pop(alias)
            return fn(*args, **kwargs)

    _aliased[id(fn)] = (fn, wrapper)
    return wrapper


def _entries():
    """(provider, method names, function names, operator names, in-place names, fn)."""
    for op in _registry.REGISTRY.values():
        if not (op.methods or op.functions or op.operators or op.inplace):
            continue
        primary = (op.functions or op.methods or (op.name,))[0]
        fn = numpy_names(op.api or _made(_generic, op, primary))
        yield op, op.methods, op.functions, op.operators, op.inplace, fn
    for fn, methods, functions in _registry.COMPOSITES:
        yield fn, methods, functions, (), (), numpy_names(fn)


def refresh() -> None:
    """Rebuild `OpMixin` and the function table from the registry (after `install`)."""
    if not _built:
        return
    methods: dict = {}
    funcs: dict = {}

    def claim(table, name, value, provider, kind):
        if name in table and table[name][0] is not provider:
            raise ValueError(
                f"op surface: {kind} {name!r} is provided by both {table[name][0]!r} and "
                f"{provider!r}"
            )
        table[name] = (provider, value)

    for provider, meths, fns, operators, inplace, fn in _entries():
        for name in meths:
            claim(methods, name, fn, provider, "method")
        for name in fns:
            claim(funcs, name, fn, provider, "function")
        for name in operators:
            kind = _reflected if name in _REFLECTED else _generic
            value = _made(kind, provider, name)
            claim(methods, name, value, provider, "operator")
        for name in inplace:
            claim(methods, name, _made(_inplace, provider, name), provider, "in-place method")
    for name in set(_methods) - set(methods):
        delattr(OpMixin, name)
    for name, (_, value) in methods.items():
        setattr(OpMixin, name, value)
    _methods.clear()
    _methods.update(methods)
    _functions.clear()
    _functions.update({name: value for name, (_, value) in funcs.items()})


def install() -> None:
    """Build the surface once every op module is imported (ember/ops/__init__.py)."""
    global _built
    _built = True
    refresh()


def functions() -> dict:
    """name -> public function, for `ember.*` and `ember.ops.*` (Note [Op surface])."""
    return dict(_functions)


def function(name: str, module: str):
    """The public function `name` of an op defined in `module` (for a module `__getattr__`,
    also before `install`)."""
    for _provider, _, fns, _, _, fn in _entries():
        if name in fns and getattr(fn, "__module__", None) == module:
            return fn
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
