"""BERT: embeddings, encoder, pooler and every task head, in one file (STYLE.md habit 11).

Weight names are HuggingFace's (`bert.encoder.layer.0.attention.self.query.weight`, ...), so
HuggingFace folders load as they are (Note [Weight map] in modeling_utils). Self-attention
runs through `scaled_dot_product_attention` unless the caller asks for the attention
probabilities (`output_attentions=True`), which takes the explicit softmax path. A head mask
(HuggingFace's `head_mask`) scales each head's probabilities; as it is constant over positions
it scales that head's context the same way, so the fast path applies it there.
"""

from __future__ import annotations


import ember
from ember import nn
from ember.nn import functional as F
from ember.transformers.activations import ACT2FN, biased_activation
from ember.transformers.bert.configuration_bert import BertConfig
from ember.transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    BertForPreTrainingOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ember.transformers.encoder_heads import (
    add_and_norm,
    as_labels,
    dense_dropout_add_norm,
    feed_forward_add_norm,
    feed_forward_in_chunks,
    finish,
    flatten_choices,
    init_encoder_weights,
    return_flags,
    run_layers,
    self_attention,
    sequence_classification_loss,
)
from ember.transformers.modeling_utils import PreTrainedModel


# --------------------------------------------------------------------------- the encoder
class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{type(self).__name__}: position_embedding_type "
                f"{config.position_embedding_type!r} is not supported; ember "
                "implements 'absolute'"
            )
        self.max_position_embeddings = config.max_position_embeddings

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[0], inputs_embeds.shape[1]
        if length > self.max_position_embeddings:
            raise ValueError(
                f"{type(self).__name__}: sequence length {length} exceeds "
                f"max_position_embeddings {self.max_position_embeddings}; "
                "truncate the input (tokenizer truncation=True)"
            )
        if position_ids is None:
            position_ids = ember.arange(length).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = ember.zeros((batch, length), dtype=ember.int64)
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        token_types = self.token_type_embeddings(token_type_ids)
        return self.dropout(add_and_norm(self.LayerNorm, embeddings, token_types))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"{type(self).__name__}: hidden_size {config.hidden_size} is not a "
                f"multiple of num_attention_heads {config.num_attention_heads}"
            )
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states, attention_mask=None, output_attentions: bool = False, head_mask=None
    ):
        return self_attention(
            hidden_states,
            self.query,
            self.key,
            self.value,
            self.num_attention_heads,
            attention_mask,
            output_attentions,
            head_mask,
            self.dropout,
        )


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return dense_dropout_add_norm(
            self.dense, self.dropout, self.LayerNorm, hidden_states, input_tensor
        )


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(
        self, hidden_states, attention_mask=None, output_attentions: bool = False, head_mask=None
    ):
        context, probs = self.self(hidden_states, attention_mask, output_attentions, head_mask)
        return self.output(context, hidden_states), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        if type(self.dense) is not nn.Linear or self.dense.bias is None:  # a wrapped layer
            return self.intermediate_act_fn(self.dense(hidden_states))
        # the bias joins the activation's pass (Note [Fused Transformer ops] in ember.ops.fused)
        projected = F.linear(hidden_states, self.dense.weight)
        return biased_activation(self.intermediate_act_fn, projected, self.dense.bias)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return dense_dropout_add_norm(
            self.dense, self.dropout, self.LayerNorm, hidden_states, input_tensor
        )


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self, hidden_states, attention_mask=None, output_attentions: bool = False, head_mask=None
    ):
        attention_output, probs = self.attention(
            hidden_states, attention_mask, output_attentions, head_mask
        )
        if type(self.intermediate) is BertIntermediate and type(self.output) is BertOutput:
            fused = feed_forward_add_norm(  # Note [Feed-forward in one op]
                self.intermediate.dense,
                self.intermediate.intermediate_act_fn,
                self.output.dense,
                self.output.dropout,
                self.output.LayerNorm,
                attention_output,
            )
            if fused is not None:
                return fused, probs
        return feed_forward_in_chunks(self.feed_forward, attention_output), probs

    def feed_forward(self, attention_output):
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        head_mask=None,
    ):
        """`head_mask`: None, or one (1, heads, 1, 1) tensor (or None) per layer."""
        return run_layers(
            self.layer,
            hidden_states,
            attention_mask,
            output_attentions,
            output_hidden_states,
            head_mask,
        )


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence summary that NSP and classifiers read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


# --------------------------------------------------------------------------- heads' parts
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """transform, then a decoder whose weight is the word-embedding matrix (tied) and whose
    bias is `bias` (tied too, as in HuggingFace)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(ember.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output):
        return self.predictions(sequence_output)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output):
        return self.seq_relationship(pooled_output)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output, pooled_output):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


# --------------------------------------------------------------------------- models
_TIED_LM = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    _keys_to_ignore_on_load_unexpected = (r"position_ids$",)

    def _init_weights(self, module: nn.Module) -> None:
        """HuggingFace's: normal(0, initializer_range) for Linear and Embedding weights
        (padding row zero), zero biases, LayerNorm ones/zeros."""
        init_encoder_weights(module, self.config.initializer_range)
        if isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)


# the names these helpers had here before they moved to encoder_heads (kept for callers)
_return_flags, _finish, _as_labels = return_flags, finish, as_labels


class BertModel(BertPreTrainedModel):
    """The BERT encoder with an optional pooler; outputs `last_hidden_state` and
    `pooler_output` (plus `hidden_states` / `attentions` on request). `head_mask`, shaped
    (num_heads,) or (num_layers, num_heads), multiplies each head's attention probabilities
    (HuggingFace 4.x semantics: 0 silences a head; it is differentiable).

    Example:
        >>> import ember
        >>> from ember.transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
        ...                              num_attention_heads=4, intermediate_size=37)).eval()
        >>> out = model(ember.tensor([[2, 5, 7, 0]]), attention_mask=ember.tensor([[1, 1, 1, 0]]))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((1, 4, 32), (1, 32))
    """

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^cls\.")

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        output_attentions, output_hidden_states, return_dict = return_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                f"{type(self).__name__}: pass exactly one of input_ids and inputs_embeds"
            )
        if input_ids is not None:
            input_ids = ember.as_tensor(input_ids)
            if input_ids.ndim != 2:
                raise ValueError(
                    f"{type(self).__name__}: input_ids must be (batch, seq), got "
                    f"shape "
                    f"{tuple(input_ids.shape)}"
                )
            shape = tuple(input_ids.shape)
        else:
            shape = tuple(inputs_embeds.shape[:2])
        if token_type_ids is not None:
            token_type_ids = ember.as_tensor(token_type_ids)
        if position_ids is not None:
            position_ids = ember.as_tensor(position_ids)
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        extended_mask = None
        if attention_mask is not None:
            attention_mask = ember.as_tensor(attention_mask)
            if tuple(attention_mask.shape[:1]) != shape[:1] or attention_mask.shape[-1] != shape[1]:
                raise ValueError(
                    f"{type(self).__name__}: attention_mask shape "
                    f"{tuple(attention_mask.shape)} does not fit input {shape}"
                )
            extended_mask = self.get_extended_attention_mask(attention_mask, embeddings.dtype)
        layer_head_masks = None
        if head_mask is not None:
            layer_head_masks = self.get_head_mask(
                head_mask, self.config.num_hidden_layers, self.config.num_attention_heads
            )
        sequence_output, hidden_states, attentions = self.encoder(
            embeddings, extended_mask, output_attentions, output_hidden_states, layer_head_masks
        )
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return finish(output, return_dict)


_ENCODER_ARGS = (
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "head_mask",
    "inputs_embeds",
    "output_attentions",
    "output_hidden_states",
)


def _encode(model, input_ids, kwargs):
    return model.bert(input_ids, **{k: kwargs.get(k) for k in _ENCODER_ARGS}, return_dict=True)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pretraining heads: masked-LM logits and next-sentence logits; with
    `labels` (-100 = not masked) and `next_sentence_label` the loss is their sum."""

    _tied_weights_keys = _TIED_LM

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def forward(
        self, input_ids=None, labels=None, next_sentence_label=None, return_dict=None, **kwargs
    ):
        out = _encode(self, input_ids, kwargs)
        prediction, relationship = self.cls(out.last_hidden_state, out.pooler_output)
        loss = None
        labels, next_sentence_label = as_labels(labels), as_labels(next_sentence_label)
        if labels is not None and next_sentence_label is not None:
            mlm = F.cross_entropy(
                prediction.reshape(-1, self.config.vocab_size), labels.reshape(-1)
            )
            nsp = F.cross_entropy(relationship.reshape(-1, 2), next_sentence_label.reshape(-1))
            loss = mlm + nsp
        output = BertForPreTrainingOutput(
            loss=loss,
            prediction_logits=prediction,
            seq_relationship_logits=relationship,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-language-model head; `labels` (-100 where not masked) give the
    cross-entropy loss."""

    _tied_weights_keys = _TIED_LM
    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"pooler", r"seq_relationship")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = _encode(self, input_ids, kwargs)
        logits = self.cls(out.last_hidden_state)
        labels = as_labels(labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


class BertForNextSentencePrediction(BertPreTrainedModel):
    """BERT with the next-sentence head: logits (batch, 2), 0 = B follows A."""

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"cls\.predictions")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyNSPHead(config)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        if "next_sentence_label" in kwargs:  # the older name
            labels = kwargs.pop("next_sentence_label")
        out = _encode(self, input_ids, kwargs)
        logits = self.cls(out.pooler_output)
        labels = as_labels(labels)
        loss = (
            None if labels is None else F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
        )
        output = NextSentencePredictorOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


def _classifier_dropout(config: BertConfig) -> float:
    return (
        config.classifier_dropout
        if config.classifier_dropout is not None
        else config.hidden_dropout_prob
    )


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with a linear classifier over the pooled output. The loss follows
    `config.problem_type`, inferred as HuggingFace does when unset: one label -> regression
    (MSE), integer labels -> single-label (cross-entropy), float labels -> multi-label
    (BCE with logits).

    Example:
        >>> import ember
        >>> from ember.transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
        ...                     num_attention_heads=4, intermediate_size=37, num_labels=3)
        >>> out = BertForSequenceClassification(config)(ember.tensor([[2, 5, 7]]),
        ...                                             labels=ember.tensor([1]))
        >>> tuple(out.logits.shape), out.loss.ndim
        ((1, 3), 0)
    """

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^cls\.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = _encode(self, input_ids, kwargs)
        logits = self.classifier(self.dropout(out.pooler_output))
        labels = as_labels(labels)
        loss = None if labels is None else self._loss(logits, labels)
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)

    def _loss(self, logits, labels):
        return sequence_classification_loss(self, logits, labels)


_flatten_choices = flatten_choices


class BertForMultipleChoice(BertPreTrainedModel):
    """Inputs (batch, choices, seq); one score per choice from the pooled output."""

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^cls\.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        choices, flat_ids, flat_kwargs = flatten_choices(self, input_ids, kwargs)
        out = _encode(self, flat_ids, flat_kwargs)
        logits = self.classifier(self.dropout(out.pooler_output)).reshape(-1, choices)
        labels = as_labels(labels)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        output = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


class BertForTokenClassification(BertPreTrainedModel):
    """BERT with a linear classifier per token (NER); `labels` -100 are ignored."""

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"pooler", r"^cls\.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = _encode(self, input_ids, kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        labels = as_labels(labels)
        loss = (
            None
            if labels is None
            else F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        )
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


class BertForQuestionAnswering(BertPreTrainedModel):
    """BERT with a span head: start and end logits per token. Positions outside the sequence
    are clamped to its length and ignored by the loss, as in HuggingFace."""

    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"pooler", r"^cls\.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"{type(self).__name__}: num_labels must be 2 (start and end "
                f"logits), got {config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self, input_ids=None, start_positions=None, end_positions=None, return_dict=None, **kwargs
    ):
        out = _encode(self, input_ids, kwargs)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits = logits[..., 0]
        end_logits = logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            length = start_logits.shape[1]
            start = ember.as_tensor(start_positions).reshape(-1).clamp(0, length)
            end = ember.as_tensor(end_positions).reshape(-1).clamp(0, length)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=length)
                + F.cross_entropy(end_logits, end, ignore_index=length)
            ) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return finish(output, self.config.return_dict if return_dict is None else return_dict)


__all__ = [
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertLayer",
    "BertModel",
    "BertPreTrainedModel",
]
