"""`generate()` and its parts under HuggingFace's names: `GenerationConfig`, `GenerationMixin`,
logits processors and warpers, stopping criteria, streamers."""

from ember.transformers.generation.configuration_utils import (
    GenerationConfig as GenerationConfig,
)
from ember.transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor as ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor as ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor as InfNanRemoveLogitsProcessor,
    LogitNormalization as LogitNormalization,
    LogitsProcessor as LogitsProcessor,
    LogitsProcessorList as LogitsProcessorList,
    LogitsWarper as LogitsWarper,
    MinLengthLogitsProcessor as MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor as MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper as MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor as NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor as RepetitionPenaltyLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor as SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor as SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper as TemperatureLogitsWarper,
    TopKLogitsWarper as TopKLogitsWarper,
    TopPLogitsWarper as TopPLogitsWarper,
)
from ember.transformers.generation.stopping_criteria import (
    EosTokenCriteria as EosTokenCriteria,
    MaxLengthCriteria as MaxLengthCriteria,
    MaxTimeCriteria as MaxTimeCriteria,
    StoppingCriteria as StoppingCriteria,
    StoppingCriteriaList as StoppingCriteriaList,
)
from ember.transformers.generation.streamers import (
    BaseStreamer as BaseStreamer,
    TextIteratorStreamer as TextIteratorStreamer,
    TextStreamer as TextStreamer,
)
from ember.transformers.generation.utils import (
    GenerateBeamDecoderOnlyOutput as GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput as GenerateDecoderOnlyOutput,
    GenerationMixin as GenerationMixin,
)
