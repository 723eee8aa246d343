"""`ember.onnx.export_causal_lm`: a decoder language model (GPT-2, Llama and its families) as
an ONNX file with the inputs and outputs HuggingFace's optimum gives it.

Note [Decoder export]: the file takes `input_ids`, `attention_mask` (batch, past + new) and
`position_ids`, and with `with_past` also `past_key_values.{i}.key` / `.value` (batch,
kv_heads, past, head_dim) per layer; it returns `logits` and, with `with_past`, the
`present.{i}.key` / `.value` that the next step feeds back as its past. Batch, sequence and
past length are symbolic dims (the attention mask's length is the derived "past_sequence_length
+ sequence_length", Note [Dynamic dims]), so one file runs the prompt (past length 0) and
every decode step. The model's forward traces through its graph path (Note [Traced decoder
inputs] in ember.transformers.decoder_utils): the mask, positions, rotary tables and cache are
ember ops, not NumPy values fixed at trace time. The example past comes from running the model
on a short prefix, so the check (Note [Checked export]) runs onnxruntime on real keys and
values at two other sizes of every axis.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["export_causal_lm", "causal_lm_io_names"]

TOTAL = "past_sequence_length + sequence_length"


def _layers(config) -> int:
    for name in ("num_hidden_layers", "n_layer"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    raise ValueError(f"export_causal_lm: {type(config).__name__} names no layer count")


def _parity_rtol(config, layers: int) -> float:
    """Note [Parity tolerances] (ember.testing.parity): 8 * depth * sqrt(width) * u, u the
    float32 unit roundoff, width the widest matmul (the MLP's inner size)."""
    width = max(
        int(getattr(config, name, 0) or 0)
        for name in ("hidden_size", "n_embd", "intermediate_size", "n_inner")
    )
    if getattr(config, "n_embd", None) and not getattr(config, "n_inner", None):
        width = max(width, 4 * int(config.n_embd))  # GPT-2's MLP is 4x wide by default
    return 8.0 * layers * math.sqrt(max(width, 1)) * 2.0**-24


def causal_lm_io_names(num_layers: int, with_past: bool = True):
    """(input names, output names, dynamic_axes) of a decoder file (Note [Decoder export])."""
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    seq = {0: "batch_size", 1: "sequence_length"}
    axes = {
        "input_ids": dict(seq),
        "attention_mask": {0: "batch_size", 1: TOTAL if with_past else "sequence_length"},
        "position_ids": dict(seq),
        "logits": dict(seq),
    }
    if with_past:
        for i in range(num_layers):
            for kind in ("key", "value"):
                inputs.append(f"past_key_values.{i}.{kind}")
                outputs.append(f"present.{i}.{kind}")
                axes[inputs[-1]] = {0: "batch_size", 2: "past_sequence_length"}
                axes[outputs[-1]] = {0: "batch_size", 2: TOTAL}
    return inputs, outputs, axes


def export_causal_lm(
    model,
    f=None,
    *,
    with_past: bool = True,
    batch_size: int = 2,
    sequence_length: int = 3,
    past_sequence_length: int = 4,
    opset_version: int = 18,
    check: bool = True,
    rtol: float | None = None,
    atol: float = 1e-5,
    fuse: bool = True,
):
    """Export a causal LM (`GPT2LMHeadModel`, `LlamaForCausalLM`, ...) with optimum's names.

    Args:
        model: an ember causal-LM model (its config gives the vocabulary and layer count).
        f: where to write the file (atomically), or None.
        with_past: take `past_key_values.{i}.key/value` and return `present.{i}.key/value`
            (Note [Decoder export]); without, the file takes the whole sequence each call.
        batch_size, sequence_length, past_sequence_length: the example's sizes (all dynamic
            in the file; sequence_length must be at least 2 so the traced forward is the
            general one, and the file then runs on one-token steps too).
        opset_version, check, atol, fuse: as `ember.onnx.export`.
        rtol: the check's relative tolerance; by default Note [Parity tolerances]' bound for
            the model's depth and width, 8 * layers * sqrt(width) * 2**-24, relative to
            |x| + the output's rms (`rms_scale`), so 30-layer models check as 2-layer ones do.

    Returns:
        ExportReport, as `ember.onnx.export`.

    Example:
        >>> import ember, ember.onnx
        >>> from ember.transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4))
        >>> report = ember.onnx.export_causal_lm(model)  # doctest: +SKIP
        >>> report.input_names[:4]  # doctest: +SKIP
        ['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key']
    """
    import ember
    from ember.onnx._builder import OnnxExportError
    from ember.onnx._export import export

    if sequence_length < 2:
        raise OnnxExportError(
            f"export_causal_lm: sequence_length must be at least 2 (one-token steps take a "
            f"shortcut in the forward), got {sequence_length}"
        )
    config = model.config
    layers = _layers(config)
    vocab = int(config.vocab_size)
    rng = np.random.default_rng(0)
    past = past_sequence_length if with_past else 0
    total = past + sequence_length
    tokens = rng.integers(0, vocab, (batch_size, total)).astype(np.int64)
    was_training = model.training
    model.eval()
    try:
        past_values = None
        if with_past:
            with ember.no_grad():
                prefix = model(
                    input_ids=ember.from_numpy(tokens[:, :past]), use_cache=True, return_dict=True
                )
            cache = prefix.past_key_values
            legacy = cache if isinstance(cache, tuple) else cache.to_legacy_cache()
            past_values = tuple(
                (ember.from_numpy(k.numpy().copy()), ember.from_numpy(v.numpy().copy()))
                for k, v in legacy
            )
            if len(past_values) != layers:
                raise OnnxExportError(
                    f"export_causal_lm: the model's cache holds {len(past_values)} layers, its "
                    f"config {layers}"
                )
        positions = np.broadcast_to(np.arange(past, total, dtype=np.int64), (batch_size,
                                    sequence_length)).copy()  # fmt: skip
        kwargs = {
            "input_ids": ember.from_numpy(tokens[:, past:].copy()),
            "attention_mask": ember.from_numpy(np.ones((batch_size, total), np.int64)),
            "position_ids": ember.from_numpy(positions),
            "use_cache": with_past,
            "return_dict": True,
        }
        if with_past:
            kwargs["past_key_values"] = past_values
        input_names, output_names, axes = causal_lm_io_names(layers, with_past)
        if rtol is None:
            rtol = _parity_rtol(config, layers)
        return export(
            model,
            (kwargs,),
            f,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset_version,
            check=check,
            rtol=rtol,
            atol=atol,
            fuse=fuse,
            rms_scale=True,
        )
    finally:
        if was_training:
            model.train()
