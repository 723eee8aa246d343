"""ONNX from an `ember.export` folder (Note [Exported program format] in ember.io.export).

The folder holds a traced graph whose sizes are already formulas in its dynamic dims, so no
Python function is traced again: `ExportedProgram.graph_for(**sizes)` gives the concrete graph
at the example sizes and at two others (Note [Dynamic dims]), and they go through the same
lowering and check as `ember.onnx.export` of a function, with the program's own `run` as the
reference that onnxruntime is compared with (Note [Checked export]).
"""

from __future__ import annotations

import os

import numpy as np

from ember.graph.passes import run_passes
from ember.onnx._builder import OnnxExportError
from ember.onnx._export import _check, _lower_graphs, _other_traces, _write

__all__ = ["export_program", "is_exported_program"]

_EXAMPLE_SIZE = 4  # the first trace's size of every dynamic dim (the others grow from it)


def is_exported_program(obj) -> bool:
    """An `ember.export` folder (a path holding signature.json) or a loaded ExportedProgram."""
    if hasattr(obj, "graph_for") and hasattr(obj, "signature"):
        return True
    if isinstance(obj, (str, os.PathLike)) and os.path.isdir(obj):
        return os.path.isfile(os.path.join(obj, "signature.json"))
    return False


def export_program(program, f, opset, check, rtol, atol, fuse, model_name):
    """Convert an exported program (folder or object) to ONNX; returns an ExportReport."""
    from ember import dtypes as _dt
    from ember.io.export import load_exported

    if not hasattr(program, "graph_for"):
        program = load_exported(program)
    if not 13 <= opset <= 21:
        raise OnnxExportError(f"export: opset_version must be 13 to 21, got {opset}")
    signature = program.signature
    input_names = list(program.input_names)
    output_names = list(program.output_names)
    symbols = list(signature.get("dynamic_dims", {}))
    dyn: dict = {}
    for symbol, where in signature.get("dynamic_dims", {}).items():
        for name, axis in where:
            dyn.setdefault(name, {})[int(axis)] = symbol
    example = [_EXAMPLE_SIZE] * len(symbols)

    def graph_at(sizes):
        return run_passes(program.graph_for(**dict(zip(symbols, sizes))), fuse=False)

    traces_sizes = [tuple(example)]
    graphs = [graph_at(traces_sizes[0])]
    if symbols:
        graphs += _other_traces(graph_at, example, symbols, traces_sizes)
    param_names = {id(array): name for name, array in program.weights.items()}
    out_dtypes = [_dt.as_dtype(o["dtype"]).numpy for o in signature["outputs"]]
    report = _lower_graphs(
        graphs,
        traces_sizes,
        symbols,
        input_names,
        output_names,
        dyn,
        opset,
        fuse,
        model_name or program.name,
        param_names,
        out_dtypes,
    )
    report.path = f if isinstance(f, (str, os.PathLike)) else None
    if check:
        templates = []
        for spec in signature["inputs"]:
            shape = [_EXAMPLE_SIZE if d == -1 else d for d in spec["shape"]]
            dtype = _dt.as_dtype(spec["dtype"]).numpy
            rng = np.random.default_rng(0)
            if np.dtype(dtype).kind == "f":
                templates.append(rng.standard_normal(shape).astype(dtype))
            else:  # ids and masks: ones are in range for any vocabulary
                templates.append(np.ones(shape, dtype))

        def reference(arrays):
            outs = program.run(dict(zip(input_names, arrays)))
            return [outs[n] for n in output_names]

        _check(report, reference, templates, input_names, dyn, symbols, traces_sizes, rtol, atol)
    if f is not None:
        _write(report.model, f)
    return report
