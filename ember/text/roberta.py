"""RoBERTa's byte-level BPE tokenizer, loaded from a folder's tokenizer.json as it is.

It differs from the generic `PreTrainedTokenizerFast` in what HuggingFace's
`RobertaTokenizer` differs in: its model inputs (no token type ids) and its default special
tokens (<s> ... </s>, <pad>, <unk>, <mask>).
"""

from __future__ import annotations

from ember.text.tokenization import PreTrainedTokenizerFast

__all__ = ["RobertaTokenizer", "RobertaTokenizerFast"]


class RobertaTokenizer(PreTrainedTokenizerFast):
    """RoBERTa's tokenizer (byte-level BPE) from a tokenizer.json.

    Example:
        >>> tokenizer = RobertaTokenizer.from_pretrained("path/to/roberta")  # doctest: +SKIP
        >>> tokenizer("Hello world")["input_ids"]                            # doctest: +SKIP
        [0, 31414, 232, 2]
    """

    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class_name = "RobertaTokenizer"

    def __init__(
        self,
        tokenizer_file: str | None = None,
        *,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        tokenizer_object=None,
        **kwargs,
    ):
        super().__init__(
            tokenizer_object=tokenizer_object,
            tokenizer_file=tokenizer_file,
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            **kwargs,
        )


RobertaTokenizerFast = RobertaTokenizer  # one class, as in transformers 5
