"""`ACT2FN`: activation functions by the names HuggingFace configs use (`hidden_act`).

A small registry (STYLE.md habit 11): a model asks `ACT2FN[config.hidden_act]` and gets a
module; a new activation is one row.
"""

from __future__ import annotations

from ember import nn
from ember.nn import functional as F


class GELUActivation(nn.Module):
    """The exact GELU, x * Phi(x), as in the original BERT."""

    def forward(self, x):
        return F.gelu(x)


class GELUTanhActivation(nn.Module):
    """GELU by its tanh approximation ('gelu_new', 'gelu_pytorch_tanh')."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class _Wrap(nn.Module):
    def __init__(self, fn, name: str):
        super().__init__()
        self._fn = fn
        self._name = name

    def forward(self, x):
        return self._fn(x)

    def extra_repr(self) -> str:
        return self._name


class _ActivationRegistry(dict):
    """name -> zero-argument factory; indexing builds a fresh module."""

    def __getitem__(self, name: str) -> nn.Module:
        if not isinstance(name, str):  # a callable given directly (as HF allows)
            return name
        try:
            factory = super().__getitem__(name)
        except KeyError:
            raise KeyError(
                f"ACT2FN: unknown activation {name!r}; known: {', '.join(sorted(self))}"
            ) from None
        return factory()


ACT2FN = _ActivationRegistry(
    {
        "gelu": GELUActivation,
        "gelu_new": GELUTanhActivation,
        "gelu_pytorch_tanh": GELUTanhActivation,
        "relu": lambda: _Wrap(F.relu, "relu"),
        "silu": lambda: _Wrap(F.silu, "silu"),
        "swish": lambda: _Wrap(F.silu, "swish"),
        "tanh": lambda: _Wrap(F.tanh, "tanh"),
        "sigmoid": lambda: _Wrap(F.sigmoid, "sigmoid"),
    }
)


def biased_activation(act: nn.Module, x, bias):
    """act(x + bias): GELU fuses the bias add into its own pass (Note [Fused Transformer ops]
    in ember.ops.fused); other activations add it first."""
    if isinstance(act, GELUActivation):
        return F.gelu(x, bias=bias)
    if isinstance(act, GELUTanhActivation):
        return F.gelu(x, approximate="tanh", bias=bias)
    return act(x if bias is None else x + bias)


def get_activation(name: str) -> nn.Module:
    return ACT2FN[name]
