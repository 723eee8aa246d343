"""Tensor creation, dtypes and promotion, printing, devices, errors."""

import itertools

import numpy as np
import pytest

import ember
from ember._util.errors import DeviceError, ShapeError

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)))
def test_promotion_table_matches_torch(a, b):
    ours = (ember.ones(2, dtype=a) * ember.ones(2, dtype=b)).dtype.name
    theirs = str(
        (torch.ones(2, dtype=getattr(torch, a)) * torch.ones(2, dtype=getattr(torch, b))).dtype
    ).removeprefix("torch.")
    assert ours == theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [True, 3, 2.5])
def test_scalar_and_zero_dim_promotion_matches_torch(dtype, scalar):
    tt = torch.ones(2, dtype=getattr(torch, dtype))
    et = ember.ones(2, dtype=dtype)
    if dtype == "bool" and scalar is True:
        return
    assert (et + scalar).dtype.name == str((tt + scalar).dtype).removeprefix("torch.")
    zero_dim = torch.tensor(scalar)
    assert (et + ember.tensor(scalar)).dtype.name == str((tt + zero_dim).dtype).removeprefix(
        "torch."
    )


@pytest.mark.parametrize(
    "expr",
    [
        "x / 2",
        "x.exp()",
        "x.sum()",
        "x.cumsum(0)",
        "(x > 1)",
        "x.argmax()",
        "x.float().mean()",
    ],
)
def test_integer_results_match_torch(expr):
    x = ember.tensor([1, 2, 3], dtype=ember.int32)
    ours = eval(expr, {"x": x})
    x = torch.tensor([1, 2, 3], dtype=torch.int32)
    theirs = eval(expr, {"x": x})
    assert ours.dtype.name == str(theirs.dtype).removeprefix("torch.")
    np.testing.assert_allclose(
        np.asarray(ours, dtype=np.float64), theirs.numpy().astype(np.float64), rtol=1e-6
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.tensor([1.0, 2.5, -3.0]),
        lambda m: m.tensor([[1.0, 2.0], [3.0, 4.0]]),
        lambda m: m.tensor([1, 2, 3]),
        lambda m: m.tensor([True, False]),
        lambda m: m.tensor(3.5),
        lambda m: m.tensor([1e-5, 1e5]),
        lambda m: m.tensor([0.1234567, 10.5]),
        lambda m: m.arange(12).reshape(3, 4),
        lambda m: m.zeros(0, 3),
        lambda m: m.tensor([1.0, float("nan"), float("inf")]),
        lambda m: m.arange(2000).float(),
        lambda m: m.tensor([1, 2], dtype=m.int32),
        lambda m: m.tensor([1.5], dtype=m.float64),
    ],
)
def test_printing_matches_torch(make):
    ours = repr(make(ember))
    theirs = repr(make(torch)).replace("torch.", "ember.")
    assert ours == theirs


def test_printing_with_grad():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward0>)"


def test_creation_functions():
    assert ember.zeros(2, 3).shape == (2, 3) and ember.zeros(2, 3).dtype is ember.float32
    assert ember.ones((2,), dtype=ember.int64).tolist() == [1, 1]
    assert ember.full((2,), 7).dtype is ember.int64
    assert ember.full((2,), 7.0).dtype is ember.float32
    assert ember.arange(5).dtype is ember.int64
    assert ember.arange(0, 1, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(ember.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5))
    assert ember.eye(3).sum().item() == 3
    assert ember.empty(2, 2).shape == (2, 2)
    a = np.arange(3.0)
    t = ember.from_numpy(a)
    a[0] = 9
    assert t[0].item() == 9 and t.dtype is ember.float64
    assert ember.tensor(a).dtype is ember.float64
    assert ember.as_tensor(a)._data is a
    assert ember.zeros_like(t).tolist() == [0, 0, 0]
    assert ember.randint(0, 5, (10,)).dtype is ember.int64
    assert sorted(ember.randperm(5).tolist()) == list(range(5))
    assert ember.rand(2, 3).shape == (2, 3) and ember.randn_like(t).dtype is ember.float64


def test_tensor_methods():
    x = ember.arange(6).reshape(2, 3).float()
    assert x.T.shape == (3, 2) and x.size() == (2, 3) and x.size(1) == 3 and x.dim() == 2
    assert x.numel() == 6 and x.shape.numel() == 6
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert x[1, 2].item() == 5.0
    assert not x.T.is_contiguous() and x.T.contiguous().is_contiguous()
    c = x.clone()
    c.add_(1)
    assert x[0, 0].item() == 0 and c[0, 0].item() == 1
    assert x.to(ember.int64).dtype is ember.int64 and x.double().dtype is ember.float64
    assert x.device == ember.device("cpu") and x.to("cpu") is x
    assert str(ember.device("cpu")) == "cpu"
    assert x.max(1).values.tolist() == [2, 5] and x.max(1).indices.tolist() == [2, 2]
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(x)
    assert len(list(iter(x))) == 2


def test_cuda_unavailable_is_a_clear_error():
    with pytest.raises((DeviceError, ImportError, ModuleNotFoundError)):
        ember.zeros(2).to("cuda")


def test_shape_errors_name_op_shapes_and_caller_line():
    with pytest.raises(ShapeError) as info:
        ember.randn(2, 11, 512) @ ember.randn(768, 768)
    message = str(info.value)
    assert "matmul: (2, 11, 512) @ (768, 768): inner dimensions 512 and 768 differ" in message
    assert "test_tensor.py" in message
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        ember.ones(2, 3) + ember.ones(4)


def test_in_place_dtype_rules():
    x = ember.tensor([1, 2])
    with pytest.raises(TypeError, match="can't be cast"):
        x.add_(1.5)
    y = ember.ones(2)
    y.add_(ember.tensor([1, 2]))
    assert y.tolist() == [2.0, 3.0]


def test_cuda_reports_unavailable_without_a_backend():
    assert ember.cuda.is_available() is False
    assert ember.cuda.device_count() == 0
    with pytest.raises(DeviceError, match="not available"):
        ember.zeros(2).to("cuda")


# --- view(dtype): bit reinterpretation (Note [Bit views]) ------------------------------------
def _random_bits(rng, dtype, shape):
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return rng.integers(0, 256, n).astype(np.uint8).view(dtype).reshape(shape)


# (name, shape, how the viewed tensor is taken from the base tensor)
VIEW_LAYOUTS = [
    ("contiguous", (3, 8), lambda t: t),
    ("1d", (8,), lambda t: t),
    ("transposed", (4, 6), lambda t: t.t()),
    ("last_dim_sliced", (3, 8), lambda t: t[:, :6]),
    ("odd_last_dim", (2, 3), lambda t: t),
    ("odd_offset", (17,), lambda t: t[1:9]),
    ("even_offset", (3, 8), lambda t: t[:, 4:]),
    ("odd_row_stride", (3, 5), lambda t: t[:, :4]),
    ("zero_dim", (), lambda t: t),
    ("size_one_last_dim", (3, 1), lambda t: t),
    ("empty", (0, 8), lambda t: t),
]


@pytest.mark.parametrize("layout", VIEW_LAYOUTS, ids=[v[0] for v in VIEW_LAYOUTS])
def test_view_dtype_matches_torch(layout):
    """Every dtype pair: the same shape and bytes as torch, or an error where torch has one."""
    name, shape, take = layout
    rng = np.random.default_rng(0)
    agreed = failed = 0
    for source, target in itertools.product(DTYPES, DTYPES):
        base = _random_bits(rng, source, shape)
        # (torch.from_numpy gives an empty array zero strides, which its view(dtype) refuses)
        theirs_in = take(
            torch.from_numpy(base.copy())
            if base.size
            else torch.empty(shape, dtype=getattr(torch, source))
        )
        ours_in = take(ember.tensor(base.copy()))
        try:
            theirs = theirs_in.view(getattr(torch, target))
        except RuntimeError as error:
            with pytest.raises(
                ShapeError,
                match=r"view\(dtype\): viewing "
                f"{source} as {target}",
            ) as info:
                ours_in.view(getattr(ember, target))
            assert "test_tensor.py" in str(info.value)
            failed += 1
            reason = str(error)
            continue
        ours = ours_in.view(getattr(ember, target))
        assert ours.dtype.name == target
        assert tuple(ours.shape) == tuple(theirs.shape), (source, target)
        assert (
            np.ascontiguousarray(ours.numpy()).tobytes()
            == np.ascontiguousarray(theirs.numpy()).tobytes()
        ), (source, target)
        agreed += 1
    print(
        f"view(dtype) {name}: {agreed} pairs viewed identically, {failed} refused as by torch"
        + (f" (e.g. {reason})" if failed else "")
    )


def test_view_dtype_shares_memory_and_is_not_differentiable():
    x = ember.tensor([[1.0, 2.0], [3.0, -0.0]])
    bits = x.view(ember.int32)
    bits[1, 1] = 0  # -0.0 -> +0.0 through the view
    assert np.signbit(x.numpy()[1, 1]) == np.False_ and bits.numpy()[0, 0] == 0x3F800000
    halves = x.view("float16")
    assert tuple(halves.shape) == (2, 4) and halves.is_contiguous()
    w = ember.randn(2, 4, requires_grad=True)
    tw = torch.randn(2, 4, requires_grad=True)
    for target in ("float32", "float16", "float64", "int32"):
        assert w.view(getattr(ember, target)).requires_grad is False
        assert tw.view(getattr(torch, target)).requires_grad is False
    with pytest.raises(RuntimeError, match="does not require grad"):
        w.view(ember.float32).sum().backward()


def test_accelerator_answers_as_torch_on_a_cpu_build():
    torch = pytest.importorskip("torch")
    if torch.accelerator.is_available():
        pytest.skip("the reference PyTorch has an accelerator here")
    assert ember.accelerator.is_available() is torch.accelerator.is_available() is False
    assert ember.accelerator.current_accelerator() is None
    assert ember.accelerator.device_count() == torch.accelerator.device_count() == 0
    for call in ("current_device_index", "synchronize"):
        with pytest.raises(RuntimeError):
            getattr(torch.accelerator, call)()
        with pytest.raises(RuntimeError, match=f"ember.accelerator.{call}: cannot access"):
            getattr(ember.accelerator, call)()
