"""What the encoder families' task heads share: calling the base model, the label losses,
and the output flags.

BERT defined these first (ember/transformers/bert/modeling_bert.py); RoBERTa and DistilBERT
reuse them from here so that a loss rule (e.g. how `problem_type` is inferred) lives in one
place. A head model finds its encoder under `base_model_prefix` (`roberta`, `distilbert`).
"""

from __future__ import annotations

import ember
from ember.nn import functional as F
from ember.transformers.bert.modeling_bert import (
    BertForSequenceClassification,
    _as_labels,
    _finish,
    _flatten_choices,
    _return_flags,
)
from ember.transformers.modeling_outputs import (
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

__all__ = [
    "EncoderHeadMixin",
    "as_labels",
    "finish",
    "flatten_choices",
    "return_flags",
    "sequence_classification_loss",
    "span_loss",
    "token_classification_loss",
]

as_labels = _as_labels
finish = _finish
return_flags = _return_flags
flatten_choices = _flatten_choices  # (batch, choices, ...) inputs -> (batch * choices, ...)


def sequence_classification_loss(model, logits, labels):
    """BERT's rule (BertForSequenceClassification): `config.problem_type` picks MSE,
    cross-entropy or BCE-with-logits, inferred from `num_labels` and the labels' dtype when
    unset (and then stored in the config, as HuggingFace does)."""
    return BertForSequenceClassification._loss(model, logits, labels)


def token_classification_loss(logits, labels, num_labels: int):
    """Cross-entropy per token; labels -100 are ignored."""
    return F.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """The mean of the start and end cross-entropies; positions outside the sequence are
    clamped to its length and ignored, as in HuggingFace."""
    length = start_logits.shape[1]
    start = ember.as_tensor(start_positions).reshape(-1).clamp(0, length)
    end = ember.as_tensor(end_positions).reshape(-1).clamp(0, length)
    return (
        F.cross_entropy(start_logits, start, ignore_index=length)
        + F.cross_entropy(end_logits, end, ignore_index=length)
    ) / 2


class EncoderHeadMixin:
    """For head models: `_encode` runs the base model (attribute `base_model_prefix`) with the
    encoder keyword arguments the family accepts (`_encoder_args`), always as a ModelOutput."""

    _encoder_args: tuple[str, ...] = ()

    def _encode(self, input_ids, kwargs: dict):
        unknown = sorted(set(kwargs) - set(self._encoder_args))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.forward: unexpected keyword arguments "
                f"{unknown}; the encoder takes {list(self._encoder_args)}"
            )
        base = getattr(self, self.base_model_prefix)
        return base(input_ids, **{k: kwargs.get(k) for k in self._encoder_args}, return_dict=True)

    def _return_dict(self, return_dict) -> bool:
        return self.config.return_dict if return_dict is None else return_dict

    def _task_output(self, task: str, out, logits, labels, return_dict):
        """The head's output for `task` ("masked_lm", "sequence", "token" or "choice"):
        its loss when labels are given, the encoder's hidden states and attentions."""
        labels = as_labels(labels)
        loss = None
        if labels is not None:
            if task == "sequence":
                loss = sequence_classification_loss(self, logits, labels)
            elif task == "choice":
                loss = F.cross_entropy(logits, labels)
            else:  # one class per token: "masked_lm" (the vocabulary) or "token"
                loss = token_classification_loss(logits, labels, logits.shape[-1])
        output_type = {
            "masked_lm": MaskedLMOutput,
            "sequence": SequenceClassifierOutput,
            "token": TokenClassifierOutput,
            "choice": MultipleChoiceModelOutput,
        }[task]
        output = output_type(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self._return_dict(return_dict))

    def _span_output(self, out, logits, start_positions, end_positions, return_dict):
        """A question-answering head's output from its (..., 2) logits."""
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return finish(output, self._return_dict(return_dict))
