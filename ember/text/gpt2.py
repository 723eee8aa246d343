"""GPT-2's byte-level BPE tokenizer, the one GPT-2, Llama 3, SmolLM, Qwen and most decoder
language models use: from a tokenizer.json, from vocab.json + merges.txt, or from the tokens
and merges of a GGUF file (`ember.text.gguf`).

Byte-level BPE itself (Note [Byte-level BPE]) and the vocabulary files live in
`ember.text.byte_level_bpe`. As HuggingFace transformers 5's `GPT2Tokenizer` builds it from
vocabulary files, no special tokens are added around the text unless the config says
`add_bos_token` / `add_eos_token` (Note [BOS and EOS flags]).
"""

from __future__ import annotations

from ember.text.byte_level_bpe import VocabMergesFiles, byte_level_bpe_engine, bytes_to_unicode
from ember.text.tokenization import PreTrainedTokenizerFast

__all__ = ["GPT2Tokenizer", "GPT2TokenizerFast", "byte_level_bpe_engine", "bytes_to_unicode"]


class GPT2Tokenizer(VocabMergesFiles, PreTrainedTokenizerFast):
    """GPT-2's byte-level BPE tokenizer (Note [Byte-level BPE]), HuggingFace's defaults:
    `<|endoftext|>` as bos, eos and unknown token, no padding token, no special tokens added.

    Args:
        vocab_file, merges_file: the BPE vocabulary and merge ranks, used when no
            tokenizer_file is given.
        add_prefix_space: treat the first word like any other (a space before it).

    Example:
        >>> tokenizer = GPT2Tokenizer.from_pretrained("path/to/gpt2")  # doctest: +SKIP
        >>> tokenizer("Hello world")["input_ids"]                      # doctest: +SKIP
        [15496, 995]
    """

    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class_name = "GPT2Tokenizer"

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        tokenizer_file: str | None = None,
        *,
        errors: str = "replace",
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token=None,
        add_prefix_space: bool = False,
        added_tokens_decoder: dict | None = None,
        tokenizer_object=None,
        **kwargs,
    ):
        self._check_vocabulary_files(vocab_file, merges_file, tokenizer_file, tokenizer_object)
        super().__init__(
            tokenizer_object=tokenizer_object,
            tokenizer_file=tokenizer_file,
            vocab_file=vocab_file,
            merges_file=merges_file,
            errors=errors,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_prefix_space=add_prefix_space,
            added_tokens_decoder=added_tokens_decoder,
            **kwargs,
        )
        self._drop_file_kwargs()

    def _save_vocabulary(self, folder: str) -> list[str]:
        return []  # tokenizer.json holds the vocabulary and merges


GPT2TokenizerFast = GPT2Tokenizer  # one class, as in transformers 5
