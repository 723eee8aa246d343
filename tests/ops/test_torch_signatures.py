"""torch's NumPy argument names on ember's op surface (Note [NumPy argument names]).

The table is built from the surface itself: every public function whose signature has `dim`
is called with `dim=`, with `axis=` and (where it has `keepdim`) with `keepdims=`, as a function
and as a Tensor method, and compared with torch called the same way. Where torch's namesake
does not take `axis` (torch.norm and torch.split are Python functions there), ember's alias is
checked against ember's own `dim=` result and the name is listed, so the difference is seen.
"""

import inspect

import numpy as np
import pytest

import ember
from ember.ops import surface

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(18)
_X = _RNG.permutation(60).reshape(3, 4, 5).astype(np.float64) / 7.0  # distinct: no argmax ties
_MASK = _RNG.random((3, 4, 5)) > 0.5
_INDEX = _RNG.integers(0, 4, size=(3, 2, 5))


def _x(lib):
    return lib.tensor(_X)


def _ix(lib, arr=_INDEX):
    return lib.tensor(arr)


# name -> (positional args given the library, keyword args other than dim); a function whose
# only required argument besides the input is `dim` needs no row. Rows for names ember does not
# have are skipped, so ops added later are checked as soon as they exist.
ROWS = {
    "all": (lambda lib: (lib.tensor(_MASK),), {}),
    "any": (lambda lib: (lib.tensor(_MASK),), {}),
    "cat": (lambda lib: ([_x(lib), _x(lib)],), {}),
    "concat": (lambda lib: ([_x(lib), _x(lib)],), {}),
    "concatenate": (lambda lib: ([_x(lib), _x(lib)],), {}),
    "stack": (lambda lib: ([_x(lib), _x(lib)],), {}),
    "squeeze": (lambda lib: (lib.tensor(_X[:, :1]),), {}),
    "gather": (lambda lib: (_x(lib),), {"index": None}),
    "index_select": (lambda lib: (_x(lib),), {"index": "1d"}),
    "scatter": (lambda lib: (_x(lib),), {"index": None, "src": "src"}),
    "scatter_add": (lambda lib: (_x(lib),), {"index": None, "src": "src"}),
    "scatter_reduce": (lambda lib: (_x(lib),), {"index": None, "src": "src", "reduce": "sum"}),
    "index_add": (lambda lib: (_x(lib),), {"index": "1d", "source": "rows"}),
    "narrow": (lambda lib: (_x(lib),), {"start": 1, "length": 2}),
    "chunk": (lambda lib: (_x(lib),), {"chunks": 2}),
    "split": (lambda lib: (_x(lib), 2), {}),
    "topk": (lambda lib: (_x(lib),), {"k": 2}),
    "kthvalue": (lambda lib: (_x(lib),), {"k": 2}),
    "unflatten": (lambda lib: (_x(lib),), {"sizes": (2, 2)}),
    "slice_scatter": (lambda lib: (_x(lib), lib.tensor(_X[:, :2])), {"start": 0, "end": 2}),
    "repeat_interleave": (lambda lib: (_x(lib),), {"repeats": 2}),
    "norm": (lambda lib: (_x(lib),), {"p": 2}),
    "cosine_similarity": (lambda lib: (_x(lib), lib.tensor(_X[::-1].copy())), {}),
    "cross": (lambda lib: (lib.tensor(_X[:, :3]), lib.tensor(_X[::-1, 1:].copy())), {}),
}


def _single(lib):
    return (_x(lib),)


def _kwargs(lib, extra):
    out = {}
    for key, value in extra.items():
        if key == "index":
            value = _ix(lib, _INDEX if value is None else _INDEX[0, :, 0])
        elif value == "src":
            value = lib.tensor(np.ones((3, 2, 5)))
        elif value == "rows":
            value = lib.tensor(np.ones((3, 2, 5)))
        out[key] = value
    return out


def _params(fn):
    return inspect.signature(getattr(fn, "__wrapped__", fn)).parameters


def _with_dim():
    return sorted(name for name, fn in surface.functions().items() if "dim" in _params(fn))


def _call(lib, name, dim_kwargs, method=False):
    make, extra = ROWS.get(name, (_single, {}))
    args = make(lib)
    kwargs = {**_kwargs(lib, extra), **dim_kwargs}
    if method:
        return getattr(args[0], name)(*args[1:], **kwargs)
    return getattr(lib, name)(*args, **kwargs)


def _numpy(value):
    if isinstance(value, (tuple, list)):
        return [_numpy(v) for v in value]
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def _assert_same(got, want, what):
    got, want = _numpy(got), _numpy(want)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), what
        for g, w in zip(got, want):
            _assert_same(g, w, what)
        return
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch's {want.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=what)


def test_every_function_with_dim_has_a_callable_row():
    missing = []
    for name in _with_dim():
        required = [
            p
            for p, param in list(_params(surface.functions()[name]).items())[1:]
            if param.default is param.empty and param.kind is param.POSITIONAL_OR_KEYWORD
        ]
        if set(required) - {"dim"} and name not in ROWS:
            missing.append((name, required))
    assert not missing, f"add a ROWS entry for these functions (required arguments): {missing}"


def test_the_table_covers_torch_s_reductions():
    have = set(_with_dim())
    for name in ("sum", "mean", "max", "min", "amax", "amin", "std", "var", "any", "all"):
        assert name in have
    for name in ("prod", "argmax", "argmin", "logsumexp", "cumsum", "cumprod", "softmax"):
        assert name in have


@pytest.mark.parametrize("name", _with_dim())
def test_axis_and_keepdims_as_torch(name):
    params = _params(surface.functions()[name])
    dim = 1
    want_dim = _call(ember, name, {"dim": dim})
    got_axis = _call(ember, name, {"axis": dim})
    _assert_same(got_axis, want_dim, f"ember.{name}(axis=) vs ember.{name}(dim=)")
    torch_fn = getattr(torch, name, None)
    torch_takes_axis = torch_fn is not None
    if torch_takes_axis:
        try:
            reference = _call(torch, name, {"axis": dim})
        except TypeError:  # a Python function in torch (norm, split): no alias there
            torch_takes_axis = False
    if torch_takes_axis:
        _assert_same(got_axis, reference, f"ember.{name}(axis=) vs torch.{name}(axis=)")
        _assert_same(want_dim, _call(torch, name, {"dim": dim}), f"{name}(dim=)")
    else:
        assert name in ("norm", "split", "concatenate"), (
            f"torch.{name} takes no axis=; list it here if that is torch's signature"
        )
    first = ROWS.get(name, (_single, {}))[0](ember)[0]
    if name in surface.OpMixin.__dict__ and isinstance(first, ember.Tensor):
        got = _call(ember, name, {"axis": dim}, method=True)
        _assert_same(got, want_dim, f"Tensor.{name}(axis=) vs ember.{name}(dim=)")
    if "keepdim" in params:
        got = _call(ember, name, {"axis": dim, "keepdims": True})
        _assert_same(got, _call(ember, name, {"dim": dim, "keepdim": True}), f"{name} keepdims")
        if torch_takes_axis:
            want = _call(torch, name, {"axis": dim, "keepdims": True})
            _assert_same(got, want, f"ember.{name}(keepdims=True) vs torch")


@pytest.mark.parametrize("name", ["sum", "mean", "cat", "softmax"])
def test_dim_and_axis_together_are_a_type_error_as_in_torch(name):
    with pytest.raises(TypeError):
        _call(torch, name, {"dim": 0, "axis": 0})
    with pytest.raises(TypeError, match="both 'dim' and its NumPy alias 'axis'"):
        _call(ember, name, {"dim": 0, "axis": 0})


_NAN_X = _RNG.standard_normal((4, 5, 6))
_NAN_X[0, 1, 2] = np.nan
_NAN_X[1, :, 3] = np.nan  # an all-NaN slice along dim 1


@pytest.mark.parametrize("name", ["median", "nanmedian", "nansum", "nanmean"])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_nan_reductions_and_median_as_torch(name, dim):
    kwargs = {} if dim is None else {"dim": dim}
    x = _NAN_X if name.startswith("nan") else _NAN_X[2:]  # median: NaN-free rows too
    tx = torch.tensor(x, requires_grad=True)
    ex = ember.tensor(x, requires_grad=True)
    want, got = getattr(torch, name)(tx, **kwargs), getattr(ember, name)(ex, **kwargs)
    tv, ev = (want[0], got[0]) if isinstance(want, tuple) else (want, got)
    np.testing.assert_allclose(ev.detach().numpy(), tv.detach().numpy(), rtol=1e-12)
    if isinstance(want, tuple):  # median's indices: torch's, where values tie or not
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
        assert got.indices is got[1] and got.values is got[0]
    g = np.ones(tuple(tv.shape))
    finite = ~np.isnan(tv.detach().numpy())
    tv.backward(torch.tensor(np.where(finite, g, 0.0)))
    ev.backward(ember.tensor(np.where(finite, g, 0.0)))
    # torch's nanmean gradient is 0/0 = NaN on an all-NaN slice, ember's is 0 there
    defined = ~np.isnan(tx.grad.numpy())
    np.testing.assert_allclose(ex.grad.numpy()[defined], tx.grad.numpy()[defined], rtol=1e-12)
