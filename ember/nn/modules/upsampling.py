"""PyTorch's module path `torch.nn.modules.upsampling` (upsampling):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Upsample as Upsample
from ember.nn.modules.layers import UpsamplingBilinear2d as UpsamplingBilinear2d
from ember.nn.modules.layers import UpsamplingNearest2d as UpsamplingNearest2d

__all__ = ["Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d"]
