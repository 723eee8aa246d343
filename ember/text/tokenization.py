"""`PreTrainedTokenizerFast`: HuggingFace-compatible tokenizers over the `tokenizers` engine.

Note [Tokenizer engine]: the HuggingFace `tokenizers` library (Rust) does the work:
normalising, splitting, WordPiece/BPE, special tokens, truncation, padding, offsets. It is an
optional dependency (`pip install ember[text]`) imported on first use, never by
`import ember`. This module adds what HuggingFace transformers layers on top of it, with the
same defaults, so that ids, masks and offsets equal HuggingFace's for the same folder:
- the folder's files: tokenizer.json (the engine's own serialization), tokenizer_config.json
  (class, model_max_length, special tokens, padding side...), special_tokens_map.json;
- the call API: padding / truncation / max_length rules (truncation=True means
  model_max_length; a max_length with padding=False and truncation unset truncates
  'longest_first'), batching, `return_tensors`, unbatching of a single input;
- decode's clean_up_tokenization_spaces, save_pretrained.
The engine's truncation and padding settings are set per call (as HuggingFace does), so one
tokenizer object should not be called from several threads at once.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np

from ember.io.atomic import atomic_folder, atomic_write, save_folder
from ember.io.hub import resolve_pretrained_folder
from ember.text.batch_encoding import BatchEncoding

__all__ = ["VERY_LARGE_INTEGER", "PreTrainedTokenizerFast", "require_tokenizers"]

VERY_LARGE_INTEGER = int(1e30)  # "no maximum length", as in HuggingFace
SPECIAL_TOKENS_ATTRIBUTES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
_TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


def require_tokenizers():
    """The `tokenizers` module, or an error saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "ember.text needs the HuggingFace `tokenizers` package, which ember "
            "uses as its tokenizer engine: pip install 'ember[text]' (or "
            "pip install tokenizers)"
        ) from None
    return tokenizers


def _token_content(value):
    """A special token from a config: a str, or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    if value is not None and not isinstance(value, str):
        return getattr(value, "content", str(value))
    return value


def _is_token(value) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, dict) and isinstance(value.get("content"), str))
        or isinstance(getattr(value, "content", None), str)  # a tokenizers.AddedToken
    )


def validate_special_tokens(values: dict, source: str) -> None:
    """Check the special-token fields of a tokenizer config or special_tokens_map.json: each of
    bos/eos/unk/sep/pad/cls/mask_token a string, an AddedToken dict {"content": str, ...} or
    null, and additional_special_tokens a list of those (HuggingFace refuses the rest, e.g.
    "additional_special_tokens": "abc", which would otherwise become three tokens)."""
    for key in SPECIAL_TOKENS_ATTRIBUTES:
        if key in values and not _is_token(values[key]):
            raise ValueError(
                f"{source}: {key!r} should be a string or an AddedToken object "
                f'({{"content": "..."}}), got {values[key]!r}'
            )
    extra = values.get("additional_special_tokens")
    if extra is not None:
        if not isinstance(extra, (list, tuple)) or not all(
            _is_token(t) and t is not None for t in extra
        ):
            raise ValueError(
                f"{source}: 'additional_special_tokens' should be a list of strings or "
                f"AddedToken objects, got {extra!r}"
            )


def _read_json(path: str):
    try:
        with open(path, "rb") as file:
            value = json.loads(file.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"from_pretrained: {path!r} is not valid UTF-8 JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"from_pretrained: {path!r} holds a {type(value).__name__}; expected a JSON object"
        )
    return value


def _load_tokenizer_file(tokenizers, path: str, cls):
    """tokenizers.Tokenizer.from_file, with errors that name the file."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
        return tokenizers.Tokenizer.from_str(text)
    except UnicodeDecodeError as error:
        raise ValueError(f"{cls.__name__}: {path!r} is not valid UTF-8 ({error})") from None
    except Exception as error:  # noqa: BLE001 - the engine raises its own exception type
        if isinstance(error, OSError):
            raise
        raise ValueError(
            f"{cls.__name__}: {path!r} is not a valid tokenizer.json ({error})"
        ) from None


def clean_up_tokenization(text: str) -> str:
    """Remove the spaces that decoding puts before punctuation and in English contractions."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _id_list(ids, where: str) -> list[int]:
    """A list of Python ints from an int, a list, a NumPy array or an ember tensor."""
    if hasattr(ids, "__array__") and not isinstance(ids, (np.ndarray, list, tuple)):
        ids = np.asarray(ids)  # a tensor, on any device
    if isinstance(ids, np.ndarray):
        return ids.reshape(-1).tolist() if ids.ndim <= 1 else ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if isinstance(ids, (list, tuple)):
        return [int(i) for i in ids]
    raise TypeError(
        f"{where}: expected token ids (an int, a list of ints, an array or a "
        f"tensor), got {type(ids).__name__}"
    )


class PreTrainedTokenizerFast:
    """A tokenizer from a `tokenizer.json`, with HuggingFace transformers' API.

    Usually made by `AutoTokenizer.from_pretrained(folder)` or a model's tokenizer class.

    Example:
        >>> tokenizer = AutoTokenizer.from_pretrained(folder)        # doctest: +SKIP
        >>> batch = tokenizer(["Hello world!", "Hi"], padding=True, return_tensors="np")
        ...                                                           # doctest: +SKIP
        >>> batch["input_ids"].shape                                  # doctest: +SKIP
        (2, 5)
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    slow_tokenizer_class_name: str | None = None

    def __init__(
        self,
        tokenizer_object=None,
        tokenizer_file: str | None = None,
        *,
        model_max_length: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        model_input_names: list | None = None,
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
        additional_special_tokens=None,
        chat_template: str | None = None,
        **kwargs,
    ):
        tokenizers = require_tokenizers()
        validate_special_tokens(
            {**kwargs, "additional_special_tokens": additional_special_tokens}, type(self).__name__
        )
        if tokenizer_object is not None:
            backend = copy.deepcopy(tokenizer_object)
        elif tokenizer_file is not None:
            backend = _load_tokenizer_file(tokenizers, os.fspath(tokenizer_file), type(self))
        else:
            backend = self._build_backend(**kwargs)
        if backend is None:
            raise ValueError(
                f"{type(self).__name__}: needs a tokenizer_file (tokenizer.json) or "
                "a tokenizers.Tokenizer object"
            )
        backend.no_truncation()
        backend.no_padding()
        self._tokenizer = backend
        self._engine_settings = (None, None)
        self.name_or_path = name_or_path
        self.model_max_length = (
            VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        )
        self.padding_side = padding_side or type(self).padding_side
        self.truncation_side = truncation_side or type(self).truncation_side
        for side, name in (
            (self.padding_side, "padding_side"),
            (self.truncation_side, "truncation_side"),
        ):
            if side not in ("right", "left"):
                raise ValueError(
                    f"{type(self).__name__}: {name} should be 'right' or 'left', got {side!r}"
                )
        if model_input_names is not None:
            self.model_input_names = list(model_input_names)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._special_tokens: dict[str, str | None] = {}
        for attribute in SPECIAL_TOKENS_ATTRIBUTES:
            self._special_tokens[attribute] = _token_content(kwargs.pop(attribute, None))
        self._additional_special_tokens = [
            _token_content(t) for t in (additional_special_tokens or [])
        ]
        self.chat_template = chat_template
        add_bos_token = kwargs.pop("add_bos_token", None)
        add_eos_token = kwargs.pop("add_eos_token", None)
        # Special tokens are whole tokens of the engine: never split, marked special. Those a
        # tokenizer.json already lists as special keep their flags: adding one again by name
        # would reset them (RoBERTa's <mask> strips the space on its left, lstrip=True).
        listed = {
            token.content: token
            for token in self._tokenizer.get_added_tokens_decoder().values()
            if token.special
        }
        missing = [token for token in self.all_special_tokens if token not in listed]
        if missing:
            self._tokenizer.add_special_tokens(missing)
        self._add_bos_token = bool(add_bos_token)
        self._add_eos_token = bool(add_eos_token)
        self._bos_eos_explicit = add_bos_token is not None or add_eos_token is not None
        if self._bos_eos_explicit:
            self._update_post_processor()
        self.init_kwargs = dict(kwargs)

    # Note [BOS and EOS flags]: as HuggingFace's fast tokenizers, a folder (or a GGUF) that sets
    # add_bos_token / add_eos_token replaces the engine's post-processor with a template that
    # adds those tokens (bos A eos, bos A eos bos B eos); without the flags the engine's own
    # post-processor (from tokenizer.json, or the model's class) stays.
    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._add_bos_token = bool(value)
        self._bos_eos_explicit = True
        self._update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._add_eos_token = bool(value)
        self._bos_eos_explicit = True
        self._update_post_processor()

    def _update_post_processor(self) -> None:
        """Note [BOS and EOS flags]."""
        from tokenizers import processors

        bos, eos = self.bos_token, self.eos_token
        add_bos = self._add_bos_token and bos is not None
        add_eos = self._add_eos_token and eos is not None
        first = [f"{bos}:0"] if add_bos else []
        last = [f"{eos}:0"] if add_eos else []
        single = " ".join([*first, "$A:0", *last])
        pair = " ".join(
            [single, *([f"{bos}:1"] if add_bos else []), "$B:1", *([f"{eos}:1"] if add_eos else [])]
        )
        special = []
        if add_bos:
            special.append((bos, self.convert_tokens_to_ids(bos)))
        if add_eos and eos != (bos if add_bos else None):
            special.append((eos, self.convert_tokens_to_ids(eos)))
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=special
        )

    def _build_backend(self, **kwargs):
        return None

    # ------------------------------------------------------------------ loading, saving

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *init_inputs, **kwargs):
        """Load from a local folder (tokenizer.json and tokenizer_config.json, or a model's
        vocabulary files); keyword arguments override the folder's config.

        Example:
            >>> tokenizer = BertTokenizer.from_pretrained("path/to/bert")  # doctest: +SKIP
        """
        if init_inputs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained: unexpected positional arguments {init_inputs!r}"
            )
        for ignored in (
            "cache_dir",
            "revision",
            "local_files_only",
            "use_fast",
            "token",
            "trust_remote_code",
            "force_download",
        ):
            kwargs.pop(ignored, None)
        where = f"{cls.__name__}.from_pretrained"
        gguf_file = kwargs.pop("gguf_file", None)
        folder = resolve_pretrained_folder(pretrained_model_name_or_path, where)
        if gguf_file is not None:
            return cls._from_gguf(folder, gguf_file, kwargs, where)
        config = cls._folder_config(folder)
        config.update(kwargs)
        try:
            return cls._from_config(folder, config)
        except (TypeError, ValueError, AttributeError) as error:
            if folder in str(error) and isinstance(error, ValueError):
                raise
            # a field of tokenizer_config.json with a value the tokenizer cannot take
            raise ValueError(f"{cls.__name__}.from_pretrained: {folder!r}: {error}") from None

    @classmethod
    def _from_gguf(cls, folder: str, gguf_file: str, kwargs: dict, where: str):
        """The tokenizer stored in a GGUF file's metadata (Note [GGUF tokenizers])."""
        from ember.io.gguf import gguf_path
        from ember.text.gguf import tokenizer_from_gguf

        engine, config = tokenizer_from_gguf(gguf_path(folder, gguf_file, where), where)
        config.update(kwargs)
        config["name_or_path"] = folder
        return cls(tokenizer_object=engine, **config)

    @staticmethod
    def _folder_config(folder: str) -> dict:
        config: dict = {}
        path = os.path.join(folder, TOKENIZER_CONFIG_FILE)
        if os.path.isfile(path):
            values = _read_json(path)
            validate_special_tokens(values, path)
            config.update(values)
        path = os.path.join(folder, SPECIAL_TOKENS_MAP_FILE)
        if os.path.isfile(path):
            values = _read_json(path)
            validate_special_tokens(values, path)
            for key, value in values.items():
                config[key] = value
        for key in (
            "tokenizer_class",
            "auto_map",
            "added_tokens_decoder",
            "name_or_path",
            "tokenizer_file",
            "special_tokens_map_file",
            "backend",
            "is_local",
            "extra_special_tokens",
        ):
            config.pop(key, None)
        path = os.path.join(folder, CHAT_TEMPLATE_FILE)
        if os.path.isfile(path):  # transformers 5 writes the template beside the config
            with open(path, encoding="utf-8") as file:
                config["chat_template"] = file.read()
        config["name_or_path"] = folder
        return config

    @classmethod
    def _from_config(cls, folder: str, config: dict):
        tokenizer_file = os.path.join(folder, TOKENIZER_FILE)
        if os.path.isfile(tokenizer_file):
            return cls(tokenizer_file=tokenizer_file, **config)
        return cls._from_vocabulary_files(folder, config)

    @classmethod
    def _from_vocabulary_files(cls, folder: str, config: dict):
        raise FileNotFoundError(
            f"{cls.__name__}.from_pretrained: {folder!r} holds no "
            f"{TOKENIZER_FILE}; found {sorted(os.listdir(folder))}"
        )

    def _config_to_save(self) -> dict:
        config = {
            key: value
            for key, value in self.init_kwargs.items()
            if isinstance(value, (str, int, float, bool, type(None), list, dict))
        }
        config.update(
            tokenizer_class=self.slow_tokenizer_class_name or type(self).__name__,
            model_max_length=self.model_max_length,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            model_input_names=self.model_input_names,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
        )
        config.update(self.special_tokens_map)
        if self._bos_eos_explicit:
            config.update(add_bos_token=self._add_bos_token, add_eos_token=self._add_eos_token)
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            config["chat_template"] = self.chat_template  # named templates: a list of dicts
        return config

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (and the
        model's vocabulary file) so that ember and HuggingFace transformers load the folder.

        Example:
            >>> tokenizer.save_pretrained("out/")                    # doctest: +SKIP
            ('out/tokenizer_config.json', 'out/special_tokens_map.json', 'out/tokenizer.json')
        """
        folder = save_folder(save_directory, f"{type(self).__name__}.save_pretrained")
        written = []

        def write_json(name, value):
            path = os.path.join(folder, name)
            with atomic_write(path, "w") as file:
                json.dump(value, file, indent=2, ensure_ascii=False, sort_keys=False)
                file.write("\n")
            written.append(path)

        with atomic_folder(folder):  # all the files or none: Note [Atomic folders]
            write_json(TOKENIZER_CONFIG_FILE, self._config_to_save())
            write_json(SPECIAL_TOKENS_MAP_FILE, self.special_tokens_map)
            engine = json.loads(self._tokenizer.to_str())
            engine["truncation"] = None
            engine["padding"] = None
            write_json(TOKENIZER_FILE, engine)
            if isinstance(self.chat_template, str):
                path = os.path.join(folder, CHAT_TEMPLATE_FILE)
                with atomic_write(path, "w") as file:
                    file.write(self.chat_template)
                written.append(path)
            written.extend(self._save_vocabulary(folder))
        return tuple(written)

    def _save_vocabulary(self, folder: str) -> list[str]:
        return []

    # ------------------------------------------------------------------ special tokens

    def __getattr__(self, name: str):
        # bos_token ... mask_token, and their *_id forms.
        if name.startswith("_"):
            raise AttributeError(name)
        special = self.__dict__.get("_special_tokens")
        if special is not None:
            if name in special:
                return special[name]
            if name.endswith("_id") and name[:-3] in special:
                token = special[name[:-3]]
                return None if token is None else self.convert_tokens_to_ids(token)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value):
        special = self.__dict__.get("_special_tokens")
        if special is not None and name in special:
            token = _token_content(value)
            special[name] = token
            if token is not None and self._tokenizer.token_to_id(token) is None:
                self._tokenizer.add_special_tokens([token])
            return
        object.__setattr__(self, name, value)

    @property
    def special_tokens_map(self) -> dict:
        """Special token attributes that are set: {'cls_token': '[CLS]', ...}."""
        result = {k: v for k, v in self._special_tokens.items() if v is not None}
        if self._additional_special_tokens:
            result["additional_special_tokens"] = list(self._additional_special_tokens)
        return result

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special_tokens)

    @property
    def all_special_tokens(self) -> list[str]:
        tokens: list[str] = []  # each once, in attribute order (RoBERTa's <s> is bos and cls)
        for token in [*self._special_tokens.values(), *self._additional_special_tokens]:
            if token is not None and token not in tokens:
                tokens.append(token)
        return tokens

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def pad_token_type_id(self) -> int:
        return 0

    # ------------------------------------------------------------------ vocabulary

    @property
    def backend_tokenizer(self):
        """The engine's `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def is_fast(self) -> bool:
        return True

    @property
    def vocab_size(self) -> int:
        """The size of the base vocabulary (without added tokens)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def get_added_vocab(self) -> dict[str, int]:
        base = self._tokenizer.get_vocab(with_added_tokens=False)
        return {k: v for k, v in self.get_vocab().items() if k not in base}

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary (never split); returns how many were new."""
        if isinstance(new_tokens, str):
            new_tokens = [new_tokens]
        new_tokens = [_token_content(t) for t in new_tokens]
        if special_tokens:
            return self._tokenizer.add_special_tokens(new_tokens)
        return self._tokenizer.add_tokens(new_tokens)

    def add_special_tokens(self, special_tokens_dict: dict) -> int:
        """Set special token attributes ({'pad_token': '[PAD]', ...}); returns how many
        tokens were new to the vocabulary."""
        before = len(self)
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                values = [_token_content(v) for v in value]
                self._additional_special_tokens = list(
                    dict.fromkeys(self._additional_special_tokens + values)
                )
                self._tokenizer.add_special_tokens(values)
            elif key in SPECIAL_TOKENS_ATTRIBUTES:
                setattr(self, key, value)
            else:
                raise ValueError(
                    f"add_special_tokens: unknown key {key!r}; expected one of "
                    f"{list(SPECIAL_TOKENS_ATTRIBUTES)} or "
                    "'additional_special_tokens'"
                )
        return len(self) - before

    def convert_tokens_to_ids(self, tokens):
        """A token's id (the unknown token's id when it is not in the vocabulary), or a list."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            if index is None:
                unk = self._special_tokens.get("unk_token")
                return None if unk is None else self._tokenizer.token_to_id(unk)
            return index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """The token of an id, or the tokens of a list of ids."""
        if isinstance(ids, (int, np.integer)):
            return self._tokenizer.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [
            self._tokenizer.id_to_token(i)
            for i in _id_list(ids, "convert_ids_to_tokens")
            if i not in special
        ]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return (
            self._tokenizer.decoder.decode(tokens) if self._tokenizer.decoder else " ".join(tokens)
        )

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    # ------------------------------------------------------------------ encoding

    def _set_engine(
        self, truncation, max_length, stride, padding, pad_to_multiple_of, padding_side
    ):
        """Set the engine's truncation and padding for one call (Note [Tokenizer engine])."""
        if truncation is None:
            want_truncation = None
        else:
            want_truncation = {
                "max_length": max_length,
                "stride": stride,
                "strategy": truncation,
                "direction": self.truncation_side,
            }
        if padding is None:  # no padding; -1: to the longest of the batch; n: to length n
            want_padding = None
        else:
            want_padding = {
                "length": None if padding == -1 else padding,
                "pad_to_multiple_of": pad_to_multiple_of,
                "pad_id": self.pad_token_id,
                "pad_token": self.pad_token,
                "pad_type_id": self.pad_token_type_id,
                "direction": padding_side or self.padding_side,
            }
        if self._engine_settings == (want_truncation, want_padding):
            return
        if want_truncation is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(**want_truncation)
        if want_padding is None:
            self._tokenizer.no_padding()
        else:
            self._tokenizer.enable_padding(**want_padding)
        self._engine_settings = (want_truncation, want_padding)

    def _resolve_lengths(
        self, padding, truncation, max_length, where: str, pad_to_multiple_of: int | None = None
    ):
        """HuggingFace's rules for padding / truncation / max_length -> engine settings."""
        if padding is True or padding == "longest":
            padding_length = "longest"
        elif padding is False or padding is None or padding == "do_not_pad":
            padding_length = None
        elif padding == "max_length":
            padding_length = "max_length"
        else:
            raise ValueError(
                f"{where}: padding should be True, False, 'longest', 'max_length' "
                f"or 'do_not_pad', got {padding!r}"
            )
        if truncation is None and max_length is not None and padding_length is None:
            truncation = "longest_first"  # as HuggingFace: max_length alone means truncate
        if truncation is True:
            truncation = "longest_first"
        elif truncation is False or truncation is None or truncation == "do_not_truncate":
            truncation = None
        elif truncation not in _TRUNCATION_STRATEGIES:
            raise ValueError(
                f"{where}: truncation should be True, False, 'longest_first', "
                f"'only_first', 'only_second' or 'do_not_truncate', got "
                f"{truncation!r}"
            )
        if max_length is None:
            limit = self.model_max_length if self.model_max_length < VERY_LARGE_INTEGER else None
            if padding_length == "max_length":
                padding_length = "max_length" if limit is not None else None
            if truncation is not None and limit is None:
                truncation = None
            max_length = limit
        elif not isinstance(max_length, (int, np.integer)) or max_length < 0:
            raise ValueError(
                f"{where}: max_length should be a non-negative int, got {max_length!r}"
            )
        if padding_length is not None and self.pad_token_id is None:
            raise ValueError(
                f"{where}: asked to pad, but this tokenizer has no pad_token; set one "
                "(tokenizer.pad_token = tokenizer.eos_token, or "
                "tokenizer.add_special_tokens({'pad_token': '[PAD]'}))"
            )
        if (
            truncation is not None
            and padding_length is not None
            and pad_to_multiple_of
            and max_length is not None
            and max_length % pad_to_multiple_of
        ):
            raise ValueError(
                f"{where}: truncation and padding are both on, but the truncation "
                f"length {max_length} is not a multiple of pad_to_multiple_of "
                f"{pad_to_multiple_of}"
            )
        engine_padding = None
        if padding_length == "longest":
            engine_padding = -1
        elif padding_length == "max_length":
            engine_padding = int(max_length)
        return truncation, max_length, engine_padding

    def __call__(
        self,
        text=None,
        text_pair=None,
        *,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors=None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        **kwargs,
    ) -> BatchEncoding:
        """Tokenize a string, a pair, or a batch of either.

        Args:
            text: a str, a list of str (a batch), a list of (str, str) pairs, or with
                `is_split_into_words=True` a list of words / a list of such lists.
            text_pair: the second sequence(s), matching `text`.
            padding: True / 'longest' (to the longest in the batch), 'max_length' (to
                max_length, else model_max_length), False.
            truncation: True / 'longest_first', 'only_first', 'only_second', False.
            max_length: the length limit for truncation and 'max_length' padding.
            return_tensors: 'ember' (also 'pt'), 'np', or None for lists.

        Example:
            >>> encoding = tokenizer("Hello, my dog is cute", return_tensors="ember")
            ...                                                      # doctest: +SKIP
            >>> encoding["input_ids"].shape                          # doctest: +SKIP
            (1, 8)
        """
        where = f"{type(self).__name__}.__call__"
        kwargs.pop("split_special_tokens", None)
        if kwargs:
            raise TypeError(f"{where}: unexpected keyword arguments {sorted(kwargs)}")
        if text is None:
            raise ValueError(f"{where}: expected text (a str, a list of str, or pairs), got None")
        batch, batched = self._as_batch(text, text_pair, is_split_into_words, where)
        truncation, max_length, engine_padding = self._resolve_lengths(
            padding, truncation, max_length, where, pad_to_multiple_of
        )
        self._set_engine(
            truncation, max_length, stride, engine_padding, pad_to_multiple_of, padding_side
        )
        try:
            encodings = self._tokenizer.encode_batch(
                batch, add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words
            )
        except Exception as error:  # the engine's errors are plain Exceptions
            raise ValueError(f"{where}: the tokenizer engine failed: {error}") from None
        return self._to_batch_encoding(
            encodings,
            batched,
            return_tensors,
            return_token_type_ids,
            return_attention_mask,
            return_overflowing_tokens,
            return_special_tokens_mask,
            return_offsets_mapping,
            return_length,
            n_sequences=2
            if text_pair is not None or (batch and isinstance(batch[0], tuple))
            else 1,
        )

    @staticmethod
    def _is_words(value) -> bool:
        return isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value)

    def _as_batch(self, text, text_pair, is_split_into_words: bool, where: str):
        """(a list of engine inputs, whether the call was batched)."""

        def check_single(value, name):
            ok = self._is_words(value) if is_split_into_words else isinstance(value, str)
            if not ok:
                expected = "a list of words (str)" if is_split_into_words else "a str"
                raise TypeError(
                    f"{where}: each {name} should be {expected}, got "
                    f"{type(value).__name__}: {str(value)[:80]!r}"
                )
            return value

        if is_split_into_words:
            batched = (
                isinstance(text, (list, tuple))
                and bool(text)
                and isinstance(text[0], (list, tuple))
            )
        else:
            batched = isinstance(text, (list, tuple))
        if not batched:
            first = check_single(text, "text")
            if not text_pair:  # as HuggingFace: an empty second text means no pair
                return [first], False
            return [(first, check_single(text_pair, "text_pair"))], False
        if text_pair is not None:
            if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
                raise ValueError(
                    f"{where}: text_pair should be a list as long as text "
                    f"({len(text)}), got {type(text_pair).__name__}"
                    + (
                        f" of length {len(text_pair)}"
                        if isinstance(text_pair, (list, tuple))
                        else ""
                    )
                )
            return [
                (check_single(a, "text"), check_single(b, "text_pair"))
                for a, b in zip(text, text_pair)
            ], True
        batch = []
        for item in text:
            if isinstance(item, (list, tuple)) and not is_split_into_words:
                if len(item) != 2:
                    raise ValueError(
                        f"{where}: a batch item that is a list/tuple must be a "
                        f"pair (2 texts), got {len(item)} items"
                    )
                batch.append((check_single(item[0], "text"), check_single(item[1], "text_pair")))
            elif is_split_into_words and item and isinstance(item[0], (list, tuple)):
                batch.append((check_single(item[0], "text"), check_single(item[1], "text_pair")))
            else:
                batch.append(check_single(item, "text"))
        return batch, True

    def _to_batch_encoding(
        self,
        encodings,
        batched,
        return_tensors,
        return_token_type_ids,
        return_attention_mask,
        return_overflowing_tokens,
        return_special_tokens_mask,
        return_offsets_mapping,
        return_length,
        n_sequences,
    ):
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_overflowing_tokens:
            flat, sample_mapping = [], []
            for index, encoding in enumerate(encodings):
                for part in [encoding, *encoding.overflowing]:
                    flat.append(part)
                    sample_mapping.append(index)
            encodings = flat
        data: dict = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:
            data["length"] = [len(e.ids) for e in encodings]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_mapping
        if not batched and return_tensors is None and not return_overflowing_tokens:
            # as HuggingFace: per-token lists lose the batch axis, per-sequence values keep it
            data = {
                key: value[0] if value and isinstance(value[0], list) else value
                for key, value in data.items()
            }
        return BatchEncoding(data, encodings, tensor_type=return_tensors, n_sequences=n_sequences)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, **kwargs):
        """The input ids of one text (or pair): a list, or a (1, n) tensor with return_tensors.

        Example:
            >>> tokenizer.encode("hello world")                      # doctest: +SKIP
            [101, 7592, 2088, 102]
        """
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        return self(list(batch_text_or_text_pairs), **kwargs)

    def tokenize(
        self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs
    ) -> list[str]:
        """The tokens (strings) of a text, without special tokens unless asked.

        Example:
            >>> tokenizer.tokenize("Unaffable")                      # doctest: +SKIP
            ['una', '##ffa', '##ble']
        """
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    # ------------------------------------------------------------------ special tokens around ids

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """[CLS] A [SEP] (B [SEP]) for BERT-style tokenizers."""
        cls, sep = self.cls_token_id, self.sep_token_id
        if cls is None or sep is None:
            raise NotImplementedError(
                f"{type(self).__name__}.build_inputs_with_special_tokens: "
                "needs cls_token and sep_token"
            )
        if token_ids_1 is None:
            return [cls, *token_ids_0, sep]
        return [cls, *token_ids_0, sep, *token_ids_1, sep]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        first = [0] * (len(token_ids_0) + 2)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + 1)

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 for special tokens, 0 for sequence tokens."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    # ------------------------------------------------------------------ padding lists

    def pad(
        self,
        encoded_inputs,
        padding=True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors=None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad already-tokenized inputs (a list of dicts, or a dict of lists), as collators do.

        input_ids are padded with pad_token_id, token_type_ids with pad_token_type_id,
        attention_mask with 0 and special_tokens_mask with 1; other keys pass through.

        Example:
            >>> tokenizer.pad([{"input_ids": [101, 102]}, {"input_ids": [101, 7592, 102]}],
            ...               return_tensors="np")["attention_mask"]  # doctest: +SKIP
            array([[1, 1, 0],
                   [1, 1, 1]])
        """
        where = f"{type(self).__name__}.pad"
        if (
            isinstance(encoded_inputs, (list, tuple))
            and encoded_inputs
            and isinstance(encoded_inputs[0], dict)
        ):
            encoded_inputs = {
                key: [item[key] for item in encoded_inputs] for key in encoded_inputs[0]
            }
        if not isinstance(encoded_inputs, dict) or "input_ids" not in encoded_inputs:
            raise ValueError(
                f"{where}: expected a dict with 'input_ids' or a list of such "
                f"dicts, got {type(encoded_inputs).__name__}"
            )
        ids = encoded_inputs["input_ids"]
        single = (
            bool(ids)
            and not isinstance(_first(ids), (list, tuple, np.ndarray))
            and not (hasattr(_first(ids), "shape"))
        )
        batch = {key: [value] if single else list(value) for key, value in encoded_inputs.items()}
        rows = [_id_list(row, where) for row in batch["input_ids"]]
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in batch:
            batch["attention_mask"] = [[1] * len(row) for row in rows]
        _, max_length, engine_padding = self._resolve_lengths(padding, False, max_length, where)
        if engine_padding is None:
            target = None
        elif engine_padding == -1:
            target = max((len(r) for r in rows), default=0)
        else:
            target = engine_padding
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        side = padding_side or self.padding_side
        fill = {
            "input_ids": self.pad_token_id,
            "token_type_ids": self.pad_token_type_id,
            "attention_mask": 0,
            "special_tokens_mask": 1,
        }
        if target is not None and self.pad_token_id is None:
            raise ValueError(
                f"{where}: this tokenizer has no pad_token; set one with "
                "tokenizer.pad_token = ... before padding"
            )
        out = {}
        for key, values in batch.items():
            if key not in fill and key != "offset_mapping" or target is None:
                out[key] = values
                continue
            padded = []
            for value in values:
                value = _id_list(value, where) if key != "offset_mapping" else list(value)
                missing = max(target - len(value), 0)
                pad_value = (0, 0) if key == "offset_mapping" else fill[key]
                extra = [pad_value] * missing
                padded.append(value + extra if side == "right" else extra + value)
            out[key] = padded
        if single:
            out = {key: value[0] for key, value in out.items()}
        return BatchEncoding(out, tensor_type=return_tensors)

    # ------------------------------------------------------------------ chat templates

    def get_chat_template(self, chat_template: str | None = None) -> str:
        """The template text: `chat_template` itself (Jinja source) or the name of one of this
        tokenizer's named templates, else this tokenizer's (default) template."""
        where = f"{type(self).__name__}.apply_chat_template"
        own = self.chat_template
        named = (
            {t["name"]: t["template"] for t in own}
            if isinstance(own, (list, tuple))
            else ({} if own is None else {"default": own})
        )
        if chat_template is not None:
            return named.get(chat_template, chat_template)
        if not named:
            raise ValueError(
                f"{where}: this tokenizer has no chat template (tokenizer_config.json's "
                "chat_template, chat_template.jinja or a GGUF's tokenizer.chat_template); "
                "pass chat_template= with a Jinja template"
            )
        if "default" in named:
            return named["default"]
        raise ValueError(
            f"{where}: this tokenizer has named chat templates {sorted(named)} and no "
            "'default'; pick one with chat_template=NAME"
        )

    def apply_chat_template(
        self,
        conversation,
        tools=None,
        documents=None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = True,
        padding=False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors=None,
        return_dict: bool = True,
        **kwargs,
    ):
        """Render a conversation (or a batch of them) with the chat template, and tokenize it.

        As HuggingFace transformers 5 (Note [Chat templates]): `tokenize=False` returns the
        text; otherwise the text is tokenized without adding special tokens (the template
        writes them) and a BatchEncoding is returned (`return_dict=False`: the input ids).
        Extra keyword arguments are template variables.

        Example:
            >>> messages = [{"role": "user", "content": "What is 2 + 2?"}]  # doctest: +SKIP
            >>> tokenizer.apply_chat_template(messages, tokenize=False,      # doctest: +SKIP
            ...                               add_generation_prompt=True)
            '<|im_start|>user\\nWhat is 2 + 2?<|im_end|>\\n<|im_start|>assistant\\n'
        """
        from ember.text.chat_template import render_chat_template

        where = f"{type(self).__name__}.apply_chat_template"
        if continue_final_message and add_generation_prompt:
            raise ValueError(
                f"{where}: continue_final_message and add_generation_prompt cannot both be "
                "set (one continues the last message, the other starts a new one)"
            )
        template = self.get_chat_template(chat_template)
        batched = (
            isinstance(conversation, (list, tuple))
            and bool(conversation)
            and isinstance(conversation[0], (list, tuple))
        ) or (bool(conversation) and hasattr(conversation[0], "messages"))
        conversations = list(conversation) if batched else [conversation]
        variables = {**self.special_tokens_map, **kwargs}
        texts = [
            render_chat_template(
                template,
                chat,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tools=tools,
                documents=documents,
                where=where,
                **variables,
            )
            for chat in conversations
        ]
        if not tokenize:
            return texts if batched else texts[0]
        encoding = self(
            texts if batched else texts[0],
            add_special_tokens=False,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
        )
        return encoding if return_dict else encoding["input_ids"]

    # ------------------------------------------------------------------ decoding

    def decode(
        self,
        token_ids,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs,
    ) -> str:
        """Text from ids (a list, an array or a tensor).

        Example:
            >>> tokenizer.decode([101, 7592, 2088, 102], skip_special_tokens=True)
            ...                                                      # doctest: +SKIP
            'hello world'
        """
        ids = _id_list(token_ids, f"{type(self).__name__}.decode")
        if ids and isinstance(ids[0], list):
            raise ValueError(
                f"{type(self).__name__}.decode: got a batch of sequences; use batch_decode"
            )
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self,
        sequences,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs,
    ) -> list[str]:
        """`decode` of each sequence of a batch (a list of lists, a 2-d array or tensor)."""
        if hasattr(sequences, "__array__") and not isinstance(sequences, (np.ndarray, list)):
            sequences = np.asarray(sequences)
        return [
            self.decode(
                s,
                skip_special_tokens=skip_special_tokens,
                clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            )
            for s in sequences
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, "
            f"vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"padding_side={self.padding_side!r}, truncation_side={self.truncation_side!r}, "
            f"special_tokens={self.special_tokens_map})"
        )


def _first(values):
    return values[0] if len(values) else None
