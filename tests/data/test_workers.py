"""Worker failure modes: errors, deaths and hangs end in clear errors; nothing is left behind."""

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from ember import data

# Shared-memory files this test process made (`ember-dl-<pid>-...`, `ember-map-<pid>-...`):
# other test runs on the machine make theirs at the same time.
_OURS = (f"ember-dl-{os.getpid()}-", f"ember-map-{os.getpid()}-")


class Failing(data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        if index == 7:
            raise ValueError(f"bad sample {index}")
        return np.zeros(2)


class Dying(data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        if index == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return index


class Hanging(data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        if index == 3:
            time.sleep(60)
        return index


def _children():
    return [p for p in multiprocessing.active_children() if p.name.startswith("ember-")]


def _shm(prefixes=_OURS):
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_worker_error_reraised_with_worker_and_sample_index(num_workers):
    loader = data.DataLoader(Failing(), batch_size=2, num_workers=num_workers)
    with pytest.raises(ValueError) as info:
        list(loader)
    text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "bad sample 7" in text
    assert "sample index 7" in text
    if num_workers:
        assert "worker process 1" in text  # batch 3 (indices 6, 7) went to worker 1
        assert "Original traceback" in text and "__getitem__" in text
    assert not _children()


@pytest.mark.slow
def test_dead_worker_is_reported_not_hung():
    before = _shm()
    loader = data.DataLoader(Dying(), batch_size=1, num_workers=2)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited unexpectedly with signal SIGKILL"):
        list(loader)
    assert time.monotonic() - start < 30
    assert not _children()
    assert _shm() == before


@pytest.mark.slow
def test_hanging_worker_times_out():
    loader = data.DataLoader(Hanging(), batch_size=1, num_workers=2, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out after 1.0 seconds"):
        list(loader)
    assert time.monotonic() - start < 30
    assert not _children()


def test_abandoned_iterator_cleans_up():
    before = _shm()

    class Big(data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, index):
            return np.ones((32, 32, 4), np.float32)

    iterator = iter(data.DataLoader(Big(), batch_size=4, num_workers=2))
    next(iterator)
    time.sleep(0.3)  # let workers fill the prefetch queue with segments
    del iterator
    import gc

    gc.collect()
    assert not _children()
    assert _shm() == before


def test_unpicklable_exception_class_still_reported():
    class Weird(Exception):
        pass

    class Raising(data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise Weird("custom")

    with pytest.raises(RuntimeError, match="custom"):
        list(data.DataLoader(Raising(), num_workers=1))


_KILLED_MAIN = """
import sys, time
import numpy as np
from ember import data

class Big(data.Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, index):
        return np.full(8192, index, np.float32)  # 32 KB: travels through /dev/shm

loader = data.DataLoader(Big(), batch_size=2, num_workers=2, prefetch_factor=4)
iterator = iter(loader)
next(iterator)
time.sleep(1.0)  # the workers fill their prefetch: segments sent, not yet mapped
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_main_process_leaves_no_shared_memory(how):
    """Item 7 of issue 19: the workers remove what they sent once their parent is gone."""
    import subprocess
    import sys

    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    main = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MAIN], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert main.stdout.readline().strip() == "ready"
        prefix = f"ember-dl-{main.pid}-"
        assert _shm(prefix)  # there was something to leak
        main.send_signal(how)
        main.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _shm(prefix):
            time.sleep(0.1)
        assert not _shm(prefix)
    finally:
        if main.poll() is None:
            main.kill()


def test_a_new_loader_removes_segments_of_dead_processes():
    from ember.data._worker import remove_orphaned_segments

    dead = 2**22 + 99  # above the default pid_max: no such process
    path = f"/dev/shm/ember-dl-{dead}-0-w0-1"
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    with open(path, "wb") as f:
        f.write(b"x")
    mine = f"/dev/shm/ember-dl-{os.getpid()}-999-w0-1"
    with open(mine, "wb") as f:
        f.write(b"x")
    try:
        assert remove_orphaned_segments("/dev/shm") >= 1
        assert not os.path.exists(path) and os.path.exists(mine)
    finally:
        for p in (path, mine):
            if os.path.exists(p):
                os.unlink(p)
