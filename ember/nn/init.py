"""`ember.nn.init`: in-place initialisers with PyTorch's names, formulas and defaults.

Each fills its tensor under `no_grad` and returns it. Fan-in and fan-out follow PyTorch's
`_calculate_fan_in_and_fan_out`: for a weight (out, in, *kernel) fan_in = in * prod(kernel)
and fan_out = out * prod(kernel). Layers call these in `reset_parameters` to reproduce
PyTorch's default initialisation (Linear and Conv: kaiming_uniform_(a=sqrt(5)) on the weight,
uniform(±1/sqrt(fan_in)) on the bias; Embedding: normal(0, 1)).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor

__all__ = [
    "skip_initialization",
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
]


# Note [Skipped initialisation]: a model about to be filled from a checkpoint need not draw
# random weights first (for MiniLM, drawing them was 95% of `from_pretrained`'s time). Inside
# `skip_initialization()` every initialiser below returns its tensor untouched, so modules
# keep the memory `empty` gave them; the loader then initialises only the modules whose
# weights the checkpoint did not hold (PreTrainedModel.from_pretrained). HuggingFace does the
# same (`no_init_weights`). A context variable, so another thread's modules are unaffected.
_SKIPPING = contextvars.ContextVar("ember_skip_initialization", default=False)


@contextlib.contextmanager
def skip_initialization():
    """Leave parameters uninitialised while building modules whose weights will be loaded.

    Example:
        >>> import ember
        >>> with ember.nn.init.skip_initialization():
        ...     layer = ember.nn.Linear(3, 2)  # weight holds whatever `empty` gave
        >>> _ = layer.load_state_dict({"weight": ember.ones(2, 3), "bias": ember.zeros(2)})
        >>> layer.weight.sum().item()
        6.0
    """
    token = _SKIPPING.set(True)
    try:
        yield
    finally:
        _SKIPPING.reset(token)


def _skippable(initialiser):
    """An initialiser that returns its tensor untouched inside `skip_initialization()`."""

    @functools.wraps(initialiser)
    def wrapper(tensor, *args, **kwargs):
        if _SKIPPING.get():
            return tensor
        return initialiser(tensor, *args, **kwargs)

    return wrapper


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table)."""
    linear = (
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(
            f"fan in and fan out can not be computed for a tensor with fewer than "
            f"2 dimensions (shape {tuple(tensor.shape)})"
        )
    receptive = math.prod(tensor.shape[2:]) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


@_skippable
def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


@_skippable
def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


@_skippable
def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator=None,
) -> Tensor:
    """Normal(mean, std) truncated to [a, b] by inverse-CDF sampling (PyTorch's method)."""

    def norm_cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with no_grad():
        low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1, generator=generator)
        # erfinv is not an op: apply it on the array, under no_grad, on the tensor's backend
        xp = tensor._backend().xp
        data = tensor.array.astype("float64")
        data = _erfinv(xp, data) * (std * math.sqrt(2.0)) + mean
        tensor.array[...] = xp.clip(data, a, b)
        tensor._bump_version("trunc_normal_")
        return tensor


def _erfinv(xp, y):
    """Inverse error function (Giles' approximation refined by two Newton steps)."""
    w = -xp.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws = w - 2.5
    p_small = 2.81022636e-08
    for c in (
        3.43273939e-07,
        -3.5233877e-06,
        -4.39150654e-06,
        0.00021858087,
        -0.00125372503,
        -0.00417768164,
        0.246640727,
        1.50140941,
    ):
        p_small = c + p_small * ws
    wl = xp.sqrt(xp.maximum(w, 5.0)) - 3.0
    p_large = -0.000200214257
    for c in (
        0.000100950558,
        0.00134934322,
        -0.00367342844,
        0.00573950773,
        -0.0076224613,
        0.00943887047,
        1.00167406,
        2.83297682,
    ):
        p_large = c + p_large * wl
    x = xp.where(small, p_small, p_large) * y
    for _ in range(2):
        x = x - (xp.erf(x) - y) / (2.0 / math.sqrt(math.pi) * xp.exp(-x * x))
    return x


@_skippable
def constant_(tensor: Tensor, val: float) -> Tensor:
    with no_grad():
        return tensor.fill_(val)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


@_skippable
def eye_(tensor: Tensor) -> Tensor:
    if tensor.ndim != 2:
        raise ValueError("eye_: only 2-D tensors are supported")
    from ember.tensor import eye

    with no_grad():
        return tensor.copy_(eye(*tensor.shape, dtype=tensor.dtype))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
) -> Tensor:
    if 0 in tuple(tensor.shape):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
) -> Tensor:
    if 0 in tuple(tensor.shape):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


@_skippable
def orthogonal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    if tensor.ndim < 2:
        raise ValueError("orthogonal_: only tensors with 2 or more dimensions are supported")
    from ember.tensor import randn

    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    flat = randn(rows, cols, generator=generator, dtype=tensor.dtype)
    xp = tensor._backend().xp
    a = flat.array.T if rows < cols else flat.array
    q, r = xp.linalg.qr(a)
    q = q * xp.sign(xp.diagonal(r))
    if rows < cols:
        q = q.T
    with no_grad():
        tensor.array[...] = (q * gain).reshape(tensor.array.shape)
        tensor._bump_version("orthogonal_")
    return tensor
