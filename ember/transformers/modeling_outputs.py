"""Model outputs: dataclasses readable by attribute, by key and by index.

Note [ModelOutput access]: as in HuggingFace, `out.logits`, `out["logits"]` and `out[0]` all
work; integer indexing and `to_tuple()` skip fields that are None, so `out[0]` is the loss when
labels were given and the logits otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ember._util.pytree import register_node


class ModelOutput:
    """Base of the output dataclasses (Note [ModelOutput access])."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(
                    f"{type(self).__name__} has no (non-None) field {key!r}; fields: {self.keys()}"
                )
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


def _output_items(out: ModelOutput):
    names = [f.name for f in fields(out)]
    return names, [getattr(out, n) for n in names]


def _output_rebuild(cls, names, values) -> ModelOutput:
    return cls(**dict(zip(names, values)))


# outputs are tree nodes (Note [Pytrees]): a compiled model returns the same output class
register_node(ModelOutput, _output_items, _output_rebuild)


@dataclass(repr=False)
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class SequenceClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class TokenClassifierOutput(SequenceClassifierOutput):
    pass


@dataclass(repr=False)
class MultipleChoiceModelOutput(SequenceClassifierOutput):
    pass


@dataclass(repr=False)
class MaskedLMOutput(SequenceClassifierOutput):
    pass


@dataclass(repr=False)
class NextSentencePredictorOutput(SequenceClassifierOutput):
    pass


@dataclass(repr=False)
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class BertForPreTrainingOutput(ModelOutput):
    loss: Any = None
    prediction_logits: Any = None
    seq_relationship_logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class BaseModelOutputWithPast(ModelOutput):
    """A decoder's output: `past_key_values` is the cache (Note [KV cache]) when
    `use_cache`."""

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(repr=False)
class CausalLMOutputWithPast(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


def _repr(self) -> str:
    parts = []
    for k, v in self.items():
        if hasattr(v, "shape"):
            parts.append(f"{k}=<{type(v).__name__} {tuple(v.shape)}>")
        elif isinstance(v, tuple):
            parts.append(f"{k}=<tuple of {len(v)}>")
        else:
            parts.append(f"{k}={v!r}")
    return f"{type(self).__name__}({', '.join(parts)})"


ModelOutput.__repr__ = _repr
