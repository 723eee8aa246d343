"""RoBERTa: config and models (HuggingFace names and weights)."""

from ember.transformers.roberta.configuration_roberta import RobertaConfig as RobertaConfig
from ember.transformers.roberta.modeling_roberta import (
    RobertaForMaskedLM as RobertaForMaskedLM,
    RobertaForMultipleChoice as RobertaForMultipleChoice,
    RobertaForQuestionAnswering as RobertaForQuestionAnswering,
    RobertaForSequenceClassification as RobertaForSequenceClassification,
    RobertaForTokenClassification as RobertaForTokenClassification,
    RobertaModel as RobertaModel,
    RobertaPreTrainedModel as RobertaPreTrainedModel,
)
