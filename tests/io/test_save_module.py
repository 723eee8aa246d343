"""Whole-module checkpoints: `ember.save(model)` / `ember.load` rebuild the module without its
`__init__` and without pickle, behind a class allow-list (Note [Whole-module checkpoints])."""

import json
import os

import numpy as np
import pytest

import ember
from ember import nn
from ember.io import read_metadata
from ember.nn import functional as F
from ember.serialization import (
    UnsafeClassError,
    add_safe_globals,
    clear_safe_globals,
    get_safe_globals,
    safe_globals,
)


class ScaledNet(nn.Module):
    """A user Module with plain attributes, a function attribute and a shared submodule."""

    def __init__(self, width=6, scale=0.5):
        super().__init__()
        self.width = width
        self.scale = scale
        self.names = ("in", "out")
        self.options = {"residual": True, "eps": [1e-5, None]}
        self.act = F.gelu
        self.inner = nn.Linear(width, width)
        self.again = self.inner  # the same module twice: it must come back as one
        self.flat = [self.inner.weight, self.inner.bias]  # parameters held in a plain list
        self.register_buffer("offset", ember.tensor(np.linspace(-1, 1, width, dtype=np.float32)))

    def forward(self, x):
        h = self.act(self.inner(x)) * self.scale + self.offset
        return self.again(h) + x if self.options["residual"] else self.again(h)


class Opaque:
    pass


class HoldsOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.fc.helper = Opaque()

    def forward(self, x):
        return self.fc(x)


def _rng():
    return np.random.default_rng(0)


def _mlp():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    return model.eval(), ember.tensor(_rng().standard_normal((4, 5)).astype(np.float32))


def _cnn():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 2),
    )
    x = ember.tensor(_rng().standard_normal((2, 3, 4, 4)).astype(np.float32))
    model.train()
    model(x)  # move the running statistics away from their initial values
    return model.eval(), x


def _lstm():
    model = nn.LSTM(4, 6, num_layers=2, batch_first=True)
    return model.eval(), ember.tensor(_rng().standard_normal((2, 5, 4)).astype(np.float32))


def _transformer():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2)
    return model.eval(), ember.tensor(_rng().standard_normal((2, 5, 16)).astype(np.float32))


def _user():
    return ScaledNet().eval(), ember.tensor(_rng().standard_normal((3, 6)).astype(np.float32))


def _bert():
    from ember.transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    ids = ember.tensor(_rng().integers(0, 50, (2, 7)))
    return BertModel(config).eval(), ids


def _outputs(value):
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _outputs(v)]
    if hasattr(value, "to_tuple"):
        return _outputs(value.to_tuple())
    if isinstance(value, dict):
        return [a for v in value.values() for a in _outputs(v)]
    return [value.detach().numpy()] if hasattr(value, "detach") else []


CASES = {
    "mlp": _mlp,
    "cnn_batchnorm": _cnn,
    "lstm": _lstm,
    "transformer_encoder": _transformer,
    "user_module": _user,
    "bert_tiny": _bert,
}


@pytest.mark.parametrize("name", list(CASES))
def test_whole_module_round_trip(name, tmp_path):
    model, x = CASES[name]()
    path = tmp_path / f"{name}.safetensors"
    ember.save(model, path)
    allowed = [ScaledNet] if name == "user_module" else []
    with safe_globals(allowed):
        loaded = ember.load(path)
    assert type(loaded) is type(model) and loaded is not model
    assert loaded.training is False
    assert all(m.training is False for m in loaded.modules())
    expected, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key].detach().numpy(), expected[key].detach().numpy())
    assert [type(p).__name__ for p in loaded.parameters()] == [
        type(p).__name__ for p in model.parameters()
    ]
    want, have = _outputs(model(x)), _outputs(loaded(x))
    assert len(want) == len(have) > 0
    for a, b in zip(want, have):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(a).max()))
    # the loaded module keeps training: its parameters are Parameters that take gradients
    loaded.train()
    result = loaded(x)
    first = result[0] if isinstance(result, tuple) else getattr(result, "last_hidden_state", result)
    first.sum().backward()
    grads = [p.grad for p in loaded.parameters() if p.requires_grad]
    assert grads and any(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_user_module_needs_the_allow_list(tmp_path):
    model, x = _user()
    path = tmp_path / "user.safetensors"
    ember.save(model, path)
    with pytest.raises(UnsafeClassError, match=r"ScaledNet.*add_safe_globals\(\[ScaledNet\]\)"):
        ember.load(path)
    add_safe_globals([ScaledNet])
    try:
        assert ScaledNet in get_safe_globals()
        loaded = ember.load(path)
        assert loaded.inner is loaded.again  # a shared submodule stays shared
        assert loaded.flat[0] is loaded.inner.weight and loaded.flat[1] is loaded.inner.bias
        assert loaded.act is F.gelu and loaded.names == ("in", "out")
        assert loaded.options == {"residual": True, "eps": [1e-5, None]}
    finally:
        clear_safe_globals()
    assert get_safe_globals() == []
    with safe_globals([ScaledNet]):
        ember.load(path)
    assert ScaledNet not in get_safe_globals()  # the context manager cleans up after itself
    with pytest.raises(UnsafeClassError):
        ember.load(path)


def test_weights_only_refuses_a_whole_module(tmp_path):
    model, _ = _mlp()
    path = tmp_path / "m.safetensors"
    ember.save(model, path)
    with pytest.raises(UnsafeClassError, match="weights_only=False"):
        ember.load(path, weights_only=True)
    assert isinstance(ember.load(path, weights_only=False), nn.Sequential)
    with pytest.raises(ValueError, match="framework='np' cannot rebuild"):
        ember.load(path, framework="np")
    # a state dict keeps loading under weights_only=True, as layout 1
    ember.save(model.state_dict(), tmp_path / "sd.safetensors")
    assert read_metadata(tmp_path / "sd.safetensors")["ember.checkpoint"] == "1"
    assert set(ember.load(tmp_path / "sd.safetensors", weights_only=True)) == set(
        model.state_dict()
    )
    assert read_metadata(path)["ember.checkpoint"] == "2"


def test_modules_nested_in_a_checkpoint(tmp_path):
    model, x = _mlp()
    path = tmp_path / "ckpt.safetensors"
    ember.save({"model": model, "epoch": 3, "extra": [model[0]]}, path)
    loaded = ember.load(path)
    assert loaded["epoch"] == 3 and loaded["extra"][0] is loaded["model"][0]
    np.testing.assert_allclose(
        loaded["model"](x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (HoldsOpaque, r"attribute 'fc\.helper' of type .*Opaque"),
        (lambda: _local_module(), r"class .*<locals>.*cannot be imported back"),
    ],
)
def test_save_refuses_what_it_cannot_rebuild(make, match, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match=match):
        ember.save(make(), path)
    assert path.read_bytes() == b"old"  # atomic: the old file stays whole
    assert os.listdir(tmp_path) == ["m.safetensors"]


def _local_module():
    class Local(nn.Module):
        def forward(self, x):
            return x

    return Local()


def _rewrite(path, target, edit):
    """Rewrite a saved module file's tree with `edit` (a hostile file)."""
    from ember.io import load_file, save_file

    metadata = read_metadata(path)
    tree = json.loads(metadata["ember.tree"])
    edit(tree)
    metadata["ember.tree"] = json.dumps(tree)
    save_file(load_file(path, framework="np"), target, metadata=metadata)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t["__module__"].update({"class": "os.system"}), "os.system"),
        (
            lambda t: t["__module__"].update({"class": "ember.io.atomic.atomic_write"}),
            "atomic_write",
        ),
        (
            lambda t: t["__module__"].update({"class": "ember.nn.parameter.Parameter"}),
            "not an ember.nn.Module",
        ),
        (
            lambda t: t["__module__"]["attrs"].update({"x": {"__function__": "builtins.eval"}}),
            "function builtins.eval",
        ),
        (
            lambda t: t["__module__"]["attrs"].update(
                {"x": {"__config__": {"class": "subprocess.Popen", "data": {}}}}
            ),
            "subprocess.Popen",
        ),
    ],
)
def test_hostile_class_names_are_refused_without_import(edit, match, tmp_path):
    import sys

    model, _ = _mlp()
    path, bad = tmp_path / "m.safetensors", tmp_path / "bad.safetensors"
    ember.save(model, path)
    _rewrite(path, bad, edit)
    had_subprocess = "subprocess" in sys.modules
    with pytest.raises(UnsafeClassError, match=match):
        ember.load(bad)
    assert ("subprocess" in sys.modules) == had_subprocess


def test_damaged_module_node_is_named(tmp_path):
    model, _ = _mlp()
    path, bad = tmp_path / "m.safetensors", tmp_path / "bad.safetensors"
    ember.save(model, path)
    _rewrite(path, bad, lambda t: t["__module__"].pop("modules"))
    with pytest.raises(ValueError, match="damaged"):
        ember.load(bad)


def test_tied_weights_stay_tied(tmp_path):
    from ember.transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=40,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    model = BertForMaskedLM(config).eval()
    ember.save(model, tmp_path / "mlm.safetensors")
    loaded = ember.load(tmp_path / "mlm.safetensors")
    tied = loaded.cls.predictions.decoder.weight
    assert tied is loaded.bert.embeddings.word_embeddings.weight
    assert type(loaded.config) is type(model.config)
    assert loaded.config.to_dict() == model.config.to_dict()
    ids = ember.tensor(np.arange(12).reshape(2, 6))
    np.testing.assert_allclose(
        loaded(ids).logits.detach().numpy(), model(ids).logits.detach().numpy(), atol=1e-6
    )


def test_weights_only_false_trusts_the_file(tmp_path):
    """torch.load(f, weights_only=False) is the caller's trust: the recorded classes import."""
    model, x = _user()
    path = tmp_path / "user.safetensors"
    ember.save(model, path)
    loaded = ember.load(path, weights_only=False)
    assert type(loaded) is ScaledNet and loaded.inner is loaded.again
    with ember.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    # a path that does not import still fails, naming the class
    metadata = read_metadata(path)
    tree = metadata["ember.tree"].replace(
        f"{ScaledNet.__module__}.ScaledNet", "no_such_module_xyz.ScaledNet"
    )
    from ember.io.safetensors import load_file, save_file

    save_file(
        load_file(str(path), framework="np"),
        str(tmp_path / "bad.safetensors"),
        {**metadata, "ember.tree": tree},
    )
    with pytest.raises(UnsafeClassError, match="no_such_module_xyz.ScaledNet.*cannot be imported"):
        ember.load(tmp_path / "bad.safetensors", weights_only=False)
    # a class that is not a Module is refused even when trusted
    tree = metadata["ember.tree"].replace(
        f"{ScaledNet.__module__}.ScaledNet", "collections.OrderedDict"
    )
    save_file(
        load_file(str(path), framework="np"),
        str(tmp_path / "odd.safetensors"),
        {**metadata, "ember.tree": tree},
    )
    with pytest.raises(UnsafeClassError, match="not an ember.nn.Module subclass"):
        ember.load(tmp_path / "odd.safetensors", weights_only=False)
