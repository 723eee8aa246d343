"""Hostile model folders (issue 19, items 11 and 13): config.json fields checked with errors
naming the file and field, shard paths confined to the folder, dtypes validated, and a config
that does not match its checkpoint reported before the model's memory is touched."""

import json
import os

import numpy as np
import pytest

from ember.io import save_file
from ember.transformers import BertConfig, BertModel


@pytest.fixture
def folder(tmp_path):
    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def _patch_config(folder, **fields):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": "384"}, "field 'hidden_size' should be an integer, got '384'"),
        ({"num_attention_heads": 0}, "field 'num_attention_heads' should be a positive"),
        ({"num_hidden_layers": 1.5}, "field 'num_hidden_layers' should be an integer"),
        ({"hidden_dropout_prob": 1.5}, "'hidden_dropout_prob' should be a probability"),
        ({"layer_norm_eps": "tiny"}, "'layer_norm_eps' should be a number"),
        ({"num_attention_heads": 3}, "hidden_size 8 is not a multiple of num_attention_heads 3"),
        ({"torch_dtype": "int8"}, "field 'torch_dtype' should be one of"),
        ({"dtype": 7}, "field 'dtype' should be one of"),
        ({"vocab_size": True}, "field 'vocab_size' should be an integer"),
    ],
)
def test_config_fields_are_checked_naming_file_and_field(folder, fields, message):
    _patch_config(folder, **fields)
    with pytest.raises(ValueError, match="config.json") as info:
        BertModel.from_pretrained(folder)
    assert message in str(info.value)


def test_config_that_is_not_utf8_names_the_file(folder):
    (folder / "config.json").write_bytes(b'{"hidden_size": "\xff"}')
    with pytest.raises(ValueError, match="config.json is not valid UTF-8 JSON"):
        BertConfig.from_pretrained(folder)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "", 3])
def test_shard_paths_must_stay_inside_the_model_folder(folder, shard):
    weights = folder / "model.safetensors"
    os.rename(weights, folder / "model-00001-of-00001.safetensors")
    (folder.parent / "outside.safetensors").write_bytes(b"")
    index = {"weight_map": {"embeddings.word_embeddings.weight": shard}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="model.safetensors.index.json names shard"):
        BertModel.from_pretrained(folder)


def test_a_symlinked_shard_leading_outside_is_refused(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, outside)
    os.remove(folder / "model.safetensors")
    os.symlink(outside, folder / "shard.safetensors")
    index = {"weight_map": {"embeddings.word_embeddings.weight": "shard.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="outside the model folder"):
        BertModel.from_pretrained(folder)


def test_dtype_argument_is_validated_before_building(folder):
    with pytest.raises(ValueError, match="dtype must be"):
        BertModel.from_pretrained(folder, dtype="int8")
    assert BertModel.from_pretrained(folder, torch_dtype="auto").dtype.name == "float32"


def test_a_huge_config_is_reported_before_its_memory_is_used(folder):
    # 10**7 x 10**4 float32 embedding rows: 400 GB if it were filled.
    _patch_config(folder, vocab_size=10**7, hidden_size=10**4, num_attention_heads=2)
    with pytest.raises((RuntimeError, MemoryError), match="config.json|shapes differ"):
        BertModel.from_pretrained(folder)


def test_more_layers_than_the_checkpoint_holds_is_refused_before_building(folder):
    # Note [Layers the checkpoint holds]: 3,681,617 layers (a fuzzed config) would take tens of
    # minutes to build; fewer layers than the checkpoint's are allowed (unexpected keys)
    _patch_config(folder, num_hidden_layers=3_681_617)
    with pytest.raises(
        ValueError, match="num_hidden_layers is 3681617, but the checkpoint holds 1"
    ):
        BertModel.from_pretrained(folder)
    _patch_config(folder, num_hidden_layers=0)
    model, info = BertModel.from_pretrained(folder, output_loading_info=True)
    assert len(model.encoder.layer) == 0
    assert any(key.startswith("encoder.layer.0.") for key in info["unexpected_keys"])


def test_missing_weights_are_still_initialised(folder):
    from ember.transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(folder, num_labels=3)
    weight = np.asarray(model.classifier.weight.detach())
    assert np.all(np.isfinite(weight)) and 0 < weight.std() < 0.1  # normal(0, 0.02)
