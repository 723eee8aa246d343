"""PyTorch's module path `torch.nn.modules.sparse` (Embedding):
names only; the classes live where ember keeps them (Note [Module paths] in
ember/nn/modules/__init__.py)."""

from ember.nn.modules.layers import Embedding as Embedding

__all__ = ["Embedding"]
