"""Sparse gradients against torch (Note [Sparse gradients] in ember/autograd/sparse.py):
`nn.Embedding(sparse=True)`'s row-sparse weight gradient (indices, values, accumulation),
SparseAdam's trajectory, SGD and Adagrad taking sparse gradients, and the refusals torch makes
(dense gradients to SparseAdam, sparse ones to the other optimizers, weight decay).
"""

import numpy as np
import pytest

import ember
import ember.nn as enn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

_RNG = np.random.default_rng(1818)
_WEIGHT = _RNG.standard_normal((7, 3)).astype(np.float32)
# batches of indices: repeats, a padding row, rows that come and go
_BATCHES = [
    np.array([[1, 2, 4], [4, 0, 1]]),
    np.array([[3, 5, 5, 6]]),
    np.array([[1, 1], [2, 6]]),
    np.array([[0, 4, 3]]),
]


def _pair(padding_idx=None, max_norm=None):
    t = torch.nn.Embedding(7, 3, padding_idx=padding_idx, max_norm=max_norm, sparse=True)
    e = enn.Embedding(7, 3, padding_idx=padding_idx, max_norm=max_norm, sparse=True)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(_WEIGHT))
    e.weight.data = ember.tensor(_WEIGHT.copy())
    return t, e


def _loss(emb, index, lib):
    out = emb(lib.tensor(index))
    return (out * out).sum() + out.sum()


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_gives_torch_s_sparse_gradient(padding_idx):
    t, e = _pair(padding_idx)
    _loss(t, _BATCHES[0], torch).backward()
    _loss(e, _BATCHES[0], ember).backward()
    tg, eg = t.weight.grad, e.weight.grad
    assert tg.is_sparse and eg.is_sparse and not eg.is_coalesced()
    assert tuple(eg.shape) == tuple(tg.shape) and eg.sparse_dim() == 1 and eg.dense_dim() == 1
    np.testing.assert_array_equal(eg._indices().numpy(), tg._indices().numpy())
    np.testing.assert_allclose(eg._values().numpy(), tg._values().numpy(), rtol=1e-6)
    tc, ec = tg.coalesce(), eg.coalesce()
    np.testing.assert_array_equal(ec.indices().numpy(), tc.indices().numpy())
    np.testing.assert_allclose(ec.values().numpy(), tc.values().numpy(), rtol=1e-6)
    np.testing.assert_allclose(eg.to_dense().numpy(), tg.to_dense().numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="uncoalesced"):
        eg.indices()


def test_sparse_gradients_accumulate_as_torch():
    t, e = _pair()
    for index in _BATCHES[:2]:  # two backwards: the rows are concatenated
        _loss(t, index, torch).backward()
        _loss(e, index, ember).backward()
    # the rows are kept, not summed (torch orders the concatenation its own way)
    assert e.weight.grad.is_sparse and e.weight.grad._nnz() == t.weight.grad._nnz() == 10
    tc, ec = t.weight.grad.coalesce(), e.weight.grad.coalesce()
    np.testing.assert_array_equal(ec.indices().numpy(), tc.indices().numpy())
    np.testing.assert_allclose(ec.values().numpy(), tc.values().numpy(), rtol=1e-6)
    # a dense use of the same weight in one graph makes the gradient dense, as in torch
    t2, e2 = _pair()
    (_loss(t2, _BATCHES[0], torch) + (t2.weight * 3.0).sum()).backward()
    (_loss(e2, _BATCHES[0], ember) + (e2.weight * 3.0).sum()).backward()
    assert not e2.weight.grad.is_sparse
    np.testing.assert_allclose(e2.weight.grad.numpy(), t2.weight.grad.numpy(), rtol=1e-6)


def test_a_sparse_gradient_flowing_into_a_node_becomes_dense():
    base = ember.tensor(_WEIGHT.copy(), requires_grad=True)
    table = base * 2.0  # not a leaf: the engine hands the node a dense gradient
    ember.nn.functional.embedding(ember.tensor([1, 1, 3]), table, sparse=True).sum().backward()
    want = np.zeros_like(_WEIGHT)
    want[1], want[3] = 4.0, 2.0
    np.testing.assert_allclose(base.grad.numpy(), want)


def _trajectory(make_torch, make_ember, steps=4, padding_idx=None):
    t, e = _pair(padding_idx)
    topt, eopt = make_torch(t.parameters()), make_ember(e.parameters())
    for step in range(steps):
        index = _BATCHES[step % len(_BATCHES)]
        for emb, opt, lib in ((t, topt, torch), (e, eopt, ember)):
            opt.zero_grad()
            _loss(emb, index, lib).backward()
            opt.step()
        np.testing.assert_allclose(
            e.weight.detach().numpy(),
            t.weight.detach().numpy(),
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"step {step}",
        )
    return topt, eopt


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1},
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.1, "maximize": True},
    ],
)
def test_sparse_adam_follows_torch(options):
    topt, eopt = _trajectory(
        lambda p: torch.optim.SparseAdam(p, **options),
        lambda p: ember.optim.SparseAdam(p, **options),
        padding_idx=2,
    )
    ts, es = topt.state_dict()["state"][0], eopt.state_dict()["state"][0]
    assert es["step"] == ts["step"] == 4
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(es[key].numpy(), ts[key].numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "name,options",
    [
        ("SGD", {"lr": 0.1}),
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("Adagrad", {"lr": 0.1}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "maximize": True}),
    ],
)
def test_sgd_and_adagrad_take_sparse_gradients_as_torch(name, options):
    _trajectory(
        lambda p: getattr(torch.optim, name)(p, **options),
        lambda p: getattr(ember.optim, name)(p, **options),
    )


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("Adam", {}, "Adam does not support sparse gradients, please consider SparseAdam"),
        ("AdamW", {}, "AdamW does not support sparse gradients, please consider SparseAdam"),
        ("RMSprop", {}, "RMSprop does not support sparse gradients"),
        ("Adadelta", {}, "Adadelta does not support sparse gradients"),
        ("Adamax", {}, "Adamax does not support sparse gradients"),
        ("NAdam", {}, "NAdam does not support sparse gradients"),
        ("RAdam", {}, "RAdam does not support sparse gradients"),
        ("Adagrad", {"weight_decay": 0.1}, "weight_decay option is not compatible"),
        ("SGD", {"lr": 0.1, "weight_decay": 0.1}, "weight_decay option is not compatible"),
    ],
)
def test_optimizers_refuse_sparse_gradients_as_torch(name, options, message):
    t, e = _pair()
    _loss(t, _BATCHES[0], torch).backward()
    _loss(e, _BATCHES[0], ember).backward()
    with pytest.raises(RuntimeError):
        getattr(torch.optim, name)(t.parameters(), **options).step()
    before = e.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match=message):
        getattr(ember.optim, name)(e.parameters(), **options).step()
    np.testing.assert_array_equal(e.weight.detach().numpy(), before)  # nothing half-done


def test_sparse_adam_refuses_dense_gradients_as_torch():
    t, e = torch.nn.Linear(2, 2), enn.Linear(2, 2)
    t(torch.ones(2)).sum().backward()
    e(ember.ones(2)).sum().backward()
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        torch.optim.SparseAdam(t.parameters()).step()
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        ember.optim.SparseAdam(e.parameters()).step()


def test_scale_grad_by_freq_with_sparse_is_refused_as_torch():
    t = torch.nn.Embedding(5, 2, sparse=True, scale_grad_by_freq=True)
    e = enn.Embedding(5, 2, sparse=True, scale_grad_by_freq=True)
    with pytest.raises(RuntimeError):
        t(torch.tensor([1, 1])).sum().backward()
    with pytest.raises(RuntimeError, match="scale_grad_by_freq is not supported with sparse"):
        e(ember.tensor([1, 1])).sum().backward()


def test_zero_grad_clipping_and_repr_of_sparse_gradients():
    t, e = _pair()
    assert repr(e) == repr(t) == "Embedding(7, 3, sparse=True)"
    _loss(e, _BATCHES[0], ember).backward()
    dense = e.weight.grad.to_dense().numpy()
    total = ember.nn.utils.clip_grad_norm_(e.parameters(), 1.0)
    np.testing.assert_allclose(total.item(), np.linalg.norm(dense), rtol=1e-6)
    np.testing.assert_allclose(
        e.weight.grad.to_dense().numpy(), dense / (np.linalg.norm(dense) + 1e-6), rtol=1e-5
    )
    ember.optim.SparseAdam(e.parameters()).zero_grad(set_to_none=False)
    assert e.weight.grad.is_sparse and e.weight.grad._nnz() == 0
    with ember.no_grad():  # no gradient wanted: the dense lookup
        out = e(ember.tensor([1, 2]))
    np.testing.assert_allclose(out.numpy(), _WEIGHT[[1, 2]])
