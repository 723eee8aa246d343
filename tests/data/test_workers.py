"""Worker failure modes: errors, deaths and hangs end in clear errors; nothing is left behind."""

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from ember import data


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


def _shm():
    return {n for n in os.listdir("/dev/shm") if n.startswith("ember-")}


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
