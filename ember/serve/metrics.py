"""Server metrics in the Prometheus text exposition format (version 0.0.4): request counts by
model, protocol and status code, request latency and batch-size histograms, model compute
time, and the queue depth of each model at scrape time. Thread-safe; no dependency.
"""

from __future__ import annotations

import threading

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return "{" + inner + "}" if inner else ""


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: dict) -> list:
        out = []
        for bound, n in zip(self.buckets, self.counts):
            out.append(f"{name}_bucket{_labels({**labels, 'le': repr(float(bound))})} {n}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {self.sum!r}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """Counters and histograms, rendered by `render()` for GET /metrics."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict = {}  # (model, protocol, code) -> count
        self.latency: dict = {}  # model -> _Histogram
        self.batch_size: dict = {}
        self.compute: dict = {}
        self.queue_depth = lambda: {}  # set by the server: model -> depth

    def observe_request(self, model: str, protocol: str, code: int, seconds: float) -> None:
        with self._lock:
            key = (model, protocol, code)
            self.requests[key] = self.requests.get(key, 0) + 1
            if model:
                self.latency.setdefault(model, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, model: str, rows: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.setdefault(model, _Histogram(BATCH_BUCKETS)).observe(rows)
            self.compute.setdefault(model, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP ember_requests_total Requests answered, by model, protocol and status.",
                "# TYPE ember_requests_total counter",
            ]
            for (model, protocol, code), n in sorted(self.requests.items(), key=str):
                labels = {"model": model, "protocol": protocol, "code": code}
                out.append(f"ember_requests_total{_labels(labels)} {n}")
            for name, table, help_ in (
                ("ember_request_duration_seconds", self.latency, "Request latency in seconds."),
                ("ember_batch_size", self.batch_size, "Rows per model execution."),
                ("ember_compute_seconds", self.compute, "Model execution time per batch."),
            ):
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} histogram")
                for model, hist in sorted(table.items()):
                    out.extend(hist.lines(name, {"model": model}))
        out.append("# HELP ember_queue_depth Requests waiting for a model's worker.")
        out.append("# TYPE ember_queue_depth gauge")
        for model, depth in sorted(self.queue_depth().items()):
            out.append(f"ember_queue_depth{_labels({'model': model})} {depth}")
        return "\n".join(out) + "\n"
