"""`ember.nn.utils`: gradient clipping and parameter/vector conversion."""

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
