"""Byte-level BPE, the tokenizer family of GPT-2, RoBERTa, Llama 3, SmolLM and Qwen: the byte
alphabet, the `tokenizers` engine, HuggingFace's vocab.json + merges.txt files and their added
tokens. The GPT-2 and RoBERTa tokenizers (gpt2.py, roberta.py) and GGUF vocabularies (gguf.py)
build on these; each model's file keeps only its defaults and post-processing.

Note [Byte-level BPE]: text is split into pre-tokens (words with their leading space), each
pre-token's UTF-8 bytes are spelled with 256 printable characters (a space is 'Ġ', a newline
'Ċ'), and BPE merges adjacent symbols by the merges' rank. Decoding maps the characters back
to bytes. As HuggingFace transformers 5 builds it from vocabulary files: BPE without
continuation prefix or unknown-token fusing, the ByteLevel pre-tokenizer (GPT-2's split
pattern) and decoder. A tokenizer.json brings its own pre-tokenizer (Llama 3's split pattern,
SmolLM's digit splitting) and post-processor.
"""

from __future__ import annotations

import json
import os

from ember.text.tokenization import require_tokenizers

__all__ = [
    "MERGES_FILE",
    "VOCAB_FILE",
    "VocabMergesFiles",
    "added_token",
    "byte_level_bpe_engine",
    "bytes_to_unicode",
    "load_merges",
    "load_vocab_json",
]

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


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
    """A `tokenizers.Tokenizer` for byte-level BPE (Note [Byte-level BPE]); `where` names the
    tokenizer and its source in errors."""
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


def load_vocab_json(vocab_file: str, where: str) -> dict[str, int]:
    """A vocab.json's token -> id map; `where` (the tokenizer's name) heads the errors."""
    with open(vocab_file, "rb") as file:
        try:
            vocab = json.loads(file.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{where}: {vocab_file!r} is not valid JSON ({error})") from None
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{where}: {vocab_file!r} should map each token to an int id")
    return vocab


def added_token(tokenizers, value, special: bool = True):
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
    """Byte-level BPE tokenizers loaded from HuggingFace's `vocab.json` + `merges.txt` when a
    folder has no `tokenizer.json` (the GPT-2 and RoBERTa tokenizers): the engine over the
    files, the added tokens of `added_tokens_decoder` in id order with their flags, then the
    special tokens named by `_backend_special_tokens` (their attributes), each token once."""

    _backend_special_tokens: tuple = ()

    @classmethod
    def _check_vocabulary_files(cls, vocab_file, merges_file, tokenizer_file, tokenizer_object):
        """Whether the engine is built from the vocabulary files; both are needed then."""
        from_vocabulary = tokenizer_file is None and tokenizer_object is None
        if from_vocabulary and (vocab_file is None) != (merges_file is None):
            raise ValueError(
                f"{cls.__name__}: needs both vocab_file and merges_file, got "
                f"vocab_file={vocab_file!r}, merges_file={merges_file!r}"
            )
        return from_vocabulary

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
        where = type(self).__name__
        engine = byte_level_bpe_engine(
            load_vocab_json(vocab_file, where),
            load_merges(merges_file),
            add_prefix_space=add_prefix_space,
            where=f"{where} ({vocab_file!r}, {merges_file!r})",
        )
        added = [
            added_token(tokenizers, value, special=False)
            for _, value in sorted((added_tokens_decoder or {}).items(), key=lambda kv: int(kv[0]))
        ]
        for attribute in self._backend_special_tokens:
            value = kwargs.get(attribute)
            if value is not None:
                added.append(added_token(tokenizers, value))
        seen = set()
        for token in added:
            if token.content not in seen:
                seen.add(token.content)
                (engine.add_special_tokens if token.special else engine.add_tokens)([token])
        return engine

    def _drop_file_kwargs(self) -> None:
        """The vocabulary files are saved as tokenizer.json, not as config entries."""
        for name in ("vocab_file", "merges_file", "added_tokens_decoder"):
            self.init_kwargs.pop(name, None)

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
