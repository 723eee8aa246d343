"""GPT-2: config and models (HuggingFace names and weights)."""

from ember.transformers.gpt2.configuration_gpt2 import GPT2Config as GPT2Config
from ember.transformers.gpt2.modeling_gpt2 import (
    Conv1D as Conv1D,
    GPT2LMHeadModel as GPT2LMHeadModel,
    GPT2Model as GPT2Model,
    GPT2PreTrainedModel as GPT2PreTrainedModel,
)
