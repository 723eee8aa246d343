"""PyTorch's module path `torch.nn.modules.dropout` (dropout):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Dropout as Dropout
from ember.nn.modules.layers import Dropout1d as Dropout1d
from ember.nn.modules.layers import Dropout2d as Dropout2d
from ember.nn.modules.layers import Dropout3d as Dropout3d

__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]
