"""Learning-rate schedules with warmup, as HuggingFace's `get_scheduler` defines them.

Each schedule is a multiplier of the initial learning rate as a function of the optimizer step,
wrapped in `ember.optim.lr_scheduler.LambdaLR`. The multipliers are small classes, not
closures, so a scheduler's state dict records their settings and a checkpoint restores them.
The formulas (step t, warmup w, total T, all integers):
    warmup (t < w):          t / max(1, w)
    linear:                  max(0, (T - t) / max(1, T - w))
    cosine:                  max(0, (1 + cos(pi * 2 * cycles * p)) / 2),
                             with p = (t - w) / max(1, T - w)
    cosine_with_restarts:    0 if p >= 1 else max(0, (1 + cos(pi * ((cycles * p) % 1))) / 2)
    polynomial:              ((lr0 - lr_end) * (1 - (t - w) / (T - w)) ** power + lr_end) / lr0,
                             lr_end / lr0 after T
    constant_with_warmup:    1 after warmup;  constant: 1 always
    inverse_sqrt:            1 / sqrt((t + timescale - w) / timescale), timescale = w or 10_000
"""

from __future__ import annotations

import math

from ember.optim.lr_scheduler import LambdaLR

__all__ = ["get_scheduler"]


class _Warmup:
    def __init__(self, num_warmup_steps: int):
        self.num_warmup_steps = int(num_warmup_steps)

    def warmup(self, step: int) -> float:
        return float(step) / float(max(1, self.num_warmup_steps))


class _Constant(_Warmup):
    def __call__(self, step: int) -> float:
        return 1.0


class _ConstantWithWarmup(_Warmup):
    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        return 1.0


class _Linear(_Warmup):
    def __init__(self, num_warmup_steps: int, num_training_steps: int):
        super().__init__(num_warmup_steps)
        self.num_training_steps = int(num_training_steps)

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        remaining = float(self.num_training_steps - step)
        return max(0.0, remaining / float(max(1, self.num_training_steps - self.num_warmup_steps)))


class _Cosine(_Linear):
    def __init__(self, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5):
        super().__init__(num_warmup_steps, num_training_steps)
        self.num_cycles = float(num_cycles)

    def progress(self, step: int) -> float:
        done = float(step - self.num_warmup_steps)
        return done / float(max(1, self.num_training_steps - self.num_warmup_steps))

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        progress = self.progress(step)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * self.num_cycles * 2.0 * progress)))


class _CosineWithRestarts(_Cosine):
    def __init__(self, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1):
        super().__init__(num_warmup_steps, num_training_steps, num_cycles)

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        progress = self.progress(step)
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((self.num_cycles * progress) % 1.0))))


class _Polynomial(_Linear):
    def __init__(
        self,
        num_warmup_steps: int,
        num_training_steps: int,
        lr_init: float,
        lr_end: float = 1e-7,
        power: float = 1.0,
    ):
        super().__init__(num_warmup_steps, num_training_steps)
        if not lr_init > lr_end:
            raise ValueError(
                f"polynomial schedule: lr_end ({lr_end}) must be smaller than the "
                f"initial learning rate ({lr_init})"
            )
        self.lr_init, self.lr_end, self.power = float(lr_init), float(lr_end), float(power)

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        if step > self.num_training_steps:
            return self.lr_end / self.lr_init
        decay_steps = self.num_training_steps - self.num_warmup_steps
        remaining = 1 - (step - self.num_warmup_steps) / decay_steps
        return ((self.lr_init - self.lr_end) * remaining**self.power + self.lr_end) / self.lr_init


class _InverseSqrt(_Warmup):
    def __init__(self, num_warmup_steps: int, timescale: int | None = None):
        super().__init__(num_warmup_steps)
        self.timescale = int(timescale or num_warmup_steps or 10_000)

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return self.warmup(step)
        shift = self.timescale - self.num_warmup_steps
        return 1.0 / math.sqrt((step + shift) / self.timescale)


def get_scheduler(
    name: str,
    optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs=None,
):
    """A LambdaLR for the named schedule (HuggingFace's `get_scheduler`).

    Example:
        >>> import ember
        >>> opt = ember.optim.AdamW([ember.zeros(2, requires_grad=True)], lr=1.0)
        >>> sched = get_scheduler("linear", opt, num_warmup_steps=2, num_training_steps=10)
        >>> [round(sched.lr_lambdas[0](t), 3) for t in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    kwargs = dict(scheduler_specific_kwargs or {})
    name = getattr(name, "value", name)
    if name == "constant":
        return LambdaLR(optimizer, _Constant(0))
    if num_warmup_steps is None:
        raise ValueError(f"get_scheduler: the {name!r} schedule needs num_warmup_steps")
    if name == "constant_with_warmup":
        return LambdaLR(optimizer, _ConstantWithWarmup(num_warmup_steps))
    if name == "inverse_sqrt":
        return LambdaLR(optimizer, _InverseSqrt(num_warmup_steps, **kwargs))
    if num_training_steps is None:
        raise ValueError(f"get_scheduler: the {name!r} schedule needs num_training_steps")
    if name == "linear":
        schedule = _Linear(num_warmup_steps, num_training_steps)
    elif name == "cosine":
        schedule = _Cosine(num_warmup_steps, num_training_steps, **kwargs)
    elif name == "cosine_with_restarts":
        schedule = _CosineWithRestarts(num_warmup_steps, num_training_steps, **kwargs)
    elif name == "polynomial":
        lr_init = optimizer.defaults["lr"]
        schedule = _Polynomial(num_warmup_steps, num_training_steps, lr_init, **kwargs)
    else:
        raise ValueError(
            f"get_scheduler: unknown schedule {name!r}; expected one of "
            f"linear, cosine, cosine_with_restarts, polynomial, constant, "
            f"constant_with_warmup, inverse_sqrt"
        )
    return LambdaLR(optimizer, schedule)
