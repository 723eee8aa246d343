"""`GPT2Config`: GPT-2's hyper-parameters with HuggingFace's names and defaults (gpt2 small).

HuggingFace's generic names map onto GPT-2's own (`hidden_size` is `n_embd`, `num_hidden_layers`
is `n_layer`, `num_attention_heads` is `n_head`, `max_position_embeddings` is `n_positions`).
"""

from __future__ import annotations

from ember.transformers.configuration_utils import PretrainedConfig

_ATTRIBUTE_MAP = {
    "hidden_size": "n_embd",
    "max_position_embeddings": "n_positions",
    "num_attention_heads": "n_head",
    "num_hidden_layers": "n_layer",
}


class GPT2Config(PretrainedConfig):
    """The configuration of a GPT-2 model.

    Example:
        >>> from ember.transformers import GPT2Config
        >>> config = GPT2Config(n_embd=32, n_layer=2, n_head=4)
        >>> config.hidden_size, config.num_hidden_layers, config.activation_function
        (32, 2, 'gelu_new')
    """

    model_type = "gpt2"

    def __init__(
        self,
        vocab_size=50257,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        scale_attn_weights=True,
        use_cache=True,
        bos_token_id=50256,
        eos_token_id=50256,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        add_cross_attention=False,
        **kwargs,
    ):
        for generic, own in _ATTRIBUTE_MAP.items():  # generic names given to the constructor
            if generic in kwargs:
                value = kwargs.pop(generic)
                if own == "n_embd":
                    n_embd = value
                elif own == "n_positions":
                    n_positions = value
                elif own == "n_head":
                    n_head = value
                else:
                    n_layer = value
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.scale_attn_weights = scale_attn_weights
        self.use_cache = use_cache
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.reorder_and_upcast_attn = reorder_and_upcast_attn
        self.add_cross_attention = add_cross_attention

    hidden_size = property(lambda self: self.n_embd)
    max_position_embeddings = property(lambda self: self.n_positions)
    num_attention_heads = property(lambda self: self.n_head)
    num_hidden_layers = property(lambda self: self.n_layer)
