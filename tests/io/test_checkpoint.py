"""ember.save / ember.load (ember.io.save / load): nested checkpoints, interop, pickle refusal."""

import io
import math
import os
import pickle

import numpy as np
import pytest

from ember.io import PickleRefusedError, load, load_file, save


def _nested():
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "model": {
            "fc1.weight": weight,
            "fc1.bias": np.zeros(3, np.float32),
            "bn.num_batches_tracked": np.array(5, np.int64),
        },
        "optimizer": {
            "state": {
                0: {"step": 10, "exp_avg": np.ones((3, 4), np.float32)},
                1: {"step": 10, "exp_avg": np.ones(3, np.float32)},
            },
            "param_groups": [
                {
                    "lr": 1e-3,
                    "betas": (0.9, 0.999),
                    "eps": 1e-8,
                    "params": [0, 1],
                    "amsgrad": False,
                    "name": None,
                }
            ],
        },
        "epoch": 3,
        "best": float("inf"),
        "lost": float("nan"),
        "note": "ünïcode ✓",
        "rng": {"seed": 1234, "bit_generator": {"state": {"state": 2**100, "inc": 7}}},
        "tied": weight,
        "raw": b"\x00\x01bytes",
        "empty": {},
        "nothing": [],
        "odd_keys": {"__tensor__": 1, (1, 2): "tuple key", 2.5: "float key"},
    }


def _assert_same(a, b, path="root"):
    if isinstance(a, np.ndarray):
        b = np.asarray(b.numpy() if hasattr(b, "numpy") else b)
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), path


def test_nested_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    obj = _nested()
    save(obj, path)
    loaded = load(path, framework="np")
    _assert_same(obj, loaded)
    assert loaded["tied"] is loaded["model"]["fc1.weight"]  # stored once, one object back
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_file_objects(tmp_path):
    buffer = io.BytesIO()
    save(_nested(), buffer)
    buffer.seek(0)
    _assert_same(_nested(), load(buffer, framework="np"))


def test_flat_state_dict_is_plain_safetensors_for_torch(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = {
        "fc1.weight": np.random.rand(4, 3).astype(np.float32),
        "fc1.bias": np.random.rand(4).astype(np.float32),
    }
    path = tmp_path / "state.safetensors"
    save(state, path)
    from_torch = safetensors_torch.load_file(str(path))
    assert set(from_torch) == set(state)
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(3, 4))
    model.load_state_dict(from_torch)
    np.testing.assert_array_equal(model.fc1.weight.detach().numpy(), state["fc1.weight"])

    theirs = tmp_path / "torch.safetensors"
    safetensors_torch.save_file(torch.nn.Linear(5, 2).state_dict(), str(theirs))
    loaded = load(theirs, framework="np")
    assert sorted(loaded) == ["bias", "weight"] and loaded["weight"].shape == (2, 5)


def test_unsupported_values_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"cannot save a set at 'a\.b'"):
        save({"a": {"b": {1, 2}}}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="cannot save a object at the top level"):
        save(object(), tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save({"w": np.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save({"w": np.zeros(3), "bad": object()}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_pickle_is_refused_with_reason(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": np.ones(2)}))
    with pytest.raises(PickleRefusedError) as info:
        load(path)
    message = str(info.value)
    assert "model.pkl" in message and "execute arbitrary code" in message
    assert "allow_pickle=True" in message
    np.testing.assert_array_equal(load(path, allow_pickle=True)["w"], np.ones(2))


def test_torch_zip_is_refused_then_read_without_torch_code(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "w": base,
        "view": base[1:, ::2],
        "t": base.t(),
        "i": torch.tensor([1, 2]),
        "h": torch.ones(3, dtype=torch.float16),
        "bf": torch.randn(4).bfloat16(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "meta": {"epoch": 2},
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "state_dict": torch.nn.Linear(3, 2).state_dict(),
    }
    torch.save(state, str(path))
    with pytest.raises(PickleRefusedError, match="PyTorch zip checkpoint"):
        load(path)
    loaded = load(path, allow_pickle=True, framework="np")
    for key in ("w", "view", "t", "i", "h", "scalar", "empty"):
        np.testing.assert_array_equal(loaded[key], state[key].numpy())
    np.testing.assert_array_equal(loaded["bf"], state["bf"].float().numpy())
    assert loaded["meta"] == {"epoch": 2}
    np.testing.assert_array_equal(loaded["parameter"], np.ones((2, 2), np.float32))
    assert list(loaded["state_dict"]) == ["weight", "bias"]
    np.testing.assert_array_equal(
        loaded["state_dict"]["weight"], state["state_dict"]["weight"].numpy()
    )


def test_damaged_tree_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.safetensors")
    path = tmp_path / "x.safetensors"
    save({"w": np.ones(2)}, path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"x\.safetensors.*truncated"):
        load(path)


def test_ember_tensors_round_trip(tmp_path):
    import ember

    weight = ember.tensor(np.random.rand(3, 2).astype(np.float32))
    obj = {
        "model": {"w": weight, "steps": ember.tensor(3)},
        "tied": weight,
        "epoch": 1,
        "dtype": ember.float16,
    }
    path = tmp_path / "ckpt.safetensors"
    ember.io.save(obj, path)
    loaded = ember.io.load(path)
    assert isinstance(loaded["model"]["w"], ember.Tensor)
    np.testing.assert_array_equal(loaded["model"]["w"].numpy(), weight.numpy())
    assert loaded["model"]["w"].dtype == ember.float32
    assert loaded["tied"] is loaded["model"]["w"] and loaded["dtype"] is ember.float16
    assert loaded["model"]["steps"].shape == ()
    assert isinstance(load_file(path)["model.w"], ember.Tensor)
