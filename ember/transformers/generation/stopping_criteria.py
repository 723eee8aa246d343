"""Stopping criteria under HuggingFace's names: each maps (input_ids, scores) to a (batch,) bool
array, True where that sequence is done; `StoppingCriteriaList` ors them."""

from __future__ import annotations

import time

import numpy as np

import ember


def _ids(input_ids) -> np.ndarray:
    return np.asarray(
        input_ids.numpy(force=True) if isinstance(input_ids, ember.Tensor) else input_ids
    )


class StoppingCriteria:
    """Base class: `__call__(input_ids, scores) -> (batch,) bool`."""

    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define __call__")


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequence (prompt included) has max_length tokens."""

    def __init__(self, max_length: int, max_position_embeddings: int | None = None):
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings

    def __call__(self, input_ids, scores, **kwargs):
        ids = _ids(input_ids)
        return np.full(ids.shape[0], ids.shape[-1] >= self.max_length)


class MaxTimeCriteria(StoppingCriteria):
    """Done once `max_time` seconds have passed since `initial_timestamp` (default: now)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        ids = _ids(input_ids)
        return np.full(ids.shape[0], time.time() - self.initial_timestamp > self.max_time)


class EosTokenCriteria(StoppingCriteria):
    """Done where the last token is one of the EOS ids."""

    def __init__(self, eos_token_id):
        if isinstance(eos_token_id, ember.Tensor):
            eos_token_id = eos_token_id.tolist()
        if isinstance(eos_token_id, (int, np.integer)):
            eos_token_id = [int(eos_token_id)]
        self.eos_token_id = np.asarray(eos_token_id, np.int64)

    def __call__(self, input_ids, scores, **kwargs):
        return np.isin(_ids(input_ids)[:, -1], self.eos_token_id)


class StoppingCriteriaList(list):
    """Any criterion that says done makes the row done."""

    def __call__(self, input_ids, scores, **kwargs):
        done = np.zeros(_ids(input_ids).shape[0], bool)
        for criterion in self:
            result = criterion(input_ids, scores, **kwargs)
            if isinstance(result, ember.Tensor):
                result = result.numpy(force=True)
            done |= np.asarray(result, bool).reshape(-1) if np.ndim(result) else bool(result)
        return done

    @property
    def max_length(self) -> int | None:
        for criterion in self:
            if isinstance(criterion, MaxLengthCriteria):
                return criterion.max_length
        return None


__all__ = [
    "EosTokenCriteria",
    "MaxLengthCriteria",
    "MaxTimeCriteria",
    "StoppingCriteria",
    "StoppingCriteriaList",
]
