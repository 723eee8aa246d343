"""The node builder that op lowerings write ONNX through, and the dynamic-dimension algebra.

Note [Dynamic dims]: ember traces with concrete shapes, so a reshape's target or a slice's end
is a plain int in the graph. The exporter traces the function three times: at the example's
shapes and at two other sizes of every dynamic axis. A value that is the same in all three
traces is static; one that changes is fitted as `coefficient * prod(symbol ** power) + offset`
(powers -2..2, such as `seq - 1` or a mean's `1 / seq`) over the dynamic axes' sizes, and
emitted as shape arithmetic on the inputs' `Shape`; failing that, as a sum of two or three
of them plus an offset (a decoder's key length, past + new). An axis named "a + b" in
`dynamic_axes` is such a sum of symbols a and b, not a symbol of its own (optimum's name for
an attention mask over past and new tokens). A value no such formula fits stops the
export with the op and the user's line. Reshape targets use ONNX's 0 (copy the input's dim)
and -1 (infer one dim) where they can, so most transformer reshapes stay constants. A
constant made while tracing whose shape follows the axes must be a fill (ConstantOfShape) or
an arange (Range); a Python branch on a size shows as traces that differ, and is refused.

Note [ONNX loops]: a primitive that is a loop over steps (the fused recurrences, cumprod, whose
exact sequential products ONNX has no op for) lowers to a Scan whose body is built with the same
`Builder.op` calls; the body reads outer values (weights, constants) by name, as ONNX allows,
so the passes that count a value's readers (`subgraph_inputs`) look inside bodies too.
"""

from __future__ import annotations

import contextlib
import itertools
from fractions import Fraction

import numpy as np

from ember import dtypes as _dt

__all__ = ["Builder", "OnnxExportError", "fit_monomial", "fit_sum"]

_POWERS = (-2, -1, 0, 1, 2)


class OnnxExportError(RuntimeError):
    """A function or model cannot be exported to ONNX (names the op and the user's line)."""


def fit_monomial(values, symbol_values, allow_negative=False):
    """(coefficient, powers, offset) with value == coefficient * prod(symbol ** power) +
    offset in every trace, or None (the simplest fit: no offset, then the lowest degree).
    `values`: one number per trace; `symbol_values`: per trace, a tuple of the symbols'
    sizes. An offset needs a third trace to be told apart from chance."""
    if len(set(values)) == 1:
        return (Fraction(0), (0,) * len(symbol_values[0]), Fraction(values[0]))
    powers = _POWERS if allow_negative else (0, 1, 2)
    best = None
    for exps in itertools.product(powers, repeat=len(symbol_values[0])):
        if not any(exps):
            continue
        monos = [_mono(s, exps) for s in symbol_values]
        fits = []
        coef = Fraction(values[0]) / monos[0]
        fits.append((coef, Fraction(0)))
        if len(values) >= 3 and monos[1] != monos[0]:
            coef = (Fraction(values[1]) - Fraction(values[0])) / (monos[1] - monos[0])
            fits.append((coef, Fraction(values[0]) - coef * monos[0]))
        for rank, (coef, offset) in enumerate(fits):
            if coef != 0 and all(Fraction(v) == coef * m + offset for v, m in zip(values, monos)):
                key = (rank, sum(abs(e) for e in exps))
                if best is None or key < best[0]:
                    best = (key, (coef, exps, offset))
                break
    return None if best is None else best[1]


def fit_sum(values, symbol_values):
    """(indices, offset) with value == sum of those symbols' sizes + offset in every trace
    (two or three symbols, such as a past length plus a new length), or None. Needs three
    traces, so an offset is told apart from chance."""
    if len(values) < 3:
        return None
    count = len(symbol_values[0])
    for k in (2, 3):
        for idx in itertools.combinations(range(count), k):
            sums = [sum(s[i] for i in idx) for s in symbol_values]
            offset = values[0] - sums[0]
            if all(v - t == offset for v, t in zip(values, sums)):
                return idx, offset
    return None


def subgraph_inputs(node) -> list:
    """The names a node reads: its inputs and the outer values its bodies read (Note [ONNX
    loops])."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for graph in graphs:
            inner = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for n in graph.node:
                inner.update(n.output)
            for n in graph.node:
                names.extend(i for i in subgraph_inputs(n) if i not in inner)
            names.extend(o.name for o in graph.output if o.name not in inner)
    return names


def _mono(sizes, exps):
    out = Fraction(1)
    for s, e in zip(sizes, exps):
        out *= Fraction(s) ** e
    return out


_ONNX_NAMES = {
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "float16": "FLOAT16",
    "bfloat16": "BFLOAT16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
    "complex64": "COMPLEX64",
    "complex128": "COMPLEX128",
}


def numpy_dtype(dtype) -> np.dtype:
    """A NumPy dtype from a NumPy dtype, an ember DType or a name."""
    if isinstance(dtype, _dt.DType):
        return np.dtype(dtype.numpy)
    if dtype == "bfloat16":
        return np.dtype(_dt.bfloat16.numpy)
    return np.dtype(dtype)


def onnx_type(dtype) -> int:
    from onnx import TensorProto

    if isinstance(dtype, _dt.DType):
        name = dtype.name
    elif isinstance(dtype, str):
        name = dtype
    else:
        name = np.dtype(dtype).name
    try:
        return getattr(TensorProto, _ONNX_NAMES[name])
    except KeyError:
        raise OnnxExportError(f"dtype {name} has no ONNX element type") from None


class Builder:
    """Makes ONNX nodes and initializers for one export (Note [ONNX lowerings]).

    While an equation is lowered, `ins` holds its input atoms (Vars or Python scalars) from
    the example trace, `out`/`outs` its result Vars, and `ints` reads shape-valued attributes
    across the three traces (Note [Dynamic dims]).
    """

    def __init__(self, opset: int, symbols: list, symbol_values: list):
        self.opset = opset
        self.nodes: list = []
        self.initializers: dict = {}  # name -> np.ndarray
        self._const_cache: dict = {}
        self._dim_cache: dict = {}
        self._counter = itertools.count()
        self.symbols = symbols  # [(name, value name of its 1-element size tensor)]
        self.symbol_values = symbol_values  # per trace: tuple of sizes
        # per equation, set by the exporter
        self.eqns: list = []
        self.ins: list = []
        self.in_names: list = []
        self.outs: list = []
        self.shapes_of = None  # Var -> per-trace shapes
        self.where = ""

    # --- names and nodes -----------------------------------------------------------------
    def fresh(self, hint: str = "v") -> str:
        return f"{hint}_{next(self._counter)}"

    @property
    def out(self):
        return self.outs[0]

    def name_of(self, i: int) -> str:
        return self.in_names[i]

    def op(self, op_type: str, *inputs, outputs: int = 1, **attrs):
        """Append a node; returns its output name (a list when `outputs` > 1)."""
        from onnx import helper

        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        ins = ["" if i is None else i for i in inputs]
        while ins and ins[-1] == "":
            ins.pop()
        self.nodes.append(helper.make_node(op_type, ins, names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    @contextlib.contextmanager
    def scoped(self, ins, outs, in_names):
        """Lower a sub-step as if it were its own equation (same attributes and traces)."""
        saved = self.ins, self.outs, self.in_names
        self.ins, self.outs, self.in_names = list(ins), list(outs), list(in_names)
        try:
            yield self
        finally:
            self.ins, self.outs, self.in_names = saved

    def scan(self, body, states, scan_inputs, state_dtypes, scan_dtypes, out_dtypes, *,
             reverse=False, input_axes=None, output_axes=None):  # fmt: skip
        """A Scan node (Note [ONNX loops]): `body(*state_names, *slice_names)` builds the step
        with `self.op` and returns (new state names, per-step output names); the node's
        outputs, the final states then each per-step output stacked along its axis, are
        returned as a list. `reverse` runs the steps last to first and writes each output
        at its own step's position."""
        from onnx import helper

        saved = self.nodes
        self.nodes = []
        state_in = [self.fresh("state") for _ in states]
        slice_in = [self.fresh("slice") for _ in scan_inputs]
        try:
            new_states, step_outs = body(*state_in, *slice_in)
        finally:
            body_nodes, self.nodes = self.nodes, saved
        outputs = []
        for src in list(new_states) + list(step_outs):  # body outputs are fresh names
            out = self.fresh("body_out")
            body_nodes.append(helper.make_node("Identity", [src], [out], name=out))
            outputs.append(out)
        info = helper.make_tensor_value_info
        graph = helper.make_graph(
            body_nodes,
            self.fresh("scan_body"),
            [info(n, onnx_type(d), None) for n, d in zip(state_in, state_dtypes)]
            + [info(n, onnx_type(d), None) for n, d in zip(slice_in, scan_dtypes)],
            [info(n, onnx_type(d), None)
             for n, d in zip(outputs, list(state_dtypes) + list(out_dtypes))],
        )  # fmt: skip
        attrs = {"num_scan_inputs": len(scan_inputs)}
        if reverse:
            attrs["scan_input_directions"] = [1] * len(scan_inputs)
            attrs["scan_output_directions"] = [1] * len(step_outs)
        if input_axes is not None:
            attrs["scan_input_axes"] = list(input_axes)
        if output_axes is not None:
            attrs["scan_output_axes"] = list(output_axes)
        result = self.op("Scan", *states, *scan_inputs, outputs=len(outputs), body=graph,
                         **attrs)  # fmt: skip
        return result if isinstance(result, list) else [result]

    def fail(self, message: str):
        op = self.eqns[0].name if self.eqns else "export"
        raise OnnxExportError(f"{op}: {message}{self.where}")

    @staticmethod
    def onnx_type(dtype) -> int:
        return onnx_type(dtype)

    # --- constants -------------------------------------------------------------------------
    def const(self, value, dtype=None) -> str:
        """An initializer holding `value` (a scalar or array) as `dtype`."""
        array = np.asarray(value, dtype=None if dtype is None else numpy_dtype(dtype))
        key = None
        if array.size <= 64:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        name = self.fresh("const")
        self.initializers[name] = array
        if key is not None:
            self._const_cache[key] = name
        return name

    def reduce(self, op_type: str, x: str, axes, keepdims) -> str:
        """A Reduce* node; its axes are an input from opset 13 (ReduceSum) or 18 (others)."""
        since = 13 if op_type == "ReduceSum" else 18
        if self.opset >= since:
            return self.op(op_type, x, self.ints(list(axes)), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    # --- dynamic dims (Note [Dynamic dims]) ------------------------------------------------
    def ints(self, values, reshape_of=None, expand_of=None) -> str:
        """A 1-D int64 tensor of `values`: a list (static) or a function of the equation's
        attributes, read in every trace; varying entries become shape arithmetic. With
        `reshape_of=i` (`expand_of=i`), an entry equal to input i's dim at the same position
        becomes 0 (1), and one remaining varying entry of a reshape becomes -1."""
        if callable(values):
            per_trace = [list(values(e.attrs)) for e in self.eqns]
        else:
            per_trace = [list(values)] * max(1, len(self.eqns))
        return self.ints_across(per_trace, reshape_of=reshape_of, expand_of=expand_of)

    def ints_across(self, per_trace, reshape_of=None, expand_of=None) -> str:
        columns = list(zip(*per_trace)) if per_trace and per_trace[0] else []
        dynamic = [i for i, col in enumerate(columns) if len(set(col)) > 1]
        if not dynamic:
            return self.const(np.asarray(per_trace[0], np.int64).reshape(-1), "int64")
        like = reshape_of if reshape_of is not None else expand_of
        entries: list = list(per_trace[0])
        left = []
        for i in dynamic:
            if like is not None:
                in_shapes = self.shapes_of(self.ins[like])
                if i < len(in_shapes[0]) and all(
                    s[i] == col for s, col in zip(in_shapes, columns[i])
                ):
                    entries[i] = 0 if reshape_of is not None else 1
                    continue
            left.append(i)
        if reshape_of is not None and len(left) == 1:
            entries[left[0]] = -1
            left = []
        if not left:
            return self.const(np.asarray(entries, np.int64).reshape(-1), "int64")
        pieces, run = [], []
        for i, v in enumerate(entries):
            if i in left:
                if run:
                    pieces.append(self.const(np.asarray(run, np.int64), "int64"))
                    run = []
                pieces.append(self.dim(columns[i]))
            else:
                run.append(v)
        if run:
            pieces.append(self.const(np.asarray(run, np.int64), "int64"))
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)

    def dim(self, per_trace_values) -> str:
        """A 1-element int64 tensor computing a varying size (one value per trace)."""
        fit = fit_monomial(per_trace_values, self.symbol_values)
        if fit is None:
            summed = fit_sum(list(per_trace_values), self.symbol_values)
            if summed is not None:
                return self._sum(*summed)
            self.fail(
                f"a size that varies with the dynamic axes ({list(per_trace_values)} across "
                f"the traced sizes {self._symbol_text()}) is not a product of their sizes "
                f"nor a sum of them"
            )
        return self._monomial(fit, "int64")

    def _sum(self, indices, offset) -> str:
        key = ("sum", indices, offset)
        if key in self._dim_cache:
            return self._dim_cache[key]
        out = self.symbols[indices[0]][1]
        for i in indices[1:]:
            out = self.op("Add", out, self.symbols[i][1])
        if offset:
            out = self.op("Add", out, self.const(np.asarray([offset], np.int64)))
        self._dim_cache[key] = out
        return out

    def scalar(self, per_trace_values, dtype) -> str:
        """A 0-d constant of `dtype` that varies with the dynamic axes (a mean's 1/n)."""
        fit = fit_monomial(per_trace_values, self.symbol_values, allow_negative=True)
        if fit is None:
            self.fail(
                f"a number that varies with the dynamic axes ({list(per_trace_values)} across "
                f"the traced sizes {self._symbol_text()}) is not a product of their powers"
            )
        value = self._monomial(fit, dtype)
        return self.op("Reshape", value, self.const(np.zeros(0, np.int64), "int64"))

    def _symbol_text(self) -> str:
        names = [n for n, _ in self.symbols]
        return ", ".join(
            f"{n}=" + "/".join(str(v[i]) for v in self.symbol_values) for i, n in enumerate(names)
        )

    def _monomial(self, fit, dtype) -> str:
        coef, exps, offset = fit
        key = (coef, exps, offset, str(dtype))
        if key in self._dim_cache:
            return self._dim_cache[key]
        np_dtype = numpy_dtype(dtype)
        out = None
        numer, denom = [], []
        for (_, size_name), e in zip(self.symbols, exps):
            size = size_name
            if np_dtype != np.int64:
                size = self.op("Cast", size_name, to=onnx_type(np_dtype))
            (numer if e > 0 else denom).extend([size] * abs(e))
        for term in numer:
            out = term if out is None else self.op("Mul", out, term)
        if out is None:
            out = self.const(np.asarray([1], np_dtype))
        if coef.numerator != 1:
            out = self.op("Mul", out, self.const(np.asarray([coef.numerator], np_dtype)))
        for term in denom:
            out = self.op("Div", out, term)
        if coef.denominator != 1:
            out = self.op("Div", out, self.const(np.asarray([coef.denominator], np_dtype)))
        if offset:
            value = float(offset) if np_dtype.kind == "f" else int(offset)
            out = self.op("Add", out, self.const(np.asarray([value], np_dtype)))
        self._dim_cache[key] = out
        return out
