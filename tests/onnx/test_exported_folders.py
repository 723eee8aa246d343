"""`ember.export` folders (Note [Exported program format]) convert to ONNX: the folder's
graph is lowered as it is (no retracing of Python), checked by onnxruntime against the
folder's own program at new sizes of its dynamic dims, and the file reads back in ember."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.onnx
from ember.nn import functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOKEN_DIMS = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}


def _tiny_bert():
    from ember.transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


def test_mlp_folder_converts(tmp_path):
    mlp = ember.nn.Sequential(ember.nn.Linear(6, 16), ember.nn.GELU(), ember.nn.Linear(16, 3))
    folder = tmp_path / "mlp"
    ember.export(mlp.eval(), (ember.randn(4, 6),), folder, dynamic_dims={"x": {0: "batch"}})
    path = str(tmp_path / "mlp.onnx")
    report = ember.onnx.export(str(folder), None, path)
    assert report.checked and max(report.max_abs_diff.values()) <= 1e-5
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    (theirs,) = ort.InferenceSession(path).run(None, {report.input_names[0]: x})
    with ember.no_grad():
        np.testing.assert_allclose(theirs, mlp(ember.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_sentence_embedding_folder_converts(tmp_path):
    model = _tiny_bert()

    def embed(input_ids, attention_mask):
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(ember.transformers.mean_pooling(hidden, attention_mask), p=2, dim=1)

    ids = ember.from_numpy(np.random.default_rng(1).integers(0, 99, (2, 7)).astype(np.int64))
    mask = ember.ones(2, 7, dtype=ember.int64)
    folder = tmp_path / "embed"
    program = ember.export(embed, (ids, mask), folder, dynamic_dims=TOKEN_DIMS)
    report = ember.onnx.export(program, None, str(tmp_path / "embed.onnx"))
    assert report.checked and max(report.max_abs_diff.values()) <= 1e-5
    assert [s["input_ids"] for s in report.checked_shapes] != [(2, 7), (2, 7)]
    # the file reads back into ember and agrees with the folder's program
    feed = {
        "input_ids": np.random.default_rng(2).integers(0, 99, (3, 11)).astype(np.int64),
        "attention_mask": np.ones((3, 11), np.int64),
    }
    (back,) = ember.onnx.load(str(tmp_path / "embed.onnx"))(**feed)
    expected = program.run(feed)[program.output_names[0]]
    np.testing.assert_allclose(back.numpy(), expected, rtol=1e-5, atol=1e-6)
