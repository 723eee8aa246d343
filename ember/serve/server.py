"""`ember.serve.Server`: the HTTP front of the model server (KServe V2 and TF Serving REST).

Note [Serving stack]: the stdlib `ThreadingHTTPServer` (one thread per connection, HTTP/1.1
keep-alive), with Nagle's algorithm off and each response's status line, headers and body
written in one send, so that a small response never waits for the client's delayed ACK.
Connection threads only parse, check and encode; model work runs on each model's worker
thread (Note [Dynamic batcher]), where NumPy's BLAS calls release the GIL.

Note [Graceful shutdown]: `stop()` (SIGTERM and SIGINT under `serve_forever`) stops accepting
connections, closes keep-alive connections that are idle between requests, lets every request
whose bytes have started to arrive finish and answers it with `Connection: close`, drains the
model queues, and returns within the grace period. `accepted` and `answered` count requests
read and responses written; after a graceful stop they are equal.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np

from ember.serve import protocol as P
from ember.serve.batching import Batcher, usable_cores
from ember.serve.metrics import Metrics
from ember.serve.models import TextModel, load_model
from ember.serve.protocol import RequestError
from ember.serve.repository import NAME_PATTERN, ModelRepository

__all__ = ["Server"]

SERVER_NAME = "ember"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_V2_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
_V1_MODEL = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/([^/:]+)|/labels/([^/:]+))?(/metadata|:predict|:classify|:regress)?$"
)


class _Served:
    """One loaded (model, version): the model and its batcher."""

    def __init__(self, name, version, model, batcher):
        self.name = name
        self.version = version
        self.model = model
        self.batcher = batcher


class Server:
    """A model server for a model folder or repository (Note [Model repository]).

    Example:
        >>> server = Server("path/to/model", port=0).start()  # doctest: +SKIP
        >>> server.url                                          # doctest: +SKIP
        'http://127.0.0.1:43117'
        >>> server.stop()                                       # doctest: +SKIP

    Args:
        path: a model folder (exported program or HF folder) or a repository root.
        host, port: where to listen (127.0.0.1 unless told otherwise; port 0 picks a free one).
        model_name: the name of a single-folder model (default: the folder's name), or the
            one model of a repository to serve.
        task: the task of HF folders (default: from their config).
        max_batch_size: rows per batch (0: no dynamic batching).
        max_queue_delay_ms: how long the oldest request waits for others to join its batch.
        max_queue_size: requests queued per model before 503.
        max_body_bytes: the largest request body (413 beyond it).
        access_log: a file object for one line per request ("stderr", the default, is
            sys.stderr at the time of writing; None: off).
        warmup: run each model once at load, so the first request is not cold.
        request_timeout: seconds a request may wait for its result (504 beyond).
        instances: worker threads per model, each running its own replica of the model
            (Triton's `instance_group count`; Note [Model instances]). Default: one per
            `threads_per_instance` usable cores, at most 8 (2 on a 2-core machine); models
            added with `add_model` that have no `replica()` get 1.
        threads_per_instance: kernel threads of each instance (TF Serving's intra-op
            parallelism). Default: 1 when `instances` is not given, else the usable cores
            divided among the instances. The server sets ember's thread count
            (`ember.set_num_threads`, process-wide, as BLAS's is) to it while it serves, and
            each worker numba's.
    """

    def __init__(
        self,
        path,
        host: str = "127.0.0.1",
        port: int = 8000,
        model_name: str | None = None,
        task: str | None = None,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 2.0,
        max_queue_size: int = 256,
        max_body_bytes: int = 64 << 20,
        access_log="stderr",
        warmup: bool = True,
        request_timeout: float = 60.0,
        keepalive_timeout: float = 30.0,
        instances: int | None = None,
        threads_per_instance: int | None = None,
    ):
        self.path = None if path is None else os.fspath(path)
        self.host = host
        self.port = int(port)
        self.model_name = model_name
        self.task = task
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay = float(max_queue_delay_ms) / 1000.0
        self.max_queue_size = int(max_queue_size)
        self.max_body_bytes = int(max_body_bytes)
        self.access_log = access_log
        self.warmup = warmup
        self.request_timeout = float(request_timeout)
        self.keepalive_timeout = float(keepalive_timeout)
        for knob, value in (
            ("instances", instances),
            ("threads_per_instance", threads_per_instance),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"serve: {knob} must be at least 1, got {value}")
        self.instances = None if instances is None else int(instances)
        if threads_per_instance is None:
            cores = usable_cores()
            threads_per_instance = 1 if instances is None else max(1, cores // int(instances))
        self.threads_per_instance = int(threads_per_instance)
        self._threads_before: int | None = None
        self.metrics = Metrics()
        self.models: dict[str, dict[str, _Served]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.draining = False
        self.accepted = 0
        self.answered = 0
        self._count_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._connections: set = set()
        self._conn_cond = threading.Condition()
        self._httpd = None
        self._thread = None
        self._stopped = threading.Event()
        self._loaded = False
        self.metrics.queue_depth = lambda: {
            f"{n}:{v}": s.batcher.depth() for n, vs in self.models.items() for v, s in vs.items()
        }

    # --- life cycle ------------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        model,
        version: str = "1",
        max_batch_size: int | None = None,
        instances: int | None = None,
    ) -> "Server":
        """Serve a model object (the interface of ember.serve.models.ServedModel: `inputs`,
        `outputs`, `prepare`, `run_batch`, optionally `replica`) under `name`, next to those
        of the path."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"serve: model name {name!r}: letters, digits, '_', '-', '.'")
        self._apply_threads()
        batcher = Batcher(
            model,
            f"{name}:{version}",
            max_batch_size=self.max_batch_size if max_batch_size is None else max_batch_size,
            max_queue_delay=self.max_queue_delay,
            max_queue_size=self.max_queue_size,
            metrics=self.metrics,
            instances=self.instances if instances is None else instances,
            threads_per_instance=self.threads_per_instance,
        )
        if self.warmup:
            _warm(batcher)
        self.models.setdefault(name, {})[str(version)] = _Served(name, str(version), model, batcher)
        self.labels.setdefault(name, {})
        return self

    def load(self) -> "Server":
        """Load the models of `path` (Note [Model repository])."""
        self._loaded = True
        if self.path is None:
            return self
        repo = ModelRepository(self.path, self.model_name)
        self._apply_threads()
        for name, spec in repo.models.items():
            for version, folder in spec.versions.items():
                model = load_model(folder, spec.options.get("task", self.task))
                mbs = int(spec.options.get("max_batch_size", self.max_batch_size))
                instances = spec.options.get("instances", self.instances)
                if instances is not None and (
                    not isinstance(instances, int) or isinstance(instances, bool) or instances < 1
                ):
                    raise ValueError(
                        f"serve: {name}/serving.json: 'instances' must be a positive integer, "
                        f"got {instances!r}"
                    )
                batcher = Batcher(
                    model,
                    f"{name}:{version}",
                    max_batch_size=mbs,
                    max_queue_delay=self.max_queue_delay,
                    max_queue_size=self.max_queue_size,
                    metrics=self.metrics,
                    instances=instances,
                    threads_per_instance=self.threads_per_instance,
                )
                if self.warmup:
                    _warm(batcher)
                self.models.setdefault(name, {})[version] = _Served(name, version, model, batcher)
            self.labels[name] = dict(spec.labels)
        return self

    def _apply_threads(self) -> None:
        """Set ember's kernel threads to `threads_per_instance` (once; undone by stop())."""
        if self._threads_before is not None:
            return
        import ember

        self._threads_before = ember.get_num_threads()
        if self._threads_before != self.threads_per_instance:
            ember.set_num_threads(self.threads_per_instance)

    def start(self) -> "Server":
        """Load the models, bind, and serve on a background thread; returns self."""
        if not self._loaded:
            self.load()
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _HTTPServer((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, grace: float = 30.0) -> None:
        """Graceful shutdown (Note [Graceful shutdown])."""
        if self._stopped.is_set():
            return
        if self._httpd is None:  # loaded, never started: only the model workers to stop
            for versions in self.models.values():
                for served in versions.values():
                    served.batcher.close(grace)
            self._stopped.set()
            self._restore_threads()
            return
        deadline = time.monotonic() + grace
        self.draining = True
        self._httpd.shutdown()  # no new connections are accepted after this returns
        with self._conn_cond:
            while self._connections and time.monotonic() < deadline:
                self._conn_cond.wait(0.05)
        for versions in self.models.values():
            for served in versions.values():
                served.batcher.close(max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()
        self._stopped.set()
        self._restore_threads()

    def _restore_threads(self) -> None:
        if self._threads_before is not None:
            import ember

            if ember.get_num_threads() == self.threads_per_instance:
                ember.set_num_threads(self._threads_before)

    def serve_forever(self, grace: float = 30.0) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (the `ember serve` command)."""
        if self._httpd is None:
            self.start()
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop.wait(0.2):
                pass
            print(
                f"ember serve: stopping; finishing {len(self._connections)} connections",
                file=sys.stderr,
                flush=True,
            )
            self.stop(grace)
            print(
                f"ember serve: stopped; {self.accepted} requests accepted, {self.answered} "
                "answered",
                file=sys.stderr,
                flush=True,
            )
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _log(self, line: str) -> None:
        log = sys.stderr if self.access_log == "stderr" else self.access_log
        if log is not None:
            with self._log_lock:
                log.write(line + "\n")
                log.flush()

    # --- lookup ----------------------------------------------------------------------------
    def lookup(self, name: str, version: str | None = None, label: str | None = None) -> _Served:
        if not NAME_PATTERN.match(name) or name not in self.models:
            raise RequestError(
                f"unknown model {name!r}; this server has {sorted(self.models)}", status=404
            )
        versions = self.models[name]
        if label is not None:
            if label not in self.labels.get(name, {}):
                raise RequestError(
                    f"model {name!r} has no version label {label!r} "
                    f"(labels: {sorted(self.labels.get(name, {}))})",
                    status=404,
                )
            version = self.labels[name][label]
        if version is None:
            version = max(versions, key=int)
        if version not in versions:
            raise RequestError(
                f"model {name!r} has no version {version!r} (served versions: "
                f"{sorted(versions, key=int)})",
                status=404,
            )
        return versions[version]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    """Routes, bodies and errors of both protocols (Note [Serving stack])."""

    owner: Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = SERVER_NAME
    timeout = 60.0  # a stalled body read ends the connection

    # --- connection loop (Note [Graceful shutdown]) ----------------------------------------
    def setup(self):
        super().setup()
        with self.owner._conn_cond:
            self.owner._connections.add(self)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.owner._conn_cond:
                self.owner._connections.discard(self)
                self.owner._conn_cond.notify_all()

    def _request_waiting(self) -> bool:
        """Wait until the next request's bytes arrive (True), or the connection ends, idles
        past the keep-alive timeout or the server drains (False)."""
        sock = self.connection
        deadline = time.monotonic() + self.owner.keepalive_timeout
        while True:
            if self._buffered():
                return True
            if self.owner.draining or time.monotonic() > deadline:
                return False
            try:
                ready, _, _ = select.select([sock], [], [], 0.1)
            except (OSError, ValueError):
                return False
            if ready:
                return self._buffered()  # readable with nothing to read: the peer closed

    def _buffered(self) -> bool:
        sock = self.connection
        try:
            sock.settimeout(0)
            try:
                return bool(self.rfile.peek(1))
            finally:
                sock.settimeout(self.timeout)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False

    def handle(self):
        self.close_connection = False
        while not self.close_connection:
            if not self._request_waiting():
                return
            self.handle_one_request()

    def log_message(self, format, *args):  # the access log is written by _respond
        pass

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors (bad request line, headers too long) as JSON."""
        self.close_connection = True
        self._respond(code, {"error": message or _REASONS.get(code, "error")}, protocol="http")

    # --- responses ---------------------------------------------------------------------------
    def _respond(
        self, status: int, payload, headers: dict | None = None, protocol="", model=""
    ) -> None:
        if isinstance(payload, (bytes, bytearray)):
            body = bytes(payload)
        else:
            body = json.dumps(payload, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        all_headers = {"Content-Type": "application/json", "Server": SERVER_NAME}
        all_headers.update(headers or {})
        all_headers["Content-Length"] = str(len(body))
        if self.owner.draining:
            self.close_connection = True
        if self.close_connection:
            all_headers["Connection"] = "close"
        head.extend(f"{k}: {v}" for k, v in all_headers.items())
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if getattr(self, "command", None) != "HEAD":  # HEAD: the headers of a GET, no body
            data += body
        try:
            self.wfile.write(data)  # one send (Note [Serving stack])
        except OSError:
            self.close_connection = True
            return
        owner = self.owner
        with owner._count_lock:
            owner.answered += 1
        elapsed = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        owner.metrics.observe_request(model, protocol or "http", status, elapsed)
        if owner.access_log is not None:
            line = getattr(self, "requestline", "") or "-"
            owner._log(
                f'{self.client_address[0]} - [{time.strftime("%d/%b/%Y:%H:%M:%S")}] "{line}" '
                f"{status} {len(body)} {elapsed * 1000:.2f}ms"
            )

    def _error(self, e: RequestError, protocol: str, model: str = "") -> None:
        self._respond(e.status, {"error": e.message}, e.headers, protocol, model)

    # --- requests ----------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("GET")  # answered as GET, without the body (_respond)

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._start = time.perf_counter()
        owner = self.owner
        with owner._count_lock:
            owner.accepted += 1
        path = unquote(self.path.split("?", 1)[0])
        protocol = "v2" if path.startswith("/v2") else "v1" if path.startswith("/v1") else "http"
        model = ""
        try:
            body = self._body() if method in ("POST", "PUT") else b""
            if path == "/metrics" and method == "GET":
                text = owner.metrics.render().encode()
                return self._respond(
                    200, text, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
                )
            if protocol == "v2":
                model = self._v2(method, path, body)
            elif protocol == "v1":
                model = self._v1(method, path, body)
            else:
                raise RequestError(f"no route for {method} {path}", status=404)
        except RequestError as e:
            self._error(e, protocol, model)
            if getattr(self, "_discard", 0):
                self._linger(self._discard)
        except Exception as e:  # a bug or a model failure: say what failed, keep serving
            self._respond(500, {"error": f"{type(e).__name__}: {e}"}, None, protocol, model)

    def _linger(self, n: int, seconds: float = 2.0) -> None:
        """Read and drop up to `n` bytes of an unread body, for at most `seconds`."""
        self._discard = 0
        deadline = time.monotonic() + seconds
        try:
            self.connection.settimeout(0.2)
            while n > 0 and time.monotonic() < deadline:
                try:
                    chunk = self.rfile.read1(min(n, 1 << 16))
                except TimeoutError:
                    continue
                if not chunk:
                    break
                n -= len(chunk)
        except OSError:
            pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError("chunked request bodies are not supported; send Content-Length", 411)
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise RequestError("a request body needs a Content-Length header", status=411)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(
                f"Content-Length must be a non-negative integer, got {length!r}"
            ) from None
        limit = self.owner.max_body_bytes
        if n > limit:
            # answered before the body is read, which is then discarded for a while (a client
            # that writes its whole body before reading would otherwise see a broken pipe)
            self.close_connection = True
            self._discard = min(n, 4 * limit + (1 << 20))
            raise RequestError(
                f"the request body has {n} bytes; this server accepts at most {limit}", status=413
            )
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            raise RequestError(f"the body ended after {len(body)} of {n} bytes")
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        if encoding in ("gzip", "deflate"):
            wbits = 31 if encoding == "gzip" else 15
            inflater = zlib.decompressobj(wbits)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as e:
                raise RequestError(f"the {encoding} body does not decompress: {e}") from None
            if len(body) > limit or inflater.unconsumed_tail:
                raise RequestError(
                    f"the decompressed body exceeds {limit} bytes", status=413
                ) from None
        elif encoding != "identity":
            raise RequestError(f"unsupported Content-Encoding {encoding!r}", status=415)
        return body

    @staticmethod
    def _method(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise RequestError(f"{path} takes {allowed}, not {method}", status=405)

    # --- KServe V2 ---------------------------------------------------------------------------
    def _v2(self, method: str, path: str, body: bytes) -> str:
        owner = self.owner
        if path in ("/v2", "/v2/"):
            self._method(method, "GET", path)
            from ember import __version__

            self._respond(
                200,
                {
                    "name": SERVER_NAME,
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "model_repository_index", "statistics"],
                },
                protocol="v2",
            )
            return ""
        if path == "/v2/health/live":
            self._method(method, "GET", path)
            self._respond(200, {"live": True}, protocol="v2")
            return ""
        if path == "/v2/health/ready":
            self._method(method, "GET", path)
            ready = not owner.draining and bool(owner.models)
            self._respond(200 if ready else 503, {"ready": ready}, protocol="v2")
            return ""
        match = _V2_MODEL.match(path)
        if match is None:
            raise RequestError(f"no route for {method} {path}", status=404)
        name, version, action = match.groups()
        served = owner.lookup(name, version)
        model = served.model
        if action is None:
            self._method(method, "GET", path)
            payload = {
                "name": name,
                "versions": sorted(owner.models[name], key=int),
                "platform": model.platform,
                "inputs": [s.as_v2() for s in model.inputs],
                "outputs": [s.as_v2() for s in model.outputs],
            }
            if version is not None:
                payload["versions"] = [served.version]
            self._respond(200, payload, protocol="v2", model=name)
        elif action == "/ready":
            self._method(method, "GET", path)
            self._respond(200, {"name": name, "ready": True}, protocol="v2", model=name)
        else:
            self._method(method, "POST", path)
            request, feeds = P.parse_v2_request(
                body, self.headers.get("Inference-Header-Content-Length")
            )
            P.requested_outputs(request, [s.name for s in model.outputs])
            outputs = self._infer(served, feeds)
            payload, headers = P.build_v2_response(
                name, served.version, request, outputs, default_binary=False
            )
            self._respond(200, payload, headers, protocol="v2", model=name)
        return name

    def _infer(self, served: _Served, feeds: dict) -> dict:
        prepared = served.model.prepare(feeds)
        future = served.batcher.submit(prepared)
        try:
            return future.result(timeout=self.owner.request_timeout)
        except TimeoutError:
            raise RequestError(
                f"model {served.name}: no result within {self.owner.request_timeout:g} s",
                status=504,
            ) from None

    # --- TF Serving REST -------------------------------------------------------------------
    def _v1(self, method: str, path: str, body: bytes) -> str:
        owner = self.owner
        match = _V1_MODEL.match(path)
        if match is None:
            raise RequestError(f"no route for {method} {path}", status=404)
        name, version, label, action = match.groups()
        served = owner.lookup(name, version, label)
        model = served.model
        if action is None:
            self._method(method, "GET", path)
            versions = (
                [served.version] if (version or label) else sorted(owner.models[name], key=int)
            )
            status = [
                {
                    "version": v,
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
                for v in versions
            ]
            self._respond(200, {"model_version_status": status}, protocol="v1", model=name)
        elif action == "/metadata":
            self._method(method, "GET", path)
            self._respond(200, _tf_metadata(name, served), protocol="v1", model=name)
        else:
            self._method(method, "POST", path)
            try:
                request = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise RequestError(f"malformed JSON in the request body: {e}") from None
            signature = request.get("signature_name") if isinstance(request, dict) else None
            if signature not in (None, "", "serving_default"):
                raise RequestError(
                    f"unknown signature_name {signature!r}; this model has 'serving_default'"
                )
            if action == ":predict":
                feeds, fmt = P.parse_tf_predict(request, model.inputs)
                outputs = self._infer(served, feeds)
                self._respond(200, P.build_tf_predict(outputs, fmt), protocol="v1", model=name)
            elif action == ":classify":
                self._respond(200, self._classify(served, request), protocol="v1", model=name)
            else:
                raise RequestError(
                    f"model {name!r} does not support :regress (it is not a regression model)"
                )
        return name

    def _classify(self, served: _Served, request) -> dict:
        model = served.model
        if not isinstance(model, TextModel) or model.task != "sequence-classification":
            raise RequestError(
                f"model {served.name!r} is not a classification model; :classify needs a "
                "sequence-classification head (use :predict)"
            )
        examples = request.get("examples") if isinstance(request, dict) else None
        if not isinstance(examples, list) or not examples:
            raise RequestError("the :classify body needs 'examples': a non-empty list of objects")
        context = request.get("context") or {}
        texts = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise RequestError(f"examples[{i}] must be an object with a 'text' feature")
            feature = {**context, **ex}.get("text")
            if isinstance(feature, list) and len(feature) == 1:
                feature = feature[0]
            if isinstance(feature, dict):
                feature = P.bytes_element(feature, f"examples[{i}].text").decode("utf-8", "replace")
            if not isinstance(feature, str):
                raise RequestError(f"examples[{i}]: needs a string feature 'text'")
            texts.append(feature)
        array = np.array([t.encode() for t in texts], dtype=object)
        outputs = self._infer(served, {"text": array})
        probs_rows = outputs["logits"]
        shifted = np.exp(probs_rows - probs_rows.max(-1, keepdims=True))
        probs = shifted / shifted.sum(-1, keepdims=True)
        results = [[[model.labels[j], float(row[j])] for j in range(len(row))] for row in probs]
        return {"results": results}


def _warm(batcher: Batcher) -> None:
    """Warm up every instance's replica once (each compiles its own executors), and the
    float32 JSON writer (Note [Float32 JSON])."""
    P.warm_float32_json()
    seen = set()
    for model in batcher.models:
        if id(model) not in seen and hasattr(model, "warmup"):
            seen.add(id(model))
            model.warmup()


def _tf_metadata(name: str, served: _Served) -> dict:
    def tensor(spec):
        return {
            "dtype": P.TF_DTYPES[spec.datatype],
            "tensor_shape": {
                "dim": [{"size": str(d), "name": ""} for d in spec.shape],
                "unknown_rank": False,
            },
            "name": spec.name,
        }

    model = served.model
    signatures = {
        "serving_default": {
            "inputs": {s.name: tensor(s) for s in model.inputs},
            "outputs": {s.name: tensor(s) for s in model.outputs},
            "method_name": "tensorflow/serving/predict",
        }
    }
    if isinstance(model, TextModel) and model.task == "sequence-classification":
        signatures["classification"] = {
            "inputs": {"text": tensor(model.inputs[0])},
            "outputs": {s.name: tensor(s) for s in model.outputs},
            "method_name": "tensorflow/serving/classify",
        }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": served.version},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
