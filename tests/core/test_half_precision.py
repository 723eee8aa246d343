"""Half-precision weights (Note [Half-precision weights]): ember.bfloat16 through ml_dtypes,
casts that round as PyTorch rounds, promotion, float32 compute for layers with half-precision
weights, and the memory they save."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn

pytest.importorskip("ml_dtypes")


def test_import_ember_does_not_load_ml_dtypes():
    code = "import sys, ember; ember.bfloat16; print('ml_dtypes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 3.4e38 -> float16 inf
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_cast_rounds_as_torch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-6, 6, 1000),
            np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, 65504.0, 3.4e38], np.float32),
        ]
    ).astype(np.float32)
    ours = ember.tensor(values).to(getattr(ember, name)).float().numpy()
    theirs = torch.from_numpy(values).to(getattr(torch, name)).float().numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("bfloat16", "float32", "float32"),
        ("bfloat16", "float16", "float32"),
        ("bfloat16", "float64", "float64"),
        ("bfloat16", "bfloat16", "bfloat16"),
        ("bfloat16", "int64", "bfloat16"),
        ("float16", "float32", "float32"),
    ],
)
def test_promotion_follows_torch(a, b, expected):
    torch = pytest.importorskip("torch")
    assert ember.promote_types(getattr(ember, a), getattr(ember, b)) is getattr(ember, expected)
    assert str(torch.promote_types(getattr(torch, a), getattr(torch, b))) == f"torch.{expected}"


def test_dtype_names_and_numpy_round_trip():
    import ml_dtypes

    assert ember.dtypes.as_dtype("bfloat16") is ember.bfloat16
    assert ember.dtypes.as_dtype("torch.bfloat16") is ember.bfloat16
    array = np.ones((2, 3), dtype=ml_dtypes.bfloat16)
    assert ember.from_numpy(array).dtype is ember.bfloat16
    assert ember.dtypes.as_dtype(array.dtype) is ember.bfloat16
    assert ember.bfloat16.itemsize == 2 and ember.bfloat16.is_floating_point
    assert "dtype=ember.bfloat16" in repr(ember.ones(2).bfloat16())
    assert "1." in repr(ember.ones(2).bfloat16())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_layers_with_half_weights_compute_in_float32(dtype):
    with ember.no_grad():
        _check_half_layers(dtype)


def _check_half_layers(dtype):
    ember.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8), nn.LayerNorm(8))
    tokens = ember.tensor([[1, 5, 7], [2, 3, 49]])
    reference = model(tokens).numpy()
    model.to(getattr(ember, dtype))
    assert all(p.dtype is getattr(ember, dtype) for p in model.parameters())
    out = model(tokens)
    assert out.dtype is ember.float32
    # the weights were rounded once (8 or 11 significant bits); the arithmetic is float32
    rounded = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8), nn.LayerNorm(8))
    rounded.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    np.testing.assert_allclose(out.numpy(), rounded(tokens).numpy(), rtol=1e-6, atol=1e-6)
    tolerance = 5e-2 if dtype == "bfloat16" else 5e-3
    np.testing.assert_allclose(out.numpy(), reference, rtol=tolerance, atol=tolerance)
    assert F.embedding(tokens, model[0].weight).dtype is ember.float32


def test_half_weights_take_half_the_bytes_and_save_as_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model = nn.Linear(256, 128)
    full = sum(p.detach().numpy().nbytes for p in model.parameters())
    model.bfloat16()
    assert sum(p.detach().numpy().nbytes for p in model.parameters()) * 2 == full
    ember.io.save_file(dict(model.state_dict()), str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert loaded["weight"].dtype == torch.bfloat16
    np.testing.assert_array_equal(
        loaded["weight"].float().numpy(), model.weight.detach().float().numpy()
    )
