"""`ember.onnx.export`: trace, run the graph passes, lower each equation through its registry
entry's ONNX lowering, then check the file with onnx's checker and onnxruntime.

Note [Checked export]: every export is checked unless `check=False`: `onnx.checker.check_model
(full_check=True)`, then onnxruntime runs the file on fresh inputs at two shapes other than the
example's (every dynamic axis changed) and its outputs are compared with ember's eager ones;
the largest absolute difference per output is reported in the returned `ExportReport`, and a
difference past `atol + rtol * |ember|` raises `ExportCheckError` naming the worst output. With
`rms_scale=True` the bound is `atol + rtol * (|ember| + rms)`, rms the output's root mean square
(Note [Parity tolerances] in ember.testing.parity): an element of a deep network carries the
rounding of the terms it was summed from, whose size is the tensor's, not its own.
"""

from __future__ import annotations

import inspect
import io
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ember.graph.compile import _flatten, trace
from ember.graph.ir import Var
from ember.graph.passes import run_passes
from ember.onnx._builder import (
    Builder,
    OnnxExportError,
    fit_monomial,
    onnx_type,
    subgraph_inputs,
)
from ember.onnx import _fuse
from ember.tensor import Tensor, from_numpy

__all__ = ["export", "ExportReport", "ExportCheckError"]

# how much each dynamic axis grows in the second and third traces (Note [Dynamic dims])
_GROW = ((2, 5), (3, 7), (4, 9), (5, 11), (6, 13), (7, 15))


class ExportCheckError(OnnxExportError):
    """The written file disagrees with ember (checker failure or a difference past tolerance)."""


@dataclass
class ExportReport:
    """What `export` wrote and how it was checked."""

    path: str | None
    model: object  # onnx.ModelProto
    input_names: list
    output_names: list
    node_count: int
    checked: bool = False
    max_abs_diff: dict = field(default_factory=dict)  # output name -> largest |ort - ember|
    checked_shapes: list = field(default_factory=list)  # the input shapes run by onnxruntime

    def __repr__(self) -> str:
        diffs = ", ".join(f"{k}: {v:.2e}" for k, v in self.max_abs_diff.items())
        return (
            f"ExportReport({self.path!r}, {self.node_count} nodes, checked={self.checked}"
            + (f", max |diff| {diffs}" if diffs else "")
            + ")"
        )


def _flatten_outputs(obj, prefix, out, names):
    if isinstance(obj, Tensor):
        out.append(obj)
        names.append(prefix)
    elif hasattr(obj, "to_tuple") and hasattr(obj, "items"):  # ModelOutput
        for k, v in obj.items():
            _flatten_outputs(v, k, out, names)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten_outputs(v, str(k), out, names)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten_outputs(v, f"{prefix}_{i}" if prefix else f"output_{i}", out, names)


def _split_args(args):
    """torch.onnx.export's convention: a tensor, or a tuple whose last dict is kwargs."""
    if isinstance(args, Tensor):
        return (args,), {}
    args = tuple(args)
    if args and isinstance(args[-1], dict):
        return args[:-1], dict(args[-1])
    return args, {}


def _leaf_names(fn, args, kwargs):
    try:
        params = [
            p.name
            for p in inspect.signature(
                fn.forward if hasattr(fn, "forward") else fn
            ).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    leaves, descs, names = [], [], []
    for i, a in enumerate(args):
        _flatten(a, params[i] if i < len(params) else f"input_{i}", leaves, descs, names)
    for k, a in kwargs.items():
        _flatten(a, k, leaves, descs, names)
    tensor_names = [n for n, d in zip(names, descs) if d[0] == "tensor"]
    return leaves, [n.replace("[", "_").replace("]", "").replace("'", "") for n in tensor_names]


def _normalize_dynamic_axes(dynamic_axes, input_names, output_names):
    out: dict = {}
    for name, axes in (dynamic_axes or {}).items():
        if name not in input_names and name not in output_names:
            raise OnnxExportError(
                f"dynamic_axes names {name!r}, which is neither an input ({input_names}) nor "
                f"an output ({output_names})"
            )
        if isinstance(axes, dict):
            out[name] = {int(k): str(v) for k, v in axes.items()}
        else:
            out[name] = {int(a): f"{name}_dynamic_axes_{int(a)}" for a in axes}
    return out


def _rebuild(args, kwargs, leaves, new_leaves):
    from ember._util.pytree import map_leaves

    mapping = {id(t): n for t, n in zip(leaves, new_leaves)}
    sub = lambda t: mapping.get(id(t), t)  # noqa: E731
    return [map_leaves(sub, a, Tensor) for a in args], {
        k: map_leaves(sub, v, Tensor) for k, v in kwargs.items()
    }


def _derived_parts(sym, names) -> list | None:
    """The symbols a derived axis name sums ("past_sequence_length + sequence_length", as
    optimum names the attention mask's length), or None for a plain symbol."""
    parts = [p.strip() for p in str(sym).split("+")]
    if len(parts) > 1 and all(p in names for p in parts):
        return parts
    return None


def _size_of(sym, symbol_names, sizes) -> int:
    if sym in symbol_names:
        return sizes[symbol_names.index(sym)]
    return sum(sizes[symbol_names.index(p)] for p in _derived_parts(sym, symbol_names))


def _shapes_for(leaves, names, dyn, symbol_names, sizes):
    shapes = []
    for t, name in zip(leaves, names):
        shape = list(t.shape)
        for axis, sym in dyn.get(name, {}).items():
            shape[axis] = _size_of(sym, symbol_names, sizes)
        shapes.append(tuple(shape))
    return shapes


def _collect_symbols(leaves, input_names, dyn):
    """(plain symbol names, their example sizes). An axis named "a + b" after plain symbols
    a and b is derived (Note [Dynamic dims]): its size is their sum in every trace."""
    seen: dict = {}
    for t, n in zip(leaves, input_names):
        for axis, sym in sorted(dyn.get(n, {}).items()):
            if axis >= t.ndim or axis < 0:
                raise OnnxExportError(
                    f"dynamic_axes[{n!r}] names axis {axis} but {n} has shape {tuple(t.shape)}"
                )
            seen.setdefault(sym, []).append((n, int(t.shape[axis])))
    names = [s for s in seen if _derived_parts(s, seen) is None]
    symbol_names: list = []
    example_sizes: list = []
    for sym in names:
        (first, size), *rest = seen[sym]
        for n, other in rest:
            if other != size:
                raise OnnxExportError(
                    f"dynamic axis {sym!r} is {size} in {first} and {other} in {n}: axes "
                    f"sharing a name share a size"
                )
        symbol_names.append(sym)
        example_sizes.append(size)
    for sym, where in seen.items():
        if sym in symbol_names:
            continue
        total = _size_of(sym, symbol_names, example_sizes)
        for n, size in where:
            if size != total:
                raise OnnxExportError(
                    f"dynamic axis {sym!r} of {n} is {size}, but the sum of its parts is "
                    f"{total} in the example"
                )
    return symbol_names, example_sizes


def _placeholder(a: np.ndarray, shape, rng=None) -> np.ndarray:
    """An array like `a` at `shape`; with `rng`, random values like a's (ids stay valid)."""
    if rng is None:
        return np.zeros(shape, a.dtype)
    if a.dtype.kind == "f":
        scale = float(a.std()) if a.size > 1 and a.std() > 0 else 1.0
        vals = rng.normal(float(a.mean()) if a.size else 0.0, scale, size=shape)
        finite = a[np.isfinite(a)]
        if finite.size > 1:  # inside the example's range: probabilities stay in [0, 1]
            vals = np.clip(vals, finite.min(), finite.max())
        return vals.astype(a.dtype)
    pool = np.unique(a) if a.size else np.zeros(1, a.dtype)
    if a.dtype.kind in "iu" and pool.size == 2 and set(pool.tolist()) <= {0, 1}:
        vals = rng.random(shape) < 0.8  # masks: mostly ones, never a fully masked row
        vals[..., 0] = True
        return vals.astype(a.dtype)
    return rng.choice(pool, size=shape).astype(a.dtype)


def export(
    model_or_fn,
    args,
    f=None,
    input_names=None,
    output_names=None,
    dynamic_axes=None,
    opset_version: int = 18,
    *,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    fuse: bool = True,
    model_name: str | None = None,
    rms_scale: bool = False,
) -> ExportReport:
    """Export a module or function of tensors to an ONNX file, checked by onnxruntime.

    The arguments follow `torch.onnx.export`: `args` is a tensor or a tuple (a trailing dict
    holds keyword arguments), `f` a path or binary file (None: only return the model),
    `dynamic_axes` maps an input or output name to `{axis: "name"}` or a list of axes.
    Modules export in eval mode. Every primitive lowers through its registry entry (Note [ONNX
    lowerings]); softmax, layer norm and GELU become ONNX's fused ops where the opset has them
    (`fuse=False` keeps the primitives). The export is checked (Note [Checked export]) unless
    `check=False`.

    Args:
        model_or_fn: an `ember.nn.Module`, a function of tensors, an `ember.compile`d one, or
            an `ember.export` folder (path or loaded program; its own dynamic dims and names
            are used, and `args`, names and `dynamic_axes` are ignored).
        args: example inputs; their sizes along `dynamic_axes` may change in the file.
        f: where to write the file (atomically), or None.
        input_names, output_names: ONNX value names (default: the parameters' names; the
            output's field names for a ModelOutput or dict, else output / output_i).
        dynamic_axes: symbolic dims (Note [Dynamic dims]); axes sharing a name share a size.
        opset_version: 13 to 21.
        check, rtol, atol: the check and its tolerance (Note [Checked export]).
        rms_scale: bound each element by rtol * (|x| + the output's rms) too (Note [Checked
            export]), for deep models.
        fuse: use ONNX's fused ops for softmax, layer norm, GELU (Note [ONNX fused composites]).
        model_name: the ONNX graph's name (default: the model's class or function name).

    Returns:
        ExportReport: the `onnx.ModelProto`, names, node count and the check's differences.

    Example:
        >>> import ember, ember.onnx
        >>> mlp = ember.nn.Sequential(ember.nn.Linear(4, 8), ember.nn.ReLU())
        >>> report = ember.onnx.export(mlp, (ember.randn(2, 4),), None,
        ...     input_names=["x"], dynamic_axes={"x": {0: "batch"}})  # doctest: +SKIP
        >>> report.max_abs_diff  # doctest: +SKIP
        {'output': 0.0}
    """
    try:
        import onnx  # noqa: F401
    except ImportError as error:  # pragma: no cover - the extra is missing
        raise ImportError(
            "ember.onnx.export needs the onnx package: pip install ember[onnx]"
        ) from error
    from ember.autograd.grad_mode import no_grad
    from ember.graph.compile import CompiledFunction

    from ember.onnx._program import export_program, is_exported_program

    if is_exported_program(model_or_fn):  # an ember.export folder (or its loaded program)
        return export_program(model_or_fn, f, opset_version, check, rtol, atol, fuse, model_name)
    if isinstance(model_or_fn, CompiledFunction):  # export the Python function it traces
        model_or_fn = model_or_fn.fn
    is_module = hasattr(model_or_fn, "parameters") and hasattr(model_or_fn, "training")
    was_training = bool(model_or_fn.training) if is_module else False
    if is_module:
        model_or_fn.eval()
    try:
        with no_grad():
            return _export(
                model_or_fn,
                args,
                f,
                input_names,
                output_names,
                dynamic_axes,
                opset_version,
                check,
                rtol,
                atol,
                fuse,
                model_name,
                is_module,
                rms_scale,
            )
    finally:
        if is_module and was_training:
            model_or_fn.train()


def _export(
    fn, args, f, input_names, output_names, dynamic_axes, opset, check, rtol, atol, fuse, name,
    is_module, rms_scale=False,
):  # fmt: skip

    if not 13 <= opset <= 21:
        raise OnnxExportError(f"export: opset_version must be 13 to 21, got {opset}")
    args, kwargs = _split_args(args)
    leaves, default_names = _leaf_names(fn, args, kwargs)
    if not leaves:
        raise OnnxExportError("export: the arguments hold no tensor to make an ONNX input of")
    input_names = list(input_names) if input_names else default_names
    if len(input_names) != len(leaves):
        raise OnnxExportError(
            f"export: input_names has {len(input_names)} names but the arguments hold "
            f"{len(leaves)} tensors ({default_names})"
        )
    # the outputs' names need one eager call's structure
    example_out = fn(*args, **kwargs)
    out_tensors, default_out = [], []
    _flatten_outputs(example_out, "", out_tensors, default_out)
    if not out_tensors:
        raise OnnxExportError("export: the function returned no tensor")
    default_out = [n or f"output_{i}" for i, n in enumerate(default_out)]
    if len(out_tensors) == 1 and default_out == ["output_0"]:
        default_out = ["output"]
    if output_names:
        output_names = list(output_names) + default_out[len(output_names) :]
    else:
        output_names = default_out
    output_names = output_names[: len(out_tensors)]
    dyn = _normalize_dynamic_axes(dynamic_axes, input_names, output_names)

    # the dynamic axes' symbols and their sizes in the example
    symbol_names, example_sizes = _collect_symbols(leaves, input_names, dyn)

    def graph_at(sizes):
        shapes = _shapes_for(leaves, input_names, dyn, symbol_names, sizes)
        new = (
            leaves
            if sizes == traces_sizes[0]
            else [from_numpy(_placeholder(t.numpy(), s)) for t, s in zip(leaves, shapes)]
        )
        a, k = _rebuild(args, kwargs, leaves, new)

        def flat(*xs, **kw):
            res = fn(*xs, **kw)
            ts: list = []
            _flatten_outputs(res, "", ts, [])
            return tuple(ts)

        graph, *_ = trace(flat, a, k, new, input_names, name or type(fn).__name__)
        return run_passes(graph, fuse=False)

    traces_sizes = [tuple(example_sizes)]
    graphs = [graph_at(traces_sizes[0])]
    if symbol_names:
        graphs += _other_traces(graph_at, example_sizes, symbol_names, traces_sizes)
    param_names = {}
    if is_module:
        for pname, p in list(fn.named_parameters()) + list(fn.named_buffers()):
            param_names.setdefault(id(p._data), pname)
    report = _lower_graphs(
        graphs,
        traces_sizes,
        symbol_names,
        input_names,
        output_names,
        dyn,
        opset,
        fuse,
        name or type(fn).__name__,
        param_names,
        [t.numpy().dtype for t in out_tensors],
    )
    report.path = f if isinstance(f, (str, os.PathLike)) else None
    if check:

        def reference(arrays):
            fresh = [from_numpy(a) for a in arrays]
            a, k = _rebuild(args, kwargs, leaves, fresh)
            ours: list = []
            _flatten_outputs(fn(*a, **k), "", ours, [])
            return [t.numpy() for t in ours]

        templates = [t.numpy() for t in leaves]
        _check(report, reference, templates, input_names, dyn, symbol_names, traces_sizes,
               rtol, atol, rms_scale)  # fmt: skip
    if f is not None:
        _write(report.model, f)
    return report


def _lower_graphs(
    graphs, traces_sizes, symbol_names, input_names, output_names, dyn, opset, fuse, name,
    param_names, literal_dtypes,
) -> ExportReport:  # fmt: skip
    """The ONNX model of `graphs` (one trace per size in `traces_sizes`, the first the
    example's): fuse composites, lower every equation, name values, declare symbolic dims."""
    import onnx
    from onnx import helper, numpy_helper

    _check_same_structure(graphs, symbol_names, traces_sizes)
    if fuse:
        for g in graphs:
            _fuse.fuse_composites(g, opset)
        _check_same_structure(graphs, symbol_names, traces_sizes)
    graph = graphs[0]
    for v, n in zip(graph.inputs, input_names):
        v.name = n

    # per-trace shapes of every value, and the partner Vars of the other traces
    partner: dict = {}

    def pair(a, others):
        if isinstance(a, Var):
            partner[a] = others

    for vs in zip(*[g.inputs for g in graphs]):
        pair(vs[0], vs)
    for cs in zip(*[g.captures for g in graphs]):
        pair(cs[0][0], [c[0] for c in cs])
    consts_by_trace = [g.consts for g in graphs]
    for es in zip(*[g.eqns for g in graphs]):
        for ins in zip(*[e.inputs for e in es]):
            pair(ins[0], ins)
        for outs in zip(*[e.outs for e in es]):
            pair(outs[0], outs)
    for outs in zip(*[g.outputs for g in graphs]):
        pair(outs[0], outs)

    def shapes_of(v):
        return [p.shape for p in partner.get(v, [v] * len(graphs))]

    symbol_value_names = []
    b = Builder(opset, [], traces_sizes)
    b.shapes_of = shapes_of
    for sym in symbol_names:
        for n in input_names:
            axes = [a for a, s in dyn.get(n, {}).items() if s == sym]
            if axes:
                if opset >= 15:
                    size = b.op("Shape", n, start=axes[0], end=axes[0] + 1)
                else:
                    size = b.op("Gather", b.op("Shape", n), b.ints([axes[0]]))
                symbol_value_names.append((sym, size))
                break
    b.symbols = symbol_value_names

    names: dict = {v: n for v, n in zip(graph.inputs, input_names)}
    # parameters and buffers keep their module names
    used_names = set(input_names) | set(output_names)
    for var, holder in graph.captures:
        data = holder._data if isinstance(holder, Tensor) else holder
        pname = param_names.get(id(data)) or b.fresh("capture")
        while pname in used_names:
            pname = pname + "_"
        used_names.add(pname)
        names[var] = pname
        b.initializers[pname] = np.asarray(data)
    for var in graph.consts:
        names[var] = _lower_const(b, var, [c[p] for c, p in zip(consts_by_trace, partner[var])])

    for es in zip(*[g.eqns for g in graphs]):
        e = es[0]
        b.eqns = list(es)
        b.ins = list(e.inputs)
        b.outs = list(e.outs)
        b.where = _site(e)
        lower = getattr(e.op, "onnx", None)
        if lower is None:
            raise OnnxExportError(
                f"{e.name}: this ember op has no ONNX lowering, so the function cannot be "
                f"exported{b.where}. Ops without one: see ember.onnx.unsupported_ops()"
            )
        in_names = []
        for j, a in enumerate(e.inputs):
            if isinstance(a, Var):
                in_names.append(names[a])
            elif a is None:
                in_names.append(None)
            else:
                values = [es_k.inputs[j] for es_k in es]
                in_names.append(_literal(b, e, values))
        b.in_names = in_names
        result = lower(b, *in_names, **e.attrs)
        results = [result] if isinstance(result, str) else list(result)
        for v, r in zip(e.outs, results):
            names[v] = r

    # outputs: rename the producing node's output to the user's name
    outputs = []
    for k, (a, oname) in enumerate(zip(graph.outputs, output_names)):
        if not isinstance(a, Var):
            src = b.const(np.asarray(a, literal_dtypes[k]))
        else:
            src = names[a]
        b.nodes.append(helper.make_node("Identity", [src], [oname], name=f"{oname}_identity"))
        outputs.append((oname, a if isinstance(a, Var) else None, k))
    _rename_identities(b, set(input_names))

    def value_info(name, var, dims_per_trace, dtype, explicit):
        dims = []
        for axis, col in enumerate(zip(*dims_per_trace)):
            if axis in explicit:
                dims.append(explicit[axis])
            elif len(set(col)) == 1:
                dims.append(int(col[0]))
            else:
                fit = fit_monomial(col, traces_sizes)
                single = (
                    fit is not None
                    and fit[0] == 1
                    and fit[2] == 0
                    and sorted(fit[1]) == [0] * (len(fit[1]) - 1) + [1]
                )
                dims.append(symbol_names[fit[1].index(1)] if single else None)
        return helper.make_tensor_value_info(name, onnx_type(dtype), dims)

    inputs_vi = [
        value_info(n, v, shapes_of(v), v.dtype, dyn.get(n, {}))
        for v, n in zip(graph.inputs, input_names)
    ]
    outputs_vi = []
    for oname, var, k in outputs:
        if var is None:
            shape = np.asarray(graph.outputs[k]).shape
            dtype = literal_dtypes[k]
            outputs_vi.append(value_info(oname, None, [shape] * len(graphs), dtype, {}))
        else:
            outputs_vi.append(value_info(oname, var, shapes_of(var), var.dtype, dyn.get(oname, {})))
    _fold_constant_transposes(b)
    _drop_unused_nodes(b, [o[0] for o in outputs])
    used = {i for n in b.nodes for i in subgraph_inputs(n)}
    initializers = [numpy_helper.from_array(a, n) for n, a in b.initializers.items() if n in used]
    onnx_graph = helper.make_graph(b.nodes, name, inputs_vi, outputs_vi, initializer=initializers)
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="ember",
        ir_version=min(onnx.IR_VERSION, 10),
    )
    return ExportReport(
        path=None,
        model=model,
        input_names=input_names,
        output_names=[o[0] for o in outputs],
        node_count=len(b.nodes),
    )


def _other_traces(graph_at, example, symbol_names, traces_sizes) -> list:
    """Trace at two other sizes of every dynamic axis (Note [Dynamic dims]): larger ones, or
    smaller ones where the larger fail (a sequence at the model's maximum length)."""
    failures = []
    for sign in (1, -1):
        candidates = []
        for k in range(2):
            deltas = [_GROW[i % len(_GROW)][k] for i in range(len(example))]
            candidates.append(
                tuple(s + d if sign > 0 or s - d < 1 else s - d for s, d in zip(example, deltas))
            )
        try:
            graphs = [graph_at(sizes) for sizes in candidates]
        except Exception as error:  # the model refuses these sizes: try the other side
            failures.append(f"{dict(zip(symbol_names, candidates[0]))}: {error}")
            continue
        traces_sizes.extend(candidates)
        return graphs
    raise OnnxExportError(
        "export traces the function at other sizes of the dynamic axes to find how sizes "
        "follow them (Note [Dynamic dims]), and it failed at " + "; ".join(failures)
    )


def _site(e) -> str:
    if e.site is None:
        return ""
    filename, line = e.site
    return f" (at {filename}:{line})"


def _literal(b, e, values) -> str:
    """A Python scalar operand as a constant of the op's compute dtype (a varying one, such as
    a mean's 1/n over a dynamic axis, as shape arithmetic)."""
    dtype = None
    for a in e.inputs:
        if isinstance(a, Var) and a.dtype.kind != "b":
            dtype = a.dtype
            break
    if dtype is None:
        dtype = e.out.dtype if e.out.dtype.kind != "b" else np.dtype(type(values[0]))
    if len(set(values)) > 1:
        return b.scalar(values, dtype)
    return b.const(np.asarray(values[0], dtype=dtype))


def _lower_const(b, var, arrays) -> str:
    """A constant of the graph; one whose shape follows a dynamic axis must be a fill or an
    arange (BERT's default token types and position ids)."""
    first = arrays[0]
    if all(a.shape == first.shape for a in arrays):
        if not all(np.array_equal(a, first) for a in arrays[1:]):
            b.where = ""
            b.eqns = []
            b.fail(
                f"a constant of shape {first.shape} made while tracing changes with the dynamic "
                f"axes; make it from the inputs (ember ops on them) instead"
            )
        return b.const(first)
    b.eqns = []
    shape = b.ints_across([list(a.shape) for a in arrays])
    flat = [a.reshape(-1) for a in arrays]
    if all(a.size and (a == a[0]).all() for a in flat) and len({a[0] for a in flat}) == 1:
        from onnx import numpy_helper

        fill = numpy_helper.from_array(flat[0][:1].copy())
        return b.op("ConstantOfShape", shape, value=fill)
    steps = [np.diff(a) for a in flat]
    if all(a.size > 1 for a in flat) and all((s == steps[0][0]).all() for s in steps):
        step = steps[0][0]
        dtype = first.dtype
        scalar = b.const(np.zeros(0, np.int64), "int64")
        starts = [a[0] for a in flat]
        if len(set(starts)) == 1:
            start = b.const(np.asarray(starts[0], dtype))
        elif dtype.kind in "iu" and all(float(v).is_integer() for v in starts):
            # arange(past, past + q): a start that follows the axes
            start = b.op("Reshape", b.dim([int(v) for v in starts]), scalar)
            if dtype != np.int64:
                start = b.op("Cast", start, to=onnx_type(dtype))
        else:
            start = None
        if start is not None:
            count = b.dim([a.size for a in flat])
            n = b.op("Reshape", count, scalar)
            if dtype != np.int64:
                n = b.op("Cast", n, to=onnx_type(dtype))
            limit = b.op("Mul", n, b.const(np.asarray(step, dtype)))
            limit = b.op("Add", limit, start)
            out = b.op("Range", start, limit, b.const(np.asarray(step, dtype)))
            return b.op("Reshape", out, shape)
    band = _triangular(arrays)
    if band is not None:  # a causal mask: where(tril(ones, k), inside, outside)
        upper, ks, inside, outside, dtype = band
        if len(set(ks)) == 1:
            k = b.const(ks[0], "int64")
        else:  # the diagonal follows the axes (a past length)
            k = b.op("Reshape", b.dim(ks), b.const(np.zeros(0, np.int64), "int64"))
        ones = b.op("ConstantOfShape", shape, value=_onnx_array(np.ones(1, np.int64)))
        tri = b.op("Trilu", ones, k, upper=int(upper))
        keep = b.op("Cast", tri, to=onnx_type("bool"))
        return b.op(
            "Where", keep, b.const(np.asarray(inside, dtype)), b.const(np.asarray(outside, dtype))
        )
    b.fail(
        f"a constant made while tracing has a shape that follows the dynamic axes "
        f"({[a.shape for a in arrays]}) but is neither a fill nor an arange"
    )


def _onnx_array(array):
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


def _triangular(arrays):
    """(upper, k per array, inside, outside, dtype) when every array is where(tril/triu(ones,
    k), inside, outside) over its last two dims (a causal mask made while tracing; k may follow
    the axes, as a past length does), else None."""
    first = arrays[0]
    if first.ndim < 2 or first.shape[-1] < 2 or first.shape[-2] < 2:
        return None
    row = first.reshape(-1, *first.shape[-2:])[0]
    for upper in (False, True):
        inside = row[0, 0] if not upper else row[0, -1]
        outside = row[0, -1] if not upper else row[-1, 0]
        if inside == outside:
            continue
        fn = np.triu if upper else np.tril
        ks = []
        for a in arrays:
            top = a.reshape(-1, *a.shape[-2:])[0][0]
            if upper:
                k = int(np.argmax(top == inside))
            else:
                k = int(np.argmax(top != inside)) - 1 if (top != inside).any() else a.shape[-1]
            expected = np.where(fn(np.ones(a.shape[-2:], bool), k), inside, outside)
            if not np.array_equal(a, np.broadcast_to(expected, a.shape)):
                break
            ks.append(k)
        else:
            return upper, ks, inside, outside, first.dtype
    return None


def _rename_identities(b, keep: set) -> None:
    """Fewer Identity nodes: `x -> Identity -> out` (a graph output) lets x's producer write
    `out` directly, its other readers reading `out`; an Identity inside the graph (a no-op
    cast or copy) is bypassed. Values read inside a Scan body keep their names."""
    producers = {o: n for n in b.nodes for o in n.output}
    in_bodies: set = set()
    for n in b.nodes:
        direct = set(n.input)
        in_bodies.update(i for i in subgraph_inputs(n) if i not in direct)
    outputs = {n.output[0] for n in b.nodes if n.op_type == "Identity" and
               n.name.endswith("_identity")}  # fmt: skip

    def rename(old, new):
        for n in b.nodes:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new

    drop = []
    for node in b.nodes:
        if node.op_type != "Identity":
            continue
        src, out = node.input[0], node.output[0]
        if src in in_bodies or out in in_bodies:
            continue
        if out not in outputs:  # inside the graph: readers read the source
            rename(out, src)
            drop.append(node)
            continue
        producer = producers.get(src)
        if producer is None or src in keep or src in outputs:
            continue
        if producer.op_type == "Identity" and producer.name.endswith("_identity"):
            continue
        for k, o in enumerate(producer.output):
            if o == src:
                producer.output[k] = out
        producers[out] = producer
        rename(src, out)
        drop.append(node)
    for node in drop:
        b.nodes.remove(node)


def _drop_unused_nodes(b, outputs) -> None:
    """Nodes nothing reads (a dynamic axis' Shape that no size needed)."""
    live = set(outputs)
    kept = []
    for node in reversed(b.nodes):
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(subgraph_inputs(node))
    b.nodes[:] = kept[::-1]


def _fold_constant_transposes(b) -> None:
    """Transpose of an initializer (a linear layer's weight) becomes a transposed initializer,
    unless something else reads the initializer too (a tied embedding and LM head): a second,
    transposed copy would double the file, and runtimes fold the Transpose when they load."""
    uses: dict = {}
    for n in b.nodes:
        for i in set(subgraph_inputs(n)):
            uses[i] = uses.get(i, 0) + 1
    kept = []
    for n in b.nodes:
        source = n.input[0] if n.input else None
        if n.op_type == "Transpose" and source in b.initializers and uses.get(source) == 1:
            perm = list(n.attribute[0].ints) if n.attribute else None
            b.initializers[n.output[0]] = np.ascontiguousarray(
                np.transpose(b.initializers[n.input[0]], perm)
            )
            continue
        kept.append(n)
    b.nodes[:] = kept


def _check_same_structure(graphs, symbol_names, sizes) -> None:
    first = graphs[0]
    for g, s in zip(graphs[1:], sizes[1:]):
        if len(g.eqns) != len(first.eqns) or len(g.captures) != len(first.captures):
            for a, c in zip(first.eqns, g.eqns):
                if a.name != c.name:
                    break
            else:
                a = first.eqns[min(len(first.eqns), len(g.eqns)) - 1] if first.eqns else None
            raise OnnxExportError(
                f"the traced computation changes with the dynamic axes' sizes "
                f"({dict(zip(symbol_names, s))}): it has {len(g.eqns)} ops instead of "
                f"{len(first.eqns)}"
                + (f"; the first difference is near {a.name}{_site(a)}" if a else "")
                + ". Python branching on a dynamic size cannot be exported"
            )
        for a, c in zip(first.eqns, g.eqns):
            if a.name != c.name:
                raise OnnxExportError(
                    f"the traced computation changes with the dynamic axes' sizes: "
                    f"{a.name}{_site(a)} becomes {c.name}. Python branching on a dynamic "
                    f"size cannot be exported"
                )


def _write(model, f) -> None:
    data = model.SerializeToString()
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ember-onnx-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    elif isinstance(f, io.IOBase) or hasattr(f, "write"):
        f.write(data)
    else:
        raise OnnxExportError(f"export: f must be a path or a binary file, got {type(f).__name__}")


def _check(report, reference, templates, input_names, dyn, symbol_names, sizes, rtol, atol,
           rms_scale=False):  # fmt: skip
    """Note [Checked export]: `reference(arrays)` runs ember on inputs made like `templates`
    (NumPy arrays) at two new shapes; onnxruntime runs the file on the same ones."""
    import onnx

    try:
        onnx.checker.check_model(report.model, full_check=True)
    except Exception as error:
        raise ExportCheckError(f"onnx.checker rejected the exported model: {error}") from error
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportCheckError(
            "checking the export needs onnxruntime (pip install onnxruntime), or pass check=False"
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        report.model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    # two shapes other than the example's, those the extra traces ran at (the model takes
    # them), or the example's shape twice (fresh values) when nothing is dynamic
    check_sizes = list(sizes[1:]) if len(sizes) > 1 else [sizes[0], sizes[0]]
    worst = (0.0, None, 0.0)
    for trial in check_sizes:
        shapes = _shapes_for(templates, input_names, dyn, symbol_names, trial)
        fresh = [_placeholder(t, s, rng) for t, s in zip(templates, shapes)]
        ours = reference(fresh)
        feed = dict(zip(input_names, fresh))
        try:
            theirs = session.run(report.output_names, feed)
        except Exception as error:
            raise ExportCheckError(
                f"onnxruntime failed on inputs of shapes {dict(zip(input_names, shapes))}: {error}"
            ) from error
        report.checked_shapes.append(dict(zip(input_names, shapes)))
        for name, mine, ref in zip(report.output_names, ours, theirs):
            mine = np.asarray(mine)
            if mine.shape != ref.shape:
                raise ExportCheckError(
                    f"output {name!r}: onnxruntime gives shape {ref.shape}, ember {mine.shape} "
                    f"(inputs {dict(zip(input_names, shapes))})"
                )
            if mine.dtype.kind in "fc":
                diff = np.abs(mine.astype(np.float64) - ref.astype(np.float64))
                both_nan = np.isnan(mine) & np.isnan(ref)
                # equal values (equal infinities too, whose difference is nan) agree
                diff = np.where(both_nan | (mine == ref), 0.0, diff)
                err = float(np.max(diff)) if diff.size else 0.0
                magnitude = np.abs(mine.astype(np.float64))
                if rms_scale and mine.size:
                    finite = mine[np.isfinite(mine)].astype(np.float64)
                    magnitude = magnitude + (np.sqrt(np.mean(finite**2)) if finite.size else 0)
                limit = atol + rtol * magnitude
                excess = float(np.max(np.where(np.isnan(diff), np.inf, diff - limit), initial=0))
            else:
                err = float(np.max(mine != ref, initial=0))
                excess = err
            report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), err)
            if excess > worst[2] or (worst[1] is None and excess > 0):
                worst = (err, name, excess)
    report.checked = True
    if worst[1] is not None and worst[2] > 0:
        raise ExportCheckError(
            f"onnxruntime disagrees with ember on output {worst[1]!r}: max |diff| "
            f"{worst[0]:.3g} past atol={atol} + rtol={rtol}*|ember"
            + (" + rms" if rms_scale else "")
            + "|; all outputs: "
            + ", ".join(f"{k}: {v:.3g}" for k, v in report.max_abs_diff.items())
        )
