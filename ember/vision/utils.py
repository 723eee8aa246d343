"""torchvision.utils' `make_grid` and `save_image`: a batch of images tiled into one picture,
and that picture written as PNG/JPEG (Pillow, loaded on first use; the file written atomically).

The arithmetic is torchvision's, step for step: single-channel images become three channels,
`normalize` clamps to `value_range` (default: the tensor's min and max, or each image's with
`scale_each`) and scales to [0, 1], the grid is `nrow` images wide with `padding` pixels of
`pad_value` around each, and saving maps x to uint8 as clamp(x * 255 + 0.5, 0, 255).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ember.tensor import Tensor, from_numpy

__all__ = ["make_grid", "save_image"]


def _as_batch(images) -> np.ndarray:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("make_grid: expected a tensor or a non-empty list of tensors")
        arrays = [_numpy(t) for t in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"make_grid: the images' shapes differ: {sorted(shapes)}")
        array = np.stack(arrays)
    else:
        array = _numpy(images)
    if array.ndim == 2:  # a single image (H, W)
        array = array[None]
    if array.ndim == 3:  # a single image (C, H, W)
        if array.shape[0] == 1:
            array = np.concatenate([array] * 3, 0)
        array = array[None]
    if array.ndim != 4:
        raise ValueError(
            f"make_grid: expected (B, C, H, W), (C, H, W) or (H, W) images, got shape {array.shape}"
        )
    if array.shape[1] == 1:
        array = np.concatenate([array] * 3, 1)
    return array


def _numpy(tensor) -> np.ndarray:
    if isinstance(tensor, Tensor):
        return tensor.detach().numpy()
    return np.asarray(tensor)


def _normalize(array: np.ndarray, value_range) -> np.ndarray:
    low, high = value_range if value_range is not None else (array.min(), array.max())
    array = np.clip(array, low, high)
    return (array - low) / max(float(high) - float(low), 1e-5)


def make_grid(
    tensor,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale_each: bool = False,
    pad_value: float = 0.0,
) -> Tensor:
    """Tile a batch of images (B, C, H, W) into one (C, H', W') image, `nrow` per row.

    Example:
        >>> import ember
        >>> from ember.vision.utils import make_grid
        >>> tuple(make_grid(ember.ones(5, 3, 4, 4), nrow=2, padding=1).shape)
        (3, 16, 11)
    """
    if value_range is not None and len(value_range) != 2:
        raise ValueError(f"make_grid: value_range must be (low, high), got {value_range!r}")
    array = _as_batch(tensor)
    if not np.issubdtype(array.dtype, np.floating) and normalize:
        array = array.astype(np.float32)
    if normalize:
        if scale_each:
            array = np.stack([_normalize(image, value_range) for image in array])
        else:
            array = _normalize(array, value_range)
    if array.shape[0] == 1:
        return from_numpy(np.ascontiguousarray(array[0]))
    count, channels, height, width = array.shape
    columns = min(nrow, count)
    rows = int(math.ceil(count / columns))
    cell_h, cell_w = height + padding, width + padding
    grid = np.full(
        (channels, cell_h * rows + padding, cell_w * columns + padding), pad_value, array.dtype
    )
    for k in range(count):
        y, x = divmod(k, columns)
        top, left = y * cell_h + padding, x * cell_w + padding
        grid[:, top : top + height, left : left + width] = array[k]
    return from_numpy(grid)


def save_image(tensor, fp, format: str | None = None, **kwargs) -> None:
    """Save a tensor (or a batch, tiled by `make_grid` with `kwargs`) as an image file.

    Values are taken to lie in [0, 1] (pass `normalize=True` otherwise); the format comes
    from `format` or the file name's extension. A path is written atomically.
    """
    grid = _numpy(make_grid(tensor, **kwargs))
    pixels = np.clip(grid * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    if isinstance(fp, (str, os.PathLike)):
        from ember.io.atomic import atomic_write

        if format is None:
            extension = os.path.splitext(os.fspath(fp))[1].lower().lstrip(".")
            known = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF"}
            if extension not in known:
                raise ValueError(
                    f"save_image: cannot tell the format of {os.fspath(fp)!r} from its "
                    f"extension; pass format='PNG' or 'JPEG'"
                )
            format = known[extension]
        with atomic_write(fp) as handle:
            image.save(handle, format=format)
    else:
        image.save(fp, format=format)
