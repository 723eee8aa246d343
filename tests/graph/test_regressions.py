"""Regressions found by the Trainer work: random ops in compiled graphs, gradient accumulation
across compiled calls, and the dtype of where() with Python-number branches."""

import numpy as np

import ember
import ember.nn as nn


def test_dropout_compiles_and_draws_new_masks_each_call():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    x = ember.randn(16, 4)

    @ember.compile
    def step(x):
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    grads = []
    for _ in range(3):
        for p in model.parameters():
            p.grad = None
        step(x)
        grads.append(model[0].weight.grad.numpy().copy())
    assert not np.allclose(grads[0], grads[1]) or not np.allclose(grads[1], grads[2])


def test_compiled_gradients_accumulate_like_eager():
    layer = nn.Linear(3, 1)
    x = ember.randn(5, 3)

    @ember.compile
    def step(x):
        loss = layer(x).sum()
        loss.backward()
        return loss

    step(x)
    once = layer.weight.grad.numpy().copy()
    layer.zero_grad()
    step(x)
    step(x)
    np.testing.assert_allclose(layer.weight.grad.numpy(), 2 * once, rtol=1e-6)


def test_where_with_number_branches_has_the_rule_dtype():
    c = ember.tensor([True, False])
    assert ember.where(c, 1.5, -0.5).dtype is ember.float32
    assert ember.where(c, 1, 0).dtype is ember.int64
    compiled = ember.compile(lambda c: ember.where(c, 1.5, -0.5))
    assert compiled(c).dtype is ember.float32
