"""L9: ONNX export and import.

`export` writes an ONNX file from an ember module or function, lowering every traced equation
through its op's ONNX lowering in the registry (Note [ONNX lowerings]) and checking the file
with onnx's checker and onnxruntime (Note [Checked export]); `export_causal_lm` writes a decoder
LM with optimum's past_key_values inputs and present outputs (Note [Decoder export]). `load`
reads an ONNX file into an ember program that runs eagerly or compiled, with no onnxruntime
(Note [ONNX import]).
The `onnx` package is imported when these run, never by `import ember`.
"""

from __future__ import annotations

__all__ = [
    "export",
    "export_causal_lm",
    "causal_lm_io_names",
    "load",
    "ExportReport",
    "OnnxExportError",
    "ExportCheckError",
    "OnnxImportError",
    "OnnxProgram",
    "unsupported_ops",
]


def unsupported_ops() -> list[str]:
    """The registered primitives that have no ONNX lowering yet (sorted names)."""
    from ember.ops.registry import REGISTRY

    return sorted(name for name, op in REGISTRY.items() if op.onnx is None)


def __getattr__(name):
    if name in ("export", "ExportReport", "ExportCheckError"):
        from ember.onnx import _export

        return getattr(_export, name)
    if name in ("export_causal_lm", "causal_lm_io_names"):
        from ember.onnx import _decoder

        return getattr(_decoder, name)
    if name == "OnnxExportError":
        from ember.onnx._builder import OnnxExportError

        return OnnxExportError
    if name in ("load", "OnnxImportError", "OnnxProgram"):
        from ember.onnx import _import

        return getattr(_import, name)
    raise AttributeError(f"module 'ember.onnx' has no attribute {name!r}")
