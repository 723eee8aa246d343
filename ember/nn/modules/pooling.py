"""PyTorch's module path `torch.nn.modules.pooling` (pooling):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

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

__all__ = [
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
