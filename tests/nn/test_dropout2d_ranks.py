"""Dropout2d on inputs of other ranks, as torch's dropout2d treats them (ported programs such as
pytorch/examples mnist_rnn apply it to (N, C) features): a 2-D input drops single elements, a
3-D one is read as (N, C, L) and drops whole rows of L, 4-D drops (n, c) maps; each rank other
than 4 warns. The mask shapes are compared with torch's on the same input."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn


@pytest.mark.parametrize("shape", [(64, 32), (16, 8, 5), (4, 6, 3, 3)])
def test_dropout2d_ranks_follow_torch(shape):
    torch = pytest.importorskip("torch")
    x = np.ones(shape, np.float32)
    layer = nn.Dropout2d(0.5)
    if len(shape) == 4:
        out = layer(ember.tensor(x)).numpy()
    else:
        with pytest.warns(UserWarning, match="as torch's dropout2d does"):
            out = layer(ember.tensor(x)).numpy()
    with np.testing.suppress_warnings() as sup:
        sup.filter(UserWarning)
        want = torch.nn.Dropout2d(0.5)(torch.ones(shape)).numpy()
    for result in (out, want):
        assert set(np.unique(result)) <= {0.0, 2.0}
        # each (n, c) entry is all kept or all dropped over the trailing axes
        flat = result.reshape(shape[0], shape[1], -1)
        assert np.all((flat == 0).all(axis=2) | (flat != 0).all(axis=2))
        assert 0.2 < (flat[:, :, 0] == 0).mean() < 0.8
    layer.eval()
    np.testing.assert_array_equal(layer(ember.tensor(x)).numpy(), x)


def test_dropout2d_refuses_one_dimension():
    with pytest.raises(Exception, match="Dropout2d"):
        nn.Dropout2d(0.5)(ember.ones(5))
