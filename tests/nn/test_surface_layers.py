"""Layers added for PyTorch programs that ported badly (issue 18) where the layer-parity table
cannot check them: random channel dropout (statistics and structure), shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn


@pytest.mark.parametrize(
    "cls,shape",
    [("Dropout1d", (8, 50, 6)), ("Dropout2d", (8, 50, 3, 4)), ("Dropout3d", (50, 2, 3, 2))],
)
def test_channel_dropout_zeroes_whole_channels_and_rescales(cls, shape):
    ember.manual_seed(0)
    layer = getattr(nn, cls)(0.3)
    x = ember.ones(*shape)
    y = layer(x).numpy()
    spatial = {"Dropout1d": 1, "Dropout2d": 2, "Dropout3d": 3}[cls]
    per_channel = y.reshape(y.shape[: y.ndim - spatial] + (-1,))
    # each channel is all zeros or all 1 / (1 - p)
    assert np.all((per_channel.min(-1) == per_channel.max(-1)))
    values = np.unique(per_channel)
    assert np.all((values == 0) | np.isclose(values, 1 / 0.7, rtol=1e-6))
    dropped = (per_channel[..., 0] == 0).mean()
    assert 0.15 < dropped < 0.45
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


def test_channel_dropout_rejects_wrong_rank():
    with pytest.raises(ValueError, match="Dropout2d: expected a 3-D"):
        nn.Dropout2d(0.5)(ember.ones(3))  # 2-D and 3-D go as in torch (test_dropout2d_ranks)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout1d(1.5)
