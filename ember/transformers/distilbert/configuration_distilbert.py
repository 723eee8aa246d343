"""`DistilBertConfig`: DistilBERT's hyper-parameters under its own field names (`dim`,
`n_layers`, `n_heads`, `hidden_dim`, `activation`, ...), as its config.json spells them;
BERT's names (`hidden_size`, `num_hidden_layers`, `num_attention_heads`) read and write the
same fields, as HuggingFace's `attribute_map` does."""

from __future__ import annotations

from ember.transformers.configuration_utils import PretrainedConfig

# BERT's name -> DistilBERT's field
_ALIASES = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


def _alias(field: str) -> property:
    def get(self):
        return getattr(self, field)

    def set(self, value):
        setattr(self, field, value)

    return property(get, set, doc=f"The same as `{field}` (HuggingFace's attribute_map).")


class DistilBertConfig(PretrainedConfig):
    """The configuration of a DistilBERT model (defaults: distilbert-base-uncased).

    Example:
        >>> from ember.transformers import DistilBertConfig
        >>> config = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37)
        >>> config.hidden_size, config.num_hidden_layers, "dim" in config.to_dict()
        (32, 2, True)
    """

    model_type = "distilbert"
    hidden_size = _alias("dim")
    num_attention_heads = _alias("n_heads")
    num_hidden_layers = _alias("n_layers")

    def __init__(
        self,
        vocab_size=30522,
        max_position_embeddings=512,
        sinusoidal_pos_embds=False,
        n_layers=6,
        n_heads=12,
        dim=768,
        hidden_dim=4 * 768,
        dropout=0.1,
        attention_dropout=0.1,
        activation="gelu",
        initializer_range=0.02,
        qa_dropout=0.1,
        seq_classif_dropout=0.2,
        pad_token_id=0,
        **kwargs,
    ):
        given = {alias: kwargs.pop(alias) for alias in _ALIASES if alias in kwargs}
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.sinusoidal_pos_embds = sinusoidal_pos_embds
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.initializer_range = initializer_range
        self.qa_dropout = qa_dropout
        self.seq_classif_dropout = seq_classif_dropout
        for alias, value in given.items():
            setattr(self, _ALIASES[alias], value)
