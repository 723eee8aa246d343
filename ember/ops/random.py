"""Random primitives. They are stateful (Note [Reproducibility] in ember.backend.random): each
draws from a `Generator`, passed as the `generator` attribute, so graphs never fold or merge
them."""

from __future__ import annotations

from ember import dtypes as _dt
from ember.ops.registry import apply, defop


def _rng(generator):
    return generator.rng


def _uniform(xp, shape, low, high, dtype, generator, device):
    r = _rng(generator).random(shape, dtype=xp.float64 if dtype is _dt.float64 else xp.float32)
    if low != 0.0 or high != 1.0:
        r = r * (high - low) + low
    return r.astype(dtype.numpy, copy=False)


def _normal(xp, shape, mean, std, dtype, generator, device):
    r = _rng(generator).standard_normal(
        shape, dtype=xp.float64 if dtype is _dt.float64 else xp.float32
    )
    if mean != 0.0 or std != 1.0:
        r = r * std + mean
    return r.astype(dtype.numpy, copy=False)


def _randint(xp, shape, low, high, dtype, generator, device):
    return _rng(generator).integers(low, high, size=shape).astype(dtype.numpy, copy=False)


def _randperm(xp, n, dtype, generator, device):
    return _rng(generator).permutation(n).astype(dtype.numpy, copy=False)


def _bernoulli(xp, p, generator):
    if p.size and not bool(((p >= 0) & (p <= 1)).all()):  # nan fails too, as in torch
        from ember._util.errors import ValueOutOfRange

        raise ValueOutOfRange(
            f"bernoulli: probabilities must lie in [0, 1], got values from {float(p.min())} to "
            f"{float(p.max())}"
        )
    return (_rng(generator).random(p.shape) < p).astype(p.dtype)


UNIFORM = defop(
    "uniform",
    _uniform,
    shape=lambda shape, **a: tuple(shape),
    dtype=lambda **a: a["dtype"],
    stateful=True,
)
NORMAL = defop(
    "normal",
    _normal,
    shape=lambda shape, **a: tuple(shape),
    dtype=lambda **a: a["dtype"],
    stateful=True,
)
RANDINT = defop(
    "randint",
    _randint,
    shape=lambda shape, **a: tuple(shape),
    dtype=lambda **a: a["dtype"],
    stateful=True,
)
RANDPERM = defop(
    "randperm", _randperm, shape=lambda n, **a: (n,), dtype=lambda **a: a["dtype"], stateful=True
)
BERNOULLI = defop(
    "bernoulli",
    _bernoulli,
    shape=lambda s, **a: tuple(s),
    dtype=lambda d, **a: d,
    stateful=True,
    doc="1 with probability p (elementwise), else 0.",
)


def _gen(generator, device):
    from ember.backend.random import default_generator

    return generator if generator is not None else default_generator(device)


def uniform(shape, low=0.0, high=1.0, dtype=None, generator=None, device="cpu"):
    dtype = _dt.as_dtype(dtype) if dtype is not None else _dt.get_default_dtype()
    g = _gen(generator, device)
    return apply(
        UNIFORM,
        shape=tuple(int(s) for s in shape),
        low=float(low),
        high=float(high),
        dtype=dtype,
        generator=g,
        device=g.device,
    )


def normal(shape, mean=0.0, std=1.0, dtype=None, generator=None, device="cpu"):
    dtype = _dt.as_dtype(dtype) if dtype is not None else _dt.get_default_dtype()
    g = _gen(generator, device)
    return apply(
        NORMAL,
        shape=tuple(int(s) for s in shape),
        mean=float(mean),
        std=float(std),
        dtype=dtype,
        generator=g,
        device=g.device,
    )


def randint(low, high, shape, dtype=None, generator=None, device="cpu"):
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    g = _gen(generator, device)
    return apply(
        RANDINT,
        shape=tuple(int(s) for s in shape),
        low=int(low),
        high=int(high),
        dtype=_dt.as_dtype(dtype) if dtype is not None else _dt.int64,
        generator=g,
        device=g.device,
    )


def randperm(n, dtype=None, generator=None, device="cpu"):
    g = _gen(generator, device)
    return apply(
        RANDPERM,
        n=int(n),
        dtype=_dt.as_dtype(dtype) if dtype is not None else _dt.int64,
        generator=g,
        device=g.device,
    )


def bernoulli(p, generator=None):
    return apply(BERNOULLI, p, generator=_gen(generator, p.device))
