"""PyTorch's module path `torch.nn.modules.flatten` (Flatten / Unflatten):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Flatten as Flatten
from ember.nn.modules.layers import Unflatten as Unflatten

__all__ = ["Flatten", "Unflatten"]
