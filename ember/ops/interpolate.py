"""Resampling: PyTorch's F.interpolate (nearest, nearest-exact, linear, bilinear, bicubic,
trilinear, area), a composition of primitives.

Note [Separable resampling]: every mode but area is separable: along each spatial dim, the
output is a fixed linear map of the input, an (out, in) matrix built here in NumPy from
PyTorch's source-index rules (align_corners, scale_factor, the cubic kernel with A = -0.75 and
clamped taps). Applying one matrix per dim with matmul gives the forward, and matmul's VJP the
gradient (the scatter-add of PyTorch's backward kernels), in any dtype and on any backend.
"""

from __future__ import annotations

import math

import numpy as np

from ember._util.errors import ShapeError

_MODES_BY_RANK = {
    "linear": 1,
    "bilinear": 2,
    "bicubic": 2,
    "trilinear": 3,
}


def _source_scale(n_in, n_out, align_corners, scale):
    """PyTorch's area_pixel_compute_scale."""
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else n_in / n_out


def _nearest_matrix(n_in, n_out, scale, exact):
    s = 1.0 / scale if scale is not None and scale > 0 else n_in / n_out
    dst = np.arange(n_out, dtype=np.float64)
    src = np.floor((dst + 0.5) * s) if exact else np.floor(dst * np.float32(s))
    idx = np.minimum(src.astype(np.int64), n_in - 1)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), idx] = 1.0
    return m


def _linear_matrix(n_in, n_out, align_corners, scale):
    s = _source_scale(n_in, n_out, align_corners, scale)
    dst = np.arange(n_out, dtype=np.float64)
    src = dst * s if align_corners else np.maximum((dst + 0.5) * s - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def _cubic_weights(t, a=-0.75):
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _cubic_matrix(n_in, n_out, align_corners, scale):
    s = _source_scale(n_in, n_out, align_corners, scale)
    dst = np.arange(n_out, dtype=np.float64)
    src = dst * s if align_corners else (dst + 0.5) * s - 0.5  # no clamp for cubic
    i = np.floor(src).astype(np.int64)
    t = src - i
    m = np.zeros((n_out, n_in))
    for k, w in zip(range(-1, 3), _cubic_weights(t)):
        np.add.at(m, (np.arange(n_out), np.clip(i + k, 0, n_in - 1)), w)
    return m


def _apply_along(x, dim, matrix):
    """x contracted with `matrix` (out, in) along `dim`."""
    m = x.new_tensor(matrix.astype(np.dtype(x.dtype.numpy)))
    moved = x.movedim(dim, -1)
    return (moved @ m.mT).movedim(-1, dim)


def interpolate(
    input,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
):
    """Resize (N, C, *spatial) to `size` or by `scale_factor` (PyTorch's F.interpolate)."""
    from ember.ops import conv as C

    spatial = input.ndim - 2
    if spatial < 1 or spatial > 3:
        raise ShapeError(
            f"interpolate: expected a 3-D, 4-D or 5-D input (N, C, *spatial), got "
            f"{tuple(input.shape)}"
        )
    modes = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
    if mode not in modes:
        raise ValueError(f"interpolate: mode must be one of {modes}, got {mode!r}")
    if mode in _MODES_BY_RANK and _MODES_BY_RANK[mode] != spatial:
        raise NotImplementedError(
            f"interpolate: mode {mode!r} needs a {_MODES_BY_RANK[mode] + 2}-D input, got "
            f"{input.ndim}-D {tuple(input.shape)}"
        )
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if align_corners is not None and mode not in ("linear", "bilinear", "bicubic", "trilinear"):
        raise ValueError(
            "interpolate: align_corners option can only be set with the interpolating modes: "
            "linear | bilinear | bicubic | trilinear"
        )
    align_corners = bool(align_corners)
    in_sizes = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: exactly one of size or scale_factor must be given")
    if size is not None:
        sizes = (size,) * spatial if isinstance(size, int) else tuple(int(s) for s in size)
        if len(sizes) != spatial:
            raise ValueError(
                f"interpolate: size {size} must have {spatial} entries for input "
                f"{tuple(input.shape)}"
            )
        scales = (None,) * spatial
    else:
        scales = (
            (float(scale_factor),) * spatial
            if isinstance(scale_factor, (int, float))
            else tuple(float(s) for s in scale_factor)
        )
        if len(scales) != spatial:
            raise ValueError(
                f"interpolate: scale_factor {scale_factor} must have {spatial} entries for "
                f"input {tuple(input.shape)}"
            )
        sizes = tuple(int(math.floor(n * s)) for n, s in zip(in_sizes, scales))
        if recompute_scale_factor:
            scales = (None,) * spatial
    if any(s <= 0 for s in sizes):
        raise ValueError(f"interpolate: output size {sizes} must be positive")
    if mode == "area":
        pool = {1: C.adaptive_avg_pool1d, 2: C.adaptive_avg_pool2d, 3: C.adaptive_avg_pool3d}
        return pool[spatial](input, sizes)
    out = input
    for k, (n_in, n_out, scale) in enumerate(zip(in_sizes, sizes, scales)):
        if mode in ("nearest", "nearest-exact"):
            matrix = _nearest_matrix(n_in, n_out, scale, mode == "nearest-exact")
        elif mode == "bicubic":
            matrix = _cubic_matrix(n_in, n_out, align_corners, scale)
        else:
            matrix = _linear_matrix(n_in, n_out, align_corners, scale)
        out = _apply_along(out, 2 + k, matrix)
    return out


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)
