"""report_to="tensorboard": TensorBoard's own reader sees the logged steps and values."""

from __future__ import annotations

import numpy as np
import pytest

from ember.train import Trainer, TrainingArguments
from tests.train.trainer_helpers import accuracy, classification_data, make_model


def test_tensorboard_scalars_read_back(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    logs = str(tmp_path / "logs")
    args = TrainingArguments(
        str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        logging_steps=2,
        eval_strategy="epoch",
        report_to="tensorboard",
        logging_dir=logs,
        disable_tqdm=True,
        save_strategy="no",
        learning_rate=1e-2,
    )
    data = classification_data(40)
    trainer = Trainer(
        make_model(), args, train_dataset=data, eval_dataset=data[:16], compute_metrics=accuracy
    )
    trainer.train()
    reader = event_accumulator.EventAccumulator(logs)
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    assert {
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/epoch",
        "eval/loss",
        "eval/accuracy",
        "train/train_loss",
    } <= tags
    history = trainer.state.log_history
    for tag, key, source in (
        ("train/loss", "loss", "loss"),
        ("train/learning_rate", "learning_rate", "loss"),
        ("train/grad_norm", "grad_norm", "loss"),
        ("eval/accuracy", "eval_accuracy", "eval_accuracy"),
        ("eval/loss", "eval_loss", "eval_loss"),
    ):
        expected = [(h["step"], h[key]) for h in history if source in h]
        events = reader.Scalars(tag)
        assert [e.step for e in events] == [s for s, _ in expected], tag
        np.testing.assert_allclose(
            [e.value for e in events], [v for _, v in expected], rtol=1e-6, err_msg=tag
        )
    assert [e.step for e in reader.Scalars("train/loss")] == [2, 4, 6, 8, 10]
    assert "args" in reader.Tags()["tensors"]
