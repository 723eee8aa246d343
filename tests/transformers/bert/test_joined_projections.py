"""Joined query/key/value projections in inference (Note [Joined projections] in
ember/autograd/packed.py): one product by the joined weights gives the three products' result
within float rounding, the joined copy never outlives a write to any of the three Parameters
(whichever way the write comes), short inputs pack the joined weight once, and the paths that
record gradients, ask for the probabilities or trace a graph keep the three products."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import ember
from ember import transformers as et
from ember.autograd import packed
from ember.backend import mkl_packed
from ember.transformers import encoder_heads
from ember.transformers.bert.modeling_bert import BertSelfAttention


def _attention(hidden=64, heads=4):
    ember.manual_seed(0)
    config = et.BertConfig(hidden_size=hidden, num_attention_heads=heads, vocab_size=99)
    return BertSelfAttention(config).eval()


def _mask(batch, length):
    mask = np.zeros((batch, 1, 1, length), np.float32)
    mask[batch // 2 :, ..., length * 3 // 4 :] = np.finfo(np.float32).min
    return ember.from_numpy(mask)


def _run(module, x, mask):
    with ember.no_grad():
        return module(x, mask)[0].array.copy()


def _three_products(module, x, mask, monkeypatch):
    """The output through the three separate products (the path before joining)."""
    with monkeypatch.context() as patch:
        patch.setattr(encoder_heads, "_joined_heads", lambda *args: None)
        return _run(module, x, mask)


def _joined_of(module):
    """The live joined entries made of the module's query weight."""
    keys = (id(module.query.weight), id(module.query.bias))
    return [entry for ids, entry in packed._joined.items() if ids[0] in keys]


def _assert_close(got, expected):
    # the joined product sums each element's dot product as one of the three does, but MKL may
    # block a wider product differently: equal within float32 rounding of the projections
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("shape", [(1, 16), (2, 7), (4, 40)])
def test_joined_product_equals_the_three_products(monkeypatch, shape):
    module = _attention()
    x = ember.randn(*shape, 64)
    mask = _mask(*shape)
    joined = _run(module, x, mask)
    assert len(_joined_of(module)) == 2  # the weights and the biases
    three = _three_products(module, x, mask, monkeypatch)
    _assert_close(joined, three)
    err = np.abs(joined - three).max()
    print(f"{shape}: max abs difference joined vs three products {err:.2e}")
    np.testing.assert_array_equal(_run(module, x, mask), joined)  # the cached copy: same bits


def _write_optimizer(module):
    for p in module.parameters():
        p.grad = ember.ones_like(p)
    ember.optim.AdamW(module.parameters(), lr=0.5).step()


def _write_load_state_dict(module):
    module.load_state_dict({k: v * 2 for k, v in module.state_dict().items()})


def _write_load_state_dict_assign(module):
    module.load_state_dict({k: v * -1 for k, v in module.state_dict().items()}, assign=True)


def _write_copy(module):
    with ember.no_grad():
        module.key.weight.copy_(ember.randn(*module.key.weight.shape))


def _write_inplace(module):
    with ember.no_grad():
        module.value.bias.add_(3.0)


def _write_setitem_of_a_view(module):
    with ember.no_grad():
        module.query.weight.T[3] = 7.0


def _write_detached(module):
    module.key.weight.detach().mul_(-1.5)


def _write_numpy(module):
    module.value.weight.detach().numpy()[:2] = 5.0


def _write_numpy_taken_before(module, held=[]):  # noqa: B006  (filled by the test)
    held[0][:, :3] = -2.0


def _write_data_rebound(module):
    module.query.weight.data = ember.randn(*module.query.weight.shape)


def _write_array_rebound(module):
    module.value.bias.array = np.ascontiguousarray(module.value.bias.array[::-1])


def _write_compiled_step(module):
    opt = ember.optim.SGD(module.parameters(), lr=0.5)

    @ember.compile
    def step(x):
        opt.zero_grad()
        loss = module(x)[0].square().mean()
        loss.backward()
        opt.step()
        return loss

    step(ember.randn(2, 5, 64))


def _write_init(module):
    ember.nn.init.normal_(module.value.weight)


def _write_module_to(module):
    module.to(ember.float64)


WRITES = {
    "optimizer step": _write_optimizer,
    "load_state_dict": _write_load_state_dict,
    "load_state_dict(assign=True)": _write_load_state_dict_assign,
    "copy_": _write_copy,
    "in-place op on a bias": _write_inplace,
    "setitem on a view": _write_setitem_of_a_view,
    "in-place on detach()": _write_detached,
    ".numpy() write": _write_numpy,
    ".numpy() taken before joining": _write_numpy_taken_before,
    ".data rebound": _write_data_rebound,
    ".array rebound": _write_array_rebound,
    "compiled training step": _write_compiled_step,
    "nn.init": _write_init,
    "module.to(float64)": _write_module_to,
}


@pytest.mark.parametrize("write", list(WRITES))
def test_no_stale_joined_weight_after_a_write(monkeypatch, write):
    module = _attention()
    x = ember.randn(2, 9, 64)
    mask = _mask(2, 9)
    if write == ".numpy() taken before joining":
        _write_numpy_taken_before.__defaults__[0][:] = [module.value.weight.detach().numpy()]
    _run(module, x, mask)
    _run(module, x, mask)
    WRITES[write](module)
    if write == "module.to(float64)":
        x, mask = x.double(), mask.double()
    for _ in range(2):  # rebuilt (where allowed) on the first call, cached on the second
        _assert_close(_run(module, x, mask), _three_products(module, x, mask, monkeypatch))


def test_memory_handed_to_user_code_is_never_joined(monkeypatch):
    module = _attention()
    x, mask = ember.randn(1, 16, 64), _mask(1, 16)
    view = module.key.weight.detach()[1:].numpy()
    _run(module, x, mask)
    assert [e for e in _joined_of(module) if e.tensor.ndim == 2] == []  # the biases may join
    view[0] = 1.0
    _assert_close(_run(module, x, mask), _three_products(module, x, mask, monkeypatch))


def test_training_probabilities_and_tracing_keep_the_three_products():
    module = _attention()
    x, mask = ember.randn(2, 9, 64), _mask(2, 9)
    out = module(x, mask)[0]  # grad mode on: recorded through the three Parameters
    out.square().sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    assert _joined_of(module) == []
    with ember.no_grad():
        module(x, mask, output_attentions=True)
    assert _joined_of(module) == []
    traced = ember.compile(lambda t: module(t, mask)[0])
    with ember.no_grad():
        got = traced(x).array
    assert _joined_of(module) == []
    np.testing.assert_allclose(got, _run(module, x, mask), rtol=1e-5, atol=1e-6)


def test_projections_of_other_kinds_keep_the_three_products():
    module = _attention()
    x, mask = ember.randn(1, 16, 64), _mask(1, 16)
    module.value = ember.nn.Linear(64, 64, bias=False)  # a bias missing from one of three
    _run(module, x, mask)
    assert _joined_of(module) == []
    module.value = ember.nn.Sequential(ember.nn.Linear(64, 64))  # not a plain Linear
    _run(module, x, mask)
    assert _joined_of(module) == []


@pytest.mark.skipif(not mkl_packed.available(), reason="MKL not installed or packing off")
def test_short_inputs_pack_the_joined_weight_once():
    module = _attention(hidden=384, heads=12)  # MiniLM's self-attention
    x, mask = ember.randn(1, 16, 384), _mask(1, 16)
    first = _run(module, x, mask)
    second = _run(module, x, mask)
    np.testing.assert_array_equal(first, second)
    (weights,) = [e for e in _joined_of(module) if e.tensor.ndim == 2]
    entry = packed._entries[id(weights.tensor)]
    assert len([p for p in entry.packs.values() if p != packed._REFUSED]) == 1
    for linear in (module.query, module.key, module.value):  # no pack of the three parts
        assert id(linear.weight) not in packed._entries


def test_joined_copies_die_with_their_parameters():
    module = _attention()
    _run(module, ember.randn(1, 16, 64), _mask(1, 16))
    mine = (id(module.query.weight), id(module.query.bias))
    keys = [ids for ids in packed._joined if ids[0] in mine]
    assert len(keys) == 2
    del module
    gc.collect()
    assert not any(k in packed._joined for k in keys)


def test_parts_recording_gradients_are_never_joined():
    module = _attention()
    parts = (module.query.weight, module.key.weight, module.value.weight)
    with ember.no_grad():
        joined = packed.joined_rows(parts)
    np.testing.assert_array_equal(joined.array, np.concatenate([p.array for p in parts]))
    assert packed.joined_rows(parts) is None  # grad mode on, the parts require grad
    module.requires_grad_(False)
    assert packed.joined_rows(parts) is joined  # nothing records gradients: the cached copy
