"""Layers with parameters or modes: Linear, Bilinear, Embedding, Conv1d/2d, pooling, BatchNorm,
LayerNorm, GroupNorm, Dropout, Flatten, Unflatten, Identity.

Each layer creates its parameters, initialises them as PyTorch does (`reset_parameters`, with
`ember.nn.init`), checks its input's shape up front so that errors speak the layer's language
(Note [Module paths in errors]), and calls one function from `ember.nn.functional`.
"""

from __future__ import annotations

import math

from ember import dtypes as _dt
from ember._util.errors import ShapeError, at_user_line
from ember.backend import host_values
from ember.autograd.grad_mode import no_grad
from ember.nn import functional as F
from ember.nn import init
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.tensor import Tensor, empty, ones, tensor, zeros


def _size(value, name: str, layer: str) -> int:
    """A constructor's size argument as an int >= 0, or an error naming the layer (torch:
    nn.Linear(3.5, 4) raises TypeError)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(
            at_user_line(
                f"{layer}: {name} must be an int, got {value!r} of type {type(value).__name__}"
            )
        )
    value = value.__index__()
    if value < 0:
        raise ValueError(at_user_line(f"{layer}: {name} must be non-negative, got {value}"))
    return value


def _factory(device, dtype):
    return {"device": device, "dtype": dtype}


def _tuple(v, n: int, name: str) -> tuple:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    if len(v) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {v}")
    return v


class Identity(Module):
    """Returns its input unchanged (arguments are accepted and ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features).

    Example:
        >>> import ember, ember.nn as nn
        >>> fc = nn.Linear(784, 128)
        >>> tuple(fc(ember.zeros(32, 784)).shape)
        (32, 128)
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        in_features = _size(in_features, "in_features", "Linear")
        out_features = _size(out_features, "out_features", "Linear")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(empty((out_features, in_features), **_factory(device, dtype)))
        if bias:
            self.bias = Parameter(empty(out_features, **_factory(device, dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.array.shape  # the array's own tuple: no Size made on every call
        if not shape or shape[-1] != self.in_features:
            last = x.shape[-1] if x.ndim else "(none)"
            raise ShapeError(
                f"input {tuple(x.shape)} last dim {last} ≠ in_features {self.in_features}"
            )
        return F.linear(x, self.weight, self.bias)

    def _error_label(self) -> str:
        return f"Linear {self.in_features}→{self.out_features}"

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Bilinear(Module):
    """y = x1^T A x2 + b, with A of shape (out_features, in1_features, in2_features)."""

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        in1_features = _size(in1_features, "in1_features", "Bilinear")
        in2_features = _size(in2_features, "in2_features", "Bilinear")
        out_features = _size(out_features, "out_features", "Bilinear")
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.weight = Parameter(
            empty((out_features, in1_features, in2_features), **_factory(device, dtype))
        )
        if bias:
            self.bias = Parameter(empty(out_features, **_factory(device, dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        if input1.shape[-1] != self.in1_features or input2.shape[-1] != self.in2_features:
            raise ShapeError(
                f"inputs {tuple(input1.shape)} and {tuple(input2.shape)}: last dims "
                f"must be in1_features {self.in1_features} and in2_features "
                f"{self.in2_features}"
            )
        if tuple(input1.shape[:-1]) != tuple(input2.shape[:-1]):
            raise ShapeError(
                f"inputs {tuple(input1.shape)} and {tuple(input2.shape)} differ in their batch dims"
            )
        return F.bilinear(input1, input2, self.weight, self.bias)

    def _error_label(self) -> str:
        return f"Bilinear ({self.in1_features}, {self.in2_features})→{self.out_features}"

    def extra_repr(self) -> str:
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class Embedding(Module):
    """A lookup table: index i -> row i of `weight` (num_embeddings, embedding_dim).

    The row at `padding_idx` starts at zero and receives no gradient. With `max_norm`, rows
    that a forward looks up are first rescaled in place to norm at most `max_norm`
    (`norm_type`-norm); with `scale_grad_by_freq`, gradient rows are divided by the count of
    their index in the batch. With `sparse=True` the weight's gradient is a SparseRowTensor of
    the looked-up rows (Note [Sparse gradients]), for `optim.SparseAdam`."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm=None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        _freeze: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        num_embeddings = _size(num_embeddings, "num_embeddings", "Embedding")
        embedding_dim = _size(embedding_dim, "embedding_dim", "Embedding")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx {padding_idx} must be within "
                    f"num_embeddings {num_embeddings}"
                )
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(
                empty((num_embeddings, embedding_dim), **_factory(device, dtype)),
                requires_grad=not _freeze,
            )
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ShapeError(
                    f"Embedding: _weight shape {tuple(_weight.shape)} must be "
                    f"({num_embeddings}, {embedding_dim})"
                )
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    @classmethod
    def from_pretrained(
        cls, embeddings: Tensor, freeze: bool = True, padding_idx: int | None = None, **kwargs
    ) -> "Embedding":
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, _weight=embeddings, _freeze=freeze, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype.is_floating_point:
            raise TypeError(f"indices must be an integer tensor, got {x.dtype}")
        # The range check reads the indices, which a symbolic (compiled) call does not have
        # (Note [Staging backends]): there an index past the end fails in the gather, and a
        # negative one counts from the end as in NumPy indexing. A concrete index tensor made
        # while tracing (`ember.arange(n)` for position ids) is still read from its buffer.
        values = host_values(x.array)
        if values is not None and values.size:
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= self.num_embeddings:
                raise IndexError(
                    f"index {high if high >= self.num_embeddings else low} is out "
                    f"of range for num_embeddings {self.num_embeddings}"
                )
        return F.embedding(
            x,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def _error_label(self) -> str:
        return f"Embedding {self.num_embeddings}×{self.embedding_dim}"

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.sparse:
            s += ", sparse=True"
        return s


class _ConvNd(Module):
    _n = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        n = self._n
        name = type(self).__name__
        in_channels = _size(in_channels, "in_channels", name)
        out_channels = _size(out_channels, "out_channels", name)
        groups = _size(groups, "groups", name)
        if groups == 0:
            raise ValueError(at_user_line(f"{name}: groups must be positive, got 0"))
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels {in_channels} and out_channels "
                f"{out_channels} must be divisible by groups {groups}"
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"{name}: padding_mode must be 'zeros', 'reflect', 'replicate' "
                f"or 'circular', got {padding_mode!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"{name}: padding must be 'same', 'valid' or ints, got {padding!r}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"{name}: padding='same' is not supported for strided convolutions"
                )
            self.padding = padding
        else:
            self.padding = _tuple(padding, n, "padding")
        self.dilation = _tuple(dilation, n, "dilation")
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = Parameter(
            empty(
                (out_channels, in_channels // groups) + self.kernel_size, **_factory(device, dtype)
            )
        )
        if bias:
            self.bias = Parameter(empty(out_channels, **_factory(device, dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _check(self, x: Tensor) -> None:
        n = self._n
        if x.ndim not in (n + 1, n + 2):
            raise ShapeError(
                f"expected a {n + 1}-D (unbatched) or {n + 2}-D (batched) input, "
                f"got {tuple(x.shape)}"
            )
        channels = x.shape[-n - 1]
        if channels != self.in_channels:
            raise ShapeError(
                f"input {tuple(x.shape)} has {channels} channels (dim "
                f"{x.ndim - n - 1}) ≠ in_channels {self.in_channels}"
            )

    def _padded(self, x: Tensor):
        """Explicit padding for non-zero padding modes; returns (input, conv padding)."""
        if self.padding_mode == "zeros" or isinstance(self.padding, str):
            return x, self.padding
        pads = []
        for p in reversed(self.padding):
            pads += [p, p]
        return F.pad(x, tuple(pads), mode=self.padding_mode), 0

    def _error_label(self) -> str:
        return f"{type(self).__name__} {self.in_channels}→{self.out_channels}"

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        zero = (0,) * self._n
        if self.padding != zero:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        unbatched = x.ndim == self._n + 1  # (C, ...) without the batch dim
        if unbatched:
            x = x.unsqueeze(0)
        x, padding = self._padded(x)
        out = self._conv(
            x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups
        )
        return out.squeeze(0) if unbatched else out


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) inputs (cross-correlation, as in PyTorch)."""

    _n = 1
    _conv = staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) inputs (cross-correlation, as in PyTorch).

    Example:
        >>> import ember, ember.nn as nn
        >>> conv = nn.Conv2d(1, 8, 3, padding=1)
        >>> tuple(conv(ember.zeros(2, 1, 28, 28)).shape)
        (2, 8, 28, 28)
    """

    _n = 2
    _conv = staticmethod(F.conv2d)


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W) inputs."""

    _n = 3
    _conv = staticmethod(F.conv3d)


class _ConvTransposeNd(_ConvNd):
    """Transposed convolution (the adjoint of _ConvNd's): weight (C_in, C_out/groups, *k),
    initialised as PyTorch does (its fan-in is computed from that layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        name = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'{name}: only "zeros" padding_mode is supported')
        if isinstance(padding, str):
            raise ValueError(f"{name}: padding must be ints, got {padding!r}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self.output_padding = _tuple(output_padding, self._n, "output_padding")
        # the transposed layout (C_in, C_out/groups, *k), then PyTorch's init for it
        self.weight = Parameter(
            empty(
                (in_channels, out_channels // groups) + self.kernel_size,
                **_factory(device, dtype),
            )
        )
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.output_padding != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        return s

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        self._check(x)
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = self._output_padding_for(x, output_size)
        return self._conv(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )

    def _output_padding_for(self, x, output_size):
        """The output_padding that gives `output_size` (PyTorch's _output_padding)."""
        n = self._n
        output_size = tuple(output_size)[-n:]
        spatial = tuple(x.shape[-n:])
        result = []
        for d in range(n):
            smallest = (
                (spatial[d] - 1) * self.stride[d]
                - 2 * self.padding[d]
                + self.dilation[d] * (self.kernel_size[d] - 1)
                + 1
            )
            extra = output_size[d] - smallest
            if not 0 <= extra < max(self.stride[d], self.dilation[d]):
                raise ValueError(
                    f"{type(self).__name__}: requested an output size of {output_size}, but "
                    f"valid sizes range from {smallest} to "
                    f"{smallest + max(self.stride[d], self.dilation[d]) - 1} in dim {d}"
                )
            result.append(extra)
        return tuple(result)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution over (N, C_in, L) inputs."""

    _n = 1
    _conv = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution over (N, C_in, H, W) inputs.

    Example:
        >>> import ember, ember.nn as nn
        >>> up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        >>> tuple(up(ember.zeros(2, 8, 14, 14)).shape)
        (2, 4, 28, 28)
    """

    _n = 2
    _conv = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution over (N, C_in, D, H, W) inputs."""

    _n = 3
    _conv = staticmethod(F.conv_transpose3d)


class Unfold(Module):
    """Sliding local blocks: (N, C, H, W) -> (N, C*kh*kw, L) (F.unfold)."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
            f"padding={self.padding}, stride={self.stride}"
        )


class Fold(Module):
    """Sums sliding local blocks back into (N, C, H, W) (F.fold, the adjoint of Unfold)."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1) -> None:
        super().__init__()
        self.output_size, self.kernel_size, self.dilation = output_size, kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.fold(
            x, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, padding={self.padding}, stride={self.stride}"
        )


class Upsample(Module):
    """Resizes (N, C, *spatial) by `size` or `scale_factor` (F.interpolate's modes).

    Example:
        >>> import ember, ember.nn as nn
        >>> up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        >>> tuple(up(ember.zeros(1, 3, 5, 7)).shape)
        (1, 3, 10, 14)
    """

    def __init__(
        self,
        size=None,
        scale_factor=None,
        mode: str = "nearest",
        align_corners=None,
        recompute_scale_factor=None,
    ) -> None:
        super().__init__()
        self.name = type(self).__name__
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, int) else scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )

    def extra_repr(self) -> str:
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None) -> None:
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size=None, scale_factor=None) -> None:
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class _Pool2d(Module):
    _n = 2

    def _check(self, x: Tensor) -> None:
        n = self._n
        if x.ndim not in (n + 1, n + 2):
            dims = ("L",) if n == 1 else ("H", "W") if n == 2 else ("D", "H", "W")
            raise ShapeError(
                f"expected a {n + 1}-D (C, {', '.join(dims)}) or {n + 2}-D (N, C, "
                f"{', '.join(dims)}) input, got {tuple(x.shape)}"
            )


class _MaxPoolNd(_Pool2d):
    _pool = None

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x: Tensor):
        self._check(x)
        return type(self)._pool(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.return_indices,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """Max pooling over (N, C, L); with return_indices=True, forward returns (out, indices)."""

    _n = 1
    _pool = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """Max pooling over (N, C, H, W); with return_indices=True, forward returns (out, indices).

    Example:
        >>> import ember, ember.nn as nn
        >>> out, idx = nn.MaxPool2d(2, return_indices=True)(ember.zeros(1, 1, 4, 4))
        >>> tuple(out.shape), idx.dtype
        ((1, 1, 2, 2), ember.int64)
    """

    _n = 2
    _pool = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPoolNd):
    """Max pooling over (N, C, D, H, W); with return_indices=True, also the flat indices."""

    _n = 3
    _pool = staticmethod(F.max_pool3d)


class _MaxUnpoolNd(_Pool2d):
    _unpool = None

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding

    def forward(self, x: Tensor, indices: Tensor, output_size=None) -> Tensor:
        self._check(x)
        return type(self)._unpool(
            x, indices, self.kernel_size, self.stride, self.padding, output_size
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    """The partial inverse of MaxPool1d: forward(x, indices, output_size=None)."""

    _n = 1
    _unpool = staticmethod(F.max_unpool1d)


class MaxUnpool2d(_MaxUnpoolNd):
    """The partial inverse of MaxPool2d: forward(x, indices, output_size=None).

    Example:
        >>> import ember, ember.nn as nn
        >>> pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
        >>> out, idx = pool(ember.arange(16.0).reshape(1, 1, 4, 4))
        >>> unpool(out, idx)[0, 0].tolist()
        [[0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0], [0.0, 13.0, 0.0, 15.0]]
    """

    _n = 2
    _unpool = staticmethod(F.max_unpool2d)


class MaxUnpool3d(_MaxUnpoolNd):
    """The partial inverse of MaxPool3d: forward(x, indices, output_size=None)."""

    _n = 3
    _unpool = staticmethod(F.max_unpool3d)


class AvgPool1d(_Pool2d):
    """Average pooling over (N, C, L) or (C, L)."""

    _n = 1

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return F.avg_pool1d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(_Pool2d):
    """Average pooling over (N, C, H, W) or (C, H, W)."""

    _pool = staticmethod(F.avg_pool2d)

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override=None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return type(self)._pool(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool3d(AvgPool2d):
    """Average pooling over (N, C, D, H, W) or (C, D, H, W).

    Example:
        >>> import ember, ember.nn as nn
        >>> pool = nn.AvgPool3d(2, stride=1, padding=1, count_include_pad=False)
        >>> tuple(pool(ember.ones(1, 1, 2, 2, 2)).shape)
        (1, 1, 3, 3, 3)
    """

    _n = 3
    _pool = staticmethod(F.avg_pool3d)


class _AdaptiveAvgPoolNd(_Pool2d):
    _pool = None

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return type(self)._pool(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Averages over windows that tile L into output_size parts."""

    _n = 1
    _pool = staticmethod(F.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Averages over windows that tile (H, W) into output_size parts (None keeps a dim)."""

    _n = 2
    _pool = staticmethod(F.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Averages over windows that tile (D, H, W) into output_size parts."""

    _n = 3
    _pool = staticmethod(F.adaptive_avg_pool3d)


class _AdaptiveMaxPoolNd(_Pool2d):
    _pool = None

    def __init__(self, output_size, return_indices: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, x: Tensor):
        self._check(x)
        return type(self)._pool(x, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Maxima over windows that tile L; with return_indices=True, also the flat argmax."""

    _n = 1
    _pool = staticmethod(F.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Maxima over windows that tile (H, W); with return_indices=True, also the argmax, flat
    over H*W.

    Example:
        >>> import ember, ember.nn as nn
        >>> out, idx = nn.AdaptiveMaxPool2d(1, return_indices=True)(ember.arange(4.0).reshape(
        ...     1, 2, 2))
        >>> out.tolist(), idx.tolist()
        ([[[3.0]]], [[[3]]])
    """

    _n = 2
    _pool = staticmethod(F.adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Maxima over windows that tile (D, H, W); indices are flat over D*H*W."""

    _n = 3
    _pool = staticmethod(F.adaptive_max_pool3d)


class _NormBase(Module):
    """What batch and instance norm share, as torch's `_NormBase`: num_features, eps,
    momentum, the optional affine weight and bias, and the optional running statistics."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(empty(num_features, **_factory(device, dtype)))
            if bias:
                self.bias = Parameter(empty(num_features, **_factory(device, dtype)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, **_factory(device, dtype)))
            self.register_buffer("running_var", ones(num_features, **_factory(device, dtype)))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=_dt.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class _BatchNorm(_NormBase):
    _dims: tuple = (2, 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._dims:
            raise ShapeError(
                f"expected a {' or '.join(f'{d}-D' for d in self._dims)} input, got "
                f"{tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ShapeError(
                f"input {tuple(x.shape)} has {x.shape[1]} channels (dim 1) ≠ "
                f"num_features {self.num_features}"
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight,
            self.bias,
            use_batch_stats,
            momentum,
            self.eps,
        )

    def _error_label(self) -> str:
        return f"{type(self).__name__} {self.num_features}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) inputs."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) inputs, per channel; running statistics in eval."""

    _dims = (4,)


class LayerNorm(Module):
    def __init__(
        self,
        normalized_shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, **_factory(device, dtype)))
            if bias:
                self.bias = Parameter(zeros(self.normalized_shape, **_factory(device, dtype)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - n :]) != self.normalized_shape or x.ndim < n:
            raise ShapeError(
                f"input {tuple(x.shape)} does not end with normalized_shape {self.normalized_shape}"
            )
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def _error_label(self) -> str:
        return f"LayerNorm {self.normalized_shape}"

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


class GroupNorm(Module):
    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels {num_channels} must be divisible by "
                f"num_groups {num_groups}"
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = Parameter(ones(num_channels, **_factory(device, dtype)))
            if bias:
                self.bias = Parameter(zeros(num_channels, **_factory(device, dtype)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(
                f"input {tuple(x.shape)}: dim 1 must be num_channels {self.num_channels}"
            )
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def _error_label(self) -> str:
        return f"GroupNorm {self.num_groups}×{self.num_channels // self.num_groups}"

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class Dropout(Module):
    """Zeroes each element with probability p in training and scales the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class _DropoutNd(Module):
    """Channel dropout: zeroes whole channels (Dropout1d/2d/3d) with probability p."""

    spatial_dims = 2

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: probability must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.feature_dropout(
            x, self.p, self.training, self.spatial_dims, name=type(self).__name__
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(_DropoutNd):
    """Zeroes whole channels of (N, C, L) or (C, L) inputs."""

    spatial_dims = 1


class Dropout2d(_DropoutNd):
    """Zeroes whole channels of (N, C, H, W) or (C, H, W) inputs."""

    spatial_dims = 2


class Dropout3d(_DropoutNd):
    """Zeroes whole channels of (N, C, D, H, W) or (C, D, H, W) inputs."""

    spatial_dims = 3


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size) -> None:
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
