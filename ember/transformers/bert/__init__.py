"""BERT: config and models (HuggingFace names and weights)."""

from ember.transformers.bert.configuration_bert import BertConfig as BertConfig
from ember.transformers.bert.modeling_bert import (
    BertForMaskedLM as BertForMaskedLM,
    BertForMultipleChoice as BertForMultipleChoice,
    BertForNextSentencePrediction as BertForNextSentencePrediction,
    BertForPreTraining as BertForPreTraining,
    BertForQuestionAnswering as BertForQuestionAnswering,
    BertForSequenceClassification as BertForSequenceClassification,
    BertForTokenClassification as BertForTokenClassification,
    BertModel as BertModel,
    BertPreTrainedModel as BertPreTrainedModel,
)
