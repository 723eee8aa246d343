"""BERT's WordPiece tokenizer (and DistilBERT's, which differs only in its model inputs).

With a tokenizer.json the engine is loaded as it is. With only a vocab.txt, the same
pipeline is built from it as HuggingFace's converter builds it: BertNormalizer (clean text,
CJK characters split, lowercase and accent stripping as configured), BertPreTokenizer
(whitespace and punctuation), WordPiece with '##' continuations and at most 100 characters a
word, a template [CLS] A [SEP] / [CLS] A [SEP] B [SEP] with type ids 0 / 1, and the WordPiece
decoder.
"""

from __future__ import annotations

import json
import os

from ember.io.atomic import atomic_write
from ember.text.tokenization import PreTrainedTokenizerFast, require_tokenizers

__all__ = [
    "BertTokenizer",
    "BertTokenizerFast",
    "DistilBertTokenizer",
    "DistilBertTokenizerFast",
    "load_vocab",
]

VOCAB_FILE = "vocab.txt"


def load_vocab(vocab_file: str) -> dict[str, int]:
    """token -> id from a vocab.txt (one token a line, the line number is the id)."""
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as file:
        try:
            for index, line in enumerate(file):
                vocab[line.rstrip("\n")] = index  # a repeated token keeps its last id, as in HF
        except UnicodeDecodeError as error:
            raise ValueError(
                f"load_vocab: {vocab_file!r} is not valid UTF-8 (line {len(vocab) + 1}: {error})"
            ) from None
    if not vocab:
        raise ValueError(f"load_vocab: {vocab_file!r} is empty; expected one token a line")
    return vocab


class BertTokenizer(PreTrainedTokenizerFast):
    """BERT's tokenizer (WordPiece), from a folder's tokenizer.json or vocab.txt.

    Args:
        vocab_file: a vocab.txt, used when no tokenizer_file is given.
        do_lower_case: lowercase (and, unless strip_accents=False, strip accents).
        tokenize_chinese_chars: put spaces around CJK characters.
        strip_accents: None follows do_lower_case.

    Example:
        >>> tokenizer = BertTokenizer.from_pretrained("path/to/bert")    # doctest: +SKIP
        >>> tokenizer("Hello, my dog is cute")["input_ids"]              # doctest: +SKIP
        [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]
    """

    slow_tokenizer_class_name = "BertTokenizer"

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        *,
        do_lower_case: bool = True,
        do_basic_tokenize: bool = True,
        never_split=None,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        tokenize_chinese_chars: bool = True,
        strip_accents=None,
        tokenizer_object=None,
        **kwargs,
    ):
        super().__init__(
            tokenizer_object=tokenizer_object,
            tokenizer_file=tokenizer_file,
            vocab_file=vocab_file,
            do_lower_case=do_lower_case,
            do_basic_tokenize=do_basic_tokenize,
            never_split=never_split,
            unk_token=unk_token,
            sep_token=sep_token,
            pad_token=pad_token,
            cls_token=cls_token,
            mask_token=mask_token,
            tokenize_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            **kwargs,
        )
        self.init_kwargs.pop("vocab_file", None)
        if tokenizer_file is not None or tokenizer_object is not None:
            self._align_normalizer(do_lower_case, strip_accents, tokenize_chinese_chars)

    @property
    def do_lower_case(self) -> bool:
        return bool(self.init_kwargs.get("do_lower_case", True))

    def _build_backend(
        self,
        vocab_file=None,
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=None,
        unk_token="[UNK]",
        sep_token="[SEP]",
        cls_token="[CLS]",
        **_,
    ):
        if vocab_file is None:
            return None
        tokenizers = require_tokenizers()
        from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

        vocab = load_vocab(vocab_file)
        unk, sep, cls = (getattr(t, "content", t) for t in (unk_token, sep_token, cls_token))
        if unk not in vocab:
            raise ValueError(f"BertTokenizer: the unknown token {unk!r} is not in {vocab_file!r}")
        backend = tokenizers.Tokenizer(
            models.WordPiece(
                vocab, unk_token=unk, continuing_subword_prefix="##", max_input_chars_per_word=100
            )
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        missing = [t for t in (sep, cls) if t not in vocab]
        if missing:
            raise ValueError(f"BertTokenizer: special tokens {missing} are not in {vocab_file!r}")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        return backend

    def _align_normalizer(self, do_lower_case, strip_accents, tokenize_chinese_chars):
        """Let tokenizer_config.json's casing options win over tokenizer.json's normalizer,
        as HuggingFace does."""
        state = json.loads(self._tokenizer.to_str()).get("normalizer") or {}
        if state.get("type") != "BertNormalizer":
            return
        wanted = {
            "lowercase": do_lower_case,
            "strip_accents": strip_accents,
            "handle_chinese_chars": tokenize_chinese_chars,
        }
        if all(state.get(k) == v for k, v in wanted.items()):
            return
        from tokenizers import normalizers

        self._tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=state.get("clean_text", True),
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=do_lower_case,
        )

    @classmethod
    def _from_vocabulary_files(cls, folder: str, config: dict):
        vocab_file = os.path.join(folder, VOCAB_FILE)
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(
                f"{cls.__name__}.from_pretrained: {folder!r} holds neither tokenizer.json nor "
                f"vocab.txt; found {sorted(os.listdir(folder))}"
            )
        return cls(vocab_file=vocab_file, **config)

    def _save_vocabulary(self, folder: str) -> list[str]:
        state = json.loads(self._tokenizer.to_str()).get("model") or {}
        if state.get("type") != "WordPiece":
            return []
        vocab = state["vocab"]
        path = os.path.join(folder, VOCAB_FILE)
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        if [index for _, index in ordered] != list(range(len(ordered))):
            raise ValueError(
                "save_pretrained: the WordPiece vocabulary's ids are not 0..n-1; "
                "cannot write vocab.txt"
            )
        with atomic_write(path, "w") as file:
            file.write("".join(f"{token}\n" for token, _ in ordered))
        return [path]


BertTokenizerFast = BertTokenizer  # one class, as in transformers 5


class DistilBertTokenizer(BertTokenizer):
    """DistilBERT's tokenizer: BERT's, without token type ids."""

    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class_name = "DistilBertTokenizer"


DistilBertTokenizerFast = DistilBertTokenizer
