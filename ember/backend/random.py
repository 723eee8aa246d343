"""Random generators, one default per device, seeded by `ember.manual_seed`.

Note [Reproducibility]: every random op (rand, randn, dropout masks, randperm, samplers) draws
from a `Generator`, either the one passed as `generator=` or the default of the tensor's
device. `manual_seed(s)` reseeds every default generator, so a seeded program gives the same
numbers run after run. A generator's full state is a JSON-able dict (`get_state`/`set_state`),
which is what training checkpoints save.
"""

from __future__ import annotations

import time

__all__ = ["Generator", "default_generator", "manual_seed", "seed", "initial_seed"]

_DEFAULT_SEED = 67280421310721


class Generator:
    """A seeded random-number generator for one device (PCG64 on the CPU)."""

    def __init__(self, device="cpu"):
        from ember import backend as _backend

        self.device = _backend.device(device)
        self._backend = _backend.get_backend(self.device)
        self._seed = _DEFAULT_SEED
        self._rng = self._backend.new_bit_generator(self._seed)

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed)
        if seed < 0:
            seed &= (1 << 64) - 1
        self._seed = seed
        self._rng = self._backend.new_bit_generator(seed)
        return self

    def seed(self) -> int:
        """Seed from the clock; return the seed used."""
        new_seed = time.time_ns() & ((1 << 63) - 1)
        self.manual_seed(new_seed)
        return new_seed

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict:
        return {"seed": self._seed, "bit_generator": self._backend.rng_get_state(self._rng)}

    def set_state(self, state: dict) -> "Generator":
        self._seed = int(state["seed"])
        self._backend.rng_set_state(self._rng, state["bit_generator"])
        return self

    @property
    def rng(self):
        """The backend's generator object (numpy.random.Generator on the CPU)."""
        return self._rng

    def __repr__(self) -> str:
        return f"<ember.Generator device={self.device} initial_seed={self._seed}>"


_defaults: dict[str, Generator] = {}


def default_generator(device="cpu") -> Generator:
    from ember import backend as _backend

    key = str(_backend.device(device))
    gen = _defaults.get(key)
    if gen is None:
        gen = _defaults[key] = Generator(key)
    return gen


def manual_seed(seed: int) -> Generator:
    """Seed the default generator of every device; return the CPU one."""
    cpu = default_generator("cpu").manual_seed(seed)
    for _key, gen in _defaults.items():
        if gen is not cpu:
            gen.manual_seed(seed)
    return cpu


def seed() -> int:
    new_seed = default_generator("cpu").seed()
    for gen in _defaults.values():
        gen.manual_seed(new_seed)
    return new_seed


def initial_seed() -> int:
    return default_generator("cpu").initial_seed()
