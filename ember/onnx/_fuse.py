"""Composite ops found back in a traced graph, for ONNX's fused ops.

Note [ONNX fused composites]: ember's softmax, layer norm and GELU are compositions of
primitives (Note [Fused composites] in ember.ops.registry), so a traced graph holds their
decompositions. ONNX has one op for each (Softmax from opset 13, LayerNormalization from 17,
Gelu from 20), which runtimes run as one kernel. Before lowering, the exporter matches the
exact decompositions ember's composites trace to (a chain whose inner values nothing else
reads) and replaces each with one equation of a graph-level op whose lowering emits the fused
node. The checked export (Note [Checked export]) compares the fused file with ember eager, and
the tests compare it with the unfused one (`fuse=False`).
"""

from __future__ import annotations

import math

import numpy as np

from ember.graph.ir import Eqn, Var

__all__ = ["fuse_composites", "FusedOp"]


class FusedOp:
    """A graph-level op standing for a matched composite; `onnx` is its lowering."""

    def __init__(self, name, lower):
        self.name = name
        self.onnx = lower

    def __repr__(self) -> str:
        return f"<fused {self.name}>"


def _softmax_lower(b, x, axis):
    return b.op("Softmax", x, axis=axis)


def _layer_norm_lower(b, x, weight, bias, axis, epsilon):
    if weight is None:
        shape = b.ins[0].shape[axis:]
        weight = b.const(np.ones(shape, b.out.dtype))
    return b.op("LayerNormalization", x, weight, bias, axis=axis, epsilon=epsilon)


def _gelu_lower(b, x):
    return b.op("Gelu", x, approximate="none")


SOFTMAX = FusedOp("softmax", _softmax_lower)
LAYER_NORM = FusedOp("layer_norm", _layer_norm_lower)
GELU = FusedOp("gelu", _gelu_lower)


class _Matcher:
    def __init__(self, graph):
        self.graph = graph
        self.producer = {}
        for e in graph.eqns:
            for v in e.outs:
                self.producer[v] = e
        self.uses = graph.uses()
        self.dead: set = set()

    def made_by(self, v, name, uses=1):
        """The equation named `name` that makes `v`, if only `uses` readers read v."""
        if not isinstance(v, Var):
            return None
        e = self.producer.get(v)
        if e is None or e.name != name or id(e) in self.dead or not hasattr(e.op, "forward"):
            return None
        if self.uses.get(v, 0) != uses:
            return None
        return e


def _last_dims(x, dims):
    n = len(x.shape)
    return dims is not None and list(dims) == list(range(n - len(dims), n))


def _match_softmax(m, e):
    # div(exp(sub(x, amax(x))), sum(exp(...)))
    if e.name != "div" or not all(isinstance(a, Var) for a in e.inputs):
        return None
    num, den = e.inputs
    z = m.made_by(den, "sum")
    ex = m.made_by(num, "exp", uses=2)
    if z is None or ex is None or z.inputs[0] is not num or not z.attrs["keepdim"]:
        return None
    dims = z.attrs["dim"]
    if dims is None or len(dims) != 1:
        return None
    s = m.made_by(ex.inputs[0], "sub")
    if s is None or not isinstance(s.inputs[1], Var):
        return None
    mx = m.made_by(s.inputs[1], "amax")
    if mx is None or mx.inputs[0] is not s.inputs[0] or mx.attrs != z.attrs:
        return None
    x = s.inputs[0]
    return [mx, s, ex, z, e], Eqn(SOFTMAX, (x,), {"axis": dims[0]}, e.outs, e.site)


def _match_layer_norm(m, e):
    # [add(mul(mul(c, rsqrt(add(div(sum(c*c), n), eps))), w), b)], c = sub(x, div(sum(x), n))
    bias = weight = None
    top = e
    if e.name == "add" and isinstance(e.inputs[1], Var) and len(e.inputs[1].shape) >= 1:
        inner = m.made_by(e.inputs[0], "mul")
        if inner is not None:
            bias, e2 = e.inputs[1], inner
        else:
            e2 = e
    else:
        e2 = e
    chain = []
    if e2.name == "mul" and isinstance(e2.inputs[1], Var):
        norm = m.made_by(e2.inputs[0], "mul")
        if norm is not None and isinstance(norm.inputs[1], Var):
            r = m.made_by(norm.inputs[1], "rsqrt")
            if r is not None:
                weight, scaled, chain = e2.inputs[1], norm, [e2]
    if not chain:
        if bias is not None:
            return None  # add without the weight: leave it
        scaled = e2
    if scaled.name != "mul" or not all(isinstance(a, Var) for a in scaled.inputs):
        return None
    c, rv = scaled.inputs
    r = m.made_by(rv, "rsqrt")
    if r is None:
        return None
    ve = m.made_by(r.inputs[0], "add")
    if ve is None or isinstance(ve.inputs[1], Var):
        return None
    var = m.made_by(ve.inputs[0], "div")
    if var is None or isinstance(var.inputs[1], Var):
        return None
    s2 = m.made_by(var.inputs[0], "sum")
    if s2 is None:
        return None
    sq = m.made_by(s2.inputs[0], "mul")
    if sq is None or sq.inputs[0] is not c or sq.inputs[1] is not c:
        return None
    sub = m.made_by(c, "sub", uses=3)
    if sub is None or not isinstance(sub.inputs[1], Var):
        return None
    mean = m.made_by(sub.inputs[1], "div")
    if mean is None or isinstance(mean.inputs[1], Var):
        return None
    s1 = m.made_by(mean.inputs[0], "sum")
    x = sub.inputs[0]
    if s1 is None or s1.inputs[0] is not x:
        return None
    dims = s1.attrs["dim"]
    if not (s1.attrs == s2.attrs and s1.attrs["keepdim"] and _last_dims(x, dims)):
        return None
    count = math.prod(x.shape[d] for d in dims)
    if mean.inputs[1] != count or var.inputs[1] != count or x.dtype.kind != "f":
        return None
    axis = len(x.shape) - len(dims)
    norm_shape = tuple(x.shape[axis:])
    for p in (weight, bias):
        if p is not None and tuple(p.shape) != norm_shape:
            return None
    eqns = [s1, mean, sub, sq, s2, var, ve, r, scaled] + chain + ([top] if bias is not None else [])
    inputs = (x, weight, bias)
    attrs = {"axis": axis, "epsilon": float(ve.inputs[1])}
    return eqns, Eqn(LAYER_NORM, inputs, attrs, top.outs, top.site)


def _match_gelu(m, e):
    # mul(mul(x, 0.5), add(erf(mul(x, 1/sqrt(2))), 1.0))
    if e.name != "mul" or not all(isinstance(a, Var) for a in e.inputs):
        return None
    for half_v, one_v in (e.inputs, e.inputs[::-1]):
        half = m.made_by(half_v, "mul")
        plus = m.made_by(one_v, "add")
        if half is None or plus is None or half.inputs[1] != 0.5 or plus.inputs[1] != 1.0:
            continue
        erf = m.made_by(plus.inputs[0], "erf")
        if erf is None:
            continue
        scale = m.made_by(erf.inputs[0], "mul")
        if scale is None or scale.inputs[0] is not half.inputs[0]:
            continue
        if abs(scale.inputs[1] - 1 / math.sqrt(2.0)) > 1e-12:
            continue
        x = half.inputs[0]
        return [half, scale, erf, plus, e], Eqn(GELU, (x,), {}, e.outs, e.site)
    return None


def _fused_softmax_lower(b, s, m=None, scale=1.0):
    z = s if scale == 1.0 else b.op("Mul", s, b.const(scale, b.out.dtype))
    return _softmax_lower(b, z if m is None else b.op("Add", z, m), -1)


def _fused_layer_norm_lower(b, x, weight, bias, r=None, eps=1e-5):
    s = x if r is None else b.op("Add", x, r)
    return b.op("LayerNormalization", s, weight, bias, axis=-1, epsilon=eps)


def _fused_dropout_add_layer_norm_lower(b, x, r, weight, bias, *rest, p=0.0, eps=1e-5,
                                        biased=False):  # fmt: skip
    from ember.ops.dropout_norm import _onnx_dropped

    s = b.op("Add", _onnx_dropped(b, x, rest, p, biased), r)
    return b.op("LayerNormalization", s, weight, bias, axis=-1, epsilon=eps)


def _fused_gelu_lower(b, x, bias=None, approximate="none"):
    u = x if bias is None else b.op("Add", x, bias)
    return b.op("Gelu", u, approximate=approximate)


def _fused_feed_forward_lower(b, x, w1, b1, w2, b2, weight, bias, eps=1e-5, approximate="none"):
    from ember.ops.feed_forward import _onnx

    gelu = (lambda u: b.op("Gelu", u, approximate=approximate)) if b.opset >= 20 else None
    norm = lambda s: b.op("LayerNormalization", s, weight, bias, axis=-1, epsilon=eps)  # noqa: E731
    return _onnx(b, x, w1, b1, w2, b2, weight, bias, eps, approximate, gelu=gelu, norm=norm)


def _fused_attention_lower(b, q, k, v, *rest, **attrs):
    from ember.ops.fused import _attention_onnx

    return _attention_onnx(b, q, k, v, *rest, softmax=lambda z: _softmax_lower(b, z, -1), **attrs)


# ember's fused primitives (Note [Fused Transformer ops] in ember.ops.fused): the opset that
# has their ONNX op, and the lowering that emits it
_PRIMITIVES = {
    "fused_softmax": (13, FusedOp("softmax", _fused_softmax_lower)),
    "fused_layer_norm": (17, FusedOp("layer_norm", _fused_layer_norm_lower)),
    "fused_dropout_add_layer_norm": (
        17,
        FusedOp("layer_norm", _fused_dropout_add_layer_norm_lower),
    ),
    "fused_gelu": (20, FusedOp("gelu", _fused_gelu_lower)),
    "fused_attention": (13, FusedOp("attention", _fused_attention_lower)),
    "fused_feed_forward": (17, FusedOp("feed_forward", _fused_feed_forward_lower)),
}


def fuse_composites(graph, opset: int) -> None:
    """Replace softmax / layer norm / GELU decompositions with fused equations (in place)."""
    for e in graph.eqns:
        swap = _PRIMITIVES.get(e.name)
        if swap is not None and opset >= swap[0] and hasattr(e.op, "forward"):
            e.op = swap[1]
    matchers = []
    if opset >= 13:
        matchers.append(_match_softmax)
    if opset >= 17:
        matchers.append(_match_layer_norm)
    if opset >= 20:
        matchers.append(_match_gelu)
    if not matchers:
        return
    m = _Matcher(graph)
    replace: dict = {}
    for e in reversed(graph.eqns):  # outermost first: a layer norm's bias add before its mul
        if id(e) in m.dead:
            continue
        for match in matchers:
            found = match(m, e)
            if found is not None:
                eqns, fused = found
                for old in eqns:
                    m.dead.add(id(old))
                replace[id(e)] = fused
                break
    graph.eqns = [
        replace.get(id(e), e) for e in graph.eqns if id(e) not in m.dead or id(e) in replace
    ]
