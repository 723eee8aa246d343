"""The exported-program artefact: a traced graph, its weights and its signature in one folder.

`ember.export(fn_or_module, example_inputs, folder)` traces a function (or a module's forward)
with ember's graph tracer (ember/graph/) and writes the one artefact that `ember serve` loads
and that the ONNX exporter reads; `ember.load_exported(folder)` gives back a callable. It sits
in ember.io (L5) because it writes safetensors; it uses the graph layer (L4) below it.
A reader of the artefact (an ONNX lowering, another runtime) takes `graph_spec` as it is, or
`program.graph_for(batch=..., ...)`: an ordinary `ember.graph.Graph` whose equations are
registry ops, at concrete sizes.

Public API:
    export(fn, example_inputs, folder=None, *, input_names=None, output_names=None,
           dynamic_dims=None, name=None, metadata=None) -> ExportedProgram
    load_exported(folder) -> ExportedProgram
    ExportedProgram: `(*arrays)` or `(**named)` -> Tensor / tuple of Tensors (the traced
        function's results), `.run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]`,
        `.signature` (dict, as in signature.json), `.save(folder)`, `.graph_for(**dims)`
        (the concrete `ember.graph.Graph` for given dynamic dim sizes), `.input_names`,
        `.output_names`, `.weights` (name -> np.ndarray), `.graph_spec` (graph.json's dict).

Note [Exported program format] (version 1): a folder with three files, written atomically
(a temporary sibling folder renamed into place):
- `signature.json`: {"format": "ember.exported_program", "version": 1, "name": str,
  "inputs": [{"name", "dtype", "shape"}], "outputs": [{"name", "dtype", "shape"}],
  "dynamic_dims": {symbol: [[input name, axis], ...]}, "metadata": {str: str}}. dtype is an
  ember dtype name ("float32", "int64", "bool", ...); a shape lists ints with -1 for a
  dynamic dim. Outputs whose axis is exactly one symbol also say so in "dim_symbols".
- `weights.safetensors`: the captured tensors (parameters, buffers) under their state_dict
  names when the function is a module or a closure over one ("capture.N" otherwise), and
  constants with a fixed shape as "const.N".
- `graph.json`: {"symbols": [...], "values": [{"shape": [dim...], "dtype": str}],
  "inputs": [value index], "weights": [[value index, weight name]], "consts": [[value index,
  spec]], "eqns": [{"op": registry op name, "inputs": [{"value": i} | {"literal": x}],
  "attrs": {...}, "outs": [value index]}], "outputs": [{"value": i} | {"literal": x}]}.
  Values are numbered in definition order (inputs, weights, consts, equation results), and
  equations are in the graph's order (each value defined before its uses). A dim, or any int
  in attrs or literals that depends on a dynamic dim, is {"dim": [[coefficient, [symbol,
  ...]], ...]}: the sum of coefficient times the product of the symbols' sizes (a multilinear
  polynomial: `batch * seq` for a flattened (batch, seq) axis). Attrs and literals are JSON
  with tagged forms for what JSON lacks: {"tuple": [...]}, {"slice": [start, stop, step]},
  {"dtype": name}, {"float": "nan" | "inf" | "-inf"}, {"ellipsis": true}. A const spec is
  {"weight": name} (fixed shape), {"fill": value} (every element equal, shape from its value
  entry) or {"arange": true} (0, 1, ..., n-1 along a 1-D value).

Note [Dynamic dims by retracing]: the tracer works on concrete shapes, so `export` traces the
function at 2**k shape points for k dynamic dims (each symbol at two sizes), checks that every
trace has the same structure (ops, operands, attrs up to their ints), and fits each int that
changes between traces as a multilinear polynomial in the symbols; one more trace at other
sizes must agree with the fit, or export fails and names the equation and attr. Tracing never
reads data, so the extra traces run on zero-filled inputs. Python control flow that branches
on a dynamic size (a different graph at another size) is reported the same way.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import tempfile
import threading
from collections import OrderedDict

import numpy as np

from ember import dtypes as _dt
from ember.tensor import Tensor

__all__ = ["export", "load_exported", "ExportedProgram", "ExportError", "FORMAT"]

FORMAT = "ember.exported_program"
VERSION = 1
SIGNATURE_FILE = "signature.json"
GRAPH_FILE = "graph.json"
WEIGHTS_FILE = "weights.safetensors"


class ExportError(ValueError):
    """A function cannot be exported, or an exported folder is malformed."""


# --- symbolic ints ---------------------------------------------------------------------------
def _eval_dim(spec, sizes: dict) -> int:
    if isinstance(spec, dict) and "dim" in spec:
        total = 0
        for coefficient, symbols in spec["dim"]:
            total += coefficient * math.prod(sizes[s] for s in symbols)
        return int(total)
    return spec


def _fit(values: list, points: list, symbols: list):
    """The multilinear polynomial through `values` at `points` (dicts symbol -> size); the
    first 2**k points are the corners of the box, the last one checks the fit."""
    subsets = [c for r in range(len(symbols) + 1) for c in itertools.combinations(symbols, r)]
    corners = points[: 2 ** len(symbols)]
    matrix = np.array(
        [[math.prod(p[s] for s in subset) for subset in subsets] for p in corners], dtype=float
    )
    coefficients = np.linalg.solve(matrix, np.array(values[: len(corners)], dtype=float))
    terms = []
    for c, subset in zip(coefficients, subsets):
        rounded = round(float(c))
        if abs(c - rounded) > 1e-6:
            return None
        if rounded:
            terms.append([rounded, list(subset)])
    spec = {"dim": terms}
    for value, p in zip(values, points):
        if _eval_dim(spec, p) != value:
            return None
    if all(not subset for _, subset in terms):
        return terms[0][0] if terms else 0
    return spec


# --- attrs and literals as JSON --------------------------------------------------------------
def _encode(value, where: str):
    """A JSON form of an attr or literal (tagged where JSON has no form)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, slice):
        return {
            "slice": [
                _encode(value.start, where),
                _encode(value.stop, where),
                _encode(value.step, where),
            ]
        }
    if isinstance(value, _dt.DType):
        return {"dtype": value.name}
    if isinstance(value, np.dtype):
        return {"dtype": _dt.from_numpy_dtype(value).name}
    if value is Ellipsis:
        return {"ellipsis": True}
    raise ExportError(
        f"export: {where} holds a {type(value).__name__} ({value!r:.80}), which the exported "
        "format cannot store (graph-level control flow, callables and generators are not "
        "exportable)"
    )


def _decode(value, sizes: dict):
    if isinstance(value, list):
        return [_decode(v, sizes) for v in value]
    if not isinstance(value, dict):
        return value
    if "dim" in value:
        return _eval_dim(value, sizes)
    if "tuple" in value:
        return tuple(_decode(v, sizes) for v in value["tuple"])
    if "slice" in value:
        return slice(*(_decode(v, sizes) for v in value["slice"]))
    if "dtype" in value:
        return _dtype(value["dtype"])
    if "float" in value:
        return float(value["float"])
    if "ellipsis" in value:
        return Ellipsis
    raise ExportError(f"exported graph: unknown tagged value {value!r}")


def _dtype(name: str) -> _dt.DType:
    for d in _dt.ALL_DTYPES:
        if d.name == name:
            return d
    raise ExportError(f"exported graph: unknown dtype {name!r}")


def _merge(encoded: list, points: list, symbols: list, where: str):
    """One JSON form for the same attr across traces: ints that differ become dims."""
    first = encoded[0]
    if all(e == first for e in encoded[1:]):
        return first
    if all(isinstance(e, int) and not isinstance(e, bool) for e in encoded):
        spec = _fit(encoded, points, symbols)
        if spec is None:
            raise ExportError(
                f"export: {where} changes with the dynamic dims ({encoded}) in a way that is "
                "not a product-sum of them; mark fewer dims dynamic"
            )
        return spec
    if all(isinstance(e, float) for e in encoded):
        spec = _fit(encoded, points, symbols) if all(e.is_integer() for e in encoded) else None
        if spec is None:
            raise ExportError(
                f"export: {where} is a float that changes with the dynamic dims ({encoded}); "
                "compute it from a tensor's shape inside the graph or mark the dim static"
            )
        return {"dim_float": spec} if isinstance(spec, dict) else float(spec)
    if all(isinstance(e, list) for e in encoded) and len({len(e) for e in encoded}) == 1:
        return [_merge(list(col), points, symbols, where) for col in zip(*encoded)]
    if all(isinstance(e, dict) for e in encoded) and len({tuple(e) for e in encoded}) == 1:
        return {k: _merge([e[k] for e in encoded], points, symbols, where) for k in first}
    raise ExportError(
        f"export: {where} differs between traces at different dynamic sizes "
        f"({first!r:.60} vs {encoded[1]!r:.60}): the function's graph depends on the size"
    )


def _decode_literal(value, sizes):
    if isinstance(value, dict) and "dim_float" in value:
        return float(_eval_dim(value["dim_float"], sizes))
    if isinstance(value, list):
        return [_decode_literal(v, sizes) for v in value]
    if isinstance(value, dict) and not (
        {"dim", "tuple", "slice", "dtype", "float", "ellipsis"} & set(value)
    ):
        return {k: _decode_literal(v, sizes) for k, v in value.items()}
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_decode_literal(v, sizes) for v in value["tuple"])
    if isinstance(value, dict) and "slice" in value:
        return slice(*(_decode_literal(v, sizes) for v in value["slice"]))
    return _decode(value, sizes)


# --- tracing ---------------------------------------------------------------------------------
def _modules_of(fn) -> list:
    """Modules whose state_dict names the captured tensors: fn itself, its bound self, and
    modules its closure holds."""
    found = []

    def is_module(obj):
        return hasattr(obj, "state_dict") and hasattr(obj, "named_buffers") and callable(obj)

    for obj in (fn, getattr(fn, "__self__", None)):
        if is_module(obj):
            found.append(obj)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        if is_module(obj):
            found.append(obj)
    code = getattr(fn, "__code__", None)
    if code is not None:
        for name in code.co_names:
            obj = getattr(fn, "__globals__", {}).get(name)
            if is_module(obj):
                found.append(obj)
    return found


def _weight_names(fn) -> dict:
    names: dict = {}
    for module in _modules_of(fn):
        for name, t in list(module.state_dict(keep_vars=True).items()) + list(
            module.named_buffers()
        ):
            names.setdefault(id(t.array), name)
    return names


def _as_tensor(x, where: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor.from_array(x)
    raise ExportError(
        f"export: example input {where} is a {type(x).__name__}; expected a Tensor or a NumPy array"
    )


def _flatten_outputs(result, output_names):
    """(names, tensors) of the traced function's results: a Tensor, a tuple/list of them,
    or a dict / ModelOutput of them (None entries dropped)."""
    if isinstance(result, Tensor):
        items = [("output", result)]
    elif isinstance(result, dict) or (hasattr(result, "keys") and hasattr(result, "__getitem__")):
        items = [(str(k), result[k]) for k in result.keys() if result[k] is not None]
    elif isinstance(result, (tuple, list)):
        items = [(f"output_{i}", r) for i, r in enumerate(result)]
    else:
        raise ExportError(
            f"export: the function returned a {type(result).__name__}; expected a Tensor, a "
            "tuple or list of Tensors, or a dict of Tensors"
        )
    for name, t in items:
        if not isinstance(t, Tensor):
            raise ExportError(f"export: output {name!r} is a {type(t).__name__}, not a Tensor")
    if output_names is not None:
        if len(output_names) != len(items):
            raise ExportError(
                f"export: output_names has {len(output_names)} names but the function returns "
                f"{len(items)} tensors"
            )
        items = [(n, t) for n, (_, t) in zip(output_names, items)]
    return [n for n, _ in items], [t for _, t in items], type(result) is Tensor


def _trace_once(fn, arrays, names, as_kwargs, output_names):
    from ember.autograd import no_grad
    from ember.graph.trace import Tracer, tracing

    tracer = Tracer(getattr(fn, "__name__", type(fn).__name__))
    symbolic = [
        tracer.new_input(a.shape, a.dtype, n if n.isidentifier() else None)
        for a, n in zip(arrays, names)
    ]
    try:
        with no_grad(), tracing(tracer):
            result = fn(**dict(zip(names, symbolic))) if as_kwargs else fn(*symbolic)
            out_names, outs, single = _flatten_outputs(result, output_names)
            atoms = [tracer.atom(t) for t in outs]
    except BaseException:
        tracer.abort()
        raise
    del result, outs, symbolic
    graph = tracer.finish(atoms)
    graph.check()
    if graph.updates or graph.grads:
        raise ExportError(
            "export: the function writes tensors while running (an optimizer step, an in-place "
            "update, a BatchNorm in training mode): call module.eval() and export the forward only"
        )
    return graph, out_names, single


def _structure(graph, weight_names):
    """The JSON-ready parts of one trace, before merging: values, consts, eqns, outputs."""
    from ember.graph.ir import Var

    index: dict = {}
    values = []

    def define(v):
        index[v] = len(values)
        values.append(v)

    for v in graph.inputs:
        define(v)
    weights = []
    for i, (v, holder) in enumerate(graph.captures):
        define(v)
        weights.append((index[v], weight_names.get(id(holder.array), f"capture.{i}"), holder.array))
    consts = []
    for v, array in graph.consts.items():
        define(v)
        consts.append((index[v], np.asarray(array)))
    eqns = []
    for k, e in enumerate(graph.eqns):
        if not hasattr(e.op, "forward") and not hasattr(e.op, "name"):
            raise ExportError(f"export: equation {k} is not a registry op")
        from ember.ops.registry import REGISTRY

        if REGISTRY.get(e.name) is not e.op:
            raise ExportError(
                f"export: equation {k} ({e.name}) is a graph-level primitive, not an op of the "
                "registry (cond / while_loop are not exportable yet)"
            )
        where = f"equation {k} ({e.name})"
        ins = [
            {"value": index[a]}
            if isinstance(a, Var)
            else {"literal": _encode(a, where + " operand")}
            for a in e.inputs
        ]
        attrs = {name: _encode(val, f"{where} attr {name!r}") for name, val in e.attrs.items()}
        for v in e.outs:
            define(v)
        eqns.append(
            {"op": e.name, "inputs": ins, "attrs": attrs, "outs": [index[v] for v in e.outs]}
        )
    outputs = [
        {"value": index[a]} if isinstance(a, Var) else {"literal": _encode(a, "an output")}
        for a in graph.outputs
    ]
    shapes = [[int(d) for d in v.shape] for v in values]
    dtypes = [_dt.from_numpy_dtype(v.dtype).name for v in values]
    return {
        "shapes": shapes,
        "dtypes": dtypes,
        "inputs": [index[v] for v in graph.inputs],
        "weights": weights,
        "consts": consts,
        "eqns": eqns,
        "outputs": outputs,
    }


def _const_spec(arrays: list, position: int, where: str):
    first = arrays[0]
    if all(a.shape == first.shape and np.array_equal(a, first) for a in arrays[1:]):
        return None  # a fixed constant: stored as a weight
    if all(a.size and (a == a.flat[0]).all() and a.flat[0] == first.flat[0] for a in arrays):
        return {"fill": _encode(first.flat[0].item(), where)}
    if all(a.ndim == 1 and np.array_equal(a, np.arange(a.shape[0])) for a in arrays):
        return {"arange": True}
    raise ExportError(
        f"export: {where} (a tensor made inside the function, shape {first.shape}) changes with "
        "the dynamic dims and is neither a fill nor an arange: pass it as an input"
    )


def export(
    fn,
    example_inputs,
    folder: str | os.PathLike | None = None,
    *,
    input_names=None,
    output_names=None,
    dynamic_dims=None,
    name: str | None = None,
    metadata: dict | None = None,
) -> "ExportedProgram":
    """Trace `fn` (a function of tensors, or a module) into an exported program and, when
    `folder` is given, write it there (Note [Exported program format]).

    Args:
        fn: the function or module (call `module.eval()` first).
        example_inputs: a tuple of Tensors / arrays (positional call) or a dict name -> Tensor
            (keyword call); they fix dtypes, ranks and the static dims.
        folder: where to write the artefact (None: keep it in memory only).
        input_names: names for positional inputs (default: the parameter names).
        output_names: names for the results (default: dict keys, "output", "output_N").
        dynamic_dims: {input name: {axis: symbol}}; inputs that share a symbol share the size.
            Default: axis 0 of every input is the symbol "batch".
        name: the program's name (default: the function's name).
        metadata: str -> str stored in signature.json (labels, tokenizer, task...).

    Example:
        >>> import ember, numpy as np
        >>> lin = ember.nn.Linear(3, 2).eval()
        >>> prog = ember.export(lin, (ember.ones(4, 3),))
        >>> prog.signature["inputs"]
        [{'name': 'x', 'dtype': 'float32', 'shape': [-1, 3]}]
        >>> x = ember.ones(5, 3)
        >>> bool(np.allclose(prog(x).numpy(), lin(x).detach().numpy()))
        True
    """
    import inspect

    as_kwargs = isinstance(example_inputs, dict)
    if as_kwargs:
        names = list(example_inputs)
        examples = [_as_tensor(example_inputs[n], repr(n)) for n in names]
    else:
        if isinstance(example_inputs, (Tensor, np.ndarray)):
            example_inputs = (example_inputs,)
        examples = [_as_tensor(x, f"#{i}") for i, x in enumerate(example_inputs)]
        if input_names is None:
            try:
                target = fn.forward if hasattr(fn, "forward") else fn
                params = [
                    p.name
                    for p in inspect.signature(target).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
            except (TypeError, ValueError):
                params = []
            input_names = params[: len(examples)]
            input_names += [f"input_{i}" for i in range(len(input_names), len(examples))]
        names = list(input_names)
        if len(names) != len(examples):
            raise ExportError(f"export: {len(names)} input names for {len(examples)} inputs")
    if len(set(names)) != len(names):
        raise ExportError(f"export: input names repeat: {names}")
    if dynamic_dims is None:
        dynamic_dims = {n: {0: "batch"} for n, t in zip(names, examples) if t.ndim >= 1}
    unknown = set(dynamic_dims) - set(names)
    if unknown:
        raise ExportError(
            f"export: dynamic_dims names unknown inputs {sorted(unknown)}; inputs are {names}"
        )
    symbols: list = []
    sizes: dict = {}
    axes_of: dict = {}
    for n, t in zip(names, examples):
        for axis, symbol in (dynamic_dims.get(n) or {}).items():
            axis = int(axis)
            if not -t.ndim <= axis < t.ndim:
                raise ExportError(
                    f"export: dynamic dim {axis} of input {n!r}: it has {t.ndim} dims"
                )
            axis %= t.ndim
            size = int(t.shape[axis])
            if symbol in sizes and sizes[symbol] != size:
                raise ExportError(
                    f"export: dynamic dim {symbol!r} is {sizes[symbol]} in one input and {size} "
                    f"in input {n!r} axis {axis}; inputs sharing a symbol need equal sizes"
                )
            if symbol not in sizes:
                symbols.append(symbol)
                sizes[symbol] = size
            axes_of.setdefault(symbol, []).append([n, axis])
    # Note [Dynamic dims by retracing]: corners of the box, then one check point
    low = {s: max(sizes[s], 2) for s in symbols}
    points = [
        {s: low[s] + bit for s, bit in zip(symbols, bits)}
        for bits in itertools.product((0, 1), repeat=len(symbols))
    ]
    points.append({s: low[s] + 2 + i for i, s in enumerate(symbols)})
    if not symbols:
        points = [{}]
    weight_names = _weight_names(fn)
    traces = []
    for point in points:
        arrays = []
        for n, t in zip(names, examples):
            shape = list(t.shape)
            for axis, symbol in (dynamic_dims.get(n) or {}).items():
                shape[int(axis) % t.ndim] = point[symbol]
            if point == {s: sizes[s] for s in symbols} or not symbols:
                arrays.append(t.array)
            else:
                arrays.append(np.zeros(shape, t.array.dtype))
        graph, out_names, single = _trace_once(fn, arrays, names, as_kwargs, output_names)
        traces.append(_structure(graph, weight_names))
    spec = _merge_traces(traces, points, symbols)
    out_vals = spec["outputs"]
    signature_outputs = []
    for out_name, out in zip(out_names, out_vals):
        if "value" not in out:
            raise ExportError(f"export: output {out_name!r} is a constant, not a tensor")
        shape = spec["values"][out["value"]]["shape"]
        entry = {
            "name": out_name,
            "dtype": spec["values"][out["value"]]["dtype"],
            "shape": [d if isinstance(d, int) else -1 for d in shape],
        }
        dim_symbols = [
            d["dim"][0][1][0]
            if isinstance(d, dict)
            and len(d["dim"]) == 1
            and d["dim"][0][0] == 1
            and len(d["dim"][0][1]) == 1
            else None
            for d in shape
        ]
        if any(dim_symbols):
            entry["dim_symbols"] = dim_symbols
        signature_outputs.append(entry)
    signature = {
        "format": FORMAT,
        "version": VERSION,
        "name": name or getattr(fn, "__name__", type(fn).__name__),
        "inputs": [
            {
                "name": n,
                "dtype": _dt.from_numpy_dtype(t.array.dtype).name,
                "shape": [
                    -1 if axis in {int(a) % t.ndim for a in (dynamic_dims.get(n) or {})} else int(d)
                    for axis, d in enumerate(t.shape)
                ],
            }
            for n, t in zip(names, examples)
        ],
        "outputs": signature_outputs,
        "dynamic_dims": axes_of,
        "single_output": bool(single),
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
    }
    weights = spec.pop("_weights")
    program = ExportedProgram(signature, spec, weights)
    if folder is not None:
        program.save(folder)
    return program


def _merge_traces(traces, points, symbols) -> dict:
    first = traces[0]
    for k, t in enumerate(traces[1:], 1):
        if [e["op"] for e in t["eqns"]] != [e["op"] for e in first["eqns"]] or len(
            t["shapes"]
        ) != len(first["shapes"]):
            at = next(
                (i for i, (a, b) in enumerate(zip(first["eqns"], t["eqns"])) if a["op"] != b["op"]),
                min(len(first["eqns"]), len(t["eqns"])),
            )
            raise ExportError(
                f"export: the traced graph at sizes {points[k]} differs from the one at "
                f"{points[0]} from equation {at} on (Python code branches on a dynamic size); "
                "mark that dim static or move the branch out of the function"
            )
        if [w[1] for w in t["weights"]] != [w[1] for w in first["weights"]]:
            raise ExportError(
                "export: the captured weights differ between traces at different sizes"
            )
    values = []
    for i in range(len(first["shapes"])):
        ranks = {len(t["shapes"][i]) for t in traces}
        if len(ranks) != 1:
            raise ExportError(f"export: value {i} changes rank with the dynamic dims")
        shape = [
            _merge(
                [t["shapes"][i][axis] for t in traces], points, symbols, f"the shape of value {i}"
            )
            for axis in range(ranks.pop())
        ]
        values.append({"shape": shape, "dtype": first["dtypes"][i]})
    eqns = []
    for k, e in enumerate(first["eqns"]):
        where = f"equation {k} ({e['op']})"
        merged = _merge([t["eqns"][k] for t in traces], points, symbols, where)
        eqns.append(merged)
    weights_out: dict = OrderedDict()
    weight_refs = []
    for index, wname, array in first["weights"]:
        weights_out[wname] = np.ascontiguousarray(array)
        weight_refs.append([index, wname])
    consts = []
    for c, (index, array) in enumerate(first["consts"]):
        arrays = [t["consts"][c][1] for t in traces]
        spec = _const_spec(arrays, c, f"constant value {index}")
        if spec is None:
            cname = f"const.{c}"
            weights_out[cname] = np.ascontiguousarray(array)
            spec = {"weight": cname}
        consts.append([index, spec])
    outputs = _merge([t["outputs"] for t in traces], points, symbols, "the outputs")
    return {
        "symbols": list(symbols),
        "values": values,
        "inputs": first["inputs"],
        "weights": weight_refs,
        "consts": consts,
        "eqns": eqns,
        "outputs": outputs,
        "_weights": weights_out,
    }


# --- the program -----------------------------------------------------------------------------
class ExportedProgram:
    """An exported function: signature, graph spec and weights; callable (Note [Exported
    program format]). Each set of dynamic sizes gets its own compiled graph (kept in a small
    LRU cache); calls are serialized by a lock (executors are not re-entrant)."""

    def __init__(self, signature: dict, graph_spec: dict, weights: dict, cache_size: int = 64):
        self.signature = signature
        self.graph_spec = graph_spec
        self.weights = weights
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._tensors = {k: Tensor.from_array(v) for k, v in weights.items()}
        self.input_names = [i["name"] for i in signature["inputs"]]
        self.output_names = [o["name"] for o in signature["outputs"]]
        self._input_dtypes = [_dtype(i["dtype"]).numpy for i in signature["inputs"]]
        self._axes = {}
        for symbol, where in signature.get("dynamic_dims", {}).items():
            for n, axis in where:
                self._axes.setdefault(n, {})[int(axis)] = symbol

    @property
    def name(self) -> str:
        return self.signature.get("name", "program")

    @property
    def metadata(self) -> dict:
        return self.signature.get("metadata", {})

    def __repr__(self) -> str:
        ins = ", ".join(f"{i['name']}:{i['dtype']}{i['shape']}" for i in self.signature["inputs"])
        outs = ", ".join(f"{o['name']}:{o['dtype']}{o['shape']}" for o in self.signature["outputs"])
        return f"<ExportedProgram {self.name}({ins}) -> ({outs}), {len(self._cache)} compiled>"

    # --- checking and binding sizes --------------------------------------------------------
    def sizes_of(self, arrays: list) -> dict:
        """The dynamic sizes that `arrays` (in input order) bind; ValueError naming the input
        when a rank, a static dim, a dtype or a shared size disagrees with the signature."""
        sizes: dict = {}
        for spec, array, dtype in zip(self.signature["inputs"], arrays, self._input_dtypes):
            n, shape = spec["name"], spec["shape"]
            if array.dtype != dtype:
                raise ValueError(f"input {n!r}: expected dtype {spec['dtype']}, got {array.dtype}")
            if array.ndim != len(shape):
                raise ValueError(
                    f"input {n!r}: expected {len(shape)} dims (shape {shape}), got shape "
                    f"{list(array.shape)}"
                )
            for axis, (want, got) in enumerate(zip(shape, array.shape)):
                symbol = self._axes.get(n, {}).get(axis)
                if symbol is None:
                    if want != got:
                        raise ValueError(
                            f"input {n!r}: expected shape {shape}, got "
                            f"{list(array.shape)} (dim {axis})"
                        )
                    continue
                if got < 1:
                    raise ValueError(
                        f"input {n!r}: dim {axis} ({symbol}) must be at least 1, got {got}"
                    )
                if sizes.setdefault(symbol, got) != got:
                    raise ValueError(
                        f"input {n!r}: dim {axis} ({symbol}) is {got} but another input has "
                        f"{symbol} = {sizes[symbol]}"
                    )
        return sizes

    def graph_for(self, **sizes):
        """The concrete graph (ember.graph.Graph) for these dynamic sizes."""
        from ember.graph.ir import Eqn, Graph, Var
        from ember.ops.registry import REGISTRY

        spec = self.graph_spec
        missing = set(spec["symbols"]) - set(sizes)
        if missing:
            raise ValueError(f"{self.name}: sizes for dynamic dims {sorted(missing)} are needed")
        values = [
            Var([_eval_dim(d, sizes) for d in v["shape"]], _dtype(v["dtype"]).numpy)
            for v in spec["values"]
        ]
        graph = Graph(self.name)
        for i, n in zip(spec["inputs"], self.input_names):
            values[i].name = n if n.isidentifier() else None
            graph.inputs.append(values[i])
        for index, wname in spec["weights"]:
            graph.captures.append((values[index], self._tensors[wname]))
        for index, cspec in spec["consts"]:
            var = values[index]
            if "weight" in cspec:
                graph.consts[var] = self.weights[cspec["weight"]]
            elif "fill" in cspec:
                graph.consts[var] = np.full(var.shape, _decode(cspec["fill"], sizes), var.dtype)
            elif "arange" in cspec:
                graph.consts[var] = np.arange(var.shape[0], dtype=var.dtype)
            else:
                raise ExportError(f"{self.name}: unknown constant spec {cspec!r}")

        def atom(a):
            return values[a["value"]] if "value" in a else _decode_literal(a["literal"], sizes)

        for k, e in enumerate(spec["eqns"]):
            op = REGISTRY.get(e["op"])
            if op is None:
                raise ExportError(
                    f"{self.name}: equation {k} uses op {e['op']!r}, which this ember lacks"
                )
            attrs = {name: _decode_literal(v, sizes) for name, v in e["attrs"].items()}
            graph.eqns.append(
                Eqn(op, [atom(a) for a in e["inputs"]], attrs, [values[o] for o in e["outs"]])
            )
        graph.outputs = [atom(a) for a in spec["outputs"]]
        return graph.check()

    def _executor(self, sizes: dict):
        key = tuple(sorted(sizes.items()))
        entry = self._cache.get(key)
        if entry is None:
            from ember.graph import config
            from ember.graph.executor import Executor
            from ember.graph.passes import run_passes

            entry = Executor(run_passes(self.graph_for(**sizes), fuse=config.fusion))
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return entry

    # --- running ---------------------------------------------------------------------------
    def run(self, feeds: dict) -> dict:
        """Run on NumPy arrays by input name; returns output name -> NumPy array."""
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise ValueError(
                f"{self.name}: expected inputs {self.input_names}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        arrays = [np.ascontiguousarray(feeds[n]) for n in self.input_names]
        sizes = self.sizes_of(arrays)
        with self._lock:
            outs, _ = self._executor(sizes)(*arrays)
            outs = [np.array(o, copy=True) for o in outs]
        return dict(zip(self.output_names, outs))

    def __call__(self, *args, **kwargs):
        if args and kwargs:
            raise TypeError(f"{self.name}: pass inputs positionally or by name, not both")
        if args:
            if len(args) != len(self.input_names):
                raise TypeError(
                    f"{self.name}: expected {len(self.input_names)} inputs "
                    f"{self.input_names}, got {len(args)}"
                )
            kwargs = dict(zip(self.input_names, args))
        feeds = {
            k: v.numpy() if isinstance(v, Tensor) else np.asarray(v) for k, v in kwargs.items()
        }
        outs = self.run(feeds)
        tensors = tuple(Tensor.from_array(outs[n]) for n in self.output_names)
        if self.signature.get("single_output") and len(tensors) == 1:
            return tensors[0]
        return tensors

    # --- files -----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> None:
        """Write the three files of Note [Exported program format], atomically: into a
        temporary sibling folder, then renamed over `folder`."""
        from ember.io.safetensors import save_file

        folder = os.fspath(folder)
        parent = os.path.dirname(os.path.abspath(folder))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
        try:
            with open(os.path.join(staging, SIGNATURE_FILE), "w") as f:
                json.dump(self.signature, f, indent=1)
            with open(os.path.join(staging, GRAPH_FILE), "w") as f:
                json.dump(self.graph_spec, f, separators=(",", ":"))
            save_file(
                self.weights, os.path.join(staging, WEIGHTS_FILE), metadata={"format": FORMAT}
            )
            if os.path.isdir(folder):
                old = folder + ".old-" + os.path.basename(staging)
                os.rename(folder, old)
                os.rename(staging, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def is_exported(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds an exported program (its signature.json names the format)."""
    path = os.path.join(os.fspath(folder), SIGNATURE_FILE)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_exported(folder: str | os.PathLike) -> ExportedProgram:
    """Load an exported program written by `export` (no code runs from the folder: JSON and
    safetensors only).

    Example:
        >>> import ember, tempfile, os
        >>> lin = ember.nn.Linear(3, 2).eval()
        >>> folder = os.path.join(tempfile.mkdtemp(), "lin")
        >>> _ = ember.export(lin, (ember.ones(4, 3),), folder)
        >>> ember.load_exported(folder)(ember.ones(2, 3)).shape
        ember.Size([2, 2])
    """
    from ember.io.safetensors import load_file

    folder = os.fspath(folder)
    files = {}
    for fname in (SIGNATURE_FILE, GRAPH_FILE, WEIGHTS_FILE):
        path = os.path.join(folder, fname)
        if not os.path.isfile(path):
            raise ExportError(f"load_exported: {folder} has no {fname}; is it an exported program?")
        files[fname] = path
    try:
        with open(files[SIGNATURE_FILE]) as f:
            signature = json.load(f)
        with open(files[GRAPH_FILE]) as f:
            spec = json.load(f)
    except ValueError as e:
        raise ExportError(f"load_exported: {folder}: malformed JSON ({e})") from None
    if signature.get("format") != FORMAT:
        raise ExportError(
            f"load_exported: {files[SIGNATURE_FILE]} format is "
            f"{signature.get('format')!r}, expected {FORMAT!r}"
        )
    if signature.get("version", 0) > VERSION:
        raise ExportError(
            f"load_exported: {folder} is format version {signature['version']}; this ember "
            f"reads up to {VERSION}"
        )
    weights = load_file(files[WEIGHTS_FILE], framework="np")
    needed = {w for _, w in spec.get("weights", [])} | {
        c["weight"] for _, c in spec.get("consts", []) if "weight" in c
    }
    lacking = sorted(needed - set(weights))
    if lacking:
        raise ExportError(f"load_exported: {files[WEIGHTS_FILE]} lacks tensors {lacking[:5]}")
    program = ExportedProgram(signature, spec, weights)
    program.graph_for(**{s: 2 for s in spec.get("symbols", [])})  # a malformed graph fails here
    return program
