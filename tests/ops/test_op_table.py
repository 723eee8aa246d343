"""Generic tests walking the op table (Note [Op table] in ember/testing/op_table.py)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.autograd import dispatch
from ember.autograd.gradcheck import gradcheck, gradgradcheck
from ember.ops import REGISTRY, registry
from ember.testing.op_table import ROWS, covered_ops, row_rng

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")


def _cases(predicate=lambda row: True):
    cases = []
    for row in ROWS:
        if not predicate(row):
            continue
        for i, sample in enumerate(row.samples(row_rng(row))):
            cases.append(pytest.param(row, sample, id=f"{row.name}-{sample.name or i}"))
    return cases


def _to_ember(value, dtype, noncontiguous, is_int=False, requires_grad=False):
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not is_int:
            arr = value.astype(dtype)
            if noncontiguous and arr.ndim >= 2:
                arr = np.ascontiguousarray(arr.T).T
            t = ember.from_numpy(arr)
            if requires_grad:
                t.requires_grad_(True)
            return t
        return ember.tensor(value.astype(np.int64) if value.dtype.kind in "iuf" else value)
    return value


def _to_torch(value, dtype, is_int=False):
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not is_int:
            return torch.from_numpy(value.astype(dtype))
        return torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "iuf" else value)
    return value


def _np(x):
    if isinstance(x, ember.Tensor):
        return (
            np.asarray(x.detach()).astype(np.float64)
            if x.dtype.is_floating_point
            else np.asarray(x)
        )
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def test_every_registered_op_has_a_row():
    missing = sorted(set(REGISTRY) - covered_ops())
    assert not missing, f"registered ops without an op-table row: {missing}"
    unknown = sorted(covered_ops() - set(REGISTRY))
    assert not unknown, f"op-table rows name ops that are not registered: {unknown}"


@pytest.mark.parametrize("row,sample", _cases(lambda r: r.torch_fn is not None))
def test_forward_matches_torch(row, sample):
    dtype = sample.dtype or np.float32
    args = [
        _to_ember(a, dtype, sample.noncontiguous, i in row.int_args)
        for i, a in enumerate(sample.args)
    ]
    targs = [_to_torch(a, dtype, i in row.int_args) for i, a in enumerate(sample.args)]
    ours = row.fn(*args, **sample.kwargs)
    theirs = row.torch_fn(*targs, **sample.kwargs)
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert ours.dtype.name == str(theirs.dtype).removeprefix("torch."), (ours.dtype, theirs.dtype)
    error = float(np.max(np.abs(_np(ours).astype(np.float64) - _np(theirs)), initial=0.0))
    print(f"{row.name}-{sample.name}: forward max abs error {error:.2e}")
    rtol = 2e-3 if dtype == np.float16 else row.rtol * 10  # float16: one rounding apart
    np.testing.assert_allclose(_np(ours), _np(theirs), atol=row.atol, rtol=rtol)


@pytest.mark.parametrize("row,sample", _cases(lambda r: r.ref is not None))
def test_forward_matches_numpy_reference(row, sample):
    args = [
        _to_ember(a, np.float64, sample.noncontiguous, i in row.int_args)
        for i, a in enumerate(sample.args)
    ]
    ours = row.fn(*args, **sample.kwargs)
    expected = row.ref(*sample.args, **sample.kwargs)
    np.testing.assert_allclose(
        _np(ours), np.asarray(expected, dtype=_np(ours).dtype), atol=1e-12, rtol=1e-12
    )


@pytest.mark.parametrize("row,sample", _cases(lambda r: r.grad and r.finite_differences))
def test_gradients_match_finite_differences(row, sample):
    if not sample.grad:
        pytest.skip("edge-value sample: finite differences are not meaningful here")
    args = [
        _to_ember(
            a,
            np.float64,
            sample.noncontiguous,
            i in row.int_args,
            requires_grad=i not in row.const_args,
        )
        for i, a in enumerate(sample.args)
    ]
    if not any(isinstance(a, ember.Tensor) and a.requires_grad and a.numel() for a in args):
        pytest.skip("no non-empty differentiable input in this sample")
    assert gradcheck(lambda *xs: row.fn(*xs, **sample.kwargs), args)


@pytest.mark.parametrize("row,sample", _cases(lambda r: r.gradgrad))
def test_second_order_gradients(row, sample):
    if not sample.grad:
        pytest.skip("edge-value sample: finite differences are not meaningful here")
    args = [
        _to_ember(a, np.float64, sample.noncontiguous, i in row.int_args, requires_grad=True)
        for i, a in enumerate(sample.args)
    ]
    if not any(isinstance(a, ember.Tensor) and a.requires_grad and a.numel() for a in args):
        pytest.skip("no non-empty differentiable input in this sample")
    assert gradgradcheck(lambda *xs: row.fn(*xs, **sample.kwargs), args, atol=1e-4)


@pytest.mark.parametrize("row,sample", _cases(lambda r: r.grad and r.torch_fn is not None))
def test_gradients_match_torch(row, sample):
    dtype = sample.dtype or np.float32
    args = [
        _to_ember(
            a,
            dtype,
            sample.noncontiguous,
            i in row.int_args,
            requires_grad=i not in row.const_args,
        )
        for i, a in enumerate(sample.args)
    ]
    targs = [_to_torch(a, dtype, i in row.int_args) for i, a in enumerate(sample.args)]
    for i, t in enumerate(targs):
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point and i not in row.const_args:
            t.requires_grad_(True)
    ours = row.fn(*args, **sample.kwargs)
    theirs = row.torch_fn(*targs, **sample.kwargs)
    if not ours.requires_grad or ours.numel() == 0:
        pytest.skip("output does not depend on a differentiable input")
    cot = np.random.default_rng(1).standard_normal(tuple(ours.shape)).astype(dtype)
    ours.backward(ember.from_numpy(cot))
    theirs.backward(torch.from_numpy(cot))
    worst = 0.0
    for a, t in zip(args, targs):
        if isinstance(a, ember.Tensor) and a.requires_grad:
            expected = t.grad.numpy() if t.grad is not None else np.zeros(tuple(a.shape))
            got = _np(a.grad) if a.grad is not None else np.zeros(tuple(a.shape))
            worst = max(worst, float(np.max(np.abs(got - expected), initial=0.0)))
            tolerance = 1e-2 if dtype == np.float16 else 1e-4  # float16 keeps ~3 digits
            np.testing.assert_allclose(got, expected, atol=max(row.atol, 1e-5) * 10, rtol=tolerance)
    print(f"{row.name}-{sample.name}: gradient max abs error {worst:.2e}")


def _second_order_cases():
    """gradgrad rows with a PyTorch reference, samples with a non-empty float input only."""

    def has_input(row, sample):
        return sample.grad and any(
            isinstance(a, np.ndarray)
            and a.dtype.kind == "f"
            and a.size
            and i not in row.int_args
            and i not in row.const_args
            for i, a in enumerate(sample.args)
        )

    return [
        c for c in _cases(lambda r: r.gradgrad and r.torch_fn is not None) if has_input(*c.values)
    ]


def _second(output, inputs, lib):
    """Gradients of `output` (a Python 0 when nothing depends on the inputs)."""
    if not getattr(output, "requires_grad", False):
        return [None] * len(inputs)
    return lib.autograd.grad(output, inputs, allow_unused=True)


@pytest.mark.parametrize("row,sample", _second_order_cases())
def test_second_order_gradients_match_torch(row, sample):
    """d/dx <grad(f)(x), v> against torch.autograd.grad with create_graph, in float64."""
    args = [
        _to_ember(
            a,
            np.float64,
            sample.noncontiguous,
            i in row.int_args,
            requires_grad=i not in row.const_args,
        )
        for i, a in enumerate(sample.args)
    ]
    targs = [_to_torch(a, np.float64, i in row.int_args) for i, a in enumerate(sample.args)]
    pairs = [
        (a, t)
        for i, (a, t) in enumerate(zip(args, targs))
        if isinstance(a, ember.Tensor) and a.requires_grad
    ]
    for _, t in pairs:
        t.requires_grad_(True)
    rng = np.random.default_rng(2)
    ours = row.fn(*args, **sample.kwargs)
    theirs = row.torch_fn(*targs, **sample.kwargs)
    cot = rng.standard_normal(tuple(ours.shape))
    firsts = ember.autograd.grad(
        ours, [a for a, _ in pairs], ember.from_numpy(cot), create_graph=True, allow_unused=True
    )
    tfirsts = torch.autograd.grad(
        theirs, [t for _, t in pairs], torch.from_numpy(cot), create_graph=True, allow_unused=True
    )
    probes = [rng.standard_normal(tuple(a.shape)) for a, _ in pairs]
    ours2 = sum((f * ember.from_numpy(v)).sum() for f, v in zip(firsts, probes) if f is not None)
    theirs2 = sum((f * torch.from_numpy(v)).sum() for f, v in zip(tfirsts, probes) if f is not None)
    seconds = _second(ours2, [a for a, _ in pairs], ember)
    tseconds = _second(theirs2, [t for _, t in pairs], torch)
    worst = 0.0
    for (a, _), e, t in zip(pairs, seconds, tseconds):
        expected = t.numpy() if t is not None else np.zeros(tuple(a.shape))
        got = _np(e) if e is not None else np.zeros(tuple(a.shape))
        worst = max(worst, float(np.max(np.abs(got - expected), initial=0.0)))
        np.testing.assert_allclose(got, expected, atol=1e-8, rtol=1e-7)
    print(f"{row.name}-{sample.name}: second-order max abs error {worst:.2e}")


def _error_cases():
    out = []
    for row in ROWS:
        for i, case in enumerate(row.errors):
            out.append(pytest.param(row, case, id=f"{row.name}-error{i}"))
    return out


@pytest.mark.parametrize("row,case", _error_cases())
def test_error_inputs_raise_documented_errors(row, case):
    args = [_to_ember(a, np.float32, False, i in row.int_args) for i, a in enumerate(case.args)]
    with pytest.raises(case.error, match=case.match) as info:
        row.fn(*args, **case.kwargs)
    assert "test_op_table.py" in str(info.value) or "op_table.py" in str(info.value), (
        f"error message should point at the caller's line: {info.value}"
    )


@pytest.mark.parametrize("row,sample", _cases(lambda r: not r.random))
def test_shape_and_dtype_rules_agree_with_eager(row, sample):
    """Every primitive call's rule-inferred (shape, dtype) equals what eager produced."""
    checked = []

    def check(op, args, attrs):
        dispatch.pop_interceptor()
        try:
            result = dispatch.apply(op, *args, **attrs)
        finally:
            dispatch.push_interceptor(check)
        if op.name == "nonzero" or (
            op.name in ("getitem", "index_add", "index_put")
            and any(isinstance(a, ember.Tensor) and a.dtype is ember.bool for a in args[1:])
        ):
            return result  # data-dependent shapes
        avals = [(tuple(a.shape), a.dtype) if isinstance(a, ember.Tensor) else a for a in args]
        shape, dtype = registry.infer(op, avals, attrs)
        assert tuple(shape) == tuple(result.shape), (op.name, shape, tuple(result.shape))
        assert dtype is result.dtype, (op.name, dtype, result.dtype)
        checked.append(op.name)
        return result

    args = [
        _to_ember(a, sample.dtype or np.float32, sample.noncontiguous, i in row.int_args)
        for i, a in enumerate(sample.args)
    ]
    dispatch.push_interceptor(check)
    try:
        row.fn(*args, **sample.kwargs)
    finally:
        dispatch.pop_interceptor()


@pytest.mark.parametrize("row", [r for r in ROWS if r.random], ids=lambda r: r.name)
def test_random_ops_are_seeded_and_have_the_right_distribution(row):
    ember.manual_seed(123)
    a = np.asarray(row.fn())
    ember.manual_seed(123)
    b = np.asarray(row.fn())
    np.testing.assert_array_equal(a, b)
    if row.name == "uniform":
        assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 0.01
    elif row.name == "normal":
        assert abs(a.mean()) < 0.02 and abs(a.std() - 1) < 0.02
    elif row.name == "randint":
        assert a.min() == 0 and a.max() == 9
    elif row.name == "randperm":
        np.testing.assert_array_equal(a, np.arange(100))
    elif row.name == "bernoulli":
        assert set(np.unique(a)) <= {0.0, 1.0} and abs(a.mean() - 0.25) < 0.03
