"""PyTorch's module path `torch.nn.modules.batchnorm` (batch normalisation):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import BatchNorm1d as BatchNorm1d
from ember.nn.modules.layers import BatchNorm2d as BatchNorm2d

__all__ = ["BatchNorm1d", "BatchNorm2d"]
