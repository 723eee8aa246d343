"""`AutoTokenizer`: picks the tokenizer class from a folder's files."""

from __future__ import annotations

import json
import os

from ember.io.hub import resolve_pretrained_folder
from ember.text.bert import BertTokenizer, DistilBertTokenizer
from ember.text.gpt2 import GPT2Tokenizer
from ember.text.roberta import RobertaTokenizer
from ember.text.tokenization import PreTrainedTokenizerFast

__all__ = ["TOKENIZER_CLASSES", "AutoTokenizer", "register_tokenizer"]

# Class names as tokenizer_config.json writes them ("...Fast" is stripped first).
TOKENIZER_CLASSES: dict[str, type] = {
    "BertTokenizer": BertTokenizer,
    "DistilBertTokenizer": DistilBertTokenizer,
    "GPT2Tokenizer": GPT2Tokenizer,
    "PreTrainedTokenizer": PreTrainedTokenizerFast,
    "PreTrainedTokenizerFast": PreTrainedTokenizerFast,
    "RobertaTokenizer": RobertaTokenizer,
}
# config.json model_type -> class, for folders whose tokenizer_config names no class.
MODEL_TYPE_TOKENIZERS: dict[str, type] = {
    "bert": BertTokenizer,
    "distilbert": DistilBertTokenizer,
    "gpt2": GPT2Tokenizer,
    "roberta": RobertaTokenizer,
}


def register_tokenizer(class_name: str, cls: type, model_type: str | None = None) -> None:
    """Let AutoTokenizer build `cls` for folders naming `class_name` (or `model_type`)."""
    TOKENIZER_CLASSES[class_name.removesuffix("Fast")] = cls
    if model_type is not None:
        MODEL_TYPE_TOKENIZERS[model_type] = cls


def _json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as file:
        try:
            value = json.loads(file.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ValueError(
                f"AutoTokenizer.from_pretrained: {path!r} is not valid JSON ({error})"
            ) from None
    return value if isinstance(value, dict) else {}


class AutoTokenizer:
    """Builds the right tokenizer for a folder.

    The class comes from tokenizer_config.json's `tokenizer_class`, else config.json's
    `model_type`, else the files: tokenizer.json gives a generic `PreTrainedTokenizerFast`,
    a lone vocab.txt a `BertTokenizer`. Nothing is downloaded (Note [Pretrained folders]).

    Example:
        >>> tokenizer = AutoTokenizer.from_pretrained("path/to/all-MiniLM-L6-v2")
        ...                                                          # doctest: +SKIP
        >>> tokenizer("Hello world")["input_ids"]                    # doctest: +SKIP
        [101, 7592, 2088, 102]
    """

    def __init__(self):
        raise TypeError(
            "AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(folder)"
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, **kwargs):
        folder = resolve_pretrained_folder(
            pretrained_model_name_or_path, "AutoTokenizer.from_pretrained"
        )
        if kwargs.get("gguf_file") is not None:
            # a GGUF's tokenizer is byte-level BPE, the only kind ember rebuilds from one
            # (Note [GGUF tokenizers]); an explicit tokenizer_type still wins
            class_name = kwargs.pop("tokenizer_type", None) or "GPT2Tokenizer"
            tokenizer_class = TOKENIZER_CLASSES.get(class_name.removesuffix("Fast"))
            if tokenizer_class is None:
                raise ValueError(
                    f"AutoTokenizer.from_pretrained: unknown tokenizer_type {class_name!r}; "
                    f"ember knows {sorted(TOKENIZER_CLASSES)}"
                )
            return tokenizer_class.from_pretrained(folder, *inputs, **kwargs)
        config = _json(os.path.join(folder, "tokenizer_config.json"))
        class_name = kwargs.pop("tokenizer_type", None) or config.get("tokenizer_class")
        tokenizer_class = None
        if class_name is not None and not isinstance(class_name, str):
            raise ValueError(
                f"AutoTokenizer.from_pretrained: {folder!r}: tokenizer_config.json's "
                f"'tokenizer_class' should be a string, got {class_name!r}"
            )
        if class_name:
            tokenizer_class = TOKENIZER_CLASSES.get(class_name.removesuffix("Fast"))
        if tokenizer_class is None:
            model_type = _json(os.path.join(folder, "config.json")).get("model_type")
            if isinstance(model_type, str):
                tokenizer_class = MODEL_TYPE_TOKENIZERS.get(model_type)
        if tokenizer_class is None:
            if os.path.isfile(os.path.join(folder, "tokenizer.json")):
                tokenizer_class = PreTrainedTokenizerFast
            elif os.path.isfile(os.path.join(folder, "vocab.txt")):
                tokenizer_class = BertTokenizer
            else:
                raise ValueError(
                    f"AutoTokenizer.from_pretrained: cannot tell which tokenizer {folder!r} "
                    f"holds: tokenizer_class {class_name!r} is not one ember knows "
                    f"({sorted(TOKENIZER_CLASSES)}) and there is no tokenizer.json or vocab.txt"
                )
        return tokenizer_class.from_pretrained(folder, *inputs, **kwargs)
