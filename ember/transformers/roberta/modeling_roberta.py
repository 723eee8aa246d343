"""RoBERTa: BERT's encoder with its own embeddings (positions counted past the padding index,
one token type) and its own heads (an MLM head with `layer_norm`, a classification head on
<s>). The encoder, attention and loss rules are BERT's (modeling_bert, encoder_heads); the
weight names are HuggingFace's (`roberta.encoder.layer.0...`, `lm_head.decoder.weight`,
`classifier.out_proj.weight`).

Note [RoBERTa positions]: position ids come from the input ids, as fairseq's `make_positions`
and HuggingFace's `create_position_ids_from_input_ids` make them: each non-padding token gets
`padding_idx + (its count of non-padding tokens so far)`, so the first real token sits at
`padding_idx + 1`, and every padding token gets `padding_idx` (whose embedding row starts at
zero and receives no gradient). With `inputs_embeds` there are no ids to look at and the
positions are simply `padding_idx + 1, padding_idx + 2, ...`.
"""

from __future__ import annotations

import ember
from ember import nn
from ember.nn import functional as F
from ember.transformers.bert.modeling_bert import (
    BertEmbeddings,
    BertEncoder,
    BertModel,
    BertPooler,
    BertPreTrainedModel,
)
from ember.transformers.encoder_heads import (
    EncoderHeadMixin,
    flatten_choices,
)
from ember.transformers.roberta.configuration_roberta import RobertaConfig


def create_position_ids_from_input_ids(input_ids, padding_idx: int, past_length: int = 0):
    """Note [RoBERTa positions]: (batch, seq) ids -> (batch, seq) int64 position ids.

    Example:
        >>> import ember
        >>> from ember.transformers.roberta.modeling_roberta import (
        ...     create_position_ids_from_input_ids)
        >>> create_position_ids_from_input_ids(ember.tensor([[0, 5, 6, 1, 1]]), 1).tolist()
        [[2, 3, 4, 1, 1]]
    """
    mask = ember.as_tensor(input_ids).ne(padding_idx).to(ember.int64)
    return (mask.cumsum(1) + past_length) * mask + padding_idx


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with RoBERTa's positions (Note [RoBERTa positions]); the position
    table has a padding row, as in HuggingFace."""

    def __init__(self, config: RobertaConfig):
        if not isinstance(config.pad_token_id, int) or config.pad_token_id < 0:
            raise ValueError(
                f"RobertaEmbeddings: positions are counted from pad_token_id "
                f"(Note [RoBERTa positions]); it must be an int >= 0, got "
                f"{config.pad_token_id!r}"
            )
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=self.padding_idx
        )

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if position_ids is None:
            shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
            longest = shape[1] + self.padding_idx + 1  # one past the largest position id
            if longest > self.max_position_embeddings:
                raise ValueError(
                    f"RobertaEmbeddings: sequence length {shape[1]} needs position ids up to "
                    f"{longest - 1} (they start at pad_token_id + 1 = {self.padding_idx + 1}), "
                    f"but max_position_embeddings is {self.max_position_embeddings}; truncate "
                    f"the input to {self.max_position_embeddings - self.padding_idx - 1} tokens"
                )
            if input_ids is not None:
                position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx)
            else:
                position_ids = (
                    ember.arange(self.padding_idx + 1, longest).unsqueeze(0).expand(*shape)
                )
        return super().forward(input_ids, token_type_ids, position_ids, inputs_embeds)


class RobertaLMHead(nn.Module):
    """dense, exact GELU, `layer_norm`, then the decoder tied to the word embeddings, whose
    bias is `bias` (tied, as in HuggingFace)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(ember.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, features):
        return self.decoder(self.layer_norm(F.gelu(self.dense(features))))


class RobertaClassificationHead(nn.Module):
    """On the <s> token: dropout, dense, tanh, dropout, `out_proj`."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features):
        x = self.dropout(features[:, 0])
        x = self.dropout(F.tanh(self.dense(x)))
        return self.out_proj(x)


def _classifier_dropout(config: RobertaConfig) -> float:
    return (
        config.classifier_dropout
        if config.classifier_dropout is not None
        else config.hidden_dropout_prob
    )


class RobertaPreTrainedModel(BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation; the MLM head's bias starts at zero."""
        super()._init_weights(module)
        if isinstance(module, RobertaLMHead):
            nn.init.zeros_(module.bias)


class RobertaModel(RobertaPreTrainedModel, BertModel):
    """The RoBERTa encoder: BERT's (`BertModel.forward`, `head_mask` included) over
    RobertaEmbeddings; outputs `last_hidden_state` and `pooler_output` (plus `hidden_states` /
    `attentions` on request).

    Example:
        >>> import ember
        >>> from ember.transformers import RobertaConfig, RobertaModel
        >>> model = RobertaModel(RobertaConfig(vocab_size=99, hidden_size=32,
        ...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)).eval()
        >>> out = model(ember.tensor([[0, 5, 7, 2, 1]]),
        ...             attention_mask=ember.tensor([[1, 1, 1, 1, 0]]))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((1, 5, 32), (1, 32))
    """

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^lm_head\.", r"^classifier\.")

    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True):
        super(BertModel, self).__init__(config)  # BertModel's parts, RoBERTa's embeddings
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()


_ENCODER_ARGS = (
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "head_mask",
    "inputs_embeds",
    "output_attentions",
    "output_hidden_states",
)
_NO_POOLER = (r"position_ids$", r"pooler", r"^lm_head\.")


class _RobertaHead(EncoderHeadMixin, RobertaPreTrainedModel):
    _encoder_args = _ENCODER_ARGS
    _keys_to_ignore_on_load_unexpected = _NO_POOLER


class RobertaForMaskedLM(_RobertaHead):
    """RoBERTa with the masked-language-model head; `labels` (-100 where not masked) give the
    cross-entropy loss.

    Example:
        >>> import ember
        >>> from ember.transformers import RobertaConfig, RobertaForMaskedLM
        >>> model = RobertaForMaskedLM(RobertaConfig(vocab_size=99, hidden_size=32,
        ...     num_hidden_layers=1, num_attention_heads=4, intermediate_size=37))
        >>> tuple(model(ember.tensor([[0, 5, 2]])).logits.shape)
        (1, 3, 99)
    """

    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }
    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"pooler")

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        logits = self.lm_head(out.last_hidden_state)
        return self._task_output("masked_lm", out, logits, labels, return_dict)


class RobertaForSequenceClassification(_RobertaHead):
    """RoBERTa with its classification head on <s>; the loss follows `config.problem_type`
    as BERT's does (encoder_heads.sequence_classification_loss)."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        logits = self.classifier(out.last_hidden_state)
        return self._task_output("sequence", out, logits, labels, return_dict)


class RobertaForTokenClassification(_RobertaHead):
    """RoBERTa with a linear classifier per token (NER); `labels` -100 are ignored."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        return self._task_output("token", out, logits, labels, return_dict)


class RobertaForMultipleChoice(_RobertaHead):
    """Inputs (batch, choices, seq); one score per choice from the pooled <s> output
    (dropout `hidden_dropout_prob`, then `classifier`), as HuggingFace's.

    Example:
        >>> import ember
        >>> from ember.transformers import RobertaConfig, RobertaForMultipleChoice
        >>> model = RobertaForMultipleChoice(RobertaConfig(vocab_size=99, hidden_size=32,
        ...     num_hidden_layers=1, num_attention_heads=4, intermediate_size=37))
        >>> out = model(ember.tensor([[[0, 5, 2], [0, 7, 2]]]), labels=ember.tensor([1]))
        >>> tuple(out.logits.shape), out.loss.ndim
        ((1, 2), 0)
    """

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^lm_head\.")

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        choices, flat_ids, flat_kwargs = flatten_choices(self, input_ids, kwargs)
        out = self._encode(flat_ids, flat_kwargs)
        logits = self.classifier(self.dropout(out.pooler_output)).reshape(-1, choices)
        return self._task_output("choice", out, logits, labels, return_dict)


class RobertaForQuestionAnswering(_RobertaHead):
    """RoBERTa with a span head: start and end logits per token."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"RobertaForQuestionAnswering: num_labels must be 2 (start and "
                f"end logits), got {config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self, input_ids=None, start_positions=None, end_positions=None, return_dict=None, **kwargs
    ):
        out = self._encode(input_ids, kwargs)
        logits = self.qa_outputs(out.last_hidden_state)
        return self._span_output(out, logits, start_positions, end_positions, return_dict)


__all__ = [
    "RobertaForMaskedLM",
    "RobertaForMultipleChoice",
    "RobertaForQuestionAnswering",
    "RobertaForSequenceClassification",
    "RobertaForTokenClassification",
    "RobertaModel",
    "RobertaPreTrainedModel",
    "create_position_ids_from_input_ids",
]
