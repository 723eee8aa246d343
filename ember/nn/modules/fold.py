"""PyTorch's module path `torch.nn.modules.fold` (Fold / Unfold):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Fold as Fold
from ember.nn.modules.layers import Unfold as Unfold

__all__ = ["Fold", "Unfold"]
