"""RoBERTa's byte-level BPE tokenizer, from a folder's tokenizer.json or from the older
vocab.json + merges.txt pair.

It differs from the generic `PreTrainedTokenizerFast` in what HuggingFace's
`RobertaTokenizer` differs in: its model inputs (no token type ids) and its default special
tokens (<s> ... </s>, <pad>, <unk>, <mask>). With only vocab.json and merges.txt the engine is
built as HuggingFace transformers 5 builds it: BPE over the vocabulary and merge ranks (no
continuation prefix, no unknown-token fusing), the ByteLevel pre-tokenizer and decoder, and
RobertaProcessing (<s> A </s>, <s> A </s></s> B </s>, offsets trimmed of spaces). Special
tokens keep the flags their config gives them (e.g. <mask> with lstrip=True in
special_tokens_map.json or added_tokens_decoder), as HuggingFace keeps them.
"""

from __future__ import annotations

from ember.text.byte_level_bpe import VocabMergesFiles, load_merges
from ember.text.tokenization import SPECIAL_TOKENS_ATTRIBUTES, PreTrainedTokenizerFast

__all__ = ["RobertaTokenizer", "RobertaTokenizerFast", "load_merges"]


class RobertaTokenizer(VocabMergesFiles, PreTrainedTokenizerFast):
    """RoBERTa's tokenizer (byte-level BPE) from a tokenizer.json, or from vocab.json and
    merges.txt.

    Args:
        vocab_file, merges_file: the BPE vocabulary and merge ranks, used when no
            tokenizer_file is given.
        add_prefix_space: treat the first word like any other (a space before it).
        trim_offsets: offsets leave out the spaces that byte-level tokens carry.

    Example:
        >>> tokenizer = RobertaTokenizer.from_pretrained("path/to/roberta")  # doctest: +SKIP
        >>> tokenizer("Hello world")["input_ids"]                            # doctest: +SKIP
        [0, 31414, 232, 2]
    """

    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class_name = "RobertaTokenizer"
    # special tokens added to an engine built from vocabulary files, after added_tokens_decoder's
    _backend_special_tokens = SPECIAL_TOKENS_ATTRIBUTES

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        tokenizer_file: str | None = None,
        *,
        errors: str = "replace",
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        add_prefix_space: bool = False,
        trim_offsets: bool = True,
        added_tokens_decoder: dict | None = None,
        tokenizer_object=None,
        **kwargs,
    ):
        from_vocabulary = self._check_vocabulary_files(
            vocab_file, merges_file, tokenizer_file, tokenizer_object
        )
        super().__init__(
            tokenizer_object=tokenizer_object,
            tokenizer_file=tokenizer_file,
            vocab_file=vocab_file,
            merges_file=merges_file,
            errors=errors,
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            add_prefix_space=add_prefix_space,
            trim_offsets=trim_offsets,
            added_tokens_decoder=added_tokens_decoder,
            **kwargs,
        )
        self._drop_file_kwargs()
        if from_vocabulary:
            from tokenizers import processors

            sep, cls = self.sep_token, self.cls_token
            self._tokenizer.post_processor = processors.RobertaProcessing(
                (sep, self.convert_tokens_to_ids(sep)),
                (cls, self.convert_tokens_to_ids(cls)),
                trim_offsets=trim_offsets,
                add_prefix_space=add_prefix_space,
            )


RobertaTokenizerFast = RobertaTokenizer  # one class, as in transformers 5
