"""The graph IR: symbolic values (`Var`), equations (`Eqn`) and graphs (`Graph`).

Note [Graph IR]: a graph is a list of equations in SSA form, each applying one primitive of the
op registry (or a graph-level primitive such as `cond` / `while_loop` / a fused kernel) to
atoms: `Var`s (graph values with a shape and a NumPy dtype) or Python literals (scalars,
None). Every value is defined once, before its uses. Values come from three places:
- `inputs`: the compiled function's tensor arguments, named after its parameters;
- `captures`: tensors read by reference when the graph runs (parameters, optimizer state,
  gradients, closure tensors), kept as (Var, Tensor) pairs (Note [Captured tensors]);
- `consts`: arrays baked into the graph (tensors created while tracing).
Side effects are explicit: `updates` are (captured Var, new Var) pairs written back into the
captured tensor's buffer after each run (optimizer steps, `x.add_()`), and `grads` are
(captured Var, Var) pairs that become the captured tensor's `.grad`.
A `Var` also serves as the `_data` of a Tensor while tracing: it exposes NumPy-compatible
`shape`, `dtype`, `ndim`, `size`, so Tensor properties work on traced tensors.
"""

from __future__ import annotations

import math

import numpy as np

from ember import dtypes as _dt

__all__ = ["Var", "Eqn", "Graph", "GraphError", "ConcretizationError", "check"]


class GraphError(RuntimeError):
    """A graph is ill-formed, or a compiled graph failed while running."""


class ConcretizationError(TypeError):
    """The value of a traced tensor was needed by Python while tracing."""


class _Flags:
    __slots__ = ()
    c_contiguous = False  # known only when the graph runs (Note [Contiguous in graphs])
    f_contiguous = False
    writeable = True


_FLAGS = _Flags()
_counter = [0]


def _short(dtype: np.dtype) -> str:
    return (
        _dt.from_numpy_dtype(dtype)
        .name.replace("float", "f")
        .replace("uint", "u")
        .replace("int", "i")
        .replace("bool", "bool")
    )


class Var:
    """A graph value: shape and NumPy dtype, no data."""

    __slots__ = ("id", "shape", "dtype", "name", "__weakref__")
    flags = _FLAGS
    symbolic = True  # what layers below the graph check (they cannot import Var)

    def __init__(self, shape, dtype, name: str | None = None):
        _counter[0] += 1
        self.id = _counter[0]
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.name = name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def strides(self) -> tuple:
        strides, step = [], self.dtype.itemsize
        for d in reversed(self.shape):
            strides.append(step)
            step *= max(d, 1)
        return tuple(reversed(strides))

    def copy(self):
        return self  # graph values are immutable: a copy is the value itself

    def type_str(self) -> str:
        return f"{_short(self.dtype)}[{','.join(str(d) for d in self.shape)}]"

    def __repr__(self) -> str:
        return f"Var({self.name or self.id}:{self.type_str()})"

    def __array__(self, *args, **kwargs):
        raise ConcretizationError(_concrete_message("converted to a NumPy array"))

    def __bool__(self):
        raise ConcretizationError(_concrete_message("used as a Python bool"))


def _concrete_message(what: str) -> str:
    from ember._util.errors import at_user_line

    return at_user_line(
        f"a traced tensor's value is not known while compiling, so it cannot be {what}. "
        "Python control flow (if/while/for over tensor values), .item(), .tolist() and "
        ".numpy() need concrete values: use ember.cond(pred, true_fn, false_fn, *operands) or "
        "ember.while_loop(cond_fn, body_fn, init) for data-dependent control flow, keep the "
        "Python value outside the compiled function, or set ember.config.run_eagerly = True "
        "to debug eagerly"
    )


class Eqn:
    """outs = op(*inputs, **attrs), created at the user's source line `site`."""

    __slots__ = ("op", "inputs", "attrs", "outs", "site")

    def __init__(self, op, inputs, attrs, outs, site=None):
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = dict(attrs)
        self.outs = list(outs)
        self.site = site

    @property
    def out(self) -> Var:
        return self.outs[0]

    @property
    def name(self) -> str:
        return self.op.name

    def __repr__(self) -> str:
        return f"<Eqn {self.name} -> {self.outs}>"


class Graph:
    """A traced computation (Note [Graph IR]); `str(graph)` prints it like a jaxpr."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Var] = []
        self.captures: list[tuple[Var, object]] = []
        self.consts: dict[Var, np.ndarray] = {}
        self.eqns: list[Eqn] = []
        self.outputs: list = []  # Vars or literals
        self.updates: list[tuple[Var, Var]] = []
        self.grads: list[tuple[Var, Var]] = []

    # --- naming and printing ---------------------------------------------------------------
    def _names(self) -> dict:
        names: dict = {}

        def letters(i):
            s = ""
            i += 1
            while i:
                i, r = divmod(i - 1, 26)
                s = chr(97 + r) + s
            return s

        k = 0
        taken = set()
        ordered = list(self.inputs) + [v for v, _ in self.captures] + list(self.consts)
        for e in self.eqns:
            ordered.extend(e.outs)
        for v in ordered:
            if v in names:
                continue
            if v.name and v.name not in taken:
                names[v] = v.name
            else:
                while letters(k) in taken:
                    k += 1
                names[v] = letters(k)
                k += 1
            taken.add(names[v])
        return names

    def pretty(self) -> str:
        names = self._names()

        def atom(a):
            if isinstance(a, Var):
                return names.get(a, f"?{a.id}")
            if isinstance(a, float):
                return repr(a)
            return repr(a)

        def decl(v):
            return f"{names[v]}:{v.type_str()}"

        def attr_str(attrs):
            parts = []
            for k, v in attrs.items():
                if isinstance(v, Graph):
                    v = f"<graph {v.name}: {len(v.eqns)} eqns>"
                elif callable(v) and not isinstance(v, type):
                    v = getattr(v, "__name__", type(v).__name__)
                elif isinstance(v, _dt.DType):
                    v = v.name
                elif type(v).__name__ == "Generator":
                    v = "<generator>"
                parts.append(f"{k}={v}")
            return "[" + " ".join(parts) + "]" if parts else ""

        lines = []
        ins = " ".join(decl(v) for v in self.inputs)
        caps = " ".join(decl(v) for v, _ in self.captures)
        consts = " ".join(decl(v) for v in self.consts)
        lines.append(
            f"{{ lambda {ins} ; {caps}" + (f" ; consts {consts}" if consts else "") + ". let"
        )
        for e in self.eqns:
            outs = " ".join(decl(v) for v in e.outs)
            args = " ".join(atom(a) for a in e.inputs)
            lines.append(f"    {outs} = {e.name}{attr_str(e.attrs)} {args}".rstrip())
        outs = ", ".join(atom(a) for a in self.outputs)
        tail = f"  in ({outs})"
        if self.updates:
            tail += " ; updates " + ", ".join(f"{atom(c)} <- {atom(v)}" for c, v in self.updates)
        if self.grads:
            tail += " ; grads " + ", ".join(f"{atom(c)}.grad <- {atom(v)}" for c, v in self.grads)
        lines.append(tail + " }")
        return "\n".join(lines)

    __str__ = pretty

    def __repr__(self) -> str:
        return self.pretty()

    # --- helpers -----------------------------------------------------------------------------
    def roots(self) -> list:
        """Vars the graph must compute: outputs, updates and gradients."""
        out = [a for a in self.outputs if isinstance(a, Var)]
        out += [v for _, v in self.updates] + [v for _, v in self.grads]
        return out

    def uses(self) -> dict:
        counts: dict = {}
        for e in self.eqns:
            for a in e.inputs:
                if isinstance(a, Var):
                    counts[a] = counts.get(a, 0) + 1
        for v in self.roots():
            counts[v] = counts.get(v, 0) + 1
        return counts

    def check(self) -> "Graph":
        check(self)
        return self


def check(graph: Graph) -> None:
    """Well-formedness: every Var defined once before use, and each registry op's declared
    output shape and dtype agree with its shape/dtype rules."""
    from ember.ops.registry import OpDef, infer

    defined = set()

    def define(v, what):
        if not isinstance(v, Var):
            raise GraphError(f"{graph.name}: {what} is not a Var: {v!r}")
        if v in defined:
            raise GraphError(f"{graph.name}: {v!r} is defined twice ({what})")
        defined.add(v)

    for v in graph.inputs:
        define(v, "input")
    for v, _ in graph.captures:
        define(v, "capture")
    for v in graph.consts:
        define(v, "const")
    for i, e in enumerate(graph.eqns):
        for a in e.inputs:
            if isinstance(a, Var) and a not in defined:
                raise GraphError(
                    f"{graph.name}: equation {i} ({e.name}) uses {a!r} before it is defined"
                )
        if isinstance(e.op, OpDef):
            avals = [
                (a.shape, _dt.from_numpy_dtype(a.dtype)) if isinstance(a, Var) else a
                for a in e.inputs
            ]
            attrs = e.attrs
            shape, dtype = infer(e.op, avals, attrs)
            if tuple(shape) != e.out.shape or dtype.numpy != e.out.dtype:
                raise GraphError(
                    f"{graph.name}: equation {i} ({e.name}) declares {e.out.type_str()} but "
                    f"its rules give {_short(dtype.numpy)}{list(shape)}"
                )
        for v in e.outs:
            define(v, f"output of {e.name}")
    for a in graph.roots():
        if a not in defined:
            raise GraphError(f"{graph.name}: result {a!r} is never defined")
    for c, _ in graph.updates + graph.grads:
        if c not in {v for v, _ in graph.captures}:
            raise GraphError(f"{graph.name}: update target {c!r} is not a captured tensor")


def dump_enabled() -> bool:
    from ember._util.env import flag

    return flag("EMBER_PRINT_GRAPH")


def dump(graph: Graph, stage: str) -> None:
    """Print the graph after a compiler stage when EMBER_PRINT_GRAPH=1 (STYLE.md habit 7)."""
    if dump_enabled():
        print(f"--- {graph.name}: after {stage} ({len(graph.eqns)} equations) ---")
        print(graph.pretty(), flush=True)
