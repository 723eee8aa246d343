"""`import ember.utils.data` is `ember.data` (the PyTorch spelling)."""

import sys

import ember.data as _data

sys.modules[__name__] = _data
