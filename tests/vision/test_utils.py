"""make_grid and save_image against torchvision's arithmetic (written out here: torchvision
does not install beside the pinned PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.vision.utils import make_grid, save_image


def _torchvision_grid(batch, nrow=8, padding=2, pad_value=0.0):
    """torchvision.utils.make_grid without normalisation, in NumPy."""
    count, channels, height, width = batch.shape
    columns = min(nrow, count)
    rows = -(-count // columns)
    grid = np.full(
        (channels, (height + padding) * rows + padding, (width + padding) * columns + padding),
        pad_value,
        batch.dtype,
    )
    k = 0
    for y in range(rows):
        for x in range(columns):
            if k >= count:
                break
            top, left = y * (height + padding) + padding, x * (width + padding) + padding
            grid[:, top : top + height, left : left + width] = batch[k]
            k += 1
    return grid


@pytest.mark.parametrize(
    "count,nrow,padding,pad_value", [(5, 2, 1, 0.0), (8, 8, 2, 0.5), (3, 4, 0, 1.0), (7, 3, 3, 0)]
)
def test_grid_layout(count, nrow, padding, pad_value):
    batch = np.random.default_rng(0).random((count, 3, 4, 5)).astype(np.float32)
    got = make_grid(ember.from_numpy(batch), nrow=nrow, padding=padding, pad_value=pad_value)
    np.testing.assert_array_equal(got.numpy(), _torchvision_grid(batch, nrow, padding, pad_value))


def test_single_channel_becomes_rgb_and_a_single_image_is_returned_as_is():
    batch = np.random.default_rng(1).random((4, 1, 3, 3)).astype(np.float32)
    grid = make_grid(ember.from_numpy(batch), nrow=2, padding=1).numpy()
    assert grid.shape == (3, 9, 9)
    assert np.array_equal(grid[0], grid[2])
    one = make_grid(ember.from_numpy(batch[:1]), padding=5).numpy()
    assert one.shape == (3, 3, 3) and np.array_equal(one[1], batch[0, 0])
    assert make_grid([ember.from_numpy(b) for b in batch], nrow=4).shape == (3, 7, 22)


def test_normalize_over_the_batch_and_per_image():
    batch = np.stack([np.full((3, 2, 2), 2.0), np.full((3, 2, 2), 4.0)]).astype(np.float32)
    batch[0, 0, 0, 0] = 0.0
    whole = make_grid(ember.from_numpy(batch), normalize=True, padding=0).numpy()
    assert whole.min() == 0.0 and whole.max() == 1.0 and np.isclose(whole[1, 0, 0], 0.5)
    each = make_grid(ember.from_numpy(batch), normalize=True, scale_each=True, padding=0).numpy()
    assert np.isclose(each[1, 0, 0], 1.0)  # image 0 spans [0, 2] on its own
    clamped = make_grid(ember.from_numpy(batch), normalize=True, value_range=(1, 3), padding=0)
    assert np.isclose(clamped.numpy()[0, 0, 0], 0.0) and np.isclose(clamped.numpy()[0, 0, 2], 1.0)


def test_save_image_writes_torchvisions_pixels(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    batch = np.random.default_rng(2).random((2, 3, 4, 4)).astype(np.float32)
    path = tmp_path / "grid.png"
    save_image(ember.from_numpy(batch), path, nrow=2, padding=1)
    expected = np.clip(_torchvision_grid(batch, 2, 1) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(pil.open(path)), expected.transpose(1, 2, 0))
    with pytest.raises(ValueError, match="cannot tell the format"):
        save_image(ember.from_numpy(batch), tmp_path / "grid.unknown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="make_grid: the images' shapes differ"):
        make_grid([ember.ones(3, 2, 2), ember.ones(3, 2, 3)])
    with pytest.raises(ValueError, match=r"make_grid: expected \(B, C, H, W\)"):
        make_grid(ember.ones(1, 1, 1, 1, 1))
