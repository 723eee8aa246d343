"""The issue-18 tensor ops beyond their op-table rows (Note [Op table]): torch's aliases and
in-place names, integer dtypes, the bitwise operators, eager-only forms (repeat_interleave
without output_size), views and errors, each against torch."""

from __future__ import annotations

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")


def _same(ours, theirs, rtol=1e-6, atol=1e-6):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours.detach()) if isinstance(ours, ember.Tensor) else np.asarray(ours)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours, theirs)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize(
    "name,low,high",
    [
        ("asin", -0.9, 0.9), ("arcsin", -0.9, 0.9), ("acos", -0.9, 0.9), ("arccos", -0.9, 0.9),
        ("atan", -3, 3), ("arctan", -3, 3), ("sinh", -3, 3), ("cosh", -3, 3),
        ("asinh", -3, 3), ("arcsinh", -3, 3), ("acosh", 1.1, 4), ("arccosh", 1.1, 4),
        ("atanh", -0.9, 0.9), ("arctanh", -0.9, 0.9), ("log10", 0.1, 4), ("exp2", -3, 3),
        ("log2", 0.1, 4), ("sign", -3, 3),
    ],
)  # fmt: skip
def test_unary_aliases_in_place_and_integers(name, low, high):
    x = np.random.default_rng(0).uniform(low, high, (3, 4)).astype(np.float32)
    _same(getattr(ember, name)(ember.tensor(x)), getattr(torch, name)(torch.tensor(x)))
    ours, theirs = ember.tensor(x), torch.tensor(x)
    getattr(ours, name + "_")()
    getattr(theirs, name + "_")()
    _same(ours, theirs)
    ints = np.array([1, 2, 3]) if low >= 1 else np.array([0, 1, -1]) if high > 1 else np.zeros(3)
    ints = ints.astype(np.int64)
    _same(getattr(ember, name)(ember.tensor(ints)), getattr(torch, name)(torch.tensor(ints)))


@pytest.mark.parametrize("name", ["atan2", "arctan2", "copysign", "fmod", "remainder", "hypot"])
def test_binary_in_place(name):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    ours, theirs = ember.tensor(a), torch.tensor(a)
    getattr(ours, name + "_")(ember.tensor(b))
    getattr(theirs, name + "_")(torch.tensor(b))
    _same(ours, theirs)


def test_fmod_and_remainder_signs_on_integers_and_floats():
    a = np.array([-7, 7, -7, 7, -8, 0])
    b = np.array([3, 3, -3, -3, 4, 5])
    for fn in ("fmod", "remainder"):
        for dtype in (np.int64, np.int32, np.float32):
            _same(
                getattr(ember, fn)(ember.tensor(a.astype(dtype)), ember.tensor(b.astype(dtype))),
                getattr(torch, fn)(torch.tensor(a.astype(dtype)), torch.tensor(b.astype(dtype))),
            )
        _same(getattr(ember, fn)(ember.tensor(a), -3), getattr(torch, fn)(torch.tensor(a), -3))
    x = ember.tensor(a)
    x %= 4
    _same(x, torch.tensor(a) % 4)
    with pytest.raises(RuntimeError, match="fmod: integer division by zero"):
        ember.fmod(ember.tensor([1, 2]), ember.tensor([1, 0]))


@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "int8", "uint8"])
def test_bitwise_operators_on_integer_dtypes(dtype):
    rng = np.random.default_rng(2)
    low = 0 if dtype == "uint8" else -100
    a = rng.integers(low, 100, (3, 4)).astype(dtype)
    b = rng.integers(low, 100, (3, 4)).astype(dtype)
    s = rng.integers(0, 5, (3, 4)).astype(dtype)
    ea, eb, es = ember.tensor(a), ember.tensor(b), ember.tensor(s)
    ta, tb, ts = torch.tensor(a), torch.tensor(b), torch.tensor(s)
    for op in (
        lambda x, y, z: x & y,
        lambda x, y, z: x | y,
        lambda x, y, z: x ^ y,
        lambda x, y, z: ~x,
        lambda x, y, z: x << z,
        lambda x, y, z: x >> z,
        lambda x, y, z: 5 & x,
        lambda x, y, z: 3 | x,
        lambda x, y, z: 6 ^ x,
        lambda x, y, z: 1 << z,
        lambda x, y, z: 64 >> z,
        lambda x, y, z: x & 7,
    ):
        _same(op(ea, eb, es), op(ta, tb, ts))
    for name in ("__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"):
        other_e, other_t = (es, ts) if "shift" in name else (eb, tb)
        ours, theirs = ember.tensor(a), torch.tensor(a)
        ours = getattr(ours, name)(other_e)
        theirs = getattr(theirs, name)(other_t)
        _same(ours, theirs)
    for name in ("bitwise_and_", "bitwise_or_", "bitwise_xor_", "bitwise_left_shift_"):
        ours, theirs = ember.tensor(a), torch.tensor(a)
        getattr(ours, name)(es)
        getattr(theirs, name)(ts)
        _same(ours, theirs)
    ours, theirs = ember.tensor(a), torch.tensor(a)
    ours.bitwise_not_()
    theirs.bitwise_not_()
    _same(ours, theirs)


def test_bitwise_on_bool_and_mixed():
    m = np.array([True, False, True])
    n = np.array([True, True, False])
    em, en, tm, tn = ember.tensor(m), ember.tensor(n), torch.tensor(m), torch.tensor(n)
    for op in (lambda x, y: x & y, lambda x, y: x | y, lambda x, y: x ^ y, lambda x, y: ~x):
        _same(op(em, en), op(tm, tn))
    mask = ember.tensor(m)
    mask &= en
    _same(mask, tm & tn)
    _same(ember.tensor([1, 2, 3]) & em, torch.tensor([1, 2, 3]) & tm)  # bool promotes to int64


@pytest.mark.parametrize(
    "op",
    [
        lambda x: x & x, lambda x: x | 1, lambda x: 1 ^ x, lambda x: ~x, lambda x: x << 1,
        lambda x: x >> x, lambda x: ember.bitwise_and(x, x), lambda x: x.bitwise_not(),
    ],
)  # fmt: skip
def test_bitwise_refuses_floats_as_torch(op):
    x = ember.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"bitwise_\w+: takes integer.*got float32") as info:
        op(x)
    assert isinstance(info.value, NotImplementedError)  # torch: "not implemented for 'Float'"
    with pytest.raises(RuntimeError, match="bitwise_left_shift: takes integer tensors only"):
        ember.tensor([True]) << ember.tensor([True])
    _same(ember.tensor([True]) << 1, torch.tensor([True]) << 1)  # promoted to int64


def test_bitwise_traced_and_compiled():
    def f(a, b):
        return (a & b) | (a << 2) ^ ~b

    a, b = ember.tensor([[5, -6], [7, 0]]), ember.tensor([[3, 2], [-1, 9]])
    _same(
        ember.compile(f)(a, b), f(torch.tensor([[5, -6], [7, 0]]), torch.tensor([[3, 2], [-1, 9]]))
    )
    with pytest.raises(RuntimeError, match="bitwise_and: takes integer"):
        ember.compile(lambda x: x & x)(ember.tensor([1.0]))


def test_sign_floor_and_0d_prod_gradients_match_torch():
    x = np.array([1.5, -2.0, 0.0, 3.25])
    for fn in ("sign", "floor", "ceil", "trunc", "round"):
        ours = ember.tensor(x, requires_grad=True)
        theirs = torch.tensor(x, requires_grad=True)
        getattr(ours, fn)().sum().backward()
        getattr(theirs, fn)().sum().backward()
        _same(ours.grad, theirs.grad)  # zeros, not None
    for kwargs in ({}, {"dim": 0}, {"dim": -1, "keepdim": True}):
        ours = ember.tensor(2.5, requires_grad=True)
        theirs = torch.tensor(2.5, dtype=torch.float32, requires_grad=True)
        (ours.prod(**kwargs) * 3).backward()
        (theirs.prod(**kwargs) * 3).backward()
        _same(ours.grad, theirs.grad)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, i: m.gather(x, 1, i),
        lambda m, x, i: m.index_select(x, 1, i.reshape(-1)),
        lambda m, x, i: m.nn.functional.one_hot(i, 4),
    ],
)
@pytest.mark.parametrize("bad", [4, -1])
def test_out_of_range_indices_raise_like_torch(call, bad):
    x = np.zeros((2, 4), np.float32)
    i = np.array([[0, bad], [1, 2]])
    with pytest.raises((RuntimeError, IndexError)) as theirs:
        call(torch, torch.tensor(x), torch.tensor(i))
    with pytest.raises(type(theirs.value)) as ours:
        call(ember, ember.tensor(x), ember.tensor(i))
    assert isinstance(ours.value, RuntimeError) and isinstance(ours.value, IndexError)
    assert f"index {bad}" in str(ours.value) and "size 4" in str(ours.value)


def test_repeat_interleave_forms():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    cases = [
        ((2,), {}),
        ((torch.tensor([1, 0, 3]),), {"dim": 1}),
        ((torch.tensor([2]),), {"dim": 0}),
        ((torch.tensor(2),), {}),
        ((3,), {"dim": -1, "output_size": 9}),
        ((torch.tensor([1, 0, 3]),), {"dim": 1, "output_size": 4}),
        ((torch.tensor([0, 0, 0]),), {"dim": 1, "output_size": 0}),
        ((torch.tensor([2]),), {"dim": 0, "output_size": 4}),
    ]
    for args, kwargs in cases:
        eargs = [ember.tensor(a.numpy()) if isinstance(a, torch.Tensor) else a for a in args]
        _same(
            ember.repeat_interleave(ember.tensor(x), *eargs, **kwargs),
            torch.repeat_interleave(torch.tensor(x), *args, **kwargs),
        )
    _same(
        ember.repeat_interleave(ember.tensor([3, 0, 2])),
        torch.repeat_interleave(torch.tensor([3, 0, 2])),
    )
    _same(ember.tensor(5.0).repeat_interleave(3), torch.tensor(5.0).repeat_interleave(3))
    with pytest.raises(ValueError, match="repeats must be non-negative"):
        ember.tensor(x).repeat_interleave(ember.tensor([1, -1, 2]), dim=1)
    with pytest.raises(RuntimeError, match=r"output_size != sum\(repeats\)"):
        ember.tensor(x).repeat_interleave(ember.tensor([1, 2, 2]), dim=1, output_size=4)
    with pytest.raises(RuntimeError, match="repeats has 2 counts but dim 1"):
        ember.tensor(x).repeat_interleave(ember.tensor([1, 2]), dim=1)
    # the gradient sums over the copies, as torch's
    ours = ember.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    w = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    (ours.repeat_interleave(ember.tensor([2, 0, 2]), dim=1) * ember.tensor(w)).sum().backward()
    (theirs.repeat_interleave(torch.tensor([2, 0, 2]), dim=1) * torch.tensor(w)).sum().backward()
    _same(ours.grad, theirs.grad)


def test_unfold_windows_and_gradient():
    x = np.random.default_rng(4).standard_normal((2, 9, 3)).astype(np.float32)
    for args in ((1, 3, 2), (1, 4, 4), (0, 2, 1), (-1, 1, 1), (1, 9, 1)):
        ours = ember.tensor(x, requires_grad=True)
        theirs = torch.tensor(x, requires_grad=True)
        out, tout = ours.unfold(*args), theirs.unfold(*args)
        _same(out, tout)
        w = np.random.default_rng(5).standard_normal(tuple(tout.shape)).astype(np.float32)
        (out * ember.tensor(w)).sum().backward()
        (tout * torch.tensor(w)).sum().backward()
        _same(ours.grad, theirs.grad)
    with pytest.raises(RuntimeError, match="unfold: maximum size for dimension 1 is 9"):
        ember.tensor(x).unfold(1, 10, 1)


def test_meshgrid_forms():
    a, b, c = (np.arange(n, dtype=np.float32) for n in (2, 3, 4))
    for indexing in ("ij", "xy"):
        ours = ember.meshgrid(ember.tensor(a), ember.tensor(b), ember.tensor(c), indexing=indexing)
        theirs = torch.meshgrid(
            torch.tensor(a), torch.tensor(b), torch.tensor(c), indexing=indexing
        )
        for o, t in zip(ours, theirs):
            _same(o, t)
    ours = ember.meshgrid([ember.tensor(a), ember.tensor(b)])  # a list, default "ij"
    theirs = torch.meshgrid([torch.tensor(a), torch.tensor(b)], indexing="ij")
    for o, t in zip(ours, theirs):
        _same(o, t)
    (single,) = ember.meshgrid(ember.tensor(a))
    _same(single, torch.tensor(a))
    with pytest.raises(TypeError, match="same dtype"):
        ember.meshgrid(ember.tensor(a), ember.tensor([1, 2]))


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter_reduce_in_place_scatter_with_reduce_and_larger_src():
    x = np.arange(8.0, dtype=np.float32).reshape(2, 4)
    index = np.array([[0, 0, 3]])
    src = np.array([[5.0, -2.0, 9.0, 1.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    for reduce in ("sum", "prod", "mean", "amax", "amin"):
        for include_self in (True, False):
            ours, theirs = ember.tensor(x), torch.tensor(x)
            ours.scatter_reduce_(1, ember.tensor(index), ember.tensor(src), reduce,
                                 include_self=include_self)  # fmt: skip
            theirs.scatter_reduce_(1, torch.tensor(index), torch.tensor(src), reduce,
                                   include_self=include_self)  # fmt: skip
            _same(ours, theirs)
    for reduce in ("add", "multiply"):
        _same(
            ember.tensor(x).scatter(1, ember.tensor(index), ember.tensor(src), reduce=reduce),
            torch.tensor(x).scatter(1, torch.tensor(index), torch.tensor(src), reduce=reduce),
        )
        _same(
            ember.tensor(x).scatter(1, ember.tensor(index), 2.5, reduce=reduce),
            torch.tensor(x).scatter(1, torch.tensor(index), 2.5, reduce=reduce),
        )
        ours, theirs = ember.tensor(x), torch.tensor(x)
        ours.scatter_(1, ember.tensor(index), ember.tensor(src), reduce=reduce)
        theirs.scatter_(1, torch.tensor(index), torch.tensor(src), reduce=reduce)
        _same(ours, theirs)
    ints = np.array([4, 9, 2])
    _same(
        ember.tensor(ints).scatter_reduce(0, ember.tensor([0, 0]), ember.tensor([3, 5]), "mean"),
        torch.tensor(ints).scatter_reduce(0, torch.tensor([0, 0]), torch.tensor([3, 5]), "mean"),
    )


def test_std_mean_var_mean_overloads():
    x = np.random.default_rng(6).standard_normal((3, 5)).astype(np.float32)
    calls = [
        ((), {}),
        ((1,), {}),
        ((True,), {}),
        ((False,), {}),
        ((0, False, True), {}),
        (((0, 1),), {"correction": 0, "keepdim": True}),
        ((), {"dim": 1, "unbiased": False}),
    ]
    for fn in ("std_mean", "var_mean"):
        for args, kwargs in calls:
            ours = getattr(ember, fn)(ember.tensor(x), *args, **kwargs)
            theirs = getattr(torch, fn)(torch.tensor(x), *args, **kwargs)
            assert isinstance(ours, tuple) and len(ours) == 2
            for o, t in zip(ours, theirs):
                _same(o, t, rtol=1e-5)


def test_cummax_cummin_named_fields_and_integers():
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    for fn in ("cummax", "cummin"):
        ours = getattr(ember, fn)(ember.tensor(x), 1)
        theirs = getattr(torch, fn)(torch.tensor(x), 1)
        _same(ours.values, theirs.values)
        _same(ours.indices, theirs.indices)
        values, indices = ours
        _same(values, theirs[0])


def test_isclose_method_and_integer_tolerance():
    a = ember.tensor([1.0, 2.0, float("nan")])
    b = ember.tensor([1.0 + 1e-6, 2.1, float("nan")])
    ta, tb = torch.tensor(a.numpy()), torch.tensor(b.numpy())
    _same(a.isclose(b), ta.isclose(tb))
    _same(a.isclose(b, rtol=0.1, equal_nan=True), ta.isclose(tb, rtol=0.1, equal_nan=True))
    _same(
        ember.isclose(ember.tensor([1, 5]), ember.tensor([2, 5]), rtol=0, atol=1),
        torch.isclose(torch.tensor([1, 5]), torch.tensor([2, 5]), rtol=0, atol=1),
    )
    with pytest.raises(RuntimeError, match="same dtype"):
        ember.isclose(ember.tensor([1.0]), ember.tensor([1]))


def test_unfold_is_a_view_as_torch():
    ours, theirs = ember.arange(10.0), torch.arange(10.0)
    w, tw = ours.unfold(0, 4, 3), theirs.unfold(0, 4, 3)
    w[1, 0] = -1.0
    tw[1, 0] = -1.0
    _same(ours, theirs)
    ours[4] = 7.0  # a write to the base shows in the windows
    theirs[4] = 7.0
    _same(w, tw)
    _same(
        ember.arange(6.0).reshape(2, 3).t().unfold(0, 2, 1),
        torch.arange(6.0).reshape(2, 3).t().unfold(0, 2, 1),
    )
