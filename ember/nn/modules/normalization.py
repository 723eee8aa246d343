"""PyTorch's module path `torch.nn.modules.normalization` (layer and group normalisation):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import GroupNorm as GroupNorm
from ember.nn.modules.layers import LayerNorm as LayerNorm

__all__ = ["GroupNorm", "LayerNorm"]
