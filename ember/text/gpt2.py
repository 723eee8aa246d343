"""GPT-2's byte-level BPE tokenizer, the one GPT-2, Llama 3, SmolLM, Qwen and most decoder
language models use: from a tokenizer.json, from vocab.json + merges.txt, or from the tokens
and merges of a GGUF file (`ember.text.gguf`).

Note [Byte-level BPE]: text is split into pre-tokens (words with their leading space), each
pre-token's UTF-8 bytes are spelled with 256 printable characters (a space is 'Ġ', a newline
'Ċ'), and BPE merges adjacent symbols by the merges' rank. Decoding maps the characters back
to bytes. As HuggingFace transformers 5's `GPT2Tokenizer` builds it from vocabulary files: BPE
without continuation prefix or unknown-token fusing, the ByteLevel pre-tokenizer (GPT-2's split
pattern) and decoder, and no special tokens added around the text unless the config says
`add_bos_token` / `add_eos_token` (Note [BOS and EOS flags]). A tokenizer.json brings its own
pre-tokenizer (Llama 3's split pattern, SmolLM's digit splitting) and post-processor.
"""

from __future__ import annotations


from ember.text.roberta import (
    VocabMergesFiles,
    _added_token,
    _load_vocab_json,
    load_merges,
)
from ember.text.tokenization import PreTrainedTokenizerFast, require_tokenizers

__all__ = ["GPT2Tokenizer", "GPT2TokenizerFast", "byte_level_bpe_engine", "bytes_to_unicode"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (Note [Byte-level BPE]): printable Latin-1
    bytes stand for themselves, the other 68 take the characters from U+0100 on, in order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def byte_level_bpe_engine(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    *,
    add_prefix_space: bool = False,
    where: str = "GPT2Tokenizer",
):
    """A `tokenizers.Tokenizer` for byte-level BPE (Note [Byte-level BPE])."""
    tokenizers = require_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers

    try:
        model = models.BPE(
            vocab,
            merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    except Exception as error:  # the engine's own message (e.g. a merge out of the vocabulary)
        raise ValueError(f"{where}: cannot build byte-level BPE: {error}") from None
    engine = tokenizers.Tokenizer(model)
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    engine.decoder = decoders.ByteLevel()
    return engine


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
        from_vocabulary = tokenizer_file is None and tokenizer_object is None
        if from_vocabulary and (vocab_file is None) != (merges_file is None):
            raise ValueError(
                f"GPT2Tokenizer: needs both vocab_file and merges_file, got "
                f"vocab_file={vocab_file!r}, merges_file={merges_file!r}"
            )
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
        for name in ("vocab_file", "merges_file", "added_tokens_decoder"):
            self.init_kwargs.pop(name, None)

    def _build_backend(
        self,
        vocab_file=None,
        merges_file=None,
        add_prefix_space=False,
        added_tokens_decoder=None,
        **kwargs,
    ):
        if vocab_file is None:
            return None
        tokenizers = require_tokenizers()
        engine = byte_level_bpe_engine(
            _load_vocab_json(vocab_file),
            load_merges(merges_file),
            add_prefix_space=add_prefix_space,
            where=f"GPT2Tokenizer ({vocab_file!r}, {merges_file!r})",
        )
        seen = set()
        for _, value in sorted((added_tokens_decoder or {}).items(), key=lambda kv: int(kv[0])):
            token = _added_token(tokenizers, value, special=False)
            if token.content not in seen:
                seen.add(token.content)
                (engine.add_special_tokens if token.special else engine.add_tokens)([token])
        return engine

    def _save_vocabulary(self, folder: str) -> list[str]:
        return []  # tokenizer.json holds the vocabulary and merges


GPT2TokenizerFast = GPT2Tokenizer  # one class, as in transformers 5
