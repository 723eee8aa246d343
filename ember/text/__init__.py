"""L6: text: HuggingFace-compatible tokenizers over the `tokenizers` engine.

`import ember.text` is cheap; the engine loads when a tokenizer is made
(Note [Tokenizer engine]).
"""

from ember.text.auto import AutoTokenizer as AutoTokenizer
from ember.text.auto import register_tokenizer as register_tokenizer
from ember.text.batch_encoding import BatchEncoding as BatchEncoding
from ember.text.bert import (
    BertTokenizer as BertTokenizer,
)
from ember.text.bert import (
    BertTokenizerFast as BertTokenizerFast,
)
from ember.text.bert import (
    DistilBertTokenizer as DistilBertTokenizer,
)
from ember.text.bert import (
    DistilBertTokenizerFast as DistilBertTokenizerFast,
)
from ember.text.bert import (
    load_vocab as load_vocab,
)
from ember.text.gpt2 import GPT2Tokenizer as GPT2Tokenizer
from ember.text.gpt2 import GPT2TokenizerFast as GPT2TokenizerFast
from ember.text.roberta import RobertaTokenizer as RobertaTokenizer
from ember.text.roberta import RobertaTokenizerFast as RobertaTokenizerFast
from ember.text.tokenization import PreTrainedTokenizerFast as PreTrainedTokenizerFast
