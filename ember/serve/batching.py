"""Dynamic batching: one worker thread per served model merges queued requests into batches.

Note [Dynamic batcher]: HTTP threads `submit` a checked request (models.Prepared) and wait on
its Future. The worker takes the oldest request, then keeps taking requests that fit with it
(same batch key, Note [Batching and padding]) until the batch holds `max_batch_size` rows or
`max_queue_delay` has passed since the oldest one arrived (Triton's `max_queue_delay_
microseconds`, TF Serving's `batch_timeout_micros`), runs the model once and splits the
results. Requests that do not fit stay queued in arrival order for the next batch. The queue
is bounded (`max_queue_size` requests): a full queue answers 503 with Retry-After at once
rather than letting latency grow without limit. `max_batch_size` 0 turns batching off: every
request runs alone, whatever its own batch size. `close()` stops new requests (503) and
finishes every queued one before the worker exits, so a graceful shutdown loses nothing it
accepted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future

from ember.serve.protocol import RequestError

__all__ = ["Batcher"]


class _Item:
    __slots__ = ("prepared", "future", "arrived")

    def __init__(self, prepared):
        self.prepared = prepared
        self.future: Future = Future()
        self.arrived = time.perf_counter()


class Batcher:
    """The queue and worker thread of one served model (Note [Dynamic batcher])."""

    def __init__(
        self,
        model,
        name: str,
        max_batch_size: int = 32,
        max_queue_delay: float = 0.002,
        max_queue_size: int = 256,
        metrics=None,
    ):
        self.model = model
        self.name = name
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay = float(max_queue_delay)
        self.max_queue_size = int(max_queue_size)
        self.metrics = metrics
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name=f"ember-serve-{name}", daemon=True)
        self._worker.start()

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
        """Refuse new requests, finish the queued ones, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)

    # --- the worker ------------------------------------------------------------------------
    def _take(self) -> list | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            if not self.batching:
                return batch
            rows = first.prepared.rows
            key = first.prepared.key
            deadline = first.arrived + self.max_queue_delay
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

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            for item in batch:
                item.future.set_running_or_notify_cancel()
            start = time.perf_counter()
            try:
                results = self.model.run_batch([item.prepared for item in batch])
            except RequestError as e:
                for item in batch:
                    item.future.set_exception(e)
                continue
            except Exception as e:  # a model failure: the server answers 500 and says why
                for item in batch:
                    item.future.set_exception(e)
                continue
            if self.metrics is not None:
                self.metrics.observe_batch(
                    self.name, sum(i.prepared.rows for i in batch), time.perf_counter() - start
                )
            for item, result in zip(batch, results):
                item.future.set_result(result)
