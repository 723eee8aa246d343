"""ember.serve against the real KServe V2 client (tritonclient) and TF Serving-style REST calls
over loopback: results equal ember's in-process forward, every bad request gets its
documented 4xx and message, and the operations endpoints behave (metrics, access log, queue
limits, version policy and labels)."""

import functools
import http.client as httplib
import io
import json
import os
import sys
import threading
import time

import numpy as np
import pytest

import ember
from ember.serve import Server
from ember.serve.protocol import RequestError

from .conftest import http, make_mlp, token_model

httpclient = pytest.importorskip("tritonclient.http")
TEXTS = ["A cat sat on the mat.", "Hello world", "ember serves MiniLM over KServe V2"]


def _client(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=60)


@functools.lru_cache(maxsize=1)
def _minilm_in_process(minilm):
    from ember.transformers import AutoTokenizer, BertModel

    return BertModel.from_pretrained(minilm).eval(), AutoTokenizer.from_pretrained(minilm)


def _minilm_reference(minilm, texts):
    """ember's in-process sentence embeddings (the sentence-transformers recipe)."""
    from ember.transformers import encode_sentences

    return encode_sentences(*_minilm_in_process(minilm), texts).numpy()


def _bytes_input(texts, binary):
    inp = httpclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    return inp


# --- KServe V2 with tritonclient ------------------------------------------------------------
def test_health_and_metadata(server):
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "ember" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("minilm") and client.is_model_ready("mlp", "3")
    model = client.get_model_metadata("minilm")
    assert model["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert model["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    mlp = client.get_model_metadata("mlp")
    assert mlp["versions"] == ["2", "3"]
    assert mlp["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_model_metadata("mlp", "2")["versions"] == ["2"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_minilm_embeddings_equal_in_process_forward(server, minilm, binary):
    client = _client(server)
    out = httpclient.InferRequestedOutput("embedding", binary_data=binary)
    result = client.infer("minilm", [_bytes_input(TEXTS, binary)], outputs=[out], request_id="r7")
    assert result.get_response()["id"] == "r7"
    got = result.as_numpy("embedding")
    np.testing.assert_allclose(got, _minilm_reference(minilm, TEXTS), rtol=0, atol=1e-6)


def test_minilm_default_request_is_binary_both_ways(server, minilm):
    result = _client(server).infer("minilm", [_bytes_input(TEXTS[:1], True)])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 384 * 4
    np.testing.assert_allclose(
        result.as_numpy("embedding"), _minilm_reference(minilm, TEXTS[:1]), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "2", "3"])
def test_exported_mlp_versions(server, binary, version):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    result = _client(server).infer("mlp", [inp], model_version=version, outputs=[out])
    assert result.get_response()["model_version"] == (version or "3")
    with ember.no_grad():
        want = make_mlp(int(version or 3))(ember.tensor(x)).numpy()
    np.testing.assert_allclose(result.as_numpy("output"), want, rtol=1e-6, atol=1e-6)


def test_token_inputs_int64(server):
    rng = np.random.default_rng(3)
    ids = rng.integers(1000, 2000, (3, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        inp = httpclient.InferInput(name, list(array.shape), "INT64")
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    got = _client(server).infer("tokens", inputs).as_numpy("embedding")
    with ember.no_grad():
        want = token_model()(ember.tensor(ids), ember.tensor(mask))["embedding"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_classifier_outputs_labels_and_scores(server):
    result = _client(server).infer("sentiment", [_bytes_input(TEXTS, True)])
    logits = result.as_numpy("logits")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    names = ["negative", "neutral", "positive"]
    assert [x.decode() for x in result.as_numpy("label")] == [names[i] for i in probs.argmax(-1)]
    np.testing.assert_allclose(result.as_numpy("score"), probs.max(-1), rtol=1e-6)


def test_tritonclient_sees_errors_as_exceptions(server):
    from tritonclient.utils import InferenceServerException

    inp = httpclient.InferInput("x", [2, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 4\]"):
        _client(server).infer("mlp", [inp])


# --- TF Serving REST ------------------------------------------------------------------------
def test_tf_predict_rows_and_columns(server):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    with ember.no_grad():
        want = make_mlp(2)(ember.tensor(x)).numpy()
    url = f"{server.url}/v1/models/mlp/labels/stable:predict"
    status, _, rows = http(url, {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(rows["predictions"], want, rtol=1e-6, atol=1e-6)
    status, _, cols = http(url, {"inputs": {"x": x.tolist()}})
    assert status == 200
    np.testing.assert_allclose(cols["outputs"], want, rtol=1e-6, atol=1e-6)
    status, _, named = http(
        f"{server.url}/v1/models/tokens:predict",
        {"instances": [{"input_ids": [101, 2000, 102], "attention_mask": [1, 1, 1]}]},
    )
    assert status == 200 and len(named["predictions"][0]) == 32


def test_tf_predict_text(server, minilm):
    status, _, out = http(f"{server.url}/v1/models/minilm:predict", {"instances": TEXTS})
    assert status == 200
    np.testing.assert_allclose(
        out["predictions"], _minilm_reference(minilm, TEXTS), rtol=0, atol=1e-6
    )
    status, _, b64 = http(
        f"{server.url}/v1/models/minilm:predict", {"instances": [{"b64": "SGVsbG8gd29ybGQ="}]}
    )
    np.testing.assert_allclose(b64["predictions"][0], out["predictions"][1], rtol=0, atol=1e-6)


def test_tf_classify(server):
    status, _, out = http(
        f"{server.url}/v1/models/sentiment:classify",
        {"examples": [{"text": t} for t in TEXTS]},
    )
    assert status == 200
    result = _client(server).infer("sentiment", [_bytes_input(TEXTS, True)])
    logits = result.as_numpy("logits")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for row, want in zip(out["results"], probs):
        assert [label for label, _ in row] == ["negative", "neutral", "positive"]
        np.testing.assert_allclose([s for _, s in row], want, rtol=1e-6)


def test_tf_status_and_metadata(server):
    status, _, out = http(f"{server.url}/v1/models/mlp")
    assert status == 200
    assert [v["version"] for v in out["model_version_status"]] == ["2", "3"]
    assert out["model_version_status"][0]["state"] == "AVAILABLE"
    _, _, label = http(f"{server.url}/v1/models/mlp/labels/canary")
    assert [v["version"] for v in label["model_version_status"]] == ["3"]
    status, _, meta = http(f"{server.url}/v1/models/minilm/versions/1/metadata")
    assert status == 200 and meta["model_spec"] == {
        "name": "minilm",
        "signature_name": "",
        "version": "1",
    }
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sig["outputs"]["embedding"]["tensor_shape"]["dim"][1]["size"] == "384"


# --- every bad request ----------------------------------------------------------------------
def _v2(name, inputs, **extra):
    return {"inputs": inputs, **extra}


MLP_X = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}
BAD = [
    # (method, path, body, headers, status, message)
    ("GET", "/v2/models/nope", None, {}, 404, "unknown model 'nope'"),
    ("GET", "/v2/models/mlp/versions/1", None, {}, 404, "has no version '1'"),
    ("GET", "/v1/models/mlp/labels/beta", None, {}, 404, "no version label 'beta'"),
    ("GET", "/v2/models/..%2F..%2Fetc%2Fpasswd", None, {}, 404, "no route"),
    ("GET", "/v1/models/.hidden", None, {}, 404, "unknown model '.hidden'"),
    ("GET", "/v2/models/mlp/infer", None, {}, 405, "takes POST"),
    ("GET", "/nowhere", None, {}, 404, "no route"),
    ("POST", "/v2/models/mlp/infer", b"{not json", {}, 400, "malformed JSON"),
    ("POST", "/v2/models/mlp/infer", {"inputs": []}, {}, 400, "needs 'inputs'"),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "name": "y"}]),
        {},
        400,
        "unknown input 'y'",
    ),
    (
        "POST",
        "/v2/models/tokens/infer",
        _v2("t", [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]),
        {},
        400,
        "missing input 'attention_mask'",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "shape": [2, 5], "data": [0.0] * 10}]),
        {},
        400,
        "input 'x': expected shape [-1, 4], got [2, 5]",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "datatype": "INT64", "data": [0] * 8}]),
        {},
        400,
        "input 'x': expected datatype FP32, got INT64",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "data": [0.0] * 7}]),
        {},
        400,
        "shape [2, 4] needs 8 elements, 'data' has 7",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "data": ["a"] * 8}]),
        {},
        400,
        "FP32 data must hold numbers",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "datatype": "FP8"}]),
        {},
        400,
        "unknown datatype 'FP8'",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [MLP_X], outputs=[{"name": "probabilities"}]),
        {},
        400,
        "unknown output 'probabilities'",
    ),
    (
        "POST",
        "/v2/models/mlp/infer",
        _v2("mlp", [{**MLP_X, "shape": [9, 4], "data": [0.0] * 36}]),
        {},
        400,
        "max_batch_size is 8",
    ),
    (
        "POST",
        "/v2/models/minilm/infer",
        _v2("m", [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]),
        {},
        400,
        "input 'text': expected datatype BYTES, got FP32",
    ),
    (
        "POST",
        "/v2/models/minilm/infer",
        _v2("m", [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]),
        {},
        400,
        "input 'text': expected shape [-1]",
    ),
    ("POST", "/v2/models/mlp/infer", b"x" * (2 << 20), {}, 413, "at most 1048576"),
    (
        "POST",
        "/v2/models/mlp/infer",
        b"{}",
        {"Content-Encoding": "br"},
        415,
        "unsupported Content-Encoding 'br'",
    ),
    ("POST", "/v1/models/mlp:predict", {"x": 1}, {}, 400, "exactly one of 'instances'"),
    (
        "POST",
        "/v1/models/mlp:predict",
        {"instances": [[1.0, 2.0]]},
        {},
        400,
        "expected shape [-1, 4], got [1, 2]",
    ),
    ("POST", "/v1/models/mlp:predict", {"instances": [[1, 2], [3]]}, {}, 400, "uneven"),
    (
        "POST",
        "/v1/models/tokens:predict",
        {"inputs": {"input_ids": [[1.5]], "attention_mask": [[1]]}},
        {},
        400,
        "expected integers",
    ),
    (
        "POST",
        "/v1/models/tokens:predict",
        {"inputs": {"input_ids": [[1]]}},
        {},
        400,
        "missing input 'attention_mask'",
    ),
    (
        "POST",
        "/v1/models/mlp:predict",
        {"signature_name": "other", "instances": [[0.0] * 4]},
        {},
        400,
        "unknown signature_name 'other'",
    ),
    (
        "POST",
        "/v1/models/mlp:classify",
        {"examples": [{"text": "x"}]},
        {},
        400,
        "not a classification model",
    ),
    (
        "POST",
        "/v1/models/sentiment:classify",
        {"examples": [{"words": "x"}]},
        {},
        400,
        "needs a string feature 'text'",
    ),
    ("POST", "/v1/models/mlp:regress", {"examples": []}, {}, 400, "does not support :regress"),
]


@pytest.mark.parametrize("method, path, body, headers, status, message", BAD)
def test_bad_requests_get_their_status_and_message(
    server, method, path, body, headers, status, message
):
    got, _, payload = http(server.url + path, body, headers, method=method)
    assert got == status, payload
    assert isinstance(payload, dict) and message in payload["error"], payload


def _binary_request(server, head: dict, binary: bytes, header_length=None):
    raw = json.dumps(head).encode()
    length = len(raw) if header_length is None else header_length
    return http(
        f"{server.url}/v2/models/mlp/infer",
        raw + binary,
        {
            "Inference-Header-Content-Length": str(length),
            "Content-Type": "application/octet-stream",
        },
        method="POST",
    )


@pytest.mark.parametrize(
    "size, extra, header_length, message",
    [
        (32, b"", 10**6, "Inference-Header-Content-Length is 1000000"),
        (32, b"", "abc", "must be an integer"),
        (28, b"", None, "binary_data_size is 28 bytes but shape [2, 4] of FP32 needs 32"),
        (40, b"", None, "runs past the end of the body"),
        (32, b"\0" * 4, None, "4 binary bytes that no input's binary_data_size accounts for"),
    ],
)
def test_binary_sizes_that_disagree(server, size, extra, header_length, message):
    head = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    status, _, payload = _binary_request(server, head, b"\0" * min(size, 32) + extra, header_length)
    assert status == 400 and message in payload["error"], payload


def test_binary_bytes_elements_that_disagree(server):
    head = {
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 9},
            }
        ]
    }
    raw = json.dumps(head).encode()
    body = raw + (5).to_bytes(4, "little") + b"hello"  # one element where the shape says two
    status, _, payload = http(
        f"{server.url}/v2/models/minilm/infer",
        body,
        {"Inference-Header-Content-Length": str(len(raw))},
        method="POST",
    )
    assert status == 400 and "ends after 1 of 2 elements" in payload["error"]


@pytest.mark.parametrize(
    "head, status, message",
    [
        ({"Transfer-Encoding": "chunked"}, 411, "chunked request bodies"),
        ({}, 411, "needs a Content-Length"),
        ({"Content-Length": "-3"}, 400, "non-negative integer"),
    ],
)
def test_bodies_without_a_usable_length(server, head, status, message):
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/v2/models/mlp/infer", skip_accept_encoding=True)
    for k, v in head.items():
        conn.putheader(k, v)
    conn.endheaders()
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    assert response.status == status and message in payload["error"]


def test_head_has_the_headers_of_get_and_no_body(server):
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("HEAD", "/v2/health/ready")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    assert int(response.headers["Content-Length"]) == len(b'{"ready":true}')
    conn.request("GET", "/v2/health/live")  # the connection is still in step
    assert json.loads(conn.getresponse().read()) == {"live": True}
    conn.close()


def test_keep_alive_survives_a_bad_request(server):
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for body, want in ((b"{bad", 400), (json.dumps({"inputs": [MLP_X]}).encode(), 200)):
        conn.request("POST", "/v2/models/mlp/infer", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == want
    conn.close()


# --- operations -----------------------------------------------------------------------------
def test_metrics_in_prometheus_text_format(server):
    http(f"{server.url}/v2/models/nope")
    http(f"{server.url}/v1/models/mlp:predict", {"instances": [[0.0] * 4]})
    status, head, text = http(f"{server.url}/metrics")
    assert status == 200 and head["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = text.decode().splitlines()
    samples = {}
    for line in lines:
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE")
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['ember_requests_total{model="mlp",protocol="v1",code="200"}'] >= 1
    assert samples['ember_requests_total{model="",protocol="v2",code="404"}'] >= 1
    assert samples['ember_batch_size_count{model="mlp:3"}'] >= 1
    assert 'ember_queue_depth{model="mlp:3"}' in samples
    buckets = [
        v for k, v in samples.items() if k.startswith('ember_batch_size_bucket{model="mlp:3"')
    ]
    assert buckets == sorted(buckets)  # cumulative


def test_access_log_and_loopback_bind(repository):
    log = io.StringIO()
    with Server(os.path.join(repository, "mlp"), port=0, access_log=log, warmup=False) as srv:
        assert srv._httpd.server_address[0] == "127.0.0.1"
        http(f"{srv.url}/v2/health/live")
        http(f"{srv.url}/v2/models/mlp/infer", {"inputs": [MLP_X]})
        http(f"{srv.url}/v2/models/other")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3
    assert '"POST /v2/models/mlp/infer HTTP/1.1" 200' in lines[1]
    assert '"GET /v2/models/other HTTP/1.1" 404' in lines[2]


class _Gate:
    """A model whose batches wait for a gate: it holds the worker busy on purpose."""

    batch_dim = True

    def __init__(self, model):
        self.model = model
        self.gate = threading.Event()
        self.started = threading.Event()
        self.inputs, self.outputs = model.inputs, model.outputs

    def prepare(self, feeds):
        return self.model.prepare(feeds)

    def run_batch(self, batch):
        self.started.set()
        self.gate.wait(30)
        return self.model.run_batch(batch)


def test_full_queue_answers_503_with_retry_after(repository):
    srv = Server(
        os.path.join(repository, "mlp"),
        port=0,
        max_queue_size=1,
        access_log=None,
        warmup=False,
        instances=1,  # one worker to hold busy
    ).start()
    try:
        served = srv.models["mlp"]["3"]
        gate = _Gate(served.model)
        served.model = served.batcher.model = gate
        body = {"inputs": [MLP_X]}
        results = []
        first = threading.Thread(
            target=lambda: results.append(http(f"{srv.url}/v2/models/mlp/infer", body))
        )
        first.start()
        assert gate.started.wait(10)  # the worker holds request 1
        second = threading.Thread(
            target=lambda: results.append(http(f"{srv.url}/v2/models/mlp/infer", body))
        )
        second.start()
        deadline = time.monotonic() + 10
        while served.batcher.depth() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # request 2 waits in the queue
        status, head, payload = http(f"{srv.url}/v2/models/mlp/infer", body)
        assert status == 503 and head["Retry-After"] == "1"
        assert "the queue is full (1 requests waiting)" in payload["error"]
        gate.gate.set()
        first.join(10)
        second.join(10)
        assert [r[0] for r in results] == [200, 200]
    finally:
        srv.stop(grace=10)


def test_batcher_pads_and_splits_like_lone_requests(repository):
    from ember.serve import Batcher, load_model
    from ember.serve.metrics import Metrics

    model = load_model(os.path.join(repository, "tokens", "1"))
    rng = np.random.default_rng(5)
    requests = []
    for rows, length in [(1, 3), (2, 9), (1, 17), (3, 5), (1, 1)]:
        ids = rng.integers(1000, 3000, (rows, length))
        requests.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    lone = [model.run_batch([model.prepare(r)])[0]["embedding"] for r in requests]
    metrics = Metrics()
    batcher = Batcher(model, "tokens", max_batch_size=16, max_queue_delay=0.5, metrics=metrics)
    try:
        futures = [batcher.submit(model.prepare(r)) for r in requests]
        got = [f.result(30)["embedding"] for f in futures]
    finally:
        batcher.close(10)
    assert metrics.batch_size["tokens"].count < len(requests)  # merged into fewer runs
    for g, want in zip(got, lone):
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_instances_run_batches_at_once_and_equal_lone_requests(repository):
    """Note [Model instances]: two workers, each with its own replica (own compiled programs)
    and one numba thread, run two batches at the same time; every result equals the lone
    request's."""
    from ember.backend import numba_kernels
    from ember.serve import Batcher, load_model

    model = load_model(os.path.join(repository, "sentiment", "1"))
    texts = [f"{w} review number {i}" for i, w in enumerate(["good", "bad", "fine"] * 8)]
    feeds = [{"text": np.array([t.encode()], dtype=object)} for t in texts]
    lone = [model.run_batch([model.prepare(f)])[0]["logits"] for f in feeds]
    batcher = Batcher(model, "sentiment", max_batch_size=4, instances=2, threads_per_instance=1)
    assert batcher.instances == 2
    first, second = batcher.models
    assert first is model and second is not model
    assert second.program is not first.program  # executors are not re-entrant
    assert second.program.weights is first.program.weights  # one copy of the weights
    lock, active, seen = threading.Lock(), [0], []
    both_running = threading.Event()

    def watched(run):
        def run_batch(batch):
            with lock:
                active[0] += 1
                if active[0] == 2:
                    both_running.set()
                numba = sys.modules.get("numba")
                threads = numba.get_num_threads() if numba_kernels.available() and numba else 1
                seen.append((threading.current_thread().name, threads))
            both_running.wait(30)  # the first batch waits until a second one runs beside it
            try:
                return run(batch)
            finally:
                with lock:
                    active[0] -= 1

        return run_batch

    for replica in batcher.models:
        replica.run_batch = watched(replica.run_batch)
    try:
        futures = [batcher.submit(model.prepare(f)) for f in feeds]
        got = [f.result(60)["logits"] for f in futures]
    finally:
        batcher.close(30)
    assert both_running.is_set()
    assert {name for name, _ in seen} == {"ember-serve-sentiment-0", "ember-serve-sentiment-1"}
    assert {threads for _, threads in seen} == {1}  # numba's count is per thread
    for g, want in zip(got, lone):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("own", [1, None], ids=["threads_per_instance=1", "the budget"])
def test_batcher_workers_get_their_numba_threads_one_way(repository, own):
    """Note [Model instances]: each worker runs its kernels on `threads_per_instance` numba
    threads whatever ember's budget (or follows the budget without it), through the shared
    per-thread count (Note [Per-thread numba count]); the thread that builds the Batcher keeps
    its own count."""
    import numba

    from ember.backend import numba_kernels, parallel
    from ember.serve import Batcher

    if not numba_kernels.available() or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs numba with two threads: no count to tell apart")
    model = load_model_mlp(repository)
    run = model.run_batch
    seen, pool_seen = [], []

    def counting(batch):  # as a kernel entry does (OpDef.def_fast_kernel's wrapper)
        numba_kernels.follow_budget()
        seen.append(numba.get_num_threads())
        pool_seen.append(parallel.threads_here())  # Note [Per-thread pool count]
        return run(batch)

    model.run_batch = counting
    before = ember.get_num_threads()
    feeds = {"x": np.zeros((1, 4), np.float32)}
    try:
        ember.set_num_threads(2)
        mine = numba.get_num_threads()
        batcher = Batcher(model, "mlp", instances=1, threads_per_instance=own)
        try:
            batcher.submit(model.prepare(feeds)).result(30)
            assert numba.get_num_threads() == mine == 2  # the building thread's count
            ember.set_num_threads(1)  # a budget change reaches only the following workers
            batcher.submit(model.prepare(feeds)).result(30)
        finally:
            batcher.close(30)
    finally:
        ember.set_num_threads(before)
    assert seen == ([1, 1] if own else [2, 1])
    assert pool_seen == seen  # the chunked ops and split products follow the same count


def test_server_instances_defaults_and_thread_budget(repository):
    from ember.serve.batching import default_instances

    before = ember.get_num_threads()
    srv = Server(os.path.join(repository, "mlp"), port=0, access_log=None, warmup=False)
    srv.add_model("shared", _Gate(load_model_mlp(repository)))  # no replica(): one instance
    srv.start()
    try:
        assert srv.models["mlp"]["3"].batcher.instances == default_instances(1)
        assert srv.models["shared"]["1"].batcher.instances == 1
        assert srv.threads_per_instance == 1 and ember.get_num_threads() == 1
    finally:
        srv.stop(grace=10)
    assert ember.get_num_threads() == before  # the server gives the thread count back
    two = Server(None, port=0, instances=2, threads_per_instance=1, access_log=None)
    two.add_model("mlp", load_model_mlp(repository))
    assert two.models["mlp"]["1"].batcher.instances == 2
    two.stop(grace=10)  # never started: stops its workers, gives the thread count back
    assert ember.get_num_threads() == before
    for knob in ("instances", "threads_per_instance"):
        with pytest.raises(ValueError, match=f"{knob} must be at least 1, got 0"):
            Server(None, port=0, **{knob: 0})


def load_model_mlp(repository):
    from ember.serve import load_model

    return load_model(os.path.join(repository, "mlp", "3"))


def test_closed_batcher_refuses_with_503(repository):
    from ember.serve import Batcher, load_model

    model = load_model(os.path.join(repository, "mlp", "2"))
    batcher = Batcher(model, "mlp")
    batcher.close(10)
    with pytest.raises(RequestError) as info:
        batcher.submit(model.prepare({"x": np.zeros((1, 4), np.float32)}))
    assert info.value.status == 503


@pytest.mark.parametrize(
    "serving, message",
    [
        ({"version_policy": {"specific": {"versions": [7]}}}, "name versions that are not there"),
        ({"version_policy": {"newest": {}}}, "unknown version_policy 'newest'"),
        (
            {"version_labels": {"stable": 1}},
            "label 'stable' points at version 1, which is not served",
        ),
        ({"instances": 0}, "'instances' must be a positive integer, got 0"),
        ({"instances": "two"}, "'instances' must be a positive integer, got 'two'"),
    ],
)
def test_bad_repository_configs_fail_at_load(tmp_path, serving, message):
    for version in (1, 2):
        ember.export(make_mlp(version), (ember.ones(1, 4),), tmp_path / "m" / str(version))
    (tmp_path / "m" / "serving.json").write_text(json.dumps(serving))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Server(str(tmp_path), port=0, access_log=None).load()


def test_cli_help_names_the_knobs(capsys):
    from ember.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for knob in (
        "--max-batch-size",
        "--max-queue-delay-ms",
        "--host",
        "--port",
        "--model-name",
        "--instances",
        "--threads-per-instance",
    ):
        assert knob in text


@pytest.mark.parametrize("packing", [False, True])
def test_text_batches_in_length_groups_equal_lone_requests(repository, packing):
    from ember.serve import load_model
    from ember.serve.models import Prepared

    model = load_model(os.path.join(repository, "sentiment", "1"))
    model.packing = packing
    texts = ["ok", "a much longer review that goes on and on about the plot " * 4, "fine film"]
    texts += ["short", "the acting was good but the second half drags badly", "meh"]
    requests = [Prepared({"text": [t]}, 1, "text") for t in texts]
    rows = model.tokenizer(texts)["input_ids"]
    if packing:  # Note [Packed batches]: short texts share rows, the long one widens them
        feeds, places = model._pack(rows)
        assert feeds["input_ids"].shape[0] < len(texts)
        assert feeds["input_ids"].shape[1] >= max(len(r) for r in rows)
        assert len({r for r, _, _ in places}) < len(texts)
    else:
        assert len(model._groups([len(r) for r in rows])) > 1  # several length groups
    together = model.run_batch(requests)
    for request, got in zip(requests, together):
        alone = model.run_batch([request])[0]
        np.testing.assert_allclose(got["logits"], alone["logits"], rtol=1e-5, atol=1e-6)
        assert got["label"].tolist() == alone["label"].tolist()


def test_cli_refuses_a_folder_without_models(tmp_path, capsys):
    from ember.cli import main

    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "holds no model" in capsys.readouterr().err


def test_packed_sentence_embeddings_equal_lone_requests(minilm):
    """MiniLM's embeddings of a packed batch (Note [Packed batches]) are each text's own."""
    from ember.serve.models import Prepared, TextModel

    model = TextModel(minilm)
    assert model.packed_program is not None
    texts = ["a gripping, funny film", "the plot drags", "x", "stunning visuals " * 9]
    texts += [f"review number {i} of a long week at the festival" for i in range(9)]
    requests = [Prepared({"text": [t]}, 1, "text") for t in texts]
    feeds, places = model._pack(model.tokenizer(texts)["input_ids"])
    assert feeds["input_ids"].shape[0] < len(texts) and len({p[0] for p in places}) > 1
    together = model.run_batch(requests)
    for request, got in zip(requests, together):
        alone = model.run_batch([request])[0]["embedding"]
        np.testing.assert_allclose(got["embedding"], alone, rtol=1e-5, atol=1e-6)


# --- Note [Float32 JSON] -----------------------------------------------------------------------
def _float32_samples():
    rng = np.random.default_rng(21)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 1e-4, 1e-5, 123.0, 12345678.0, 123456789.0]
    edges += [1e16, 9.999e15, 1.5e16, 16777216.0, 33554434.0, 9e21, 1e-13, 2.0**-20]
    values = np.concatenate(
        [
            np.array(edges, np.float32),
            rng.standard_normal(50_000).astype(np.float32) * np.float32(0.05),
            rng.standard_normal(20_000).astype(np.float32) * np.float32(1e4),
            bits[np.isfinite(bits) & ((np.abs(bits) > 1e-13) & (np.abs(bits) < 1e22))],
        ]
    )
    return values


def test_float32_json_round_trips_with_the_shortest_digits():
    """Every element reads back as the same float32, through a float64 (json, NumPy) and
    parsed straight to float32, with NumPy's shortest repr digits."""
    from ember.backend import numba_kernels
    from ember.serve.protocol import float32_json

    if not numba_kernels.available():
        pytest.skip("the float32 JSON writer is a numba kernel; without numba json writes floats")
    values = _float32_samples()
    flat = values[: len(values) // 7 * 7]
    text = float32_json(flat.reshape(-1, 7))
    via_float64 = np.array(json.loads(text), np.float64).astype(np.float32)
    np.testing.assert_array_equal(via_float64.view(np.uint32), flat.view(np.uint32))
    words = text[1:-1].decode().split(",")
    direct = np.array([np.float32(w) for w in words[:30_000]], np.float32)
    np.testing.assert_array_equal(direct.view(np.uint32), flat[:30_000].view(np.uint32))
    for x, word in zip(flat[:30_000], words):
        if 1e-4 <= abs(float(x)) < 1e7:  # where NumPy writes float32s positionally, as Python
            assert word == str(np.float32(x)), (x, word)
        digits = np.format_float_scientific(x, unique=True).split("e")[0]
        want = digits.lstrip("-").replace(".", "").rstrip("0") or "0"
        got = word.split("e")[0].lstrip("-").replace(".", "").strip("0") or "0"
        assert len(got) == len(want), (x, word, digits)
    assert float32_json(np.array([1.5, 2e-5, 3e17, -0.0], np.float32)) == (
        b"[1.5,2e-05,3e+17,-0.0]"
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e-30, 1e30])
def test_float32_json_leaves_what_it_cannot_write_to_json(value):
    from ember.serve.protocol import build_v2_response, float32_json

    array = np.array([[0.25, value]], np.float32)
    assert float32_json(array) is None
    body, _ = build_v2_response("m", "1", {"id": "x"}, {"y": array}, default_binary=False)
    data = json.loads(body)["outputs"][0]["data"]
    np.testing.assert_array_equal(np.array(data, np.float32), array.reshape(-1))


def test_v2_json_response_layout_and_fallback_without_numba():
    """The spliced float32 text makes the same JSON document as json.dumps of the lists."""
    from ember.backend import numba_kernels
    from ember.serve.protocol import build_v2_response

    rng = np.random.default_rng(3)
    outputs = {
        "embedding": rng.standard_normal((2, 5)).astype(np.float32),
        "label": np.array([b"fresh", b"rotten"], dtype=object),
        "ids": np.arange(4, dtype=np.int64).reshape(2, 2),
    }
    request = {"id": "r-1", "outputs": [{"name": "embedding"}, {"name": "label"}, {"name": "ids"}]}

    def parsed():
        body, headers = build_v2_response("minilm", "3", request, outputs, default_binary=False)
        assert headers == {"Content-Type": "application/json"}
        return json.loads(body)

    want = {
        "model_name": "minilm",
        "model_version": "3",
        "outputs": [
            {"name": "embedding", "datatype": "FP32", "shape": [2, 5]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["fresh", "rotten"]},
            {"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [0, 1, 2, 3]},
        ],
        "id": "r-1",
    }
    for numba_off in (False, True):
        if numba_off:
            with numba_kernels.disable_for_tests():
                got = parsed()
        else:
            got = parsed()
        floats = got["outputs"][0].pop("data")
        assert got == want
        np.testing.assert_array_equal(
            np.array(floats, np.float32), outputs["embedding"].reshape(-1)
        )


def _same_json(got, want, path="$"):
    """Two parsed JSON documents are equal, floats compared as the float32 they read back as
    (bit for bit); returns the number of floats compared."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), path
        return sum(_same_json(got[k], want[k], f"{path}.{k}") for k in want)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        return sum(_same_json(g, w, f"{path}[{i}]") for i, (g, w) in enumerate(zip(got, want)))
    if isinstance(want, float):
        assert isinstance(got, (float, int)), (path, got)
        assert np.float32(got).view(np.uint32) == np.float32(want).view(np.uint32), path
        return 1
    assert got == want and type(got) is type(want), (path, got, want)
    return 0


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_tf_predict_json_reads_back_bit_exact_and_equals_json_dumps(fmt):
    """TF Serving :predict bodies write float32 outputs with the shortest decimals (Note
    [Float32 JSON]): the same document as json.dumps of tolist(), every float reading back as
    the same float32, in the row and columnar layouts with one output and with several; and
    without numba, json.dumps' own bytes."""
    from ember.backend import numba_kernels
    from ember.serve.protocol import build_tf_predict

    rng = np.random.default_rng(5)
    samples = _float32_samples()
    several = {
        "embedding": rng.choice(samples, (3, 2, 5)).astype(np.float32),
        "score": rng.choice(samples, 3).astype(np.float32),  # a number per instance
        "column": rng.choice(samples, (3, 1)).astype(np.float32),
        "label": np.array([b"fresh", b"rotten", b"ok"], dtype=object),
        "ids": np.arange(6, dtype=np.int64).reshape(3, 2),
        "odd": np.array([0.5, np.nan, 1.0], np.float32),  # not the writer's: json.dumps
    }
    cases = [{"y": samples[:4200].reshape(2, 3, 700)}, {"y": samples[4200:4203]}, several]

    def reference(outputs):  # what build_tf_predict gave before: json.dumps of tolist()
        as_lists = {
            k: [x.decode() for x in v] if v.dtype == object else v.tolist()
            for k, v in outputs.items()
        }
        names = list(as_lists)
        if fmt == "row":
            if len(names) == 1:
                return {"predictions": as_lists[names[0]]}
            rows = range(len(outputs[names[0]]))
            return {"predictions": [{k: as_lists[k][i] for k in names} for i in rows]}
        return {"outputs": as_lists[names[0]] if len(names) == 1 else as_lists}

    for outputs in cases:
        want = reference(outputs)
        body = build_tf_predict(outputs, fmt)
        got = json.loads(body, parse_constant=lambda c: float(c))
        floats = sum(v.size for v in outputs.values() if v.dtype == np.float32)
        assert _same_json(got, json.loads(json.dumps(want))) == floats
        if numba_kernels.available() and outputs is cases[0]:
            assert len(body) < 0.8 * len(json.dumps(want, separators=(",", ":")))  # shorter
        with numba_kernels.disable_for_tests():
            assert (
                build_tf_predict(outputs, fmt) == json.dumps(want, separators=(",", ":")).encode()
            )


# --- Note [Batching under load] ----------------------------------------------------------------
class _GatedModel:
    """Records each batch's request names; a batch holding a gated name waits for its gate."""

    batch_dim = True

    def __init__(self, gated):
        self.gates = {name: threading.Event() for name in gated}
        self.batches = []
        self.lock = threading.Lock()

    def run_batch(self, batch):
        names = [p.feeds["name"] for p in batch]
        with self.lock:
            self.batches.append(names)
        for name in names:
            if name in self.gates:
                assert self.gates[name].wait(30)
        return [{"name": p.feeds["name"]} for p in batch]


@pytest.mark.parametrize("instances", [1, 2])
def test_a_worker_freed_under_load_waits_for_requests_to_join(instances):
    """A worker that frees up while another instance is busy waits max_queue_delay from then
    (D and E run together although D waited longer than the delay); with no other instance
    busy, a request that waited that long runs at once (D alone)."""
    from ember.serve import Batcher
    from ember.serve.models import Prepared

    def request(name, rows=1):  # 8 rows: a full batch, run at once
        return Prepared({"name": name}, rows, "k")

    delay = 1.0
    model = _GatedModel(["A", "C"] if instances == 2 else ["A"])
    batcher = Batcher(model, "gated", max_batch_size=8, max_queue_delay=delay, instances=instances)
    try:
        futures = [batcher.submit(request("A", 8))]
        if instances == 2:
            while len(model.batches) < 1:
                time.sleep(0.01)
            futures.append(batcher.submit(request("C", 8)))  # the second worker runs C
            while len(model.batches) < 2:
                time.sleep(0.01)
        futures.append(batcher.submit(request("D")))
        time.sleep(delay + 0.3)  # D has waited longer than the delay
        model.gates["C" if instances == 2 else "A"].set()
        time.sleep(0.2)
        futures.append(batcher.submit(request("E")))
        while len(model.batches) < 3:  # A stays busy until D's batch has run
            time.sleep(0.01)
        for gate in model.gates.values():
            gate.set()
        assert [f.result(30)["name"] for f in futures][-2:] == ["D", "E"]
    finally:
        batcher.close(10)
    want = [["A"], ["C"], ["D", "E"]] if instances == 2 else [["A"], ["D"], ["E"]]
    assert model.batches == want
