"""The on-disk kernel cache is checked before use (issue 19, item 12; Note [Kernel cache
checks]): a corrupt entry is rebuilt, a planted one never runs, a shared folder is not used."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("numba", reason="the kernel cache belongs to the compiled kernels (`fast`)")

from ember.backend import numba_kernels  # noqa: E402

SOURCE = "def twice(x):\n    return x * 2.0\n"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    if not numba_kernels.available():
        pytest.skip("compiled kernels are switched off (EMBER_FAST_KERNELS=0)")
    yield tmp_path / "numba"
    _forget()


def _forget():
    """Drop SOURCE's kernel from this process's caches (only its own module: other kernels'
    dispatchers still need theirs)."""
    for key in [k for k in numba_kernels._cache if k[0] == SOURCE]:
        del numba_kernels._cache[key]
    for name, module in list(sys.modules.items()):
        if name.startswith("ember_numba_k3_") and getattr(module, "twice", None) is not None:
            del sys.modules[name]


def _fresh_kernel():
    """Compile SOURCE as a new process would (no in-memory caches)."""
    _forget()
    return numba_kernels.jit_source(SOURCE, "twice")


def _entry(folder):
    (name,) = [n for n in os.listdir(folder) if n.startswith("k3_") and n.endswith(".py")]
    return folder / name


def test_a_corrupt_entry_is_rebuilt(cache_dir):
    assert _fresh_kernel()(np.float64(2.0)) == 4.0
    entry = _entry(cache_dir)
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])  # truncated: a SyntaxError if executed
    assert _fresh_kernel()(np.float64(3.0)) == 6.0
    assert entry.read_bytes() == good


def test_a_planted_entry_never_runs(cache_dir, tmp_path):
    _fresh_kernel()
    entry = _entry(cache_dir)
    marker = tmp_path / "ran"
    entry.write_text(f"open({str(marker)!r}, 'w').close()\ndef twice(x):\n    return x * 3.0\n")
    assert _fresh_kernel()(np.float64(2.0)) == 4.0
    assert not marker.exists()


def test_damaged_machine_code_is_dropped_and_recompiled(cache_dir):
    assert _fresh_kernel()(np.float64(2.0)) == 4.0
    cached = [p for p in (cache_dir / "__pycache__").iterdir() if p.suffix == ".nbc"]
    assert cached
    for path in cached:
        path.write_bytes(b"not numba's data")
    assert _fresh_kernel()(np.float64(5.0)) == 10.0  # recompiled, not an error
    assert _fresh_kernel()(np.float64(1.5)) == 3.0  # and saved again in working order


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_folder_others_can_write_is_not_used(cache_dir):
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o777)
    assert _fresh_kernel()(np.float64(2.0)) == 4.0  # compiled in memory instead
    assert not [n for n in os.listdir(cache_dir) if n.startswith("k3_")]


def test_threads_loading_one_new_kernel_both_get_it(cache_dir):
    # the module is registered before its source runs; a second thread must wait for it, not
    # find it half-defined (a data pipeline's workers resizing their first images did)
    import threading

    slow = "import time\ntime.sleep(0.3)\n\n\ndef slow_twice(x):\n    return x * 2.0\n"
    results, errors = [], []

    def load():
        try:
            results.append(numba_kernels.jit_source(slow, "slow_twice")(np.float64(2.0)))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and results == [4.0, 4.0]
