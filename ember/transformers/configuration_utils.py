"""`PretrainedConfig`: a model's hyper-parameters, read from and written to HuggingFace's
`config.json`.

Note [Config round trip]: every key of a `config.json` becomes an attribute, known or not, and
`to_dict()` writes them all back, so a folder saved by ember keeps fields that ember does not
use (e.g. `gradient_checkpointing`, `transformers_version`). Label maps are stored with int
keys in memory and str keys in JSON, as HuggingFace does.

Note [Config validation]: a `config.json` is data from outside, so `from_dict` checks it
before any model is built from it, and errors name the file and the field:
- a field the config class declares (an `__init__` parameter of it or of a base class) must
  have its default's type: int fields take ints (not "384", not 3.5, not true), float
  fields ints or floats, bool fields bools, str fields strings (null is allowed: HuggingFace
  writes it for unset fields such as `sliding_window`; a model that cannot take it says so,
  naming the folder);
- sizes and counts (`_POSITIVE_FIELDS`) must be positive, layer counts non-negative,
  probabilities (`*dropout*`, `*_prob`) within [0, 1], `hidden_size` divisible by
  `num_attention_heads`;
- `dtype` / `torch_dtype` must name a floating dtype ("float32", "float16", "bfloat16",
  "float64") or be "auto" or null.
Unknown fields are kept as they are (Note [Config round trip]).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os

from ember.io import atomic_write, resolve_pretrained_folder, save_folder

CONFIG_NAME = "config.json"
_POSITIVE_FIELDS = frozenset(
    [
        "vocab_size",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "dim",
        "hidden_dim",
        "n_heads",
    ]
)
_NON_NEGATIVE_FIELDS = frozenset(["num_hidden_layers", "n_layers", "type_vocab_size"])
_DTYPE_NAMES = frozenset(
    ["float32", "float16", "bfloat16", "float64", "float", "half", "double", "auto"]
)


def _declared_defaults(cls) -> dict:
    """name -> default of the __init__ parameters of `cls` and its config bases."""
    defaults: dict = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, PretrainedConfig)):
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


def _type_name(value) -> str:
    return type(value).__name__


def validate_config_dict(cls, data: dict, source: str) -> None:
    """Check a config dict's fields (Note [Config validation]); errors name `source`."""

    def fail(key, expected, value):
        raise ValueError(
            f"{source}: field {key!r} should be {expected}, got {value!r} ({_type_name(value)})"
        )

    for key, default in _declared_defaults(cls).items():
        if key not in data or data[key] is None:  # null: HF's "unset" (e.g. sliding_window)
            continue
        value = data[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                fail(key, "true or false", value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                fail(key, "an integer", value)
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(key, "a number", value)
            if not math.isfinite(value):
                fail(key, "a finite number", value)
        elif isinstance(default, str) and not isinstance(value, str):
            fail(key, "a string", value)
    for key, value in data.items():
        if key in ("id2label", "label2id") and not isinstance(value, (dict, type(None))):
            fail(key, "an object", value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _POSITIVE_FIELDS and value <= 0:
            fail(key, "a positive integer", value)
        if key in _NON_NEGATIVE_FIELDS and value < 0:
            fail(key, "a non-negative integer", value)
        if ("dropout" in key or key.endswith("_prob")) and not 0 <= value <= 1:
            fail(key, "a probability in [0, 1]", value)
    hidden, heads = data.get("hidden_size"), data.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
        raise ValueError(
            f"{source}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )
    for key in ("dtype", "torch_dtype"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or value not in _DTYPE_NAMES):
            fail(key, f"one of {sorted(_DTYPE_NAMES)} or null", value)


class PretrainedConfig:
    """Base configuration. Subclasses set `model_type` and their own defaults.

    Example:
        >>> from ember.transformers import BertConfig
        >>> config = BertConfig(hidden_size=32, num_labels=3)
        >>> config.num_labels, config.id2label[2]
        (3, 'LABEL_2')
    """

    model_type: str = ""
    # Keys never written to config.json (runtime switches).
    _runtime_keys = ("return_dict_in_generate",)

    def __init__(self, **kwargs):
        self.return_dict = kwargs.pop("return_dict", True)
        self.output_hidden_states = kwargs.pop("output_hidden_states", False)
        self.output_attentions = kwargs.pop("output_attentions", False)
        self.architectures = kwargs.pop("architectures", None)
        self.problem_type = kwargs.pop("problem_type", None)
        allowed = (None, "regression", "single_label_classification", "multi_label_classification")
        if self.problem_type not in allowed:
            raise ValueError(
                f"{type(self).__name__}: problem_type must be one of {allowed}, got "
                f"{self.problem_type!r}"
            )
        self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
        self.pad_token_id = kwargs.pop("pad_token_id", None)
        self.bos_token_id = kwargs.pop("bos_token_id", None)
        self.eos_token_id = kwargs.pop("eos_token_id", None)
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        if id2label is not None:
            self.id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ValueError(
                    f"{type(self).__name__}: num_labels={num_labels} disagrees with "
                    f"id2label of {len(self.id2label)} labels"
                )
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        self.label2id = (
            {k: int(v) for k, v in label2id.items()}
            if label2id is not None
            else {v: k for k, v in self.id2label.items()}
        )
        kwargs.pop("model_type", None)  # a class attribute
        for key, value in kwargs.items():  # Note [Config round trip]
            setattr(self, key, value)

    # --- labels ------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{type(self).__name__}: num_labels must be a positive int, got {n!r}")
        if getattr(self, "id2label", None) is None or len(self.id2label) != n:
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    # --- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if key.startswith("_") or key in self._runtime_keys:
                continue
            out[key] = copy.deepcopy(value)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config_dict: dict, _source: str | None = None, **kwargs):
        """A config from a dict (a parsed config.json), checked first (Note [Config
        validation]); `kwargs` override its fields."""
        merged = dict(config_dict)
        merged.update(kwargs)
        source = _source or f"{cls.__name__}.from_dict"
        validate_config_dict(cls, merged, source)
        try:
            return cls(**merged)
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, gguf_file=None) -> dict:
        """The folder's config.json as a dict, or with `gguf_file` the config that the GGUF
        file's metadata describes (Note [GGUF checkpoints])."""
        where = f"{cls.__name__}.from_pretrained"
        folder = resolve_pretrained_folder(pretrained_model_name_or_path, where)
        if gguf_file is not None:
            from ember.transformers.gguf_utils import config_dict_from_gguf, gguf_path

            return config_dict_from_gguf(gguf_path(folder, gguf_file, where), where)
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{cls.__name__}.from_pretrained: no {CONFIG_NAME} in {folder!r}"
            )
        with open(path, "rb") as file:
            try:
                data = json.loads(file.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
                raise ValueError(
                    f"{cls.__name__}.from_pretrained: {path} is not valid UTF-8 JSON ({error})"
                ) from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{cls.__name__}.from_pretrained: {path} holds a "
                f"{type(data).__name__}, expected a JSON object"
            )
        return data

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, return_unused_kwargs: bool = False, **kwargs
    ):
        """Read `config.json` from a folder (or, with `gguf_file=`, a GGUF file's metadata);
        `kwargs` naming config fields override them."""
        data = cls.get_config_dict(pretrained_model_name_or_path, kwargs.pop("gguf_file", None))
        model_type = data.get("model_type")
        if cls.model_type and model_type and model_type != cls.model_type:
            raise ValueError(
                f"{cls.__name__}.from_pretrained: the folder holds a "
                f"{model_type!r} config, expected {cls.model_type!r}"
            )
        folder = resolve_pretrained_folder(
            pretrained_model_name_or_path, f"{cls.__name__}.from_pretrained"
        )
        source = f"{cls.__name__}.from_pretrained: {os.path.join(folder, CONFIG_NAME)}"
        config = cls.from_dict(data, _source=source)
        unused = config.update_known(kwargs)
        return (config, unused) if return_unused_kwargs else config

    def update_known(self, kwargs: dict) -> dict:
        """Set the kwargs that name config fields (or label settings); return the rest."""
        unused = {}
        for key, value in kwargs.items():
            if key == "num_labels":
                self.num_labels = value
            elif key in ("id2label", "label2id"):
                value = {int(k) if key == "id2label" else k: v for k, v in value.items()}
                setattr(self, key, value)
                if key == "id2label" and "label2id" not in kwargs:
                    self.label2id = {v: k for k, v in value.items()}
            elif key in self.__dict__ or key in ("problem_type",):
                setattr(self, key, value)
            else:
                unused[key] = value
        return unused

    def save_pretrained(self, save_directory) -> str:
        """Write `config.json` into `save_directory` (created if needed), atomically."""
        save_directory = save_folder(save_directory, f"{type(self).__name__}.save_pretrained")
        path = os.path.join(save_directory, CONFIG_NAME)
        with atomic_write(path, "w") as file:
            file.write(self.to_json_string())
        return path

    def __eq__(self, other) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
