"""Samplers: iterables of dataset indices (or, for BatchSampler, of index lists).

Note [Sampler randomness]: a sampler given `generator=` (an `ember.Generator`, or a NumPy
Generator) draws from it, so successive epochs differ and a re-seeded generator replays them.
Without one, each epoch draws a fresh 63-bit seed from ember's default CPU generator, so
`ember.manual_seed(s)` makes the whole run reproducible. Samplers run in the main process,
so the order of samples never depends on `num_workers`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "BatchSampler",
    "DistributedSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
]


def _generator_rng(generator) -> np.random.Generator:
    """The NumPy generator to draw from (Note [Sampler randomness])."""
    if generator is None:
        from ember.backend.random import default_generator

        seed = int(default_generator("cpu").rng.integers(0, 2**63 - 1))
        return np.random.default_rng(seed)
    if isinstance(generator, np.random.Generator):
        return generator
    rng = getattr(generator, "rng", None)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(
        f"expected an ember.Generator or numpy.random.Generator as generator, "
        f"got {type(generator).__name__}"
    )


class Sampler:
    """Base class: subclasses define `__iter__` (and `__len__` when it is known)."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation of the indices, or `num_samples` draws with replacement.

    Without replacement and with `num_samples > len(data_source)`, whole permutations follow
    one another (PyTorch's behaviour).
    """

    def __init__(
        self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None
    ):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement should be a bool, got {replacement!r}")
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(
                f"RandomSampler: num_samples should be a positive integer, got {self.num_samples!r}"
            )

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        rng = _generator_rng(self.generator)
        if self.replacement:
            return iter(rng.integers(0, n, size=self.num_samples).tolist())
        full, rest = divmod(self.num_samples, n)
        order = [rng.permutation(n) for _ in range(full)]
        if rest:
            order.append(rng.permutation(n)[:rest])
        return iter(np.concatenate(order).tolist())

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices, in a random order each epoch."""

    def __init__(self, indices: Sequence[int], generator=None):
        self.indices = indices
        self.generator = generator

    def __iter__(self):
        order = _generator_rng(self.generator).permutation(len(self.indices))
        return (self.indices[i] for i in order.tolist())

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """Indices 0..len(weights)-1 drawn with probabilities proportional to `weights`."""

    def __init__(
        self, weights: Sequence[float], num_samples: int, replacement: bool = True, generator=None
    ):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(
                f"WeightedRandomSampler: num_samples should be a positive integer, "
                f"got {num_samples!r}"
            )
        weights = np.asarray(getattr(weights, "numpy", lambda: weights)(), dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError(
                f"WeightedRandomSampler: weights should be 1-D, got shape {weights.shape}"
            )
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError(
                "WeightedRandomSampler: weights must be finite, non-negative and not all zero"
            )
        if not replacement and num_samples > np.count_nonzero(weights):
            raise ValueError(
                "WeightedRandomSampler: cannot draw more samples than there are "
                "non-zero weights without replacement"
            )
        self.weights = weights
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator

    def __iter__(self):
        rng = _generator_rng(self.generator)
        probabilities = self.weights / self.weights.sum()
        draws = rng.choice(
            len(self.weights), size=self.num_samples, replace=self.replacement, p=probabilities
        )
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size`.

    Example:
        >>> list(BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False))
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(
                f"BatchSampler: batch_size should be a positive integer, got {batch_size!r}"
            )
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last should be a bool, got {drop_last!r}")  # noqa: TRY004 - PyTorch raises ValueError here
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size


def shard_indices(indices: list, num_replicas: int, rank: int, drop_last: bool = False) -> list:
    """Replica `rank`'s share of `indices` (DistributedSampler's rule): pad by repeating from
    the start to a multiple of `num_replicas` (or trim with `drop_last`), then take every
    `num_replicas`-th from position `rank`."""
    indices = list(indices)
    n = len(indices)
    if drop_last and n % num_replicas:
        total = math.ceil((n - num_replicas) / num_replicas) * num_replicas
    else:
        total = math.ceil(n / num_replicas) * num_replicas
    if total > n:
        padding = total - n
        if padding <= n:
            indices += indices[:padding]
        else:
            indices += (indices * math.ceil(padding / n))[:padding]
    else:
        indices = indices[:total]
    return indices[rank:total:num_replicas]


class DistributedSampler(Sampler):
    """The share of the dataset that belongs to one of `num_replicas` processes.

    Every replica sees `ceil(len / num_replicas)` samples (padded by repeating the first
    ones, or trimmed with `drop_last`); with `shuffle`, the permutation is seeded by
    `seed + epoch`, so call `set_epoch(epoch)` before each epoch. Replica `r` takes positions
    `r, r + num_replicas, ...` of the (padded) order, so the replicas' i-th samples together are
    the i-th `num_replicas` samples of one process's order. `num_replicas` and `rank` default to
    the process group's (`ember.distributed.init_process_group`), else to the launcher's
    environment (mpiexec, Slurm, torchrun's `WORLD_SIZE`/`RANK`), else 1 and 0.

    Example:
        >>> s = DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
        >>> list(s)  # padded with sample 0 to 6 = 2 x 3
        [1, 3, 0]
    """

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if num_replicas is None or rank is None:
            from ember.backend import comm

            num_replicas = comm.world_size() if num_replicas is None else num_replicas
            rank = comm.rank() if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(
                f"DistributedSampler: num_replicas should be a positive int, got {num_replicas!r}"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(
                f"DistributedSampler: invalid rank {rank}, rank should be in the "
                f"interval [0, {num_replicas - 1}]"
            )
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        else:
            indices = list(range(n))
        return iter(shard_indices(indices, self.num_replicas, self.rank, self.drop_last))

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
