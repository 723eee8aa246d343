"""PixelShuffle and PixelUnshuffle (PyTorch's `torch.nn.modules.pixelshuffle`): sub-pixel
rearrangement between channels and r x r pixel blocks (F.pixel_shuffle / F.pixel_unshuffle)."""

from __future__ import annotations

from ember.nn import functional as F
from ember.nn.modules.module import Module
from ember.tensor import Tensor

__all__ = ["PixelShuffle", "PixelUnshuffle"]


class PixelShuffle(Module):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r), r = `upscale_factor` (F.pixel_shuffle).

    Example:
        >>> import ember, ember.nn as nn
        >>> tuple(nn.PixelShuffle(3)(ember.zeros(1, 9, 4, 4)).shape)
        (1, 1, 12, 12)
    """

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W), r = `downscale_factor` (F.pixel_unshuffle).

    Example:
        >>> import ember, ember.nn as nn
        >>> tuple(nn.PixelUnshuffle(3)(ember.zeros(1, 1, 12, 12)).shape)
        (1, 9, 4, 4)
    """

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"
