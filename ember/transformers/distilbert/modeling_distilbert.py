"""DistilBERT: a BERT with half the layers, no token types and no pooler, under its own
names (`distilbert.transformer.layer.0.attention.q_lin.weight`, `ffn.lin1`,
`sa_layer_norm`, `vocab_projector`, ...), which are HuggingFace's. The attention arithmetic,
the layer loop, the initialisation and the loss rules are the encoder families' shared ones
(ember/transformers/encoder_heads.py); this file imports nothing from BERT.

Note [Sinusoidal positions]: with `sinusoidal_pos_embds=True` the position table starts as
the fixed sin/cos table of "Attention is all you need" (row p, column j: sin for even j and
cos for odd j of p / 10000^(2 floor(j/2) / dim)). It is still an ordinary weight, saved,
loaded and trainable, as in HuggingFace transformers 5.
"""

from __future__ import annotations

import numpy as np

import ember
from ember import nn
from ember.autograd import no_grad
from ember.nn import functional as F
from ember.transformers.activations import ACT2FN
from ember.transformers.distilbert.configuration_distilbert import DistilBertConfig
from ember.transformers.encoder_heads import (
    EncoderHeadMixin,
    feed_forward_add_norm,
    finish,
    flatten_choices,
    init_encoder_weights,
    return_flags,
    run_layers,
    self_attention,
)
from ember.transformers.modeling_outputs import (
    BaseModelOutput,
)
from ember.transformers.modeling_utils import PreTrainedModel


def sinusoidal_position_table(n_positions: int, dim: int) -> np.ndarray:
    """Note [Sinusoidal positions]: the (n_positions, dim) float32 table.

    Example:
        >>> [round(float(v), 4) for v in sinusoidal_position_table(3, 4)[1]]
        [0.8415, 0.5403, 0.01, 0.9999]
    """
    positions = np.arange(n_positions, dtype=np.float64)[:, None]
    rates = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)
    angles = positions / rates
    table = np.empty((n_positions, dim), np.float64)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


class Embeddings(nn.Module):
    """word + position embeddings, then LayerNorm (eps 1e-12) and dropout."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.dim, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        self.max_position_embeddings = config.max_position_embeddings

    def forward(self, input_ids=None, inputs_embeds=None, position_ids=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if length > self.max_position_embeddings:
            raise ValueError(
                f"DistilBertEmbeddings: sequence length {length} exceeds "
                f"max_position_embeddings {self.max_position_embeddings}; "
                "truncate the input (tokenizer truncation=True)"
            )
        if position_ids is None:
            position_ids = ember.arange(length).unsqueeze(0)
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class DistilBertSelfAttention(nn.Module):
    """Multi-head self-attention (encoder_heads.self_attention) with DistilBERT's projections
    `q_lin`, `k_lin`, `v_lin` and the output projection `out_lin` inside."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError(
                f"DistilBertSelfAttention: dim {config.dim} is not a multiple of "
                f"n_heads {config.n_heads}"
            )
        self.n_heads = config.n_heads
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout = nn.Dropout(config.attention_dropout)

    def forward(
        self, hidden_states, attention_mask=None, output_attentions: bool = False, head_mask=None
    ):
        context, probs = self_attention(
            hidden_states,
            self.q_lin,
            self.k_lin,
            self.v_lin,
            self.n_heads,
            attention_mask,
            output_attentions,
            head_mask,
            self.dropout,
        )
        return self.out_lin(context), probs


class FFN(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation = ACT2FN[config.activation]

    def forward(self, x):
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """Post-norm block: attention, add, `sa_layer_norm`; FFN, add, `output_layer_norm`."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)

    def forward(
        self, hidden_states, attention_mask=None, output_attentions: bool = False, head_mask=None
    ):
        attended, probs = self.attention(
            hidden_states, attention_mask, output_attentions, head_mask
        )
        attended = self.sa_layer_norm(attended + hidden_states)
        if type(self.ffn) is FFN:
            ffn = self.ffn
            fused = feed_forward_add_norm(  # Note [Feed-forward in one op]
                ffn.lin1, ffn.activation, ffn.lin2, ffn.dropout, self.output_layer_norm, attended
            )
            if fused is not None:
                return fused, probs
        return self.output_layer_norm(self.ffn(attended) + attended), probs


class Transformer(nn.Module):
    """The stack of blocks (the loop: encoder_heads.run_layers)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([TransformerBlock(config) for _ in range(config.n_layers)])

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        head_mask=None,
    ):
        return run_layers(
            self.layer,
            hidden_states,
            attention_mask,
            output_attentions,
            output_hidden_states,
            head_mask,
        )


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    _keys_to_ignore_on_load_unexpected = (r"position_ids$",)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation; a sinusoidal position table when configured
        (Note [Sinusoidal positions])."""
        init_encoder_weights(module, self.config.initializer_range)
        if isinstance(module, Embeddings) and self.config.sinusoidal_pos_embds:
            table = sinusoidal_position_table(self.config.max_position_embeddings, self.config.dim)
            with no_grad():
                module.position_embeddings.weight.copy_(ember.from_numpy(table))


class DistilBertModel(DistilBertPreTrainedModel):
    """The DistilBERT encoder; outputs `last_hidden_state` (plus `hidden_states` /
    `attentions` on request). There are no token types and no pooler. `head_mask` is
    BertModel's: (n_heads,) or (n_layers, n_heads), multiplying each head's probabilities.

    Example:
        >>> import ember
        >>> from ember.transformers import DistilBertConfig, DistilBertModel
        >>> model = DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=2,
        ...                                          n_heads=4, hidden_dim=37)).eval()
        >>> out = model(ember.tensor([[2, 5, 7, 0]]), attention_mask=ember.tensor([[1, 1, 1, 0]]))
        >>> tuple(out.last_hidden_state.shape)
        (1, 4, 32)
    """

    _keys_to_ignore_on_load_unexpected = (
        r"position_ids$",
        r"^vocab_",
        r"^pre_classifier\.",
        r"^classifier\.",
        r"^qa_outputs\.",
    )

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        head_mask=None,
        inputs_embeds=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        token_type_ids=None,
    ):
        """`token_type_ids` is accepted so that a BERT tokenizer's output can be passed as it
        is; DistilBERT has no token types, so any non-zero entry is an error rather than
        being dropped silently."""
        output_attentions, output_hidden_states, return_dict = return_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        if token_type_ids is not None and bool(ember.as_tensor(token_type_ids).ne(0).any()):
            raise ValueError(
                "DistilBertModel: DistilBERT has no token types; token_type_ids "
                "must be omitted or all 0 (use a tokenizer that does not return "
                "them, e.g. DistilBertTokenizer)"
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("DistilBertModel: pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_ids = ember.as_tensor(input_ids)
            if input_ids.ndim != 2:
                raise ValueError(
                    f"DistilBertModel: input_ids must be (batch, seq), got shape "
                    f"{tuple(input_ids.shape)}"
                )
            shape = tuple(input_ids.shape)
        else:
            shape = tuple(inputs_embeds.shape[:2])
        if position_ids is not None:
            position_ids = ember.as_tensor(position_ids)
        embeddings = self.embeddings(input_ids, inputs_embeds, position_ids)
        extended_mask = None
        if attention_mask is not None:
            attention_mask = ember.as_tensor(attention_mask)
            if tuple(attention_mask.shape[:1]) != shape[:1] or attention_mask.shape[-1] != shape[1]:
                raise ValueError(
                    f"DistilBertModel: attention_mask shape "
                    f"{tuple(attention_mask.shape)} does not fit input {shape}"
                )
            extended_mask = self.get_extended_attention_mask(attention_mask, embeddings.dtype)
        layer_head_masks = None
        if head_mask is not None:  # as BertModel's (PreTrainedModel.get_head_mask)
            layer_head_masks = self.get_head_mask(
                head_mask, self.config.n_layers, self.config.n_heads
            )
        sequence_output, hidden_states, attentions = self.transformer(
            embeddings, extended_mask, output_attentions, output_hidden_states, layer_head_masks
        )
        output = BaseModelOutput(
            last_hidden_state=sequence_output, hidden_states=hidden_states, attentions=attentions
        )
        return finish(output, return_dict)


_ENCODER_ARGS = (
    "attention_mask",
    "head_mask",
    "inputs_embeds",
    "position_ids",
    "output_attentions",
    "output_hidden_states",
    "token_type_ids",
)


class _DistilBertHead(EncoderHeadMixin, DistilBertPreTrainedModel):
    _encoder_args = _ENCODER_ARGS
    _keys_to_ignore_on_load_unexpected = (r"position_ids$", r"^vocab_")


class DistilBertForMaskedLM(_DistilBertHead):
    """DistilBERT with its masked-language-model head: `vocab_transform`, the configured
    activation, `vocab_layer_norm`, and `vocab_projector` tied to the word embeddings.

    Example:
        >>> import ember
        >>> from ember.transformers import DistilBertConfig, DistilBertForMaskedLM
        >>> model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=99, dim=32, n_layers=1,
        ...                                                n_heads=4, hidden_dim=37))
        >>> tuple(model(ember.tensor([[2, 5, 7]])).logits.shape)
        (1, 3, 99)
    """

    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}
    _keys_to_ignore_on_load_unexpected = (r"position_ids$",)

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.activation = ACT2FN[config.activation]
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        hidden = self.activation(self.vocab_transform(out.last_hidden_state))
        logits = self.vocab_projector(self.vocab_layer_norm(hidden))
        return self._task_output("masked_lm", out, logits, labels, return_dict)


class DistilBertForSequenceClassification(_DistilBertHead):
    """On the first token: `pre_classifier`, ReLU, dropout (`seq_classif_dropout`),
    `classifier`; the loss follows `config.problem_type` as BERT's does."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        return self._task_output("sequence", out, logits, labels, return_dict)


class DistilBertForTokenClassification(_DistilBertHead):
    """DistilBERT with a linear classifier per token (NER); `labels` -100 are ignored."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        out = self._encode(input_ids, kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        return self._task_output("token", out, logits, labels, return_dict)


class DistilBertForMultipleChoice(_DistilBertHead):
    """Inputs (batch, choices, seq); per choice, on the first token: `pre_classifier`, ReLU,
    dropout (`seq_classif_dropout`), `classifier` to one score, as HuggingFace's.

    Example:
        >>> import ember
        >>> from ember.transformers import DistilBertConfig, DistilBertForMultipleChoice
        >>> model = DistilBertForMultipleChoice(DistilBertConfig(vocab_size=99, dim=32,
        ...     n_layers=1, n_heads=4, hidden_dim=37))
        >>> tuple(model(ember.tensor([[[2, 5, 3], [2, 7, 3], [2, 9, 3]]])).logits.shape)
        (1, 3)
    """

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, 1)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(self, input_ids=None, labels=None, return_dict=None, **kwargs):
        choices, flat_ids, flat_kwargs = flatten_choices(self, input_ids, kwargs)
        out = self._encode(flat_ids, flat_kwargs)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))
        logits = self.classifier(self.dropout(pooled)).reshape(-1, choices)
        return self._task_output("choice", out, logits, labels, return_dict)


class DistilBertForQuestionAnswering(_DistilBertHead):
    """DistilBERT with a span head (dropout `qa_dropout`, then `qa_outputs`)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"DistilBertForQuestionAnswering: num_labels must be 2 (start and "
                f"end logits), got {config.num_labels}"
            )
        self.distilbert = DistilBertModel(config)
        self.qa_outputs = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.post_init()

    def forward(
        self, input_ids=None, start_positions=None, end_positions=None, return_dict=None, **kwargs
    ):
        out = self._encode(input_ids, kwargs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))
        return self._span_output(out, logits, start_positions, end_positions, return_dict)


__all__ = [
    "DistilBertForMaskedLM",
    "DistilBertForMultipleChoice",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "DistilBertPreTrainedModel",
    "sinusoidal_position_table",
]
