"""`PretrainedConfig`: a model's hyper-parameters, read from and written to HuggingFace's
`config.json`.

Note [Config round trip]: every key of a `config.json` becomes an attribute, known or not, and
`to_dict()` writes them all back, so a folder saved by ember keeps fields that ember does not
use (e.g. `gradient_checkpointing`, `transformers_version`). Label maps are stored with int
keys in memory and str keys in JSON, as HuggingFace does.
"""

from __future__ import annotations

import copy
import json
import os

from ember.io import atomic_write, resolve_pretrained_folder

CONFIG_NAME = "config.json"


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
    def from_dict(cls, config_dict: dict, **kwargs) -> "PretrainedConfig":
        merged = dict(config_dict)
        merged.update(kwargs)
        return cls(**merged)

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
        with open(path, encoding="utf-8") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{cls.__name__}.from_pretrained: {path} is not valid JSON ({error})"
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
        config = cls.from_dict(data)
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
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(
                f"{type(self).__name__}.save_pretrained: "
                f"{save_directory!r} is a file; expected a folder"
            )
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with atomic_write(path, "w") as file:
            file.write(self.to_json_string())
        return path

    def __eq__(self, other) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
