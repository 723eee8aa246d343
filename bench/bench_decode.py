"""Decoder-LM generation: ember against HuggingFace transformers on PyTorch, one process, same
random weights, same thread counts (1 and 2).

The model is a random Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3
key/value heads, intermediate 1536, vocab 49152, tied embeddings), built by transformers with
a fixed seed and saved to a temporary folder that ember loads. Workloads (greedy, no EOS):
time to first token (prompt 32 tokens, max_new_tokens=1), and whole generate() calls of
prompt 32 + N new tokens at batch 1 and batch 8; decode tokens/s = batch * (N - 1) /
(time(N) - time(1)). The real SmolLM2 checkpoint (GGUF) has its own benchmark.

Run: PYTHONPATH=. python bench/bench_decode.py [--quick] [--new-tokens N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.harness import compare, set_threads  # noqa: E402

SMOLLM2_135M_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=None,  # no early stop: every run makes N tokens
    pad_token_id=None,
)


def build(folder: str):
    import torch
    import transformers

    import ember.transformers as et

    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M_SHAPE))
    reference.save_pretrained(folder)
    reference.eval()
    return et.AutoModelForCausalLM.from_pretrained(folder), reference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="pyinstrument of ember's run")
    args = parser.parse_args()
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    repeats = 3 if args.quick else 5

    import torch

    import ember

    with tempfile.TemporaryDirectory() as folder:
        model, reference = build(folder)
        rng = np.random.default_rng(0)
        prompts = {b: rng.integers(3, 49152, (b, 32)) for b in (1, 8)}

        def ember_run(batch, n):
            ids = ember.from_numpy(prompts[batch])
            return lambda: model.generate(ids, max_new_tokens=n, min_new_tokens=n)

        def torch_run(batch, n):
            ids = torch.from_numpy(prompts[batch])

            def run():
                with torch.no_grad():
                    return reference.generate(
                        ids, max_new_tokens=n, min_new_tokens=n, do_sample=False
                    )

            return run

        same = np.array_equal(ember_run(1, 8)().numpy(), torch_run(1, 8)().numpy())
        print(f"greedy ids equal to HF's over 8 tokens: {same}")
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
            ember_run(1, new_tokens)()
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False))
        for threads in (1, 2):
            set_threads(threads)
            print(f"-- {threads} thread(s); prompt 32, greedy; ratio = ember time / torch time")
            first = compare(
                f"t{threads} time to first token (b1)",
                ember_run(1, 1),
                torch_run(1, 1),
                repeats=repeats,
                warmup=1,
            )
            for batch in (1, 8) if not args.quick else (1,):
                if batch == 8:
                    first = compare(
                        f"t{threads} time to first token (b8)",
                        ember_run(8, 1),
                        torch_run(8, 1),
                        repeats=repeats,
                        warmup=1,
                    )
                whole = compare(
                    f"t{threads} generate {new_tokens} tokens (b{batch})",
                    ember_run(batch, new_tokens),
                    torch_run(batch, new_tokens),
                    repeats=repeats,
                    warmup=1,
                )
                rates = {
                    side: batch * (new_tokens - 1) / (whole[f"{side}_s"] - first[f"{side}_s"])
                    for side in ("ember", "torch")
                }
                speed = rates["ember"] / rates["torch"]
                print(
                    f"   decode b{batch}: ember {rates['ember']:.1f} tok/s, torch "
                    f"{rates['torch']:.1f} tok/s (ember/torch speed {speed:.2f})"
                )


if __name__ == "__main__":
    main()
