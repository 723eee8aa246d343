"""`make demo` step: serve the bundled MiniLM with `ember serve` for a few seconds, make one
KServe V2 round trip with the real Triton client (tritonclient) and one TF Serving-style
`:predict` call with urllib, then stop the server with SIGTERM (a graceful shutdown).

    python examples/serve_minilm.py
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "seed"))

from _rotten_tomatoes import minilm_folder  # noqa: E402

SENTENCES = ["A cat sat on the mat.", "A kitten rested on the rug.", "Stock prices fell sharply."]


def main():
    import tritonclient.http as httpclient

    folder = minilm_folder()
    root = os.path.dirname(HERE)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "ember.cli", "serve", folder, "--model-name", "minilm"]
    # one BLAS thread: small batches of short texts gain little from more, and on a machine
    # shared with other busy processes more threads wait for cores
    command += ["--port", "0", "--no-access-log", "--threads", "1"]
    print("$ ember serve <MiniLM folder> --model-name minilm --port 0 --threads 1")
    start = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        print(line.rstrip())
        match = re.search(r"at http://(127\.0\.0\.1:\d+)", line)
        if match is None:
            raise SystemExit("the server did not start")
        address = match.group(1)
        print(f"ready after {time.perf_counter() - start:.1f} s (load, export, warm-up)")

        client = httpclient.InferenceServerClient(address)
        print(f"\ntritonclient: live={client.is_server_live()} ready={client.is_server_ready()}")
        meta = client.get_model_metadata("minilm")
        print(f"model metadata: inputs {meta['inputs']} outputs {meta['outputs']}")
        text = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
        text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
        t = time.perf_counter()
        result = client.infer("minilm", [text])  # binary tensors both ways (the default)
        ms = (time.perf_counter() - t) * 1e3
        emb = result.as_numpy("embedding")
        print(f"KServe V2 infer: embedding {emb.dtype}{list(emb.shape)} in {ms:.1f} ms")
        sims = emb @ emb.T
        for i in (1, 2):
            print(f"  cosine({SENTENCES[0]!r}, {SENTENCES[i]!r}) = {sims[0, i]:.3f}")

        body = json.dumps({"instances": SENTENCES[:2]}).encode()
        request = urllib.request.Request(f"http://{address}/v1/models/minilm:predict", body)
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        ms = (time.perf_counter() - t) * 1e3
        vec = np.array(predictions)
        print(
            f"\nTF Serving :predict: {len(predictions)} x {len(predictions[0])} in {ms:.1f} ms; "
            f"first values {np.round(vec[0, :4], 4).tolist()}; "
            f"max |KServe - TF Serving| = {np.abs(vec - emb[:2]).max():.2e}"
        )
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        count = re.search(r'ember_batch_size_count\{model="minilm:1"\} (\S+)', metrics)
        print(f"/metrics: {count.group(1) if count else 0} model runs so far")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\nSIGTERM: the server stopped (exit code {server.returncode})")


if __name__ == "__main__":
    main()
