"""PyTorch's module path `torch.nn.modules.conv` (convolutions and transposed convolutions):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Conv1d as Conv1d
from ember.nn.modules.layers import Conv2d as Conv2d
from ember.nn.modules.layers import Conv3d as Conv3d
from ember.nn.modules.layers import ConvTranspose1d as ConvTranspose1d
from ember.nn.modules.layers import ConvTranspose2d as ConvTranspose2d
from ember.nn.modules.layers import ConvTranspose3d as ConvTranspose3d

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
