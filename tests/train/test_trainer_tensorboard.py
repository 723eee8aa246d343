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


@pytest.mark.parametrize("how", ["arguments", "callback"])
def test_weight_histograms_read_back(tmp_path, how):
    """logging_weight_histograms (or TensorBoardCallback(histograms=True)): one histogram per
    trainable weight at each training log step, of the weights as they were then."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    from ember.train import TensorBoardCallback, TrainerCallback

    logs = str(tmp_path / "logs")
    seen = {}

    class Snapshot(TrainerCallback):  # what the weights were at each log step
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if "loss" in (logs or {}):
                seen[state.global_step] = {
                    n: p.detach().numpy().copy() for n, p in model.named_parameters()
                }

    args = TrainingArguments(
        str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        logging_steps=2,
        report_to="tensorboard" if how == "arguments" else "none",
        logging_weight_histograms=how == "arguments",
        logging_dir=logs,
        disable_tqdm=True,
        save_strategy="no",
        learning_rate=1e-2,
    )
    callbacks = [Snapshot()]
    if how == "callback":
        callbacks.append(TensorBoardCallback(histograms=True))
    model = make_model()
    trainer = Trainer(model, args, train_dataset=classification_data(40), callbacks=callbacks)
    trainer.train()
    reader = event_accumulator.EventAccumulator(logs, size_guidance={"histograms": 0})
    reader.Reload()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert set(reader.Tags()["histograms"]) == {f"weights/{n}" for n in names}
    for name in names:
        events = reader.Histograms(f"weights/{name}")
        assert [e.step for e in events] == sorted(seen) == [2, 4]
        for event in events:
            weights = seen[event.step][name]
            value = event.histogram_value
            assert value.num == weights.size
            total = weights.sum(dtype=np.float64)
            np.testing.assert_allclose(value.sum, total, rtol=1e-5, atol=1e-6)
            extremes = [weights.min(), weights.max()]
            np.testing.assert_allclose([value.min, value.max], extremes, rtol=1e-6)
