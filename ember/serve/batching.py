"""Dynamic batching: the worker threads of a served model (its instances) merge queued
requests into batches.

Note [Dynamic batcher]: HTTP threads `submit` a checked request (models.Prepared) and wait on
its Future. The worker takes the oldest request, then keeps taking requests that fit with it
(same batch key, Note [Batching and padding]) until the batch holds `max_batch_size` rows or
`max_queue_delay` has passed since the oldest one arrived (Triton's `max_queue_delay_
microseconds`, TF Serving's `batch_timeout_micros`), runs the model once and splits the
results. When another instance is running a batch, the delay counts from when this worker
became free, if that is later (Note [Batching under load]). Requests that do not fit stay
queued in arrival order for the next batch. The queue is bounded (`max_queue_size`
requests): a full queue answers 503 with Retry-After at once rather than letting latency grow
without limit. `max_batch_size` 0 turns batching off: every
request runs alone, whatever its own batch size. `close()` stops new requests (503) and
finishes every queued one before the worker exits, so a graceful shutdown loses nothing it
accepted.

Note [Model instances]: as Triton's `instance_group { count: N }`, a served model runs on
`instances` worker threads that share one queue, each with its own replica of the model
(`model.replica()`: the same weights, its own compiled executors, which are not re-entrant) and
`threads_per_instance` kernel threads. A free worker takes the next batch
(Note [Batching under load]), so with two instances one batch runs while the next one forms, and
two batches run at once on two cores: the kernels (BLAS, numba, NumPy) release the GIL, and the
Python between them is a small part of a forward. Each worker gives itself its numba kernel
threads (`numba_kernels.set_thread_count`, Note [Per-thread numba count] in
ember/backend/numba_kernels.py: numba's count is per thread) and its count for ember's thread
pool (`parallel.set_thread_count`, Note [Per-thread pool count] in ember/backend/parallel.py),
which ember's budget then leaves alone; the thread that builds the Batcher keeps its own
count; without `threads_per_instance` the workers follow ember's budget like any thread. A
model without `replica()` is shared by the workers, so it runs on one instance unless the
caller asks for more (its `run_batch` must then be thread-safe). A request's result does not
depend on the instance that runs it: replicas run the same program on the same weights.

Note [Batching under load]: with every client waiting on its answer (16 keep-alive clients, two
instances), the oldest queued request has always waited longer than `max_queue_delay` by the
time an instance frees up, so a worker counting the delay from its arrival took whatever was
queued at once: often the first one or two requests of the batch that had just been answered,
whose clients were still sending the rest. Batches fragmented (MiniLM embeddings, 2 x 1
thread: 75 of 425 batches held one text, mean 4.7), and a one-text forward costs most of what
an eight-text one does (18 ms against 37 ms at 1 thread). So a worker that frees up while
another instance is busy waits up to `max_queue_delay` from that moment for more requests to
join (the cores are not idle meanwhile: the other batch and the connection threads preparing
the next requests use them); with no other instance busy (light load, one instance) the delay
counts from the oldest arrival as before, so a lone request waits no longer than it did. With a
5 ms delay the same load ran in 276 batches (2 of one text, mean 7.2).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future

from ember.serve.protocol import RequestError

__all__ = ["Batcher", "default_instances", "usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_instances(threads_per_instance: int = 1) -> int:
    """One instance per `threads_per_instance` usable cores, at most 8 (Note [Model
    instances]): small models serve the most requests per second with one kernel thread per
    batch and one batch per core, as TorchServe's default workers do."""
    return max(1, min(8, usable_cores() // max(1, int(threads_per_instance))))


class _Item:
    __slots__ = ("prepared", "future", "arrived")

    def __init__(self, prepared):
        self.prepared = prepared
        self.future: Future = Future()
        self.arrived = time.perf_counter()


class Batcher:
    """The queue and worker threads of one served model (Notes [Dynamic batcher] and [Model
    instances]).

    Args:
        model: the served model (ember.serve.models.ServedModel's interface).
        name: its name in thread names and metrics.
        max_batch_size: rows per batch (0: every request runs alone).
        max_queue_delay: seconds the oldest request waits for others to join its batch.
        max_queue_size: queued requests before 503.
        metrics: an ember.serve.metrics.Metrics, or None.
        instances: worker threads, each with its own replica of the model (None:
            `default_instances` for models with `replica()`, else 1).
        threads_per_instance: numba kernel threads of each worker, its own whatever ember's
            budget (None: the workers follow the budget, ember.set_num_threads, as BLAS's
            per-process count does).
    """

    def __init__(
        self,
        model,
        name: str,
        max_batch_size: int = 32,
        max_queue_delay: float = 0.002,
        max_queue_size: int = 256,
        metrics=None,
        instances: int | None = 1,
        threads_per_instance: int | None = None,
    ):
        if instances is None:
            instances = default_instances(threads_per_instance or 1)
            if not hasattr(model, "replica"):
                instances = 1
        instances = int(instances)
        if instances < 1:
            raise ValueError(f"serve: instances must be at least 1, got {instances}")
        if threads_per_instance is not None and int(threads_per_instance) < 1:
            raise ValueError(
                f"serve: threads_per_instance must be at least 1, got {threads_per_instance}"
            )
        self.name = name
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay = float(max_queue_delay)
        self.max_queue_size = int(max_queue_size)
        self.metrics = metrics
        self.threads_per_instance = threads_per_instance
        replica = getattr(model, "replica", None)
        self.models = [model] + [
            replica() if replica is not None else model for _ in range(instances - 1)
        ]
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0  # instances running a batch (Note [Batching under load])
        self._workers = [
            threading.Thread(
                target=self._loop,
                args=(i,),
                name=f"ember-serve-{name}" + (f"-{i}" if instances > 1 else ""),
                daemon=True,
            )
            for i in range(instances)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def instances(self) -> int:
        return len(self.models)

    @property
    def model(self):
        """The model of the first instance."""
        return self.models[0]

    @model.setter
    def model(self, model) -> None:  # every instance runs the new model from its next batch
        self.models[:] = [model] * len(self.models)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0 and getattr(self.model, "batch_dim", True)

    def depth(self) -> int:
        return len(self._queue)

    def submit(self, prepared) -> Future:
        if self.batching and prepared.rows > self.max_batch_size:
            raise RequestError(
                f"the request has {prepared.rows} rows; this model's max_batch_size is "
                f"{self.max_batch_size}"
            )
        item = _Item(prepared)
        with self._cond:
            if self._closed:
                raise RequestError(
                    "the server is shutting down", status=503, headers={"Retry-After": "1"}
                )
            if len(self._queue) >= self.max_queue_size:
                raise RequestError(
                    f"model {self.name}: the queue is full ({self.max_queue_size} requests "
                    "waiting); retry later",
                    status=503,
                    headers={"Retry-After": "1"},
                )
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # --- the worker ------------------------------------------------------------------------
    def _take(self) -> list | None:
        free = time.perf_counter()
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            self._running += 1
            if not self.batching:
                return batch
            rows = first.prepared.rows
            key = first.prepared.key
            start = first.arrived
            if self._running > 1:  # another instance is busy (Note [Batching under load])
                start = max(start, free)
            deadline = start + self.max_queue_delay
            while rows < self.max_batch_size:
                taken = False
                for item in list(self._queue):
                    if (
                        item.prepared.key == key
                        and rows + item.prepared.rows <= self.max_batch_size
                    ):
                        self._queue.remove(item)
                        batch.append(item)
                        rows += item.prepared.rows
                        taken = True
                        if rows >= self.max_batch_size:
                            break
                if rows >= self.max_batch_size or self._closed:
                    break
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                if not taken:
                    self._cond.wait(left)
            return batch

    def _loop(self, index: int) -> None:
        if self.threads_per_instance is not None:  # this worker's own (Note [Model instances])
            from ember.backend import numba_kernels, parallel

            # the chunked NumPy ops and split products too (Note [Per-thread pool count])
            parallel.set_thread_count(self.threads_per_instance)
            try:
                numba_kernels.set_thread_count(self.threads_per_instance)
            except Exception:  # noqa: BLE001 - no numba threading layer: kernels run serially
                pass
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run(index, batch)
            finally:
                with self._cond:
                    self._running -= 1

    def _run(self, index: int, batch: list) -> None:
        for item in batch:
            item.future.set_running_or_notify_cancel()
        start = time.perf_counter()
        try:
            results = self.models[index].run_batch([item.prepared for item in batch])
        except RequestError as e:
            for item in batch:
                item.future.set_exception(e)
            return
        except Exception as e:  # a model failure: the server answers 500 and says why
            for item in batch:
                item.future.set_exception(e)
            return
        if self.metrics is not None:
            self.metrics.observe_batch(
                self.name, sum(i.prepared.rows for i in batch), time.perf_counter() - start
            )
        for item, result in zip(batch, results):
            item.future.set_result(result)
