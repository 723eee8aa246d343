"""ember.export / ember.load_exported: the exported-program artefact (Note [Exported program
format]) round-trips, runs at dynamic sizes like the eager function, and refuses what it
cannot represent with an error that says why."""

import json
import os

import numpy as np
import pytest

import ember
from ember.io.export import ExportError
from ember.nn import functional as F


def _mlp():
    ember.manual_seed(0)
    return ember.nn.Sequential(
        ember.nn.Linear(6, 16), ember.nn.GELU(), ember.nn.Linear(16, 3), ember.nn.Softmax(-1)
    ).eval()


def _tiny_bert():
    from ember.transformers import BertConfig, BertModel

    ember.manual_seed(0)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


def _pooled(model):
    def embed(input_ids, attention_mask):
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(ember.transformers.mean_pooling(hidden, attention_mask), p=2, dim=1)

    return embed


TOKEN_DIMS = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}


def _eager(fn, *arrays):
    with ember.no_grad():
        out = fn(*[ember.tensor(a) for a in arrays])
    return out.numpy()


def test_module_round_trip_through_the_folder(tmp_path):
    mlp = _mlp()
    folder = tmp_path / "mlp"
    ember.export(mlp, (ember.randn(4, 6),), folder)
    assert sorted(os.listdir(folder)) == ["graph.json", "signature.json", "weights.safetensors"]
    signature = json.loads((folder / "signature.json").read_text())
    assert signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 6]}]
    assert signature["outputs"][0]["shape"] == [-1, 3]
    loaded = ember.load_exported(folder)
    from ember.io import load_file

    weights = load_file(str(folder / "weights.safetensors"), framework="np")
    assert set(mlp.state_dict()) <= set(weights)  # state_dict names, as a checkpoint has them
    for rows in (1, 4, 9):
        x = np.random.default_rng(rows).standard_normal((rows, 6)).astype(np.float32)
        np.testing.assert_allclose(loaded(x).numpy(), _eager(mlp, x), rtol=1e-6, atol=1e-7)


def test_token_model_dynamic_batch_and_sequence(tmp_path):
    embed = _pooled(_tiny_bert())
    ids = np.random.default_rng(0).integers(1, 99, (2, 7))
    program = ember.export(
        embed,
        {"input_ids": ids, "attention_mask": np.ones_like(ids)},
        tmp_path / "bert",
        dynamic_dims=TOKEN_DIMS,
    )
    assert program.signature["inputs"][0]["shape"] == [-1, -1]
    loaded = ember.load_exported(tmp_path / "bert")
    rng = np.random.default_rng(1)
    for shape in [(1, 3), (3, 11), (5, 40)]:
        ids = rng.integers(1, 99, shape)
        mask = np.ones(shape, np.int64)
        mask[0, shape[1] // 2 :] = 0
        got = loaded.run({"input_ids": ids, "attention_mask": mask})["output"]
        np.testing.assert_allclose(got, _eager(embed, ids, mask), rtol=1e-5, atol=1e-6)


def test_padding_leaves_a_rows_result_unchanged():
    embed = _pooled(_tiny_bert())
    ids = np.random.default_rng(0).integers(1, 99, (1, 5))
    program = ember.export(
        embed, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, dynamic_dims=TOKEN_DIMS
    )
    alone = program.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["output"]
    padded = np.pad(ids, ((0, 0), (0, 9)))
    mask = (np.arange(14) < 5).astype(np.int64)[None]
    together = program.run({"input_ids": padded, "attention_mask": mask})["output"]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"x": np.zeros((2, 5), np.float32)}, "expected shape [-1, 6]"),
        ({"x": np.zeros((2, 6), np.float64)}, "expected dtype float32"),
        ({"x": np.zeros(6, np.float32)}, "expected 2 dims"),
        ({"y": np.zeros((2, 6), np.float32)}, "missing ['x']"),
        ({"x": np.zeros((0, 6), np.float32)}, "must be at least 1"),
    ],
)
def test_bad_inputs_name_the_input_and_what_was_expected(feeds, message):
    program = ember.export(_mlp(), (ember.randn(4, 6),))
    with pytest.raises(ValueError) as info:
        program.run(feeds)
    assert message in str(info.value)


def test_shared_dims_must_agree():
    program = ember.export(
        lambda a, b: a + b,
        (ember.ones(2, 3), ember.ones(2, 3)),
        dynamic_dims={"a": {0: "batch"}, "b": {0: "batch"}},
    )
    with pytest.raises(ValueError, match="another input has batch = 2"):
        program.run({"a": np.ones((2, 3), np.float32), "b": np.ones((4, 3), np.float32)})


def test_python_branch_on_a_dynamic_size_is_refused():
    def branchy(x):
        return x * 2.0 if x.shape[0] < 3 else x.sum(0, keepdim=True)

    with pytest.raises(ExportError, match="branches on a dynamic size"):
        ember.export(branchy, (ember.ones(2, 3),))


def test_training_mode_writes_are_refused():
    bn = ember.nn.BatchNorm1d(3)  # training mode: updates its running statistics
    with pytest.raises(ExportError, match="module.eval"):
        ember.export(bn, (ember.ones(4, 3),))


def test_loading_refuses_other_folders(tmp_path):
    with pytest.raises(ExportError, match="no signature.json"):
        ember.load_exported(tmp_path)
    ember.export(_mlp(), (ember.ones(2, 6),), tmp_path / "m")
    sig = tmp_path / "m" / "signature.json"
    sig.write_text(sig.read_text().replace("ember.exported_program", "something.else"))
    with pytest.raises(ExportError, match="format is 'something.else'"):
        ember.load_exported(tmp_path / "m")


def test_saving_over_a_folder_replaces_it_whole(tmp_path):
    folder = tmp_path / "m"
    ember.export(_mlp(), (ember.ones(2, 6),), folder)
    ember.export(lambda x: x * 3.0, (ember.ones(2, 2),), folder)
    loaded = ember.load_exported(folder)
    np.testing.assert_array_equal(loaded(np.ones((1, 2), np.float32)).numpy(), [[3.0, 3.0]])
    assert [p for p in os.listdir(tmp_path) if p != "m"] == []  # no staging folders left


@pytest.mark.slow
def test_minilm_export_matches_eager(minilm, tmp_path):
    from ember.transformers import BertModel

    embed = _pooled(BertModel.from_pretrained(minilm).eval())
    ids = np.array([[101, 7592, 2088, 102]])
    ember.export(
        embed,
        {"input_ids": ids, "attention_mask": np.ones_like(ids)},
        tmp_path / "minilm",
        dynamic_dims=TOKEN_DIMS,
    )
    loaded = ember.load_exported(tmp_path / "minilm")
    ids = np.array(
        [[101, 1037, 4937, 2938, 2006, 1996, 13523, 102], [101, 7592, 102, 0, 0, 0, 0, 0]]
    )
    mask = (ids != 0).astype(np.int64)
    got = loaded.run({"input_ids": ids, "attention_mask": mask})["output"]
    np.testing.assert_allclose(got, _eager(embed, ids, mask), rtol=1e-5, atol=1e-6)
