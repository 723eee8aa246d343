"""Trainer runs for the distributed tests: plain single-process Trainer code, which under
`mpiexec -n 2` trains data-parallel with no change (Note [Distributed Trainer]).

`python trainer_cases.py OUT PER_DEVICE` trains, evaluates, then resumes a second Trainer from
the first one's step-2 checkpoint, and writes OUT/trainer.rank{r}.npz / .json.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ember  # noqa: E402
from ember.train import Trainer, TrainingArguments, strip_runtime  # noqa: E402
from tests.train.trainer_helpers import Classifier, accuracy, classification_data  # noqa: E402


def arguments(out: str, per_device: int, **overrides) -> TrainingArguments:
    base = {
        "per_device_train_batch_size": per_device,
        "per_device_eval_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "num_train_epochs": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "eval_strategy": "no",
        "report_to": "tensorboard",
        "disable_tqdm": True,
        "seed": 7,
    }
    base.update(overrides)
    return TrainingArguments(out, **base)


def model():
    ember.manual_seed(7)
    return Classifier(dropout=0.0, dtype=ember.float64)


def train_set():
    return classification_data(n=48, dtype=np.float64, seed=1)


def eval_set():
    return classification_data(n=21, dtype=np.float64, seed=2)  # 21: shards of 11 and 10


def weights(m) -> dict:
    return {n: p.detach().numpy().copy() for n, p in m.named_parameters()}


def run(out: str, per_device: int) -> tuple[dict, dict]:
    """Train (saving checkpoints), evaluate, then resume from checkpoint-2 in a fresh run."""
    first = Trainer(
        model(),
        arguments(os.path.join(out, "run"), per_device),
        train_dataset=train_set(),
        eval_dataset=eval_set(),
        compute_metrics=accuracy,
    )
    first.train()
    metrics = first.evaluate()
    prediction = first.predict(eval_set())
    resumed = Trainer(
        model(),
        arguments(os.path.join(out, "resumed"), per_device),
        train_dataset=train_set(),
        eval_dataset=eval_set(),
        compute_metrics=accuracy,
    )
    resumed.train(resume_from_checkpoint=os.path.join(out, "run", "checkpoint-2"))
    arrays = {f"final.{k}": v for k, v in weights(first.model).items()}
    arrays.update({f"resumed.{k}": v for k, v in weights(resumed.model).items()})
    arrays["predictions"] = prediction.predictions
    arrays["label_ids"] = prediction.label_ids
    info = {
        "eval": {k: v for k, v in metrics.items() if "runtime" not in k and "per_second" not in k},
        "log_history": strip_runtime(first.state.log_history),
        "resumed_log_history": strip_runtime(resumed.state.log_history),
        "world_size": first.world_size,
        "files": sorted(
            os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files
        ),
    }
    return arrays, info


def main(out: str, per_device: int) -> None:
    arrays, info = run(out, per_device)
    rank = int(os.environ.get("PMI_RANK", "0"))
    np.savez(os.path.join(out, f"trainer.rank{rank}.npz"), **arrays)
    with open(os.path.join(out, f"trainer.rank{rank}.json"), "w") as f:
        json.dump(info, f, default=float)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
