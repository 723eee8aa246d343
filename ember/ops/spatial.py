"""Composites over (N, C, *spatial) inputs that PyTorch's F has and ember builds from its pooling,
normalisation and movement ops: power-average pooling (`lp_pool1d/2d/3d`), sub-pixel
rearrangement (`pixel_shuffle`, `pixel_unshuffle`), `instance_norm` and
`local_response_norm`.

Each is PyTorch's own formula written with ember ops (L2), so gradients, graph tracing and ONNX
export come from the primitives underneath; the op table checks each against PyTorch.
"""

from __future__ import annotations

import math

from ember._util.errors import ShapeError, at_user_line
from ember.ops import conv as C
from ember.ops import elementwise as E
from ember.ops.nn import batch_norm

# ember.instance_norm is not provided: torch.instance_norm takes (weight, bias, running_mean,
# running_var, ...) in another order than F.instance_norm; F's is the one programs call.
from ember.ops.registry import public
from ember.ops.shape import pad

__all__ = [
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "instance_norm",
    "local_response_norm",
]


# --- power-average pooling -------------------------------------------------------------------
def _lp_pool(nd, x, norm_type, kernel_size, stride, ceil_mode):
    """(sum over each window of x^p)^(1/p), as torch: avg pooling of x^p times the window
    size; p = inf is max pooling of |x| (-inf: min). A window whose sum is <= 0 gives 0 (and
    no gradient, through relu), as torch's sign(s) * relu(|s|)."""
    name = f"lp_pool{nd}d"
    avg = (C.avg_pool1d, C.avg_pool2d, C.avg_pool3d)[nd - 1]
    peak = (C.max_pool1d, C.max_pool2d, C.max_pool3d)[nd - 1]
    if isinstance(norm_type, str) or not isinstance(norm_type, (int, float)):
        raise TypeError(at_user_line(f"{name}: norm_type must be a number, got {norm_type!r}"))
    if norm_type == 0:
        raise ValueError(at_user_line(f"{name}: norm_type must be non-zero, got 0"))
    kernel = C._ntuple(kernel_size, nd, "kernel_size", name)
    if stride is not None and not isinstance(stride, int) and len(stride) == 0:
        stride = None
    if norm_type == math.inf:
        return peak(E.abs(x), kernel, stride, 0, 1, ceil_mode)
    if norm_type == -math.inf:
        return -peak(-E.abs(x), kernel, stride, 0, 1, ceil_mode)
    total = avg(x**norm_type, kernel, stride, 0, ceil_mode)
    window = math.prod(kernel)
    return (E.sign(total) * E.relu(E.abs(total)) * window) ** (1.0 / norm_type)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, L) or (C, L): each window's
    (sum x^p)^(1/p), as torch's F.lp_pool1d.

    Example:
        >>> import ember
        >>> x = ember.tensor([[[3.0, 4.0, 1.0, 0.0]]])
        >>> lp_pool1d(x, 2, 2).tolist()
        [[[5.0, 1.0]]]
    """
    return _lp_pool(1, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, H, W) or (C, H, W), as torch's F.lp_pool2d."""
    return _lp_pool(2, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, D, H, W) or (C, D, H, W), as torch's F.lp_pool3d."""
    return _lp_pool(3, input, norm_type, kernel_size, stride, ceil_mode)


# --- sub-pixel rearrangement -------------------------------------------------------------------
def _factor(op, value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(at_user_line(f"{op}: {what} must be an int, got {value!r}"))
    if value <= 0:
        raise ValueError(at_user_line(f"{op} expects a positive {what}, but got {value}"))
    return value


@public("pixel_shuffle", method=False)
def pixel_shuffle(input, upscale_factor):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r): channel blocks become r x r pixel blocks, as
    torch's pixel_shuffle (the sub-pixel convolution upsampler).

    Example:
        >>> import ember
        >>> x = ember.arange(8.0).reshape(1, 4, 1, 2)
        >>> pixel_shuffle(x, 2).tolist()
        [[[[0.0, 2.0, 1.0, 3.0], [4.0, 6.0, 5.0, 7.0]]]]
    """
    r = _factor("pixel_shuffle", upscale_factor, "upscale_factor")
    if input.ndim < 3:
        raise ShapeError(
            f"pixel_shuffle expects input to have at least 3 dimensions, but got input with "
            f"{input.ndim} dimension(s) (shape {tuple(input.shape)})"
        )
    *lead, c, h, w = tuple(input.shape)
    if c % (r * r):
        raise ShapeError(
            f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the "
            f"square of upscale_factor, but input.size(-3)={c} is not divisible by {r * r}"
        )
    k = len(lead)
    out = input.reshape(*lead, c // (r * r), r, r, h, w)
    out = out.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return out.reshape(*lead, c // (r * r), h * r, w * r)


@public("pixel_unshuffle", method=False)
def pixel_unshuffle(input, downscale_factor):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W), the inverse of pixel_shuffle, as torch's.

    Example:
        >>> import ember
        >>> x = ember.arange(8.0).reshape(1, 1, 2, 4)
        >>> pixel_unshuffle(x, 2).reshape(-1).tolist()
        [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    """
    r = _factor("pixel_unshuffle", downscale_factor, "downscale_factor")
    if input.ndim < 3:
        raise ShapeError(
            f"pixel_unshuffle expects input to have at least 3 dimensions, but got input "
            f"with {input.ndim} dimension(s) (shape {tuple(input.shape)})"
        )
    *lead, c, h, w = tuple(input.shape)
    for name, size, dim in (("height", h, -2), ("width", w, -1)):
        if size % r:
            raise ShapeError(
                f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                f"input.size({dim})={size} is not divisible by {r}"
            )
    k = len(lead)
    out = input.reshape(*lead, c, h // r, r, w // r, r)
    out = out.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return out.reshape(*lead, c * r * r, h // r, w // r)


# --- normalisation -----------------------------------------------------------------------------
# No ember.instance_norm: torch.instance_norm takes (weight, bias, running_mean, running_var,
# ...) in another order than F.instance_norm; F's is the one programs call.
def instance_norm(
    input,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """Normalise each (sample, channel) plane of (N, C, *spatial) over its spatial dims, as
    torch's F.instance_norm, then scale and shift per channel by `weight` and `bias`.

    With `use_input_stats` the plane's own mean and (biased) variance are used, and given
    running statistics are updated in place (outside autograd) with the batch average of the
    planes' mean and unbiased variance, as torch's; without it the running statistics
    normalise.

    Example:
        >>> import ember
        >>> x = ember.tensor([[[1.0, 3.0], [2.0, 2.0]]])
        >>> [round(v, 4) for v in instance_norm(x).reshape(-1).tolist()]  # plane 2: no spread
        [-1.0, 1.0, 0.0, 0.0]
    """
    if input.ndim < 2:
        raise ShapeError(
            f"instance_norm: expected an input (N, C, *spatial), got shape {tuple(input.shape)}"
        )
    n, c = tuple(input.shape[:2])
    spatial = tuple(input.shape[2:])
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ShapeError(
                f"instance_norm: {name} must have shape ({c},) for input {tuple(input.shape)}, "
                f"got {tuple(t.shape)}"
            )
    affine = (1, c) + (1,) * len(spatial)
    if use_input_stats:
        count = math.prod(spatial)
        if count <= 1:
            raise ValueError(
                at_user_line(
                    f"instance_norm: expected more than 1 spatial element when training, got "
                    f"input size {tuple(input.shape)}"
                )
            )
        out = batch_norm(
            input.reshape(1, n * c, *spatial), None, None, None, None, True, momentum, eps
        ).reshape(tuple(input.shape))
        if running_mean is not None or running_var is not None:
            dims = tuple(range(2, input.ndim))
            plain = input.detach()
            # through detached aliases: the buffers' storage is updated outside autograd, as
            # torch's kernel does (a running stat that requires grad is no leaf write)
            if running_mean is not None:
                mean = plain.mean(dims).mean(0)
                running_mean.detach().mul_(1 - momentum).add_(mean * momentum)
            if running_var is not None:
                var = plain.var(dims, correction=1).mean(0)
                running_var.detach().mul_(1 - momentum).add_(var * momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(
                at_user_line(
                    "instance_norm: expected running_mean and running_var when "
                    "use_input_stats=False"
                )
            )
        out = (input - running_mean.reshape(affine)) * E.rsqrt(running_var.reshape(affine) + eps)
    if weight is not None:
        out = out * weight.reshape(affine)
    if bias is not None:
        out = out + bias.reshape(affine)
    return out


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta, over
    (N, C, *spatial), as torch's F.local_response_norm (AlexNet's normalisation).

    Example:
        >>> import ember
        >>> x = ember.ones(1, 3, 1)  # the first channel's window holds a zero pad: mean 0.5
        >>> [round(v, 4) for v in local_response_norm(x, 2, alpha=1.0, k=0.0).reshape(-1).tolist()]
        [1.6818, 1.0, 1.0]
    """
    if input.ndim < 3:
        raise ShapeError(
            f"local_response_norm: expected 3D or higher dimensionality input (N, C, ...), "
            f"got {input.ndim} dimensions (shape {tuple(input.shape)})"
        )
    if input.numel() == 0:
        return input * 1
    square = input * input
    if input.ndim == 3:
        window = pad(square.unsqueeze(1), (0, 0, size // 2, (size - 1) // 2))
        div = C.avg_pool2d(window, (size, 1), stride=1).squeeze(1)
    else:
        shape = tuple(input.shape)
        window = square.reshape(shape[0], 1, shape[1], shape[2], -1)
        window = pad(window, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        div = C.avg_pool3d(window, (size, 1, 1), stride=1).squeeze(1).reshape(shape)
    return input / (div * alpha + k) ** beta
