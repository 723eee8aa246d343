"""Where large results are placed: Notes [Freed memory] and [Store aliasing] in
ember/backend/memory.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ember.backend import memory
from ember.backend import parallel

from tests.core.test_threads import _python

_PAGE = 4096


def _at(block, offset, shape, dtype):
    """An array of `shape` starting `offset` bytes past a page boundary inside `block`."""
    start = (-block.__array_interface__["data"][0]) % _PAGE + offset
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return block[start : start + nbytes].view(dtype).reshape(shape)


def _trail(out, x):
    return (out.__array_interface__["data"][0] - x.__array_interface__["data"][0]) % _PAGE


@pytest.mark.parametrize(
    "shape, dtype, offsets",
    [
        ((256, 384), np.float32, [0]),  # 384 KiB, one input
        ((64, 1536), np.float64, [16, 48]),  # two inputs (gradient and input)
        ((3, 128, 128), np.float32, [0, 16, 32]),  # three inputs (x, residual, gradient)
    ],
)
def test_empty_apart_never_trails_an_input(shape, dtype, offsets):
    """Wherever the inputs sit in their pages, the result starts 0 or at least 1 KiB past each
    of them modulo 4 KiB, C-ordered, writable, of the asked shape and dtype."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    blocks = [np.zeros(nbytes + 2 * _PAGE, np.uint8) for _ in offsets]
    for shift in range(0, _PAGE, 16):
        inputs = [_at(b, (o + shift) % _PAGE, shape, dtype) for b, o in zip(blocks, offsets)]
        out = memory.empty_apart(shape, dtype, *inputs, 2.0, None)
        assert out.shape == shape and out.dtype == dtype and out.flags.c_contiguous
        assert out.flags.writeable
        for x in inputs:
            assert not 0 < _trail(out, x) < 1024, (shift, _trail(out, x))
        out[...] = 1
        assert all((x == 0).all() for x in inputs)  # no overlap with an input


def test_empty_apart_small_results_are_plain():
    x = np.ones((8, 8), np.float32)
    out = memory.empty_apart((8, 8), np.float32, x)
    assert out.base is None and out.shape == (8, 8)


def test_parallel_results_placed_apart_equal_serial():
    """The chunked ops allocate through empty_apart; results equal NumPy's serial ones."""
    x = _at(np.zeros(1 << 22, np.uint8), 0, (1024, 512), np.float32)
    x[...] = np.random.default_rng(0).standard_normal(x.shape, dtype=np.float32)
    saved = parallel._threads
    parallel.set_threads(2)
    try:
        got = parallel.ufunc(np.exp)(x)
    finally:
        parallel.set_threads(saved)
    assert not 0 < _trail(got, x) < 1024
    np.testing.assert_array_equal(got, np.exp(x))


@pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)
@pytest.mark.parametrize("value, expected", [(None, "True"), ("0", "False"), ("64", "True")])
def test_import_keeps_freed_memory(value, expected):
    """Note [Freed memory]: `import ember` sets glibc's mmap and trim thresholds, unless
    EMBER_MALLOC_KEEP_MB=0."""
    env_add = {"EMBER_MALLOC_KEEP_MB": value} if value is not None else None
    code = "import ember\nfrom ember.backend import memory\nprint(memory._tuned)"
    assert _python(code, env_drop=("EMBER_MALLOC_KEEP_MB",), env_add=env_add) == expected


def test_malloc_keep_setting_error_names_the_variable(monkeypatch):
    monkeypatch.setattr(memory, "_tuned", None)
    monkeypatch.setenv("EMBER_MALLOC_KEEP_MB", "lots")
    with pytest.raises(ValueError, match="EMBER_MALLOC_KEEP_MB.*'lots'"):
        memory.keep_freed_memory()
