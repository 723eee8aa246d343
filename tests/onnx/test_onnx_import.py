"""ember.onnx.load: ember's own files round-trip (import equals ember eager), torch.onnx's
files of a tiny HuggingFace BERT run in ember equal to onnxruntime, eagerly and compiled, and
unknown ops or bad inputs are named."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ember
import ember.onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TINY_BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def _inputs(batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 99, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def torch_bert_file(tmp_path_factory):
    """torch.onnx.export(dynamo=True) of a tiny HF BERT (the TorchScript exporter fails on
    transformers 5's BertModel.forward: 'got multiple values for argument use_cache')."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY_BERT)).eval()
    feed = _inputs(2, 7)
    args = tuple(torch.from_numpy(v) for v in feed.values())
    path = str(tmp_path_factory.mktemp("torch") / "bert_dynamo.onnx")
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    torch.onnx.export(
        model,
        args,
        path,
        input_names=list(feed),
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes=axes,
        opset_version=18,
        dynamo=True,
    )
    return path


def test_torch_export_of_bert_runs_in_ember_like_onnxruntime(torch_bert_file):
    program = ember.onnx.load(torch_bert_file)
    session = ort.InferenceSession(torch_bert_file, providers=["CPUExecutionProvider"])
    compiled = program.compile()
    for batch, seq in [(2, 7), (3, 12), (1, 5)]:
        feed = _inputs(batch, seq, seed=batch)
        reference = session.run(None, feed)
        eager = program(**feed)
        traced = compiled(*[ember.from_numpy(v) for v in feed.values()])
        for a, b, c in zip(reference, eager, traced):
            np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(c.numpy(), a, rtol=1e-5, atol=1e-5)
    graph = program.trace(*[ember.from_numpy(v) for v in _inputs(2, 7).values()])
    assert len(graph.eqns) > 0 and "matmul" in str(graph)


def test_ember_export_then_import_equals_ember_eager(tmp_path):
    from ember import transformers as et

    model = et.BertForSequenceClassification(et.BertConfig(**TINY_BERT, num_labels=3)).eval()
    feed = {k: ember.from_numpy(v) for k, v in _inputs(2, 7).items()}
    path = str(tmp_path / "bert.onnx")
    axes = {k: {0: "batch", 1: "seq"} for k in feed}
    ember.onnx.export(model, (feed,), path, dynamic_axes=axes)
    program = ember.onnx.load(path)
    assert program.input_names == ["input_ids", "attention_mask"]
    assert program.output_names == ["logits"]
    for batch, seq in [(4, 9), (1, 3)]:
        fresh = {k: ember.from_numpy(v) for k, v in _inputs(batch, seq, seed=seq).items()}
        with ember.no_grad():
            ref = model(**fresh).logits.numpy()
        (eager,) = program(**fresh)
        (compiled,) = program.compile()(*fresh.values())
        np.testing.assert_allclose(eager.numpy(), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(compiled.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_imported_program_differentiates(tmp_path):
    """An imported graph is ember code: gradients flow to its inputs."""
    mlp = ember.nn.Sequential(ember.nn.Linear(3, 5), ember.nn.Tanh(), ember.nn.Linear(5, 1))
    path = str(tmp_path / "mlp.onnx")
    ember.onnx.export(mlp, (ember.randn(2, 3),), path, input_names=["x"])
    x = ember.randn(2, 3, requires_grad=True)
    (y,) = ember.onnx.load(path)(x)
    y.sum().backward()
    x2 = x.detach().requires_grad_(True)
    mlp(x2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-5, atol=1e-6)


def _model_with(node_types):
    from onnx import TensorProto, helper

    nodes, last = [], "x"
    for i, op in enumerate(node_types):
        nodes.append(helper.make_node(op, [last], [f"y{i}"]))
        last = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["n", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_unknown_ops_are_named(tmp_path):
    path = str(tmp_path / "odd.onnx")
    onnx.save(_model_with(["Relu", "Hardmax", "Mish", "Relu"]), path)
    with pytest.raises(ember.onnx.OnnxImportError, match="Hardmax, Mish") as info:
        ember.onnx.load(path)
    assert "odd.onnx" in str(info.value)


def test_bad_inputs_are_named(tmp_path):
    program = ember.onnx.load(_model_with(["Relu"]))
    with pytest.raises(ember.onnx.OnnxImportError, match="must be float32, got int64"):
        program(np.zeros((2, 3), np.int64))
    with pytest.raises(ember.onnx.OnnxImportError, match=r"must have shape \['n', 3\]"):
        program(np.zeros((2, 4), np.float32))
    with pytest.raises(ember.onnx.OnnxImportError, match="no input named 'y'"):
        program(y=np.zeros((2, 3), np.float32))
    with pytest.raises(ember.onnx.OnnxImportError, match="no file"):
        ember.onnx.load(str(tmp_path / "missing.onnx"))


# ONNX recurrent ops as PyTorch's TorchScript exporter writes them (and hand-written ones):
# op, direction, layout, sequence_lens, extra attributes
RECURRENT_NODES = [
    ("LSTM", "forward", 0, None, {}),
    ("LSTM", "bidirectional", 0, [5, 3, 1], {}),
    ("LSTM", "reverse", 1, None, {}),
    ("GRU", "forward", 0, [4, 5, 2], {"linear_before_reset": 1}),
    ("GRU", "bidirectional", 1, None, {"linear_before_reset": 1}),
    ("RNN", "forward", 0, None, {}),
    ("RNN", "bidirectional", 0, [2, 5, 5], {"activations": ["Relu", "Relu"]}),
]


def _recurrent_model(op, direction, layout, lengths, extra, steps=5, batch=3, size=4, hidden=6):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1
    weights = {
        "W": rng.normal(0, 0.5, (dirs, gates * hidden, size)),
        "R": rng.normal(0, 0.5, (dirs, gates * hidden, hidden)),
        "B": rng.normal(0, 0.5, (dirs, 2 * gates * hidden)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    state_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    inputs = ["X", "W", "R", "B", "seq" if lengths else "", "h0"]
    graph_inputs = [
        helper.make_tensor_value_info(
            "X", TensorProto.FLOAT, [batch, steps, size] if layout else [steps, batch, size]
        ),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape),
    ]
    if lengths:
        inits.append(numpy_helper.from_array(np.array(lengths, np.int32), "seq"))
    if op == "LSTM":
        inputs.append("c0")
        graph_inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape))
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, hidden_size=hidden, direction=direction,
                            layout=layout, **extra)  # fmt: skip
    graph = helper.make_graph(
        [node], "recurrent", graph_inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (4 if o == "Y" else 3))
         for o in outputs], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


_IDS = [f"{r[0]}-{r[1]}-layout{r[2]}-{bool(r[3])}" for r in RECURRENT_NODES]


@pytest.mark.parametrize("op,direction,layout,lengths,extra", RECURRENT_NODES, ids=_IDS)
def test_recurrent_ops_import_equal_onnxruntime(op, direction, layout, lengths, extra):
    model = _recurrent_model(op, direction, layout, lengths, extra)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(8)
    feed = {i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}  # fmt: skip
    # onnxruntime runs layout 0 only: layout 1 is checked against the layout-0 node on
    # transposed inputs, its outputs transposed back
    reference = _recurrent_model(op, direction, 0, lengths, extra)
    ref_feed = {k: v.swapaxes(0, 1) if layout else v for k, v in feed.items()}
    session = ort.InferenceSession(reference.SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    theirs = session.run(None, ref_feed)
    if layout:
        theirs = [theirs[0].transpose(2, 0, 1, 3)] + [t.swapaxes(0, 1) for t in theirs[1:]]
    program = ember.onnx.load(model)
    for ours in (program(**feed), program.compile()(**{k: ember.from_numpy(v)
                                                        for k, v in feed.items()})):  # fmt: skip
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5)


def test_unsupported_recurrent_attributes_are_named():
    model = _recurrent_model("GRU", "forward", 0, None, {})  # linear_before_reset=0
    feed = {"X": np.zeros((5, 3, 4), np.float32), "h0": np.zeros((1, 3, 6), np.float32)}
    with pytest.raises(ember.onnx.OnnxImportError, match="linear_before_reset=0"):
        ember.onnx.load(model)(**feed)


@pytest.mark.parametrize("cls,dynamo", [("LSTM", True), ("GRU", False), ("RNN", False)])
def test_torch_exported_recurrent_modules_import(cls, dynamo, tmp_path):
    """torch.onnx.export of a 2-layer bidirectional nn.LSTM / GRU / RNN (ONNX recurrent ops,
    and for the TorchScript exporter the Shape/Gather/Constant arithmetic of the initial
    states) runs in ember equal to torch."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = getattr(torch.nn, cls)(4, 6, num_layers=2, bidirectional=True).eval()
    x = torch.randn(5, 3, 4)
    path = str(tmp_path / f"{cls}.onnx")
    torch.onnx.export(model, (x,), path, input_names=["x"], dynamo=dynamo, opset_version=18)
    assert cls in {n.op_type for n in onnx.load(path).graph.node}
    with torch.no_grad():
        expected, _ = model(x)
    (got, *_) = ember.onnx.load(path)(x.numpy())
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
