"""Graph passes: dead code, common subexpressions, constant folding, algebraic simplification.

Each pass takes a Graph and rewrites it in place, returning it; `run_passes` runs the pipeline
and, with EMBER_PRINT_GRAPH=1, prints the graph after each stage. Random ops (`stateful`) are
never folded or merged; update and gradient targets are roots, so DCE keeps what an optimizer
step writes. Elementwise fusion lives in `ember.graph.fusion`; buffer reuse and in-place
updates are planned by the executor (Note [Executor]).
"""

from __future__ import annotations

import numpy as np

from ember.graph.ir import Graph, Var, dump


def _substitute(graph: Graph, mapping: dict) -> None:
    if not mapping:
        return

    def sub(a):
        while isinstance(a, Var) and a in mapping:
            a = mapping[a]
        return a

    for e in graph.eqns:
        e.inputs = tuple(sub(a) for a in e.inputs)
    graph.outputs = [sub(a) for a in graph.outputs]
    graph.updates = [(c, sub(v)) for c, v in graph.updates]
    graph.grads = [(c, sub(v)) for c, v in graph.grads]


def dce(graph: Graph) -> Graph:
    """Drop equations whose results nothing needs (random draws included, as in JAX)."""
    live = set(graph.roots())
    kept = []
    for e in reversed(graph.eqns):
        if any(v in live for v in e.outs):
            kept.append(e)
            live.update(a for a in e.inputs if isinstance(a, Var))
    kept.reverse()
    graph.eqns = kept
    graph.consts = {v: a for v, a in graph.consts.items() if v in live}
    return graph


def _attr_key(attrs):
    try:
        key = tuple(sorted(attrs.items()))
        hash(key)
        return key
    except TypeError:
        return None


def cse(graph: Graph) -> Graph:
    """Merge equations applying the same op to the same atoms with the same attributes."""
    seen: dict = {}
    mapping: dict = {}
    kept = []
    for e in graph.eqns:
        e.inputs = tuple(mapping.get(a, a) if isinstance(a, Var) else a for a in e.inputs)
        if getattr(e.op, "stateful", True) or len(e.outs) != 1:
            kept.append(e)
            continue
        attrs = _attr_key(e.attrs)
        if attrs is None:
            kept.append(e)
            continue
        key = (e.op, tuple(a if isinstance(a, Var) else (type(a), a) for a in e.inputs), attrs)
        try:
            prev = seen.get(key)
        except TypeError:
            kept.append(e)
            continue
        if prev is not None and prev.shape == e.out.shape and prev.dtype == e.out.dtype:
            mapping[e.out] = prev
        else:
            seen[key] = e.out
            kept.append(e)
    graph.eqns = kept
    _substitute(graph, mapping)
    return graph


_FOLD_LIMIT = 1 << 20  # elements: don't bake huge folded arrays into the graph


def fold_constants(graph: Graph) -> Graph:
    """Evaluate equations whose inputs are all constants or literals, at compile time."""
    from ember.backend import get_backend
    from ember.ops.registry import OpDef

    xp = get_backend("cpu").xp
    kept = []
    for e in graph.eqns:
        op = e.op
        if (
            isinstance(op, OpDef)
            and not op.stateful
            and len(e.outs) == 1
            and all(not isinstance(a, Var) or a in graph.consts for a in e.inputs)
            and any(isinstance(a, Var) for a in e.inputs)
            and e.out.size <= _FOLD_LIMIT
        ):
            vals = [graph.consts[a] if isinstance(a, Var) else a for a in e.inputs]
            with np.errstate(all="ignore"):
                out = np.asarray((op.kernels.get("numpy") or op.forward)(xp, *vals, **e.attrs))
            if out.shape == e.out.shape and out.dtype == e.out.dtype:
                graph.consts[e.out] = out
                continue
        kept.append(e)
    graph.eqns = kept
    return graph


def _const_value(graph, a):
    """A scalar value if `a` is a literal or a constant array with one repeated value."""
    if isinstance(a, (bool, int, float)):
        return a
    if isinstance(a, Var) and a in graph.consts:
        arr = graph.consts[a]
        if arr.size and arr.size <= 4096:
            first = arr.flat[0]
            if np.all(arr == first):
                return first.item()
    return None


_SPLAT_OPS = {"add", "sub", "mul", "div", "maximum", "minimum", "pow"}


def _splat_to_literal(graph, ins, out):
    """A constant operand holding one repeated value becomes a Python scalar when the other
    operand alone has the result's shape and dtype (NumPy keeps the array's dtype)."""
    a, b = ins
    for i, (x, other) in enumerate(((a, b), (b, a))):
        if (
            isinstance(x, Var)
            and x in graph.consts
            and isinstance(other, Var)
            and other.shape == out.shape
            and other.dtype == out.dtype
            and out.dtype.kind == "f"
            and x.dtype.kind in "fi"
        ):
            value = _const_value(graph, x)
            if value is not None:
                value = float(value)
                return (value, other) if i == 0 else (other, value)
    return ins


def _transpose_source(producer, v):
    """x when v = permute(x, (1, 0)), else None."""
    e = producer.get(v)
    if e is not None and e.name == "permute" and tuple(e.attrs.get("dims", ())) == (1, 0):
        return e.inputs[0]
    return None


def _swap_transposed_matmul(e, producer, uses, kept):
    """permute(matmul(a, b), (1, 0)) -> matmul(b^T, a^T) for 2-D operands, where the transposes
    of transposes cancel: a weight gradient (x^T g)^T becomes g^T x, computed contiguous
    instead of as a strided view that every later elementwise op reads across the cache."""
    from ember.graph.ir import Eqn
    from ember.ops.linalg import MATMUL
    from ember.ops.shape import PERMUTE

    inner = producer.get(e.inputs[0])
    if (
        inner is None
        or inner.name != "matmul"
        or uses.get(inner.out, 0) != 1
        or not all(isinstance(a, Var) and a.ndim == 2 for a in inner.inputs)
    ):
        return False
    a, b = inner.inputs
    operands = []
    for x in (b, a):
        src = _transpose_source(producer, x)
        if src is None:
            (t,) = [Var((x.shape[1], x.shape[0]), x.dtype)]
            kept.append(Eqn(PERMUTE, (x,), {"dims": (1, 0)}, [t], e.site))
            producer[t] = kept[-1]
            src = t
        operands.append(src)
    e.op, e.inputs, e.attrs = MATMUL, tuple(operands), {}
    return True


def simplify(graph: Graph) -> Graph:
    """x*1, 1*x, x+0, 0+x, x-0, x/1, neg(neg x), reshape/expand to the same shape, cast to
    the same dtype, identity permutation -> x (only where shape and dtype are unchanged);
    a transposed 2-D matmul -> the matmul of the transposed operands; a 2-D matmul over a
    length-1 contraction -> a broadcast multiply."""
    mapping: dict = {}
    producer: dict = {}
    kept = []
    uses = graph.uses()
    for e in graph.eqns:
        e.inputs = tuple(mapping.get(a, a) if isinstance(a, Var) else a for a in e.inputs)
        out = e.out
        name = e.name
        replacement = None
        ins = e.inputs

        def same(x):  # used within this iteration only
            return isinstance(x, Var) and x.shape == out.shape and x.dtype == out.dtype  # noqa: B023

        if name in _SPLAT_OPS and len(ins) == 2:
            ins = e.inputs = _splat_to_literal(graph, ins, out)
        if (
            name == "pow"
            and len(ins) == 2
            and isinstance(ins[1], (int, float))
            and not isinstance(ins[1], bool)
            and same(ins[0])
        ):
            if ins[1] == 1:
                replacement = ins[0]
            elif ins[1] == 2:
                from ember.ops.elementwise import MUL

                e.op, e.inputs = MUL, (ins[0], ins[0])
        if name in ("mul", "add", "sub", "div") and len(ins) == 2:
            a, b = ins
            vb, va = _const_value(graph, b), _const_value(graph, a)
            if name == "mul":
                if vb == 1 and not isinstance(vb, bool) and same(a):
                    replacement = a
                elif va == 1 and not isinstance(va, bool) and same(b):
                    replacement = b
            elif name == "add":
                if vb == 0 and vb is not False and same(a):
                    replacement = a
                elif va == 0 and va is not False and same(b):
                    replacement = b
            elif name == "sub" and vb == 0 and same(a):
                replacement = a
            elif name == "div" and vb == 1 and same(a):
                replacement = a
        elif name in ("reshape", "expand") and same(ins[0]):
            replacement = ins[0]
        elif name == "cast" and same(ins[0]):
            replacement = ins[0]
        elif name == "assign" and same(ins[1]):  # x.copy_(y) of a y like x: y's value
            replacement = ins[1]
        elif (
            name == "permute"
            and tuple(e.attrs.get("dims", ())) == tuple(range(out.ndim))
            and same(ins[0])
        ):
            replacement = ins[0]
        elif (
            name == "permute"
            and isinstance(ins[0], Var)
            and tuple(e.attrs.get("dims", ())) == (1, 0)
        ):
            twice = _transpose_source(producer, ins[0])
            if twice is not None and same(twice):
                replacement = twice  # the transpose of a transpose
            else:
                _swap_transposed_matmul(e, producer, uses, kept)
        elif (
            name == "matmul"
            and len(ins) == 2
            and all(isinstance(x, Var) and x.ndim == 2 and x.dtype == out.dtype for x in ins)
            and ins[0].shape[1] == 1
            and out.dtype.kind == "f"
        ):
            # an outer product (a weight gradient at batch 1): each element is one product, as
            # the GEMM computes it, so a broadcast multiply gives the same bits, and fusion can
            # fold it into the optimizer update that reads it
            from ember.ops.elementwise import MUL

            e.op, e.attrs = MUL, {}
        elif name == "neg" and isinstance(ins[0], Var):
            inner = producer.get(ins[0])
            if inner is not None and inner.name == "neg" and same(inner.inputs[0]):
                replacement = inner.inputs[0]
        if replacement is not None:
            mapping[out] = replacement
            continue
        kept.append(e)
        for v in e.outs:
            producer[v] = e
    graph.eqns = kept
    _substitute(graph, mapping)
    return graph


PIPELINE = (
    ("simplify", simplify),
    ("constant folding", fold_constants),
    ("cse", cse),
    ("simplify", simplify),
    ("dce", dce),
)


def run_passes(graph: Graph, fuse: bool = True) -> Graph:
    dump(graph, "tracing")
    for name, fn in PIPELINE:
        graph = fn(graph)
        dump(graph, name)
    if fuse:
        from ember.graph.fusion import fuse_elementwise, pair_joint

        graph = pair_joint(graph)
        dump(graph, "joint kernels")
        graph = fuse_elementwise(graph)
        dump(graph, "fusion")
    return graph
