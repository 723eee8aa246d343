"""torch's signatures and refusals of F.pad and F.scaled_dot_product_attention, in tables.

- F.pad with negative pads (cropping) in every mode, forward and gradient against torch
  (Note [Padding modes] in ember/ops/shape.py), and the pads torch refuses;
- scaled_dot_product_attention with enable_gqa (key/value heads repeated to the query's),
  forward and gradients against torch, and its refusals (heads that do not divide, is_causal
  with attn_mask).
"""

import numpy as np
import pytest

import ember
import ember.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

_RNG = np.random.default_rng(1818)

# (input shape, pad, mode): pads that crop (negative) and pad, in every mode; 3-D, 4-D, 5-D
PADS = [
    ((2, 3, 5), (-1, 2), "constant"),
    ((2, 3, 5, 6), (-1, -2, 1, 1), "constant"),
    ((2, 3, 5, 6), (-2, -2, -1, -1), "constant"),
    ((2, 3, 5), (-3, -2), "constant"),  # an empty output
    ((2, 3, 5), (-1, 2), "reflect"),
    ((2, 3, 5), (2, -1), "reflect"),
    ((2, 3, 5), (-2, 4), "reflect"),
    ((2, 3, 5), (4, -2), "reflect"),
    ((2, 3, 5), (-4, 4), "reflect"),
    ((2, 3, 5), (-5, 1), "reflect"),
    ((2, 3, 5, 6), (-1, 2, 3, -2), "reflect"),
    ((1, 2, 4, 5, 6), (1, -2, -1, 2, 2, -3), "reflect"),
    ((2, 3, 5), (-1, 2), "replicate"),
    ((2, 3, 5), (3, -1), "replicate"),
    ((2, 3, 5), (-4, 4), "replicate"),
    ((2, 3, 5), (7, -2), "replicate"),
    ((2, 3, 5, 6), (-2, 3, 1, -3), "replicate"),
    ((3, 5, 6), (-2, 3, 1, -3), "replicate"),  # unbatched 2-D padding
    ((1, 2, 4, 5, 6), (-1, 1, 2, -2, -1, 3), "replicate"),
    ((2, 3, 5), (-1, 2), "circular"),
    ((2, 3, 5), (2, -1), "circular"),
    ((2, 3, 5), (3, -1), "circular"),
    ((2, 3, 5), (-2, 3), "circular"),
    ((2, 3, 5), (5, 0), "circular"),
    ((2, 3, 5), (0, -5), "circular"),
    ((2, 3, 5, 6), (-1, 2, 2, -1), "circular"),
    ((1, 2, 4, 5, 6), (1, -1, -2, 2, 3, -1), "circular"),
]


@pytest.mark.parametrize("shape,pad,mode", PADS, ids=[f"{m}-{len(s)}d-{p}" for s, p, m in PADS])
def test_pad_crops_and_pads_as_torch(shape, pad, mode):
    x = _RNG.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    ex = ember.tensor(x, requires_grad=True)
    want = TF.pad(tx, pad, mode=mode)
    got = F.pad(ex, pad, mode=mode)
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=0, atol=0)
    if want.numel():
        g = _RNG.standard_normal(tuple(want.shape))
        want.backward(torch.tensor(g))
        got.backward(ember.tensor(g))
        np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# (input shape, pad, mode, torch's error class, a piece of ember's message)
PAD_REFUSALS = [
    ((2, 3, 5), (5, 0), "reflect", RuntimeError, "must be smaller than the input size 5"),
    ((2, 3, 5), (-1, 5), "reflect", RuntimeError, "must be smaller than the input size 5"),
    ((2, 3, 5), (-3, -2), "reflect", RuntimeError, "too small"),
    ((2, 3, 5), (-5, 0), "replicate", RuntimeError, "too small"),
    ((2, 3, 5), (6, 0), "circular", RuntimeError, "wraps around more than once"),
    ((2, 3, 5), (0, 7), "circular", RuntimeError, "wraps around more than once"),
    ((2, 3, 5), (-3, -3), "circular", RuntimeError, "output size would be -1"),
    ((2, 3, 5), (-4, -4), "constant", RuntimeError, "negative size"),
    ((2, 3, 5, 6), (1, 1), "reflect", NotImplementedError, "padding size 2 is not supported"),
    ((2, 3, 5), (1, 1, 1, 1, 1, 1), "replicate", NotImplementedError, "not supported"),
    ((5,), (1, 1), "circular", NotImplementedError, "not supported for a 1-D input"),
]


@pytest.mark.parametrize(
    "shape,pad,mode,error,message",
    PAD_REFUSALS,
    ids=[f"{m}-{len(s)}d-{p}" for s, p, m, _, _ in PAD_REFUSALS],
)
def test_pad_refuses_what_torch_refuses(shape, pad, mode, error, message):
    x = np.zeros(shape)
    with pytest.raises(error):
        TF.pad(torch.tensor(x), pad, mode=mode)
    with pytest.raises(error, match=message):
        F.pad(ember.tensor(x), pad, mode=mode)


# (query, key, value shapes, options): grouped-query attention and its neighbours
ATTENTION = [
    ((2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 4), {"enable_gqa": True}),
    ((2, 6, 5, 8), (2, 3, 7, 8), (2, 2, 7, 4), {"enable_gqa": True}),  # k and v differ
    ((2, 4, 5, 8), (2, 1, 7, 8), (2, 1, 7, 8), {"enable_gqa": True, "is_causal": True}),
    ((4, 5, 8), (2, 7, 8), (2, 7, 8), {"enable_gqa": True, "scale": 0.3}),  # unbatched
    ((2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 8), {"enable_gqa": True}),  # equal heads
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8), {"enable_gqa": True, "attn_mask": "bool"}),
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8), {"enable_gqa": True, "attn_mask": "float"}),
]


def _mask(kind, q, k, lib):
    shape = (q[-2], k[-2])
    if kind == "bool":
        m = _RNG.random(shape) > 0.3
        m[:, 0] = True  # every query sees a key: no all -inf rows
        return lib.tensor(m)
    return lib.tensor(_RNG.standard_normal(shape))


@pytest.mark.parametrize("q,k,v,options", ATTENTION)
def test_grouped_query_attention_as_torch(q, k, v, options):
    arrays = [_RNG.standard_normal(s) for s in (q, k, v)]
    options = dict(options)
    mask = options.pop("attn_mask", None)
    tmask = emask = None
    if mask is not None:
        tmask = _mask(mask, q, k, torch)
        emask = ember.tensor(tmask.numpy())
    tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    ein = [ember.tensor(a, requires_grad=True) for a in arrays]
    want = TF.scaled_dot_product_attention(*tin, attn_mask=tmask, **options)
    got = F.scaled_dot_product_attention(*ein, attn_mask=emask, **options)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = _RNG.standard_normal(tuple(want.shape))
    want.backward(torch.tensor(g))
    got.backward(ember.tensor(g))
    for e, t, name in zip(ein, tin, "qkv"):
        np.testing.assert_allclose(
            e.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"d{name}"
        )


# (query, key, value shapes, options, torch's error class, a piece of ember's message)
ATTENTION_REFUSALS = [
    ((2, 6, 5, 8), (2, 4, 7, 8), (2, 4, 7, 4), {"enable_gqa": True}, RuntimeError, "divide"),
    ((2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 4), {}, RuntimeError, "broadcast"),  # no gqa
    (  # torch's fused CPU kernel (taken when value's head size equals the query's) skips the
        # check that its documentation states and its math path makes; ember always refuses
        (2, 4, 5, 8),
        (2, 4, 7, 8),
        (2, 4, 7, 4),
        {"is_causal": True, "attn_mask": "bool"},
        RuntimeError,
        "attn_mask should not be set when is_causal=True",
    ),
    ((5, 8), (7, 8), (7, 8), {"enable_gqa": True}, IndexError, "heads dim"),
]


@pytest.mark.parametrize("q,k,v,options,error,message", ATTENTION_REFUSALS)
def test_attention_refuses_what_torch_refuses(q, k, v, options, error, message):
    options = dict(options)
    mask = options.pop("attn_mask", None)
    arrays = [np.zeros(s) for s in (q, k, v)]
    tmask = _mask(mask, q, k, torch) if mask else None
    with pytest.raises(error):
        TF.scaled_dot_product_attention(
            *[torch.tensor(a) for a in arrays], attn_mask=tmask, **options
        )
    emask = ember.tensor(tmask.numpy()) if mask else None
    with pytest.raises(error, match=message):
        F.scaled_dot_product_attention(
            *[ember.tensor(a) for a in arrays], attn_mask=emask, **options
        )
