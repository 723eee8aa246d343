"""Logits processors and warpers under HuggingFace's names: each maps (input_ids, scores) to new
scores for the next token, scores being (batch, vocab) float logits.

Note [Processor arrays]: a processor is called with ember Tensors (as HuggingFace's are called
with torch tensors) and returns a Tensor; the built-in ones work on the NumPy arrays inside
(`Tensor.numpy()` shares memory, `ember.from_numpy` wraps without a copy), since they run
once per generated token where Python overhead counts. A user's processor may use ember ops.
`filter_value` (-inf by default) marks removed tokens, so softmax gives them probability 0.
"""

from __future__ import annotations

import numpy as np

import ember


def _arrays(input_ids, scores):
    ids = input_ids.numpy(force=True) if isinstance(input_ids, ember.Tensor) else input_ids
    values = scores.numpy(force=True) if isinstance(scores, ember.Tensor) else scores
    return np.asarray(ids), np.asarray(values)


def _out(array: np.ndarray):
    return ember.from_numpy(np.ascontiguousarray(array))


class LogitsProcessor:
    """Base class: `__call__(input_ids, scores) -> scores` (Note [Processor arrays])."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError(f"{type(self).__name__} must define __call__")


class LogitsWarper(LogitsProcessor):
    """Base class of the sampling warpers (HuggingFace's older name for the same interface)."""


class LogitsProcessorList(list):
    """Applies each processor in turn."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            scores = (
                processor(input_ids, scores, **kwargs) if kwargs else processor(input_ids, scores)
            )
        return scores


class TemperatureLogitsWarper(LogitsWarper):
    """scores / temperature: > 1 flattens the distribution, < 1 sharpens it."""

    def __init__(self, temperature: float):
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(
                f"TemperatureLogitsWarper: temperature must be a float > 0, got {temperature!r}"
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        return _out(values / np.asarray(self.temperature, values.dtype))


class TopKLogitsWarper(LogitsWarper):
    """Keep the k highest scores (ties with the k-th kept too); the rest get filter_value."""

    def __init__(self, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep=1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"TopKLogitsWarper: top_k must be a positive int, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        k = min(self.top_k, values.shape[-1])
        kth = -np.partition(-values, k - 1, axis=-1)[..., k - 1 : k]
        return _out(np.where(values < kth, values.dtype.type(self.filter_value), values))


class TopPLogitsWarper(LogitsWarper):
    """Nucleus filtering: keep the smallest set of most likely tokens whose probabilities sum
    to at least top_p (HuggingFace's rule: drop tokens whose ascending cumulative probability
    is <= 1 - top_p), and at least `min_tokens_to_keep`."""

    def __init__(self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep=1):
        top_p = float(top_p)
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"TopPLogitsWarper: top_p must be in [0, 1], got {top_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(
                f"TopPLogitsWarper: min_tokens_to_keep must be a positive int, got "
                f"{min_tokens_to_keep!r}"
            )
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        order = np.argsort(values, axis=-1, kind="stable")  # ascending
        sorted_values = np.take_along_axis(values, order, -1).astype(np.float64)
        probs = np.exp(sorted_values - sorted_values[..., -1:])
        probs /= probs.sum(-1, keepdims=True)
        remove_sorted = np.cumsum(probs, -1) <= 1.0 - self.top_p
        remove_sorted[..., -self.min_tokens_to_keep :] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, -1)
        return _out(np.where(remove, values.dtype.type(self.filter_value), values))


class MinPLogitsWarper(LogitsWarper):
    """Keep tokens with probability >= min_p * (the top token's probability)."""

    def __init__(self, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep=1):
        if not 0.0 <= float(min_p) <= 1.0:
            raise ValueError(f"MinPLogitsWarper: min_p must be in [0, 1], got {min_p}")
        self.min_p = float(min_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        shifted = values.astype(np.float64) - values.max(-1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(-1, keepdims=True)
        threshold = self.min_p * probs.max(-1, keepdims=True)
        remove = probs < threshold
        order = np.argsort(-values, axis=-1, kind="stable")[..., : self.min_tokens_to_keep]
        np.put_along_axis(remove, order, False, -1)
        return _out(np.where(remove, values.dtype.type(self.filter_value), values))


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Scores of tokens already in the sequence: divided by `penalty` when positive,
    multiplied when negative (CTRL's rule, once per token). `prompt_ignore_length` (int, or
    one per row: left padding) skips leading positions."""

    def __init__(self, penalty: float, prompt_ignore_length=None):
        if not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ValueError(
                f"RepetitionPenaltyLogitsProcessor: penalty must be a float > 0, got {penalty!r}"
            )
        self.penalty = float(penalty)
        if isinstance(prompt_ignore_length, ember.Tensor):
            prompt_ignore_length = prompt_ignore_length.numpy(force=True)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        vocab = values.shape[-1]
        ids = np.minimum(ids, vocab)  # ids beyond the head's vocabulary cannot be generated
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            ids = ids[:, ignore:]
        elif ignore is not None:
            ignore = np.asarray(ignore)
            if ignore.shape[0] != ids.shape[0]:
                raise ValueError(
                    f"RepetitionPenaltyLogitsProcessor: prompt_ignore_length has "
                    f"{ignore.shape[0]} rows, input_ids {ids.shape[0]}"
                )
            positions = np.arange(ids.shape[1])
            ids = np.where(positions[None, :] < ignore[:, None], vocab, ids)
        seen = np.zeros((values.shape[0], vocab + 1), bool)
        np.put_along_axis(seen, ids, True, -1)
        seen = seen[:, :vocab]
        penalty = values.dtype.type(self.penalty)
        penalized = np.where(values < 0, values * penalty, values / penalty)
        return _out(np.where(seen, penalized, values))


def _banned_ngram_tokens(row: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `row`."""
    if len(row) + 1 < n:
        return []
    prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
    banned = []
    for start in range(len(row) - n + 1):
        if tuple(row[start : start + n - 1]) == prefix:
            banned.append(row[start + n - 1])
    return banned


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Forbid (score -inf) any token that would repeat an n-gram of the sequence."""

    def __init__(self, ngram_size: int):
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(
                f"NoRepeatNGramLogitsProcessor: ngram_size must be a positive int, got "
                f"{ngram_size!r}"
            )
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        out = values.copy()
        for b in range(ids.shape[0]):
            banned = _banned_ngram_tokens(ids[b].tolist(), self.ngram_size)
            if banned:
                out[b, banned] = -np.inf
        return _out(out)


class MinLengthLogitsProcessor(LogitsProcessor):
    """EOS forbidden while the sequence (prompt included) is shorter than min_length."""

    def __init__(self, min_length: int, eos_token_id):
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"MinLengthLogitsProcessor: min_length must be >= 0, got {min_length}")
        self.min_length = min_length
        self.eos_token_id = _id_list(eos_token_id)

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        if ids.shape[-1] >= self.min_length:
            return scores
        out = values.copy()
        out[:, self.eos_token_id] = -np.inf
        return _out(out)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """EOS forbidden until min_new_tokens tokens follow the prompt."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id):
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = _id_list(eos_token_id)

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        if ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        out = values.copy()
        out[:, self.eos_token_id] = -np.inf
        return _out(out)


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """These tokens are never generated."""

    def __init__(self, suppress_tokens):
        self.suppress_tokens = _id_list(suppress_tokens)

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        out = values.copy()
        out[:, self.suppress_tokens] = -np.inf
        return _out(out)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """These tokens are not generated as the first new token."""

    def __init__(self, begin_suppress_tokens, begin_index: int):
        self.begin_suppress_tokens = _id_list(begin_suppress_tokens)
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        if ids.shape[-1] != self.begin_index:
            return scores
        out = values.copy()
        out[:, self.begin_suppress_tokens] = -np.inf
        return _out(out)


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """The first generated token (sequence length 1) is forced to bos_token_id."""

    def __init__(self, bos_token_id: int):
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        if ids.shape[-1] != 1:
            return scores
        out = np.full_like(values, -np.inf)
        out[:, self.bos_token_id] = 0
        return _out(out)


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """The last token (at max_length - 1) is forced to an EOS token."""

    def __init__(self, max_length: int, eos_token_id):
        self.max_length = max_length
        self.eos_token_id = _id_list(eos_token_id)

    def __call__(self, input_ids, scores):
        ids, values = _arrays(input_ids, scores)
        if ids.shape[-1] != self.max_length - 1:
            return scores
        out = np.full_like(values, -np.inf)
        out[:, self.eos_token_id] = 0
        return _out(out)


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """NaN -> 0 and +-inf -> the dtype's largest/lowest finite value."""

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        info = np.finfo(values.dtype)
        return _out(np.nan_to_num(values, nan=0.0, posinf=info.max, neginf=info.min))


class LogitNormalization(LogitsProcessor):
    """log_softmax of the scores (HuggingFace's `renormalize_logits=True`)."""

    def __call__(self, input_ids, scores):
        _, values = _arrays(input_ids, scores)
        top = values.max(-1, keepdims=True)
        shifted = values - np.where(np.isfinite(top), top, 0)
        return _out(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))


def _id_list(ids) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, ember.Tensor):
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]


__all__ = [
    "ForcedBOSTokenLogitsProcessor",
    "ForcedEOSTokenLogitsProcessor",
    "InfNanRemoveLogitsProcessor",
    "LogitNormalization",
    "LogitsProcessor",
    "LogitsProcessorList",
    "LogitsWarper",
    "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor",
    "MinPLogitsWarper",
    "NoRepeatNGramLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "SuppressTokensAtBeginLogitsProcessor",
    "SuppressTokensLogitsProcessor",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
]
