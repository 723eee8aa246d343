"""`make demo` step: `ember.compile` on a whole Transformer. Embeds Rotten Tomatoes reviews with
the bundled MiniLM, eagerly and as compiled graphs, in batches padded to their longest review
(so every batch has another length): the compiled model pads each batch up to its sequence
bucket, so a handful of graphs serve all lengths. Prints the traces, the largest difference
from eager, the time of both, and a compiled `pipeline("feature-extraction", compile=True)`.

    python examples/compile_minilm.py [--reviews 256] [--batch 16]
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "seed"))

from _rotten_tomatoes import load_reviews, minilm_folder  # noqa: E402

import ember  # noqa: E402
from ember.text import AutoTokenizer  # noqa: E402
from ember.transformers import BertModel, pipeline  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    ember.set_num_threads(1)
    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder).eval()
    compiled = ember.compile(model)
    _, test = load_reviews()
    texts = [text for text, _ in test[: args.reviews]]
    batches = []
    for start in range(0, len(texts), args.batch):
        enc = tokenizer(
            texts[start : start + args.batch],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="np",
        )
        batches.append({k: ember.from_numpy(np.asarray(enc[k])) for k in enc})
    lengths = sorted({int(b["input_ids"].shape[1]) for b in batches})
    print(
        f"{len(texts)} reviews in {len(batches)} batches of up to {args.batch}; lengths {lengths}"
    )

    def embed(fn):
        out = []
        with ember.no_grad():
            for b in batches:
                hidden = fn(**b).last_hidden_state.numpy()
                mask = b["attention_mask"].numpy()[..., None]
                out.append((hidden * mask).sum(1) / mask.sum(1))
        return np.concatenate(out)

    start = time.perf_counter()
    first = embed(compiled)
    print(
        f"compiled, first pass (traces and kernel builds included): "
        f"{time.perf_counter() - start:.1f} s, {compiled.trace_count} graphs"
    )
    for reason in compiled.retrace_reasons:
        print(f"  retraced: {reason}")
    timings = {}
    for name, fn in (("eager", model), ("compiled", compiled)):
        start = time.perf_counter()
        result = embed(fn)
        timings[name] = time.perf_counter() - start
        if name == "eager":
            eager = result
    error = float(np.abs(first - eager).max())
    print(
        f"second pass: eager {timings['eager']:.2f} s, compiled {timings['compiled']:.2f} s "
        f"({timings['eager'] / timings['compiled']:.2f}x); max |compiled - eager| over the "
        f"sentence embeddings {error:.1e}"
    )
    assert error < 1e-4, error
    extractor = pipeline("feature-extraction", model=model, tokenizer=tokenizer, compile=True)
    vectors = extractor(["A gripping, funny film.", "Dull."])
    print(
        f"pipeline('feature-extraction', compile=True): {len(vectors)} outputs of "
        f"{len(vectors[0][0])} tokens x {len(vectors[0][0][0])} values, "
        f"{extractor.forward_fn.trace_count} graph"
    )


if __name__ == "__main__":
    main()
