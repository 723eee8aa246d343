"""PyTorch's module path `torch.nn.modules.linear` (Identity, Linear, Bilinear):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Bilinear as Bilinear
from ember.nn.modules.layers import Identity as Identity
from ember.nn.modules.layers import Linear as Linear

__all__ = ["Bilinear", "Identity", "Linear"]
