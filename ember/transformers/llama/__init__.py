"""Llama (and the Llama-shaped Mistral, Qwen2, SmolLM configs): config and models."""

from ember.transformers.llama.configuration_llama import (
    LlamaConfig as LlamaConfig,
    MistralConfig as MistralConfig,
    Qwen2Config as Qwen2Config,
    SmolLM3Config as SmolLM3Config,
)
from ember.transformers.llama.modeling_llama import (
    LlamaForCausalLM as LlamaForCausalLM,
    LlamaModel as LlamaModel,
    LlamaPreTrainedModel as LlamaPreTrainedModel,
    LlamaRMSNorm as LlamaRMSNorm,
    MistralForCausalLM as MistralForCausalLM,
    MistralModel as MistralModel,
    Qwen2ForCausalLM as Qwen2ForCausalLM,
    Qwen2Model as Qwen2Model,
    SmolLM3ForCausalLM as SmolLM3ForCausalLM,
    SmolLM3Model as SmolLM3Model,
)
