"""DistilBERT: config and models (HuggingFace names and weights)."""

from ember.transformers.distilbert.configuration_distilbert import (
    DistilBertConfig as DistilBertConfig,
)
from ember.transformers.distilbert.modeling_distilbert import (
    DistilBertForMaskedLM as DistilBertForMaskedLM,
    DistilBertForMultipleChoice as DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering as DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification as DistilBertForSequenceClassification,
    DistilBertForTokenClassification as DistilBertForTokenClassification,
    DistilBertModel as DistilBertModel,
    DistilBertPreTrainedModel as DistilBertPreTrainedModel,
)
