"""ONNX export and import on the real MiniLM (all-MiniLM-L6-v2) and Rotten Tomatoes reviews.

1. `ember.onnx.export` writes MiniLM to an ONNX file with dynamic batch and sequence axes; the
   export is checked by onnxruntime at two new shapes when it is installed (`pip install
   onnxruntime`), and without it the check is off and says so.
2. `ember.onnx.load` reads the file back and runs it in ember, eagerly and compiled, on a
   batch of another size: sentence embeddings of review snippets, compared with ember eager.

Run: PYTHONPATH=. python examples/onnx_export.py
"""

import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
sys.path.insert(0, os.path.join(here, "seed"))

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.transformers import AutoTokenizer, BertModel  # noqa: E402
from ember.transformers.sentence_embeddings import mean_pooling  # noqa: E402

from _rotten_tomatoes import load_reviews, minilm_folder  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ember-onnx-") as scratch:
        run(os.path.join(scratch, "minilm.onnx"))


def run(path: str) -> None:
    folder = minilm_folder()
    model = BertModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    train, _ = load_reviews()
    texts = [text for text, _ in train[:12]]
    example = tokenizer(texts[:2], padding=True, return_tensors="np")
    feed = {k: ember.from_numpy(example[k]) for k in ("input_ids", "attention_mask")}
    axes = {k: {0: "batch", 1: "sequence"} for k in feed}
    check = importlib.util.find_spec("onnxruntime") is not None
    start = time.perf_counter()
    report = ember.onnx.export(model, (feed,), path, dynamic_axes=axes, check=check, atol=1e-4)
    print(
        f"exported MiniLM: {report.node_count} ONNX nodes, "
        f"{os.path.getsize(path) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s"
    )
    if report.checked:
        shapes = [s["input_ids"] for s in report.checked_shapes]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.max_abs_diff.items())
        print(f"  checked by onnxruntime at input shapes {shapes}: max |diff| {diffs}")
    else:
        print("  onnxruntime is not installed: the export was not checked (check=False)")

    program = ember.onnx.load(path)
    print(f"imported: {program}")
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    print(f"  running a batch of shape {inputs['input_ids'].shape} (the export saw (2, ...))")
    hidden, _ = program(**inputs)
    compiled_hidden, _ = program.compile()(*[ember.from_numpy(v) for v in inputs.values()])
    with ember.no_grad():
        reference = model(**{k: ember.from_numpy(v) for k, v in inputs.items()})
    ref = reference.last_hidden_state.numpy()
    print(
        f"  max |diff| vs ember eager: imported {np.abs(hidden.numpy() - ref).max():.1e}, "
        f"imported+compiled {np.abs(compiled_hidden.numpy() - ref).max():.1e}"
    )
    mask = ember.from_numpy(inputs["attention_mask"])
    embeddings = mean_pooling(hidden, mask).numpy()
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -1)
    i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
    print(f"  most similar reviews (cosine {similarity[i, j]:.2f}):")
    print(f"    {texts[i][:90]!r}")
    print(f"    {texts[j][:90]!r}")


if __name__ == "__main__":
    main()
