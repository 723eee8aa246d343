"""DataLoader: a sampler chooses indices, a dataset fetches samples, collate makes batches,
and worker processes (see `_worker.py`) do the fetching in parallel.

Note [Worker protocol]: the main process owns the sampler. It sends tasks
`(epoch, batch_index, indices, base_seed)` round-robin to per-worker index queues, keeping
`prefetch_factor` tasks per worker in flight, and reads `(worker_id, epoch, batch_index,
payload)` from one result queue, reordering by `batch_index` so batches come out in sampler
order. A payload is a pickled batch whose arrays live in shared memory (Note
[Shared-memory batches]), an `ExceptionWrapper`, or `IterableEnd`. While waiting, the main
process polls every `_POLL_SECONDS`: a dead worker raises at once with its exit code, and
no batch within `timeout` seconds raises a timeout error. Results from an earlier epoch (a
persistent worker's leftovers after a `break`) are dropped by their epoch number.
"""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import queue
import time
import weakref
from collections.abc import Callable

from ember.data import _worker
from ember.data.collate import default_collate, default_convert
from ember.data.dataset import IterableDataset
from ember.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    _generator_rng,
)

__all__ = ["DataLoader", "get_worker_info"]

get_worker_info = _worker.get_worker_info
_POLL_SECONDS = 0.1
_loader_counter = itertools.count()


class _InfiniteConstantSampler(Sampler):
    """Stands in for a sampler for IterableDatasets: yields None forever."""

    def __iter__(self):
        while True:
            yield None


class DataLoader:
    """Iterate over a dataset in batches, optionally with worker processes.

    Example:
        >>> import numpy as np
        >>> from ember.data import TensorDataset
        >>> loader = DataLoader(TensorDataset(np.arange(10.0)), batch_size=4)
        >>> [tuple(x.shape) for (x,) in loader]
        [(4,), (4,), (2,)]

    Args:
        dataset: a map-style `Dataset` (with `__getitem__`/`__len__`) or an `IterableDataset`.
        batch_size: samples per batch; None turns automatic batching off.
        shuffle: a `RandomSampler` over the dataset (reshuffled every epoch).
        sampler / batch_sampler: custom index orders (mutually exclusive with shuffle etc.).
        num_workers: worker processes; 0 loads in the main process.
        collate_fn: merges a list of samples (default `default_collate`).
        pin_memory: accepted for compatibility; a no-op on the CPU.
        drop_last: drop the last incomplete batch.
        timeout: seconds to wait for a batch from the workers before raising (0: forever,
            but a dead worker is still reported at once).
        worker_init_fn: called in each worker with its id, after seeding.
        multiprocessing_context: 'fork' (default where available), 'spawn', 'forkserver'.
        generator: an `ember.Generator` for the sampler and the worker base seed.
        prefetch_factor: batches in flight per worker (default 2).
        persistent_workers: keep the workers between epochs.
        pack_dataset: with forked workers, give them read-only columns in place of the
            dataset's large lists and tuples, so reading them does not copy the parent's
            memory into every worker (Note [Copy-on-read] in `_packed.py`): True packs them
            into shared NumPy buffers; "borrow" reads the shared str/bytes/number/tuple
            objects in place on CPython (Note [Borrowed reads]: no packing pass, but it reads
            interpreter memory directly); False gives workers the lists themselves.
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler=None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable | None = None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        pack_dataset: bool | str = True,
    ):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(
                "DataLoader: num_workers option should be a non-negative integer; "
                "use num_workers=0 to disable multiprocessing"
            )
        if timeout < 0:
            raise ValueError("DataLoader: timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "DataLoader: prefetch_factor option could only be specified in "
                "multiprocessing; let num_workers > 0 to enable multiprocessing, "
                "otherwise set prefetch_factor to None"
            )
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ValueError("DataLoader: prefetch_factor option should be a positive integer")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = persistent_workers
        self.generator = generator
        if pack_dataset not in (True, False, "borrow"):
            raise ValueError(
                f"DataLoader: pack_dataset must be True, False or 'borrow', got {pack_dataset!r}"
            )
        self.pack_dataset = pack_dataset

        self._is_iterable = isinstance(dataset, IterableDataset)
        if self._is_iterable:
            if shuffle not in (False, None):
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"shuffle option, but got shuffle={shuffle}"
                )
            if sampler is not None:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"sampler option, but got sampler={sampler}"
                )
            if batch_sampler is not None:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"batch_sampler option, but got batch_sampler={batch_sampler}"
                )
        else:
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "DataLoader: batch_sampler option is mutually exclusive with "
                    "batch_size, shuffle, sampler, and drop_last"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError(
                "DataLoader: batch_size=None option disables auto-batching and is "
                "mutually exclusive with drop_last"
            )

        if sampler is None:
            if self._is_iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._iterator = None

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __len__(self) -> int:
        if self._is_iterable:
            length = len(self.dataset)  # TypeError when the stream has no length, as in PyTorch
            if self.batch_size is not None:
                if self.drop_last:
                    return length // self.batch_size
                return -(-length // self.batch_size)  # noqa: PLE0303
            return length
        return len(self._index_sampler)

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIterator(self)
        if self.persistent_workers:
            if self._iterator is None:
                self._iterator = _MultiProcessIterator(self)
            else:
                self._iterator._reset()
            return self._iterator
        return _MultiProcessIterator(self)

    def as_pipeline(self):
        """This loader's batches as an `ember.data.Pipeline` (re-iterated each epoch)."""
        from ember.data.pipeline import Pipeline

        return Pipeline.from_iterable(self)


class _BaseIterator:
    def __init__(self, loader: DataLoader):
        self._loader = loader
        self._dataset = loader.dataset
        self._auto_collation = loader._auto_collation
        self._collate_fn = loader.collate_fn
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._is_iterable = loader._is_iterable
        self._start_epoch()

    def _start_epoch(self):
        # The base seed is drawn before the sampler draws its own (Note [Worker seeding]), so
        # the same generator gives the same seeds and order with any num_workers.
        self._base_seed = int(_generator_rng(self._loader.generator).integers(0, 2**62))
        self._sampler_iter = iter(self._index_sampler)
        self._batches_yielded = 0

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._loader)

    def _next_index(self):
        return next(self._sampler_iter)


class _SingleProcessIterator(_BaseIterator):
    def __init__(self, loader):
        super().__init__(loader)
        self._dataset_iter = iter(self._dataset) if self._is_iterable else None

    def __next__(self):
        indices = self._next_index()
        seed = _worker.batch_seed(self._base_seed, self._batches_yielded)
        with _worker.SeededFetch(seed):
            if self._is_iterable:
                data = _worker._fetch_iterable(
                    self._dataset_iter,
                    self._auto_collation,
                    self._loader.batch_size,
                    self._drop_last,
                    self._collate_fn,
                )
            else:
                data = self._fetch(indices)
        self._batches_yielded += 1
        return data

    def _fetch(self, indices):
        try:
            return _worker._fetch_map_style(
                self._dataset, indices, self._auto_collation, self._collate_fn, progress := [None]
            )
        except Exception as error:
            if progress[0] is not None and hasattr(error, "add_note"):
                error.add_note(f"(while the DataLoader loaded sample index {progress[0]})")
            raise


class _WorkerPool:
    """The worker processes and their queues; `shutdown` is safe to call any number of times
    and is also registered as a finalizer, so an abandoned iterator leaves nothing behind."""

    def __init__(self, loader: DataLoader, base_seed: int):
        import multiprocessing  # only when workers are asked for: `import ember` stays light

        context = loader.multiprocessing_context
        if context is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        elif isinstance(context, str):
            context = multiprocessing.get_context(context)
        self.shm_dir = _worker.shared_memory_dir()
        _worker.remove_orphaned_segments(self.shm_dir)  # of loaders whose process died
        self.shm_prefix = f"ember-dl-{os.getpid()}-{next(_loader_counter)}-"
        config = {
            "dataset": loader.dataset,
            "num_workers": loader.num_workers,
            "base_seed": base_seed,
            "worker_init_fn": loader.worker_init_fn,
            "iterable": loader._is_iterable,
            "auto_collation": loader._auto_collation,
            "batch_size": loader.batch_size,
            "drop_last": loader.drop_last,
            "collate_fn": loader.collate_fn,
            "shm_dir": self.shm_dir,
            "shm_prefix": self.shm_prefix,
            "parent_pid": os.getpid(),
        }
        self.result_queue = context.Queue()
        self.index_queues = []
        self.workers = []
        self.closed = False
        forked = context.get_start_method() == "fork"
        if forked and loader.pack_dataset:
            from ember.data._packed import pack_dataset

            config["packed"] = pack_dataset(loader.dataset, borrow=loader.pack_dataset == "borrow")
        try:
            if forked:  # Note [Copy-on-read]: children never collect what exists now
                gc.freeze()
            for worker_id in range(loader.num_workers):
                index_queue = context.Queue()
                index_queue.cancel_join_thread()
                process = context.Process(
                    target=_worker.worker_loop,
                    daemon=True,
                    args=(config, index_queue, self.result_queue, worker_id),
                    name=f"ember-dataloader-worker-{worker_id}",
                )
                process.start()
                self.index_queues.append(index_queue)
                self.workers.append(process)
        except BaseException:
            self.shutdown()
            raise
        finally:
            if forked:
                gc.unfreeze()
            # The workers hold the columns now; the parent lets go of its references.
            config.pop("packed", None)

    def check_alive(self):
        for worker_id, process in enumerate(self.workers):
            if process.exitcode is not None:
                code = process.exitcode
                reason = f"exit code {code}"
                if code < 0:
                    import signal

                    try:
                        reason = f"signal {signal.Signals(-code).name}"
                    except ValueError:
                        reason = f"signal {-code}"
                raise RuntimeError(
                    f"DataLoader worker {worker_id} (pid {process.pid}) exited "
                    f"unexpectedly with {reason}"
                )

    def shutdown(self):
        if self.closed:
            return
        self.closed = True
        for index_queue in self.index_queues:
            try:
                index_queue.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for process in self.workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():  # pragma: no cover - ignores SIGTERM
                process.kill()
                process.join(timeout=1.0)
        # Drop undelivered batches: unpickling maps and unlinks their segments.
        while True:
            try:
                item = self.result_queue.get(timeout=0.05)
            except (queue.Empty, OSError, ValueError, EOFError):
                break
            _discard(item)
        _worker.remove_segments(self.shm_dir, self.shm_prefix)
        for q in self.index_queues + [self.result_queue]:
            q.cancel_join_thread()
            q.close()
        for process in self.workers:
            try:
                process.close()
            except ValueError:  # pragma: no cover
                pass


def _discard(item):
    payload = item[3]
    if isinstance(payload, bytes):
        try:
            pickle.loads(payload)
        except Exception:  # noqa: BLE001, S110 - a broken leftover is dropped either way
            pass


class _MultiProcessIterator(_BaseIterator):
    def __init__(self, loader: DataLoader):
        self._epoch = 0
        super().__init__(loader)
        self._num_workers = loader.num_workers
        self._timeout = loader.timeout
        self._pool = _WorkerPool(loader, self._base_seed)
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._prime()

    def _prime(self):
        self._send_idx = 0
        self._rcvd_idx = 0
        self._task_info: dict[int, list] = {}
        self._worker_active = [True] * self._num_workers
        self._next_worker = itertools.cycle(range(self._num_workers))
        self._outstanding = 0
        for _ in range(self._loader.prefetch_factor * self._num_workers):
            self._try_put_index()

    def _reset(self):
        self._epoch += 1
        self._start_epoch()
        self._prime()

    def _try_put_index(self):
        if not any(self._worker_active):
            return
        try:
            indices = self._next_index()
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._next_worker)
            if self._worker_active[worker_id]:
                break
        self._pool.index_queues[worker_id].put(
            (self._epoch, self._send_idx, indices, self._base_seed)
        )
        self._task_info[self._send_idx] = [worker_id]
        self._send_idx += 1
        self._outstanding += 1

    def _get_result(self):
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = _POLL_SECONDS
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                return self._pool.result_queue.get(timeout=wait)
            except queue.Empty:
                pass
            try:
                self._pool.check_alive()
                if deadline is not None and time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"DataLoader timed out after {self._timeout} seconds "
                        f"waiting for a batch from its {self._num_workers} "
                        f"workers"
                    )
            except RuntimeError:
                self._shutdown()
                raise

    def __next__(self):
        if self._pool.closed:
            raise StopIteration
        while True:
            while self._rcvd_idx < self._send_idx:
                info = self._task_info[self._rcvd_idx]
                if len(info) == 2 or self._worker_active[info[0]]:
                    break
                del self._task_info[self._rcvd_idx]  # its worker ended: no data will come
                self._rcvd_idx += 1
            else:
                if not self._loader.persistent_workers:
                    self._shutdown()
                raise StopIteration
            info = self._task_info[self._rcvd_idx]
            if len(info) == 2:
                del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
                return self._process(info[1])
            worker_id, epoch, batch_index, payload = self._get_result()
            if epoch != self._epoch:
                _discard((worker_id, epoch, batch_index, payload))
                continue
            self._outstanding -= 1
            if isinstance(payload, _worker.IterableEnd):
                # Results of one worker arrive in order, so its earlier tasks are all in; its
                # later tasks are dropped by the loop above.
                self._worker_active[payload.worker_id] = False
                continue
            if batch_index != self._rcvd_idx:
                self._task_info[batch_index].append(payload)
                continue
            del self._task_info[batch_index]
            self._rcvd_idx += 1
            return self._process(payload)

    def _process(self, payload):
        self._try_put_index()
        if isinstance(payload, _worker.ExceptionWrapper):
            self._shutdown()
            payload.reraise()
        self._batches_yielded += 1
        return pickle.loads(payload)

    def _shutdown(self):
        self._finalizer()

    def __del__(self):
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
