"""Load on ember.serve over loopback: 2,000 requests from 16 client threads end with no error
and every result equal to the lone request's, and a SIGTERM in the middle of a load (the
`ember serve` command in a subprocess) loses no accepted request (Note [Graceful shutdown]).
Bounded: a fixed number of requests, timeouts on every call and on the subprocess."""

import http.client as httplib
import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import ember

CLIENTS = 16
REQUESTS = 2000


def _inputs(count: int = 40):
    """Token requests of 1-3 rows and 2-24 tokens (padded batches of mixed lengths)."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(count):
        rows, length = int(rng.integers(1, 4)), int(rng.integers(2, 25))
        ids = rng.integers(1000, 5000, (rows, length))
        mask = np.ones_like(ids)
        if length > 3:
            mask[0, length - 2 :] = 0
        out.append((ids, mask))
    return out


def _body(ids, mask) -> bytes:
    tensor = lambda name, a: {  # noqa: E731
        "name": name,
        "shape": list(a.shape),
        "datatype": "INT64",
        "data": a.ravel().tolist(),
    }
    return json.dumps(
        {"inputs": [tensor("input_ids", ids), tensor("attention_mask", mask)]}
    ).encode()


def _post(conn, body):
    conn.request("POST", "/v2/models/tokens/infer", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    return response.status, payload


def _embedding(payload) -> np.ndarray:
    out = payload["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def _lone_results(repository, inputs):
    program = ember.load_exported(os.path.join(repository, "tokens", "1"))
    return [program.run({"input_ids": i, "attention_mask": m})["embedding"] for i, m in inputs]


def _run_clients(port, inputs, bodies, total, stop_after=None, on_count=None):
    """16 threads with one keep-alive connection each; returns (results, errors)."""
    lock = threading.Lock()
    counter = iter(range(total))
    results, errors = [], []

    def client():
        conn = httplib.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                break
            which = k % len(inputs)
            try:
                status, payload = _post(conn, bodies[which])
            except (OSError, httplib.HTTPException) as e:
                with lock:
                    errors.append(e)
                if stop_after is not None:
                    break  # the server is going away
                conn.close()
                conn = httplib.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            with lock:
                results.append((which, status, payload))
                done = len(results)
            if on_count is not None:
                on_count(done)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results, errors


def test_2000_requests_from_16_threads(server, repository):
    inputs = _inputs()
    bodies = [_body(i, m) for i, m in inputs]
    lone = _lone_results(repository, inputs)
    batches_before = server.metrics.batch_size.get("tokens:1")
    runs_before = batches_before.count if batches_before else 0
    results, errors = _run_clients(server.port, inputs, bodies, REQUESTS)
    assert errors == []
    assert len(results) == REQUESTS
    for which, status, payload in results:
        assert status == 200, payload
        np.testing.assert_allclose(_embedding(payload), lone[which], rtol=1e-5, atol=1e-6)
    runs = server.metrics.batch_size["tokens:1"].count - runs_before
    assert runs < REQUESTS  # requests were merged into batches


@pytest.mark.timeout(240)
def test_sigterm_during_load_loses_no_accepted_request(repository):
    inputs = _inputs()
    bodies = [_body(i, m) for i, m in inputs]
    lone = _lone_results(repository, inputs)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ember.cli",
            "serve",
            os.path.join(repository, "tokens"),
            "--port",
            "0",
            "--grace-period",
            "30",
            "--no-access-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at http://127\.0\.0\.1:(\d+)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        port = int(match.group(1))
        signalled = threading.Event()

        def on_count(done):
            if done >= 300 and not signalled.is_set():
                signalled.set()
                process.send_signal(signal.SIGTERM)

        results, errors = _run_clients(
            port, inputs, bodies, REQUESTS, stop_after=True, on_count=on_count
        )
        assert signalled.is_set()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    summary = re.search(r"stopped; (\d+) requests accepted, (\d+) answered", stderr)
    assert summary, stderr
    accepted, answered = int(summary.group(1)), int(summary.group(2))
    assert accepted == answered == len(results)  # every accepted request got its answer
    assert len(results) < REQUESTS  # the server did stop in the middle
    for which, status, payload in results:
        assert status == 200, payload
        np.testing.assert_allclose(_embedding(payload), lone[which], rtol=1e-5, atol=1e-6)
    # the clients that were cut off saw the connection end, not an error response
    assert all(isinstance(e, (OSError, httplib.HTTPException)) for e in errors)
