"""L7 `ember.transformers`: HuggingFace-style configs, pretrained models, Auto classes,
pipelines and the tokenizers of `ember.text`, under HuggingFace's names.

`from ember.transformers import BertTokenizer, BertForSequenceClassification` works as the
HuggingFace import does; models load HuggingFace folders with no network access. As in
HuggingFace, the Trainer and its companions are importable from here too (`from
ember.transformers import Trainer, TrainingArguments`): they live one layer up, in `ember.train`,
and are re-exported lazily (the face rule of DESIGN.md), so importing this package does not
import the Trainer.
"""

import importlib as _importlib

from ember.text import AutoTokenizer as AutoTokenizer
from ember.text import BatchEncoding as BatchEncoding
from ember.text import BertTokenizer as BertTokenizer
from ember.text import BertTokenizerFast as BertTokenizerFast
from ember.text import DistilBertTokenizer as DistilBertTokenizer
from ember.text import DistilBertTokenizerFast as DistilBertTokenizerFast
from ember.text import GPT2Tokenizer as GPT2Tokenizer
from ember.text import GPT2TokenizerFast as GPT2TokenizerFast
from ember.text import PreTrainedTokenizerFast as PreTrainedTokenizerFast
from ember.text import RobertaTokenizer as RobertaTokenizer
from ember.text import RobertaTokenizerFast as RobertaTokenizerFast
from ember.transformers.activations import ACT2FN as ACT2FN
from ember.transformers.auto import (
    AutoConfig as AutoConfig,
    AutoModel as AutoModel,
    AutoModelForCausalLM as AutoModelForCausalLM,
    AutoModelForMaskedLM as AutoModelForMaskedLM,
    AutoModelForMultipleChoice as AutoModelForMultipleChoice,
    AutoModelForNextSentencePrediction as AutoModelForNextSentencePrediction,
    AutoModelForPreTraining as AutoModelForPreTraining,
    AutoModelForQuestionAnswering as AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification as AutoModelForSequenceClassification,
    AutoModelForTokenClassification as AutoModelForTokenClassification,
)
from ember.transformers.bert import (
    BertConfig as BertConfig,
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
from ember.transformers.cache_utils import DynamicCache as DynamicCache
from ember.transformers.configuration_utils import PretrainedConfig as PretrainedConfig
from ember.transformers.distilbert import (
    DistilBertConfig as DistilBertConfig,
    DistilBertForMaskedLM as DistilBertForMaskedLM,
    DistilBertForMultipleChoice as DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering as DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification as DistilBertForSequenceClassification,
    DistilBertForTokenClassification as DistilBertForTokenClassification,
    DistilBertModel as DistilBertModel,
    DistilBertPreTrainedModel as DistilBertPreTrainedModel,
)
from ember.transformers.data_collator import (
    DataCollatorForLanguageModeling as DataCollatorForLanguageModeling,
)
from ember.transformers.generation import (
    BaseStreamer as BaseStreamer,
    EosTokenCriteria as EosTokenCriteria,
    ForcedBOSTokenLogitsProcessor as ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor as ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor as InfNanRemoveLogitsProcessor,
    LogitNormalization as LogitNormalization,
    LogitsWarper as LogitsWarper,
    SuppressTokensAtBeginLogitsProcessor as SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor as SuppressTokensLogitsProcessor,
    GenerateBeamDecoderOnlyOutput as GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput as GenerateDecoderOnlyOutput,
    GenerationConfig as GenerationConfig,
    GenerationMixin as GenerationMixin,
    LogitsProcessor as LogitsProcessor,
    LogitsProcessorList as LogitsProcessorList,
    MaxLengthCriteria as MaxLengthCriteria,
    MaxTimeCriteria as MaxTimeCriteria,
    MinLengthLogitsProcessor as MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor as MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper as MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor as NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor as RepetitionPenaltyLogitsProcessor,
    StoppingCriteria as StoppingCriteria,
    StoppingCriteriaList as StoppingCriteriaList,
    TemperatureLogitsWarper as TemperatureLogitsWarper,
    TextIteratorStreamer as TextIteratorStreamer,
    TextStreamer as TextStreamer,
    TopKLogitsWarper as TopKLogitsWarper,
    TopPLogitsWarper as TopPLogitsWarper,
)
from ember.transformers.gpt2 import (
    Conv1D as Conv1D,
    GPT2Config as GPT2Config,
    GPT2LMHeadModel as GPT2LMHeadModel,
    GPT2Model as GPT2Model,
    GPT2PreTrainedModel as GPT2PreTrainedModel,
)
from ember.transformers.llama import (
    LlamaConfig as LlamaConfig,
    LlamaForCausalLM as LlamaForCausalLM,
    LlamaModel as LlamaModel,
    LlamaPreTrainedModel as LlamaPreTrainedModel,
    LlamaRMSNorm as LlamaRMSNorm,
    MistralConfig as MistralConfig,
    MistralForCausalLM as MistralForCausalLM,
    MistralModel as MistralModel,
    Qwen2Config as Qwen2Config,
    Qwen2ForCausalLM as Qwen2ForCausalLM,
    Qwen2Model as Qwen2Model,
    SmolLM3Config as SmolLM3Config,
    SmolLM3ForCausalLM as SmolLM3ForCausalLM,
    SmolLM3Model as SmolLM3Model,
)
from ember.transformers.modeling_outputs import ModelOutput as ModelOutput
from ember.transformers.modeling_utils import LoadingInfo as LoadingInfo
from ember.transformers.modeling_utils import PreTrainedModel as PreTrainedModel
from ember.transformers.pipelines import Pipeline as Pipeline
from ember.transformers.pipelines import pipeline as pipeline
from ember.transformers.roberta import (
    RobertaConfig as RobertaConfig,
    RobertaForMaskedLM as RobertaForMaskedLM,
    RobertaForMultipleChoice as RobertaForMultipleChoice,
    RobertaForQuestionAnswering as RobertaForQuestionAnswering,
    RobertaForSequenceClassification as RobertaForSequenceClassification,
    RobertaForTokenClassification as RobertaForTokenClassification,
    RobertaModel as RobertaModel,
    RobertaPreTrainedModel as RobertaPreTrainedModel,
)
from ember.transformers.sentence_embeddings import (
    encode_sentences as encode_sentences,
    mean_pooling as mean_pooling,
)

# The face's lazy re-exports from `ember.train` (L8), under HuggingFace's top-level names.
_TRAIN_NAMES = (
    "Trainer",
    "TrainingArguments",
    "TrainerCallback",
    "TrainerState",
    "TrainerControl",
    "EarlyStoppingCallback",
    "PrinterCallback",
    "ProgressCallback",
    "DefaultFlowCallback",
    "TensorBoardCallback",
    "EvalPrediction",
    "PredictionOutput",
    "TrainOutput",
    "DataCollatorWithPadding",
    "default_data_collator",
    "get_scheduler",
    "set_seed",
)


def __getattr__(name):
    if name in _TRAIN_NAMES:
        value = getattr(_importlib.import_module("ember.train"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.transformers' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TRAIN_NAMES))
