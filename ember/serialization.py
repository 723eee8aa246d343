"""`ember.serialization`: the names ported `torch.serialization` code touches: the class
allow-list for whole-module checkpoints (`add_safe_globals`, `safe_globals`,
`get_safe_globals`, `clear_safe_globals`; Note [Whole-module checkpoints]), `save` and `load`.
"""

from ember.io.checkpoint import load as load
from ember.io.checkpoint import save as save
from ember.io.serialization import UnsafeClassError as UnsafeClassError
from ember.io.serialization import add_safe_globals as add_safe_globals
from ember.io.serialization import clear_safe_globals as clear_safe_globals
from ember.io.serialization import get_safe_globals as get_safe_globals
from ember.io.serialization import safe_globals as safe_globals
