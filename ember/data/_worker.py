"""The DataLoader's worker side: the loop each worker process runs, its seeding, the
shared-memory transport of batches, and the wrapper that carries a worker's exception home.

Note [Worker seeding]: a DataLoader iterator draws one `base_seed` (from its `generator`, or
ember's default generator). Before fetching batch `k` of the epoch, whoever fetches it (a
worker, or the main process when `num_workers=0`) seeds ember's default generator, Python's
`random` and NumPy's legacy global generator from `(base_seed, k)`. Random transforms
therefore give the same samples run after run *and whatever `num_workers` is*. In the main
process the previous states are restored after the fetch, so the user's own random streams
are left as they were. `get_worker_info().seed` is `base_seed + worker_id`, and that is also
what a worker is seeded with before `worker_init_fn` runs (PyTorch's contract).

Note [Shared-memory batches]: a worker pickles its batch with a pickler that moves every
array of `SHARED_MIN_BYTES` or more into a file under /dev/shm (see `_SharedArena`): the
batch's stacked arrays are already there (collate allocates them in the arena), others are
copied once. The main process maps each file and unlinks it at once, so the segment lives
exactly as long as the array that views it, and nothing is left behind if either side dies
later. Files are named `<loader prefix>w<worker id>-<n>`; whatever a dead worker or an
abandoned epoch leaves is removed by prefix when the workers shut down.
A segment sent but not yet mapped belongs to nobody if the main process dies (SIGKILL,
SIGTERM): each worker, on finding its parent gone, removes every file of its own prefix before
it exits, and a new loader (or process-backed map) removes the segments whose owning process
(the pid in `ember-dl-<pid>-...` / `ember-map-<pid>-...`) no longer exists
(`remove_orphaned_segments`), in case the workers died with their parent.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import queue
import random
import sys

import numpy as np

from ember.data._arrays import is_tensor, to_tensor

__all__ = ["SHARED_MIN_BYTES", "WorkerInfo", "get_worker_info", "shared_memory_dir"]

SHARED_MIN_BYTES = 1 << 14
_POLL_SECONDS = 0.5
_NO_TASK = object()

_worker_info = None


class WorkerInfo:
    """What a worker process knows about itself (`get_worker_info()` inside a worker)."""

    __slots__ = ("dataset", "id", "num_workers", "seed")

    def __init__(self, id: int, num_workers: int, seed: int, dataset):
        self.id = id
        self.num_workers = num_workers
        self.seed = seed
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


def get_worker_info() -> WorkerInfo | None:
    """The current worker's `WorkerInfo`, or None in the main process.

    Use it in `IterableDataset.__iter__` to give each worker its own share of a stream.
    """
    return _worker_info


# --- seeding (Note [Worker seeding]) -------------------------------------------------------


def batch_seed(base_seed: int, batch_index: int) -> int:
    state = np.random.SeedSequence([base_seed & (2**63 - 1), batch_index]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & (2**63 - 1)


def seed_everything(seed: int) -> None:
    from ember.backend.random import manual_seed

    manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class SeededFetch:
    """Context for a fetch in the main process: seed for the batch, then restore."""

    __slots__ = ("_saved", "seed")

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        from ember.backend.random import default_generator

        generator = default_generator("cpu")
        self._saved = (generator.get_state(), random.getstate(), np.random.get_state())
        seed_everything(self.seed)
        return self

    def __exit__(self, *exc_info):
        from ember.backend.random import default_generator

        ember_state, python_state, numpy_state = self._saved
        default_generator("cpu").set_state(ember_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        return False


# --- the shared-memory transport (Note [Shared-memory batches]) ----------------------------


def shared_memory_dir() -> str:
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    import tempfile

    return tempfile.gettempdir()


def _map_file(path: str, nbytes: int, create: bool) -> mmap.mmap:
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    descriptor = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(descriptor, nbytes)
        return mmap.mmap(descriptor, nbytes)
    finally:
        os.close(descriptor)


def attach_shared_array(path: str, shape: tuple, dtype: str) -> np.ndarray:
    """Map a worker's segment into this process and unlink its name (it lives on in the map)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        mapped = _map_file(path, nbytes, create=False)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


class _SharedArena:
    """Allocates arrays backed by named shared-memory files and pickles arrays by name."""

    def __init__(self, directory: str, prefix: str):
        self.directory = directory
        self.prefix = prefix
        self.counter = 0
        self.unsent: dict[int, tuple[str, int]] = {}

    def _new_path(self) -> str:
        self.counter += 1
        return os.path.join(self.directory, f"{self.prefix}{self.counter}")

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < SHARED_MIN_BYTES or dtype.hasobject:
            return np.empty(shape, dtype)
        path = self._new_path()
        array = np.frombuffer(_map_file(path, nbytes, create=True), dtype=dtype).reshape(shape)
        self.unsent[array.__array_interface__["data"][0]] = (path, nbytes)
        return array

    def reduce_array(self, array: np.ndarray):
        if (
            type(array) is not np.ndarray
            or array.nbytes < SHARED_MIN_BYTES
            or array.dtype.hasobject
        ):
            return NotImplemented
        address = array.__array_interface__["data"][0]
        known = self.unsent.get(address)
        if known is not None and known[1] == array.nbytes and array.flags.c_contiguous:
            del self.unsent[address]
            path = known[0]
        else:
            path = self._new_path()
            target = np.frombuffer(_map_file(path, array.nbytes, create=True), dtype=array.dtype)
            target.reshape(array.shape)[...] = array
            del target
        return attach_shared_array, (path, array.shape, array.dtype.str)

    def dumps(self, value) -> bytes:
        buffer = io.BytesIO()
        _ArenaPickler(buffer, self).dump(value)
        return buffer.getvalue()

    def release_unsent(self) -> None:
        """Unlink segments that were allocated but never sent (a user collate copied them)."""
        for path, _ in self.unsent.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.unsent.clear()


class _ArenaPickler(pickle.Pickler):
    def __init__(self, file, arena: _SharedArena):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arena = arena

    def reducer_override(self, value):
        if type(value) is np.ndarray:
            return self.arena.reduce_array(value)
        if is_tensor(value) and not value.requires_grad:
            # Tensor.__reduce__ copies its array; send the array itself (it is usually the
            # batch that collate already wrote into the arena).
            array = np.asarray(value)
            if type(array) is np.ndarray and array.nbytes >= SHARED_MIN_BYTES:
                return to_tensor, (array,)
        return NotImplemented


def remove_orphaned_segments(directory: str) -> int:
    """Remove the segments of DataLoaders and process maps whose main process is gone
    (Note [Shared-memory batches])."""
    import re

    from ember.io.atomic import process_alive

    pattern = re.compile(r"^ember-(?:dl|map)-(\d+)-")
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or process_alive(pid):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed += 1
        except OSError:
            pass
    return removed


def remove_segments(directory: str, prefix: str) -> int:
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


# --- errors ---------------------------------------------------------------------------------


class ExceptionWrapper:
    """A worker's exception, carried to the main process with where it happened."""

    def __init__(self, exc_info, where: str, sample_index=None):
        self.exc_type = exc_info[0]
        try:  # a class that does not pickle (defined in a function) travels as RuntimeError
            pickle.loads(pickle.dumps(self.exc_type))
        except Exception:  # noqa: BLE001 - any error travels to the main process
            self.exc_type = RuntimeError
        self.where = where
        self.sample_index = sample_index
        import traceback

        self.traceback_text = "".join(traceback.format_exception(*exc_info))

    def reraise(self):
        message = f"Caught {self.exc_type.__name__} {self.where}"
        if self.sample_index is not None:
            message += f" while loading sample index {self.sample_index}"
        message += f".\nOriginal traceback:\n{self.traceback_text}"
        if self.exc_type is KeyError:
            message = _KeyErrorMessage(message)
        try:
            error = self.exc_type(message)
        except Exception:  # noqa: BLE001 - any error travels to the main process
            raise RuntimeError(message) from None
        raise error


class _KeyErrorMessage(str):
    """KeyError quotes its message with repr(); show the traceback's newlines instead."""

    def __repr__(self):
        return self


class IterableEnd:
    """A worker's signal that its copy of the IterableDataset is exhausted."""

    def __init__(self, worker_id: int):
        self.worker_id = worker_id


# --- the worker loop -------------------------------------------------------------------------


def _fetch_map_style(dataset, indices, auto_collation, collate_fn, progress):
    if not auto_collation:
        progress[0] = indices
        return collate_fn(dataset[indices])
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        progress[0] = indices[0] if len(indices) == 1 else list(indices)
        samples = getitems(indices)
    else:
        samples = []
        for index in indices:
            progress[0] = index
            samples.append(dataset[index])
    progress[0] = None
    return collate_fn(samples)


def _fetch_iterable(iterator, auto_collation, batch_size, drop_last, collate_fn):
    if not auto_collation:
        return collate_fn(next(iterator))
    samples = []
    for sample in iterator:
        samples.append(sample)
        if len(samples) == batch_size:
            break
    if not samples or (drop_last and len(samples) < batch_size):
        raise StopIteration
    return collate_fn(samples)


def worker_loop(config: dict, index_queue, result_queue, worker_id: int) -> None:
    """Entry point of a worker process. `config` holds what every worker shares."""
    global _worker_info
    from ember.data.collate import set_array_allocator

    # A worker stops on Ctrl-C through the main process's shutdown, not on its own.
    try:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        pass
    if config.get("packed"):
        from ember.data._packed import install_packed

        install_packed(config["packed"])
    dataset = config["dataset"]
    base_seed = config["base_seed"]
    seed = base_seed + worker_id
    _worker_info = WorkerInfo(worker_id, config["num_workers"], seed, dataset)
    seed_everything(seed)
    arena = _SharedArena(config["shm_dir"], f"{config['shm_prefix']}w{worker_id}-")
    set_array_allocator(arena.empty)
    init_error = None
    if config["worker_init_fn"] is not None:
        try:
            config["worker_init_fn"](worker_id)
        except Exception:  # noqa: BLE001 - any error travels to the main process
            init_error = ExceptionWrapper(
                sys.exc_info(), f"in worker_init_fn of DataLoader worker {worker_id}"
            )
    iterable = config["iterable"]
    iterator = None
    iterator_epoch = None
    collate_fn = config["collate_fn"]
    parent = config["parent_pid"]
    progress = [None]
    while True:
        try:
            task = index_queue.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            task = _NO_TASK
        if os.getppid() != parent:  # the main process is gone: nobody will ask again
            # nor map what was sent: those segments are ours to remove
            arena.release_unsent()
            remove_segments(arena.directory, arena.prefix)
            return
        if task is _NO_TASK:
            continue
        if task is None:
            break
        epoch, batch_index, indices, epoch_seed = task
        if init_error is not None:
            result_queue.put((worker_id, epoch, batch_index, init_error))
            continue
        seed_everything(batch_seed(epoch_seed, batch_index))
        try:
            if iterable:
                if iterator_epoch != epoch:
                    iterator, iterator_epoch = iter(dataset), epoch
                data = _fetch_iterable(
                    iterator,
                    config["auto_collation"],
                    config["batch_size"],
                    config["drop_last"],
                    collate_fn,
                )
            else:
                data = _fetch_map_style(
                    dataset, indices, config["auto_collation"], collate_fn, progress
                )
            payload = arena.dumps(data)
            del data
        except StopIteration:
            payload = IterableEnd(worker_id)
        except Exception:  # noqa: BLE001 - any error travels to the main process
            payload = ExceptionWrapper(
                sys.exc_info(), f"in DataLoader worker process {worker_id}", progress[0]
            )
            progress[0] = None
        arena.release_unsent()
        result_queue.put((worker_id, epoch, batch_index, payload))
        del payload
    arena.release_unsent()
