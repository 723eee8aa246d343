"""ember: a small, fast deep-learning framework (tensors, autograd, graphs, nn, data, models)."""

__version__ = "0.1.0"
