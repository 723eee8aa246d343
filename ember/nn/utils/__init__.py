"""`ember.nn.utils`: gradient clipping, parameter/vector conversion, and `rnn` (packed and
padded sequences)."""

from ember.nn.utils import rnn as rnn

from ember.nn.utils.clip_grad import (
    clip_grad_norm_ as clip_grad_norm_,
)
from ember.nn.utils.clip_grad import (
    clip_grad_value_ as clip_grad_value_,
)
from ember.nn.utils.clip_grad import (
    parameters_to_vector as parameters_to_vector,
)
from ember.nn.utils.clip_grad import (
    vector_to_parameters as vector_to_parameters,
)
