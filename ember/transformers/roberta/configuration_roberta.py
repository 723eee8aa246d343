"""`RobertaConfig`: RoBERTa's hyper-parameters. The fields are BERT's; the defaults are those
of roberta-base's config.json (one token type, 514 positions, pad 1, LayerNorm eps 1e-5)."""

from __future__ import annotations

from ember.transformers.bert.configuration_bert import BertConfig


class RobertaConfig(BertConfig):
    """The configuration of a RoBERTa model (defaults: roberta-base).

    Positions start at `pad_token_id + 1` (Note [RoBERTa positions] in modeling_roberta), so
    a sequence may hold at most `max_position_embeddings - pad_token_id - 1` tokens.

    Example:
        >>> from ember.transformers import RobertaConfig
        >>> config = RobertaConfig(hidden_size=32, num_attention_heads=4)
        >>> config.model_type, config.type_vocab_size, config.pad_token_id
        ('roberta', 1, 1)
    """

    model_type = "roberta"

    def __init__(
        self,
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            max_position_embeddings=max_position_embeddings,
            type_vocab_size=type_vocab_size,
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )
