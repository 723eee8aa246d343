"""The Module classes of `ember.nn` (re-exported from `ember.nn`).

Note [Module paths]: ember keeps its layers in fewer files than PyTorch (most in layers.py),
but ported code imports PyTorch's paths (`from torch.nn.modules.conv import _ConvNd`-style
imports, `torch.nn.modules.linear.Linear` in saved class paths). The files named after
PyTorch's (linear.py, conv.py, batchnorm.py, pooling.py, ...) re-export the same classes
under those paths; tests/nn/test_module_paths.py checks every PyTorch class ember has is
reachable at PyTorch's path and is the same object as `ember.nn.<name>`.
"""
