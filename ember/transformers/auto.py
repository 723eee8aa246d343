"""`AutoConfig` and `AutoModel*`: pick the class from `config.json`'s `model_type`.

Small registries keyed by model type (STYLE.md habit 11); a new model adds one row per task
with `register_model`.
"""

from __future__ import annotations

import os

from ember.transformers.bert.configuration_bert import BertConfig
from ember.transformers.bert import modeling_bert as _bert
from ember.transformers.configuration_utils import PretrainedConfig
from ember.transformers.distilbert import modeling_distilbert as _distilbert
from ember.transformers.distilbert.configuration_distilbert import DistilBertConfig
from ember.transformers.gpt2 import modeling_gpt2 as _gpt2
from ember.transformers.gpt2.configuration_gpt2 import GPT2Config
from ember.transformers.llama import configuration_llama as _llama_configs
from ember.transformers.llama import modeling_llama as _llama
from ember.transformers.roberta import modeling_roberta as _roberta
from ember.transformers.roberta.configuration_roberta import RobertaConfig

CONFIG_MAPPING: dict[str, type[PretrainedConfig]] = {
    "bert": BertConfig,
    "roberta": RobertaConfig,
    "distilbert": DistilBertConfig,
    "gpt2": GPT2Config,
    "llama": _llama_configs.LlamaConfig,
    "mistral": _llama_configs.MistralConfig,
    "qwen2": _llama_configs.Qwen2Config,
    "smollm3": _llama_configs.SmolLM3Config,
}

# task -> model_type -> class
MODEL_MAPPINGS: dict[str, dict[str, type]] = {
    "base": {"bert": _bert.BertModel},
    "pretraining": {"bert": _bert.BertForPreTraining},
    "masked-lm": {"bert": _bert.BertForMaskedLM},
    "next-sentence-prediction": {"bert": _bert.BertForNextSentencePrediction},
    "sequence-classification": {"bert": _bert.BertForSequenceClassification},
    "token-classification": {"bert": _bert.BertForTokenClassification},
    "question-answering": {"bert": _bert.BertForQuestionAnswering},
    "multiple-choice": {"bert": _bert.BertForMultipleChoice},
}


def register_config(model_type: str, config_class: type[PretrainedConfig]) -> None:
    CONFIG_MAPPING[model_type] = config_class


def register_model(task: str, model_type: str, model_class: type) -> None:
    MODEL_MAPPINGS.setdefault(task, {})[model_type] = model_class


# task -> class-name suffix, for the families with the common encoder heads
_ENCODER_HEADS = {
    "base": "Model",
    "masked-lm": "ForMaskedLM",
    "pretraining": "ForMaskedLM",  # as in HuggingFace: MLM is their pretraining
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "multiple-choice": "ForMultipleChoice",
}
for _model_type, _module, _prefix in (
    ("roberta", _roberta, "Roberta"),
    ("distilbert", _distilbert, "DistilBert"),
):
    for _task, _suffix in _ENCODER_HEADS.items():
        register_model(_task, _model_type, getattr(_module, _prefix + _suffix))

# decoders: the Llama-shaped families share Llama's model (Note [Llama-shaped configs])
register_model("base", "gpt2", _gpt2.GPT2Model)
register_model("causal-lm", "gpt2", _gpt2.GPT2LMHeadModel)
for _model_type, (_base, _causal_lm) in _llama.FAMILY_MODELS.items():
    register_model("base", _model_type, _base)
    register_model("causal-lm", _model_type, _causal_lm)


class AutoConfig:
    """`AutoConfig.from_pretrained(folder)` reads `config.json` into the right config class.

    Example:
        >>> from ember.transformers import AutoConfig
        >>> type(AutoConfig.for_model("bert", hidden_size=64)).__name__
        'BertConfig'
    """

    def __init__(self):
        raise TypeError("AutoConfig is not instantiated: use AutoConfig.from_pretrained(folder)")

    @staticmethod
    def _class_for(model_type, where: str) -> type[PretrainedConfig]:
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"{where}: unknown model_type {model_type!r}; ember knows {sorted(CONFIG_MAPPING)}"
            )
        return CONFIG_MAPPING[model_type]

    @classmethod
    def for_model(cls, model_type: str, **kwargs) -> PretrainedConfig:
        return cls._class_for(model_type, "AutoConfig.for_model")(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> PretrainedConfig:
        data = PretrainedConfig.get_config_dict(
            pretrained_model_name_or_path, kwargs.get("gguf_file")
        )
        where = f"AutoConfig.from_pretrained: {os.fspath(pretrained_model_name_or_path)!r}"
        config_class = cls._class_for(data.get("model_type"), where)
        return config_class.from_pretrained(pretrained_model_name_or_path, **kwargs)


class _AutoModel:
    _task = "base"

    def __init__(self):
        raise TypeError(
            f"{type(self).__name__} is not instantiated: use "
            f"{type(self).__name__}.from_pretrained(folder) or .from_config(config)"
        )

    @classmethod
    def _class_for(cls, config: PretrainedConfig) -> type:
        table = MODEL_MAPPINGS[cls._task]
        if config.model_type not in table:
            raise ValueError(
                f"{cls.__name__}: no model for model_type {config.model_type!r} "
                f"and task {cls._task!r}; known: {sorted(table)}"
            )
        return table[config.model_type]

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs):
        return cls._class_for(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        gguf_file = kwargs.get("gguf_file")
        if config is None:
            config, kwargs = AutoConfig.from_pretrained(
                pretrained_model_name_or_path, return_unused_kwargs=True, **kwargs
            )
            if gguf_file is not None:  # the config read it; the model's weights are in it too
                kwargs["gguf_file"] = gguf_file
        return cls._class_for(config).from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )


class AutoModel(_AutoModel):
    """The bare encoder (e.g. `BertModel`) for the folder's model type."""

    _task = "base"


class AutoModelForPreTraining(_AutoModel):
    _task = "pretraining"


class AutoModelForMaskedLM(_AutoModel):
    _task = "masked-lm"


class AutoModelForNextSentencePrediction(_AutoModel):
    _task = "next-sentence-prediction"


class AutoModelForSequenceClassification(_AutoModel):
    _task = "sequence-classification"


class AutoModelForTokenClassification(_AutoModel):
    _task = "token-classification"


class AutoModelForQuestionAnswering(_AutoModel):
    _task = "question-answering"


class AutoModelForMultipleChoice(_AutoModel):
    _task = "multiple-choice"


class AutoModelForCausalLM(_AutoModel):
    """A decoder language model with `generate()` (GPT-2, Llama, Mistral, Qwen2, SmolLM).

    Example:
        >>> import tempfile
        >>> from ember.transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
        >>> folder = tempfile.mkdtemp()
        >>> GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4)
        ...                 ).save_pretrained(folder)
        >>> type(AutoModelForCausalLM.from_pretrained(folder)).__name__
        'GPT2LMHeadModel'
    """

    _task = "causal-lm"
