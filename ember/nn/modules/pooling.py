"""PyTorch's module path `torch.nn.modules.pooling` (pooling): the classes ember keeps in
layers.py, re-exported (Note [Module paths] in ember/nn/modules/__init__.py), and the
power-average pools LPPool1d/2d/3d (F.lp_pool*), which live here."""

from ember.nn import functional as F
from ember.nn.modules.module import Module

from ember.nn.modules.layers import AdaptiveAvgPool1d as AdaptiveAvgPool1d
from ember.nn.modules.layers import AdaptiveAvgPool2d as AdaptiveAvgPool2d
from ember.nn.modules.layers import AdaptiveAvgPool3d as AdaptiveAvgPool3d
from ember.nn.modules.layers import AdaptiveMaxPool1d as AdaptiveMaxPool1d
from ember.nn.modules.layers import AdaptiveMaxPool2d as AdaptiveMaxPool2d
from ember.nn.modules.layers import AdaptiveMaxPool3d as AdaptiveMaxPool3d
from ember.nn.modules.layers import AvgPool1d as AvgPool1d
from ember.nn.modules.layers import AvgPool2d as AvgPool2d
from ember.nn.modules.layers import AvgPool3d as AvgPool3d
from ember.nn.modules.layers import MaxPool1d as MaxPool1d
from ember.nn.modules.layers import MaxPool2d as MaxPool2d
from ember.nn.modules.layers import MaxPool3d as MaxPool3d
from ember.nn.modules.layers import MaxUnpool1d as MaxUnpool1d
from ember.nn.modules.layers import MaxUnpool2d as MaxUnpool2d
from ember.nn.modules.layers import MaxUnpool3d as MaxUnpool3d


class _LPPoolNd(Module):
    """The shared body of LPPool1d/2d/3d."""

    _function = staticmethod(F.lp_pool1d)

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False):
        super().__init__()
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.stride = stride
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return self._function(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self) -> str:
        return (
            f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"ceil_mode={self.ceil_mode}"
        )


class LPPool1d(_LPPoolNd):
    """Power-average pooling over (N, C, L) or (C, L): each window's (sum x^p)^(1/p).

    Example:
        >>> import ember, ember.nn as nn
        >>> nn.LPPool1d(2, 2)(ember.tensor([[[3.0, 4.0, 1.0, 0.0]]])).tolist()
        [[[5.0, 1.0]]]
    """

    _function = staticmethod(F.lp_pool1d)


class LPPool2d(_LPPoolNd):
    """Power-average pooling over (N, C, H, W) or (C, H, W) (F.lp_pool2d)."""

    _function = staticmethod(F.lp_pool2d)


class LPPool3d(_LPPoolNd):
    """Power-average pooling over (N, C, D, H, W) or (C, D, H, W) (F.lp_pool3d)."""

    _function = staticmethod(F.lp_pool3d)


__all__ = [
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
]
