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

import json
import os

from ember.text.tokenization import PreTrainedTokenizerFast, require_tokenizers

__all__ = ["RobertaTokenizer", "RobertaTokenizerFast", "load_merges"]

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def load_merges(merges_file: str) -> list[tuple[str, str]]:
    """The merge rules of a merges.txt, highest priority first: one `left right` pair a line,
    after an optional `#version` header (the `tokenizers` library's format)."""
    merges = []
    try:
        with open(merges_file, "rb") as file:
            lines = file.read().decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"load_merges: {merges_file!r} is not valid UTF-8 ({error})") from None
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if line.startswith("#version") or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(
                f"load_merges: line {number} of {merges_file!r} should be two "
                f"tokens separated by one space, got {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return merges


def _load_vocab_json(vocab_file: str) -> dict[str, int]:
    with open(vocab_file, "rb") as file:
        try:
            vocab = json.loads(file.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"RobertaTokenizer: {vocab_file!r} is not valid JSON ({error})"
            ) from None
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"RobertaTokenizer: {vocab_file!r} should map each token to an int id")
    return vocab


def _added_token(tokenizers, value, special: bool = True):
    """An engine AddedToken from a config value: a str, an AddedToken, or its dict form."""
    if isinstance(value, tokenizers.AddedToken):
        return value
    if isinstance(value, dict):
        flags = {k: value[k] for k in _ADDED_TOKEN_FLAGS if k in value}
        flags.setdefault("special", special)
        flags.setdefault("normalized", not flags["special"])
        return tokenizers.AddedToken(value["content"], **flags)
    return tokenizers.AddedToken(str(value), special=special, normalized=not special)


class VocabMergesFiles:
    """Loading from HuggingFace's byte-level BPE files (`vocab.json` + `merges.txt`) when a folder
    has no `tokenizer.json`: shared by the RoBERTa and GPT-2 tokenizers."""

    @classmethod
    def _from_config(cls, folder: str, config: dict):
        # the vocabulary-files path honours added_tokens_decoder's flags, which
        # _folder_config leaves out (a tokenizer.json lists its added tokens itself)
        if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
            path = os.path.join(folder, "tokenizer_config.json")
            if os.path.isfile(path) and "added_tokens_decoder" not in config:
                with open(path, encoding="utf-8") as file:
                    decoder = json.load(file).get("added_tokens_decoder")
                if decoder:
                    config = {**config, "added_tokens_decoder": decoder}
        return super()._from_config(folder, config)

    @classmethod
    def _from_vocabulary_files(cls, folder: str, config: dict):
        vocab_file = os.path.join(folder, VOCAB_FILE)
        merges_file = os.path.join(folder, MERGES_FILE)
        if not (os.path.isfile(vocab_file) and os.path.isfile(merges_file)):
            raise FileNotFoundError(
                f"{cls.__name__}.from_pretrained: {folder!r} holds neither tokenizer.json nor "
                f"vocab.json with merges.txt; found {sorted(os.listdir(folder))}"
            )
        return cls(vocab_file=vocab_file, merges_file=merges_file, **config)


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
        from_vocabulary = tokenizer_file is None and tokenizer_object is None
        if from_vocabulary and (vocab_file is None) != (merges_file is None):
            raise ValueError(
                f"RobertaTokenizer: needs both vocab_file and merges_file, got "
                f"vocab_file={vocab_file!r}, merges_file={merges_file!r}"
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
        for name in ("vocab_file", "merges_file", "added_tokens_decoder"):
            self.init_kwargs.pop(name, None)
        if from_vocabulary:
            from tokenizers import processors

            sep, cls = self.sep_token, self.cls_token
            self._tokenizer.post_processor = processors.RobertaProcessing(
                (sep, self.convert_tokens_to_ids(sep)),
                (cls, self.convert_tokens_to_ids(cls)),
                trim_offsets=trim_offsets,
                add_prefix_space=add_prefix_space,
            )

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
        from tokenizers import decoders, models, pre_tokenizers

        vocab = _load_vocab_json(vocab_file)
        merges = load_merges(merges_file)
        try:
            model = models.BPE(
                vocab,
                merges,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        except Exception as error:  # the engine's own message (e.g. a merge out of the vocab)
            raise ValueError(
                f"RobertaTokenizer: cannot build BPE from {vocab_file!r} and "
                f"{merges_file!r}: {error}"
            ) from None
        backend = tokenizers.Tokenizer(model)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        # added tokens in id order, with their flags; then the special tokens not among them
        added = []
        for _, value in sorted((added_tokens_decoder or {}).items(), key=lambda kv: int(kv[0])):
            added.append(_added_token(tokenizers, value, special=False))
        for attribute in (
            "bos_token",
            "eos_token",
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
        ):
            value = kwargs.get(attribute)
            if value is not None:
                added.append(_added_token(tokenizers, value))
        seen = set()
        for token in added:
            if token.content in seen:
                continue
            seen.add(token.content)
            if token.special:
                backend.add_special_tokens([token])
            else:
                backend.add_tokens([token])
        return backend


RobertaTokenizerFast = RobertaTokenizer  # one class, as in transformers 5
