"""PyTorch's module path `torch.nn.modules.normalization`: LayerNorm and GroupNorm, kept in
layers.py and re-exported (Note [Module paths] in ember/nn/modules/__init__.py), and
LocalResponseNorm (F.local_response_norm), which lives here."""

from ember.nn import functional as F
from ember.nn.modules.module import Module

from ember.nn.modules.layers import GroupNorm as GroupNorm
from ember.nn.modules.layers import LayerNorm as LayerNorm


class LocalResponseNorm(Module):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta, over
    (N, C, *spatial) (F.local_response_norm; AlexNet's normalisation).

    Example:
        >>> import ember, ember.nn as nn
        >>> tuple(nn.LocalResponseNorm(2)(ember.ones(2, 4, 3, 3)).shape)
        (2, 4, 3, 3)
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


__all__ = ["GroupNorm", "LayerNorm", "LocalResponseNorm"]
