"""Arrays a forward kernel computes that its op's backward can reuse (Note [Kept for the
backward]).

Note [Kept for the backward]: an op has one output, and its VJP gets the op's inputs (and,
where it asks, its output); some fused forwards compute something more that the backward would
otherwise compute again: the attention probabilities (Note [Attention training] in
attention_train_kernels.py), the dropout keep mask of the fused dropout + add + layer norm
(Note [Kept dropout masks] in dropout_norm_kernels.py). Such a kernel keeps it in a `Kept`
store under a key, for as long as an owner array lives (an array the autograd node holds
until its backward: the op's seed, or its saved output), and the backward `take`s it out, so
each kept value is used once and freed with the step. When the owner dies first (a forward
that recorded no backward, a graph dropped unused), `weakref.finalize` drops the value with
it. A miss (a second backward with retain_graph, a compiled graph, no kernel ran) costs the
backward its recomputation and nothing else: the kept values are exactly what the backward
would compute, so its results are the same bits either way (each user's tests check both).
"""

from __future__ import annotations

import weakref


class Kept:
    """Values stored under a key while an owner array lives; `take` hands each out once."""

    def __init__(self):
        self._values: dict = {}

    def keep(self, key, value, owner) -> None:
        """Store `value` under `key` until it is taken or `owner` is freed."""
        self._values[key] = value
        weakref.finalize(owner, self._forget, key, value)

    def take(self, key):
        """The value kept under `key`, removed from the store, or None."""
        return self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key) -> bool:
        return key in self._values

    def _forget(self, key, value) -> None:
        # the owner is gone: its value goes too, unless the backward took it or a later
        # forward kept its own under the key
        if self._values.get(key) is value:
            del self._values[key]
