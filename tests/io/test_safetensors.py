"""ember's own safetensors reader and writer against the format and the reference package."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from ember.io import SafetensorsError, deserialize, load_file, safe_open, save_file, serialize
from ember.io import safetensors as st_module

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
SHAPES = [(), (0,), (2, 0, 3), (1,), (7,), (3, 1, 5), (2, 3, 4, 5)]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype):
    tensors = {f"t{i}": _sample(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, path)
    loaded = load_file(path, framework="np")
    assert loaded.keys() == tensors.keys()
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name], expected)
    assert deserialize(serialize(tensors), framework="np").keys() == tensors.keys()


def test_bytes_equal_reference_package():
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {name: _sample(name, (3, 2), 1) for name in DTYPES}
    tensors["scalar"] = np.array(2.5, np.float32)
    assert serialize(tensors, {"a": "b"}) == safetensors_numpy.save(tensors, {"a": "b"})


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {
        "strided": base[:, ::2],
        "transposed": base.T,
        "big": np.arange(5, dtype=">i4"),
        "fortran": np.asfortranarray(base),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, path)
    loaded = load_file(path, framework="np")
    for name, expected in tensors.items():
        np.testing.assert_array_equal(loaded[name], expected)
    assert loaded["big"].dtype == np.dtype("int32")


def test_torch_reads_ember_and_ember_reads_torch(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = {
        "fc1.weight": _sample("float32", (4, 3)),
        "fc1.bias": _sample("float32", (4,)),
        "steps": np.array(7, np.int64),
        "mask": _sample("bool", (2, 2)),
        "half": _sample("float16", (5,)),
    }
    ours = tmp_path / "ember.safetensors"
    save_file(state, ours, metadata={"format": "pt"})
    from_torch = safetensors_torch.load_file(str(ours))
    for name, expected in state.items():
        np.testing.assert_array_equal(from_torch[name].numpy(), expected)

    theirs = tmp_path / "torch.safetensors"
    torch_state = {
        "w": torch.randn(3, 5),
        "b": torch.arange(4),
        "e": torch.zeros(0, 2),
        "bf": torch.randn(6, dtype=torch.bfloat16),
    }
    safetensors_torch.save_file(torch_state, str(theirs))
    loaded = load_file(theirs, framework="np")
    for name in ("w", "b", "e"):
        np.testing.assert_array_equal(loaded[name], torch_state[name].numpy())
    # BF16 has no ember dtype: it is widened to float32, exactly.
    assert loaded["bf"].dtype == np.float32
    np.testing.assert_array_equal(loaded["bf"], torch_state["bf"].float().numpy())


def test_safe_open_is_lazy_and_slices(tmp_path):
    path = tmp_path / "x.safetensors"
    weight = np.arange(60, dtype=np.float64).reshape(6, 10)
    save_file({"weight": weight, "bias": np.ones(6, np.float32)}, path, metadata={"k": "v"})
    with safe_open(path, framework="np") as handle:
        assert sorted(handle.keys()) == ["bias", "weight"]
        assert handle.metadata() == {"k": "v"}
        part = handle.get_slice("weight")
        assert part.get_shape() == [6, 10] and part.get_dtype() == "F64"
        np.testing.assert_array_equal(part[2:4, ::3], weight[2:4, ::3])
        np.testing.assert_array_equal(handle.get_tensor("bias"), np.ones(6))
        with pytest.raises(KeyError, match="no tensor 'nope'"):
            handle.get_tensor("nope")
    # The map is closed: the file can be replaced at once.
    save_file({"a": np.zeros(1)}, path)


def test_bad_inputs_to_writer(tmp_path):
    with pytest.raises(TypeError, match="save_file: expected a dict"):
        save_file([np.zeros(1)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="complex128"):
        save_file({"c": np.zeros(2, np.complex128)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="metadata must be a dict of str -> str"):
        save_file({"a": np.zeros(1)}, tmp_path / "x.safetensors", metadata={"n": 1})
    with pytest.raises(TypeError, match="expected an ember Tensor or a NumPy array, got list"):
        save_file({"a": [1, 2]}, tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- damaged files


def _write_raw(path, header: dict, data: bytes, length=None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


def _good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), np.int64)}, path)
    return path


def test_truncated_file_names_file_and_problem(tmp_path):
    path = _good(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-5])
    with pytest.raises(SafetensorsError, match=r"cut\.safetensors.*truncated.*only"):
        load_file(cut)
    cut.write_bytes(data[:5])
    with pytest.raises(SafetensorsError, match=r"cut\.safetensors.*truncated.*8-byte header"):
        load_file(cut)
    cut.write_bytes(data[:20])
    with pytest.raises(SafetensorsError, match=r"cut\.safetensors.*truncated: the header needs"):
        load_file(cut)
    cut.write_bytes(b"")
    with pytest.raises(SafetensorsError, match="truncated"):
        load_file(cut)


@pytest.mark.parametrize(
    "header,data,message",
    [
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 12,
            "4 bytes after the last tensor",
        ),
        ({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype 'X9'"),
        (
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "needs 12 bytes",
        ),
        (
            {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "non-negative integers",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlaps",
        ),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap"),
        ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "should have dtype, shape"),
        ({"__metadata__": {"a": 1}}, b"", "'__metadata__' should map str to str"),
    ],
)
def test_corrupt_headers(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, header, data)
    with pytest.raises(SafetensorsError, match=r"bad\.safetensors") as info:
        load_file(path)
    assert message in str(info.value)


def test_garbage_is_not_json(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]" + b"")
    with pytest.raises(SafetensorsError, match=r"junk\.safetensors.*not valid UTF-8 JSON"):
        load_file(path)
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(SafetensorsError, match="header length field says"):
        load_file(path)


# ----------------------------------------------------------------- atomicity


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = _good(tmp_path)
    before = path.read_bytes()
    calls = []

    def failing(array):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return np.ascontiguousarray(array).tobytes()

    monkeypatch.setattr(st_module, "_little_endian_bytes", failing)
    with pytest.raises(OSError, match="simulated"):
        save_file({"a": np.zeros(100), "b": np.zeros(100)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.safetensors"]


def test_process_killed_mid_write_keeps_old_file(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    script = f"""
import os, numpy as np
from ember.io import safetensors as st
def dying(array):
    os._exit(9)  # the process dies with the temporary file half written
st._little_endian_bytes = dying
st.save_file({{"a": np.zeros(1000)}}, {str(path)!r})
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.returncode == 9
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load_file(path, framework="np")["a"], np.arange(4))
