"""`GenerationConfig`: how `generate()` decodes, with HuggingFace's field names and defaults,
read from and written to `generation_config.json`.

Note [Generation defaults]: the values are HuggingFace's effective defaults (max_length 20,
greedy, top_k 50, ...). A folder's `generation_config.json` overrides them; keyword arguments
of `generate()` naming a field override both, for that call only. Unknown keys of the JSON are
kept and written back (as `PretrainedConfig` does). Fields that ask for a decoding feature
ember does not implement raise at `generate()` naming the field, rather than being ignored.
"""

from __future__ import annotations

import copy
import json
import os

from ember.io import atomic_write, resolve_pretrained_folder, save_folder

GENERATION_CONFIG_NAME = "generation_config.json"

# field -> default (Note [Generation defaults])
DEFAULTS: dict = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "max_time": None,
    "stop_strings": None,
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "use_cache": True,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "renormalize_logits": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "guidance_scale": None,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "output_logits": None,
    "return_dict_in_generate": False,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "decoder_start_token_id": None,
}

# fields whose non-default values ask for what ember's generate() does not do
UNSUPPORTED = {
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "stop_strings": None,
    "exponential_decay_length_penalty": None,
    "sequence_bias": None,
    "guidance_scale": None,
}


class GenerationConfig:
    """Decoding parameters (Note [Generation defaults]).

    Example:
        >>> from ember.transformers import GenerationConfig
        >>> config = GenerationConfig(do_sample=True, top_p=0.9)
        >>> config.max_length, config.top_k, config.top_p
        (20, 50, 0.9)
    """

    def __init__(self, **kwargs):
        for key, value in DEFAULTS.items():
            setattr(self, key, copy.deepcopy(value))
        self.transformers_version = None
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    # --- checks --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise on values no decoding can use (naming the field)."""

        def need(condition: bool, field: str, expected: str) -> None:
            if not condition:
                raise ValueError(
                    f"GenerationConfig: {field} must be {expected}, got {getattr(self, field)!r}"
                )

        need(self.max_length is None or self.max_length >= 0, "max_length", ">= 0")
        need(
            self.max_new_tokens is None or self.max_new_tokens >= 0,
            "max_new_tokens",
            ">= 0 or None",
        )
        need(int(self.num_beams) >= 1, "num_beams", ">= 1")
        need(int(self.num_return_sequences) >= 1, "num_return_sequences", ">= 1")
        need(self.temperature is None or self.temperature > 0, "temperature", "> 0")
        need(self.top_k is None or int(self.top_k) >= 0, "top_k", ">= 0")
        need(self.top_p is None or 0.0 <= self.top_p <= 1.0, "top_p", "in [0, 1]")
        need(self.min_p is None or 0.0 <= self.min_p <= 1.0, "min_p", "in [0, 1]")
        need(
            self.repetition_penalty is None or self.repetition_penalty > 0,
            "repetition_penalty",
            "> 0",
        )
        need(
            self.no_repeat_ngram_size is None or int(self.no_repeat_ngram_size) >= 0,
            "no_repeat_ngram_size",
            ">= 0",
        )
        need(
            self.early_stopping in (True, False, "never"),
            "early_stopping",
            "True, False or 'never'",
        )

    def check_supported(self) -> None:
        """Raise where a field asks for a decoding feature ember does not implement."""
        for field, default in UNSUPPORTED.items():
            value = getattr(self, field, default)
            if value != default and value is not None:
                raise NotImplementedError(
                    f"generate: GenerationConfig.{field}={value!r} is not implemented by "
                    f"ember (leave it at {default!r})"
                )

    # --- dict / JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: copy.deepcopy(v) for k, v in sorted(self.__dict__.items()) if k[0] != "_"}

    def to_diff_dict(self) -> dict:
        """The fields that differ from the defaults (what HuggingFace writes)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in DEFAULTS or DEFAULTS[k] != v or k == "transformers_version"
        }

    def to_json_string(self) -> str:
        data = {k: v for k, v in self.to_diff_dict().items() if v is not None}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def update(self, **kwargs) -> dict:
        """Set the kwargs naming fields; return the others (model inputs)."""
        unused = {}
        for key, value in kwargs.items():
            if key in DEFAULTS or key in self.__dict__:
                setattr(self, key, value)
            else:
                unused[key] = value
        self.validate()
        return unused

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "GenerationConfig":
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, config_file_name=None, **kwargs):
        """Read `generation_config.json` from a folder."""
        name = config_file_name or GENERATION_CONFIG_NAME
        folder = resolve_pretrained_folder(
            pretrained_model_name_or_path, "GenerationConfig.from_pretrained"
        )
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GenerationConfig.from_pretrained: no {name} in {folder!r}")
        with open(path, encoding="utf-8") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"GenerationConfig.from_pretrained: {path} is not valid JSON ({error})"
                ) from None
        if not isinstance(data, dict):
            raise ValueError(f"GenerationConfig.from_pretrained: {path} holds no JSON object")
        return cls.from_dict(data, **kwargs)

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The special tokens (and any generation fields) of a model's config.json."""
        values = {}
        for key in DEFAULTS:
            value = getattr(model_config, key, None)
            if value is not None and value != DEFAULTS[key]:
                values[key] = value
        return cls(**values)

    def save_pretrained(self, save_directory, config_file_name=None) -> str:
        save_directory = save_folder(save_directory, "GenerationConfig.save_pretrained")
        path = os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME)
        with atomic_write(path, "w") as file:
            file.write(self.to_json_string())
        return path

    def __eq__(self, other) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string()}"
