"""InstanceNorm1d/2d/3d (PyTorch's `torch.nn.modules.instancenorm`): per-sample, per-channel
normalisation over the spatial dims (F.instance_norm), with torch's `affine` (weight and bias,
off by default) and `track_running_stats` (running statistics used in eval mode)."""

from __future__ import annotations

import warnings

from ember._util.errors import ShapeError
from ember.nn import functional as F
from ember.nn.modules.layers import _NormBase
from ember.tensor import Tensor

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class _InstanceNorm(_NormBase):
    """The shared body of InstanceNorm1d/2d/3d; `_spatial` is the number of spatial dims."""

    _spatial = 1

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        """torch's defaults for instance norm: no affine weight, no running statistics."""
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )

    def forward(self, input: Tensor) -> Tensor:
        unbatched = self._spatial + 1
        if input.ndim not in (unbatched, unbatched + 1):
            raise ShapeError(
                f"{type(self).__name__}: expected {unbatched}D or {unbatched + 1}D input "
                f"(got {input.ndim}D input, shape {tuple(input.shape)})"
            )
        feature_dim = input.ndim - unbatched
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ShapeError(
                    f"{type(self).__name__}: expected input's size at dim={feature_dim} to "
                    f"match num_features ({self.num_features}), but got: "
                    f"{input.shape[feature_dim]}."
                )
            warnings.warn(
                f"{type(self).__name__}: input's size at dim={feature_dim} does not match "
                f"num_features ({self.num_features}); num_features is not used because "
                "affine=False",
                stacklevel=2,
            )
        batched = input.unsqueeze(0) if input.ndim == unbatched else input
        out = F.instance_norm(
            batched,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        return out.squeeze(0) if input.ndim == unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation over (N, C, L) or (C, L).

    Example:
        >>> import ember, ember.nn as nn
        >>> out = nn.InstanceNorm1d(2)(ember.tensor([[[1.0, 3.0], [0.0, 4.0]]]))
        >>> [round(v, 3) for v in out.reshape(-1).tolist()]
        [-1.0, 1.0, -1.0, 1.0]
    """

    _spatial = 1


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation over (N, C, H, W) or (C, H, W)."""

    _spatial = 2


class InstanceNorm3d(_InstanceNorm):
    """Instance normalisation over (N, C, D, H, W) or (C, D, H, W)."""

    _spatial = 3
