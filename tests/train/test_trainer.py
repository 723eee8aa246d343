"""Trainer: accumulation, resumption, callbacks, evaluation, prediction, saving, compile."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import ember
from ember.train import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    get_last_checkpoint,
    strip_runtime,
)
from tests.train.trainer_helpers import (
    Classifier,
    TokenTagger,
    accuracy,
    classification_data,
    make_model,
    weights,
)


def _read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def _args(tmp_path, **kwargs):
    base = {
        "disable_tqdm": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1000,
        "learning_rate": 1e-2,
    }
    base.update(kwargs)
    return TrainingArguments(str(tmp_path / "out"), **base)


class GradientRecorder(TrainerCallback):
    """Copies of every gradient just before each optimizer step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})


def _first_step_grads(tmp_path, data, model_fn, **kwargs):
    recorder = GradientRecorder()
    trainer = Trainer(
        model_fn(),
        _args(tmp_path, max_grad_norm=0.0, **kwargs),
        train_dataset=data,
        callbacks=[recorder],
    )
    trainer.train()
    return recorder.grads


def test_accumulating_4_batches_of_4_equals_one_batch_of_16(tmp_path):
    data = classification_data(16, dtype=np.float64)

    def model_fn():
        return make_model(dropout=0.0, dtype=ember.float64)

    accumulated = _first_step_grads(
        tmp_path,
        data,
        model_fn,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        max_steps=1,
    )
    full = _first_step_grads(tmp_path, data, model_fn, per_device_train_batch_size=16, max_steps=1)
    assert len(accumulated) == len(full) == 1
    worst = max(np.abs(accumulated[0][n] - full[0][n]).max() for n in full[0])
    print(f"accumulation vs full batch: max abs gradient difference {worst:.3e}")
    assert worst < 1e-10


def test_partial_last_window_is_weighted_by_its_items(tmp_path):
    # 20 examples, batch 4, accumulation 3: windows of 12 and 8 examples per epoch
    data = classification_data(20, dtype=np.float64)

    def model_fn():
        return make_model(dropout=0.0, dtype=ember.float64)

    grads = _first_step_grads(
        tmp_path,
        data,
        model_fn,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=3,
        max_steps=2,
        learning_rate=0.0,
    )
    # the same epoch order, drawn from the same data generator
    gen = ember.Generator().manual_seed(42)
    order = np.asarray(list(ember.data.RandomSampler(data, generator=gen)))
    model = model_fn()
    last = [data[i] for i in order[12:]]
    batch = default_data_collator(last)
    model(**batch)["loss"].backward()
    worst = max(np.abs(grads[1][n] - p.grad.numpy()).max() for n, p in model.named_parameters())
    print(f"partial window vs its full batch: max abs gradient difference {worst:.3e}")
    assert worst < 1e-10


def test_accumulation_counts_label_items_not_rows(tmp_path):
    # token labels with different numbers of -100 per micro-batch: still the window's mean
    rng = np.random.default_rng(1)
    data = []
    for i in range(8):
        labels = rng.integers(0, 3, size=5)
        labels[: i % 4] = -100
        data.append({"x": rng.normal(size=(5, 4)), "labels": labels})

    def model_fn():
        ember.manual_seed(0)
        return TokenTagger(dtype=ember.float64)

    accumulated = _first_step_grads(
        tmp_path,
        data,
        model_fn,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        max_steps=1,
    )
    full = _first_step_grads(tmp_path, data, model_fn, per_device_train_batch_size=8, max_steps=1)
    worst = max(np.abs(accumulated[0][n] - full[0][n]).max() for n in full[0])
    print(f"token-level accumulation: max abs gradient difference {worst:.3e}")
    assert worst < 1e-10


def _resume_args(out, **kwargs):
    base = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 3,
        "num_train_epochs": 3,
        "logging_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "save_strategy": "steps",
        "save_steps": 1,
        "learning_rate": 5e-3,
        "weight_decay": 0.01,
        "warmup_steps": 2,
        "disable_tqdm": True,
        "seed": 7,
    }
    base.update(kwargs)
    return TrainingArguments(str(out), **base)


def test_resume_is_bit_identical_with_shuffling_and_dropout(tmp_path):
    data = classification_data(30)  # 8 batches of 4 -> windows 3, 3, 2 -> 3 steps per epoch
    full = Trainer(
        make_model(dropout=0.3),
        _resume_args(tmp_path / "full"),
        train_dataset=data,
        eval_dataset=data[:10],
        compute_metrics=accuracy,
    )
    full.train()
    expected = weights(full.model)
    expected_log = strip_runtime(full.state.log_history)
    assert full.state.global_step == 9
    for step in (2, 3, 7):  # mid-epoch, an epoch's end, mid-epoch after an evaluation
        out = tmp_path / f"resumed-{step}"
        os.makedirs(out)
        shutil.copytree(tmp_path / "full" / f"checkpoint-{step}", out / f"checkpoint-{step}")
        resumed = Trainer(
            make_model(seed=123, dropout=0.3),
            _resume_args(out),
            train_dataset=data,
            eval_dataset=data[:10],
            compute_metrics=accuracy,
        )
        resumed.train(resume_from_checkpoint=True)
        got = weights(resumed.model)
        for name in expected:
            assert np.array_equal(got[name], expected[name]), (step, name)
        assert strip_runtime(resumed.state.log_history) == expected_log, step


def test_resume_needs_a_complete_checkpoint(tmp_path):
    data = classification_data(8)
    trainer = Trainer(make_model(), _args(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)
    os.makedirs(tmp_path / "out" / "checkpoint-5")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5"))


class Script(TrainerCallback):
    """Scripted evaluation scores, one per evaluation."""

    def __init__(self, scores):
        self.scores = list(scores)


def test_rotation_keeps_newest_and_best(tmp_path):
    scores = iter([0.9, 0.1, 0.5, 0.6, 0.7, 0.8])

    def metrics(prediction):
        return {"score": next(scores)}

    args = _args(
        tmp_path,
        per_device_train_batch_size=4,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=False,
    )
    data = classification_data(24)
    trainer = Trainer(
        make_model(), args, train_dataset=data, eval_dataset=data[:8], compute_metrics=metrics
    )
    trainer.train()
    kept = sorted(os.listdir(tmp_path / "out"))
    assert kept == ["checkpoint-2", "checkpoint-5", "checkpoint-6"]
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    assert trainer.state.best_metric == 0.1
    # the model at the end is the best checkpoint's
    best = ember.io.load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    for name, value in weights(trainer.model).items():
        assert np.array_equal(value, best[name].numpy())


class EventLog(TrainerCallback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")
            return lambda args, state, control, **kw: events.append((name, state.global_step))
        return object.__getattribute__(self, name)


def test_callback_events_in_order(tmp_path):
    log = EventLog()
    data = classification_data(8)
    args = _args(
        tmp_path,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        logging_steps=1,
        eval_strategy="epoch",
    )
    Trainer(make_model(), args, train_dataset=data, eval_dataset=data, callbacks=[log]).train()
    names = [e for e, _ in log.events]
    assert names[0] == "on_init_end" and names[1] == "on_train_begin"
    assert names[2] == "on_epoch_begin" and names[-1] == "on_train_end"
    first_step = names[names.index("on_step_begin") : names.index("on_step_end") + 1]
    assert first_step == [
        "on_step_begin",
        "on_substep_end",
        "on_pre_optimizer_step",
        "on_optimizer_step",
        "on_step_end",
    ]
    assert names.count("on_step_end") == 2 and names.count("on_log") == 4  # 2 + eval + end
    assert names.index("on_evaluate") > names.index("on_epoch_end")


def test_a_callback_can_stop_training(tmp_path):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 3

    data = classification_data(40)
    trainer = Trainer(
        make_model(),
        _args(tmp_path, per_device_train_batch_size=4),
        train_dataset=data,
        callbacks=[StopAt()],
    )
    assert trainer.train().global_step == 3


def test_early_stopping(tmp_path):
    args = _args(
        tmp_path,
        per_device_train_batch_size=4,
        num_train_epochs=10,
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="score",
        greater_is_better=True,
    )
    scores = iter([0.5, 0.6, 0.6, 0.59, 0.61, 0.9])
    data = classification_data(40)
    trainer = Trainer(
        make_model(),
        args,
        train_dataset=data,
        eval_dataset=data[:8],
        compute_metrics=lambda p: {"score": next(scores)},
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    assert trainer.train().global_step == 4  # 0.6 twice not beaten: stop after evaluation 4
    with pytest.raises(ValueError, match="metric_for_best_model"):
        Trainer(
            make_model(), _args(tmp_path), train_dataset=data, callbacks=[EarlyStoppingCallback()]
        ).train()


def test_evaluate_predict_and_logs(tmp_path):
    data = classification_data(40, extra_field=True)
    args = _args(
        tmp_path,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        num_train_epochs=2,
        logging_steps=2,
        eval_strategy="epoch",
        learning_rate=3e-2,
    )
    trainer = Trainer(
        make_model(), args, train_dataset=data, eval_dataset=data, compute_metrics=accuracy
    )
    before = trainer.evaluate()
    result = trainer.train()
    after = trainer.evaluate()
    assert set(after) >= {"eval_loss", "eval_accuracy", "eval_runtime", "epoch"}
    assert after["eval_loss"] < before["eval_loss"]
    assert result.global_step == 10 and np.isfinite(result.training_loss)
    history = trainer.state.log_history
    losses = [h for h in history if "loss" in h]
    assert [h["step"] for h in losses] == [2, 4, 6, 8, 10]
    assert all({"grad_norm", "learning_rate", "epoch"} <= set(h) for h in losses)
    assert history[-2]["step"] == 10 and "train_loss" in history[-2]
    prediction = trainer.predict(data[:10])
    assert prediction.predictions.shape == (10, 3)
    assert np.array_equal(prediction.label_ids, [d["label"] for d in data[:10]])
    assert set(prediction.metrics) >= {"test_loss", "test_accuracy"}


def test_linear_schedule_reaches_zero_and_log_learning_rates(tmp_path):
    args = _args(
        tmp_path,
        per_device_train_batch_size=4,
        max_steps=5,
        logging_steps=1,
        warmup_steps=2,
        learning_rate=1e-2,
    )
    trainer = Trainer(make_model(), args, train_dataset=classification_data(40))
    trainer.train()
    rates = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    np.testing.assert_allclose(rates, [5e-3, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3, 0.0], atol=1e-15)


def test_weight_decay_skips_biases_and_layer_norm(tmp_path):
    trainer = Trainer(
        make_model(), _args(tmp_path, weight_decay=0.1), train_dataset=classification_data(8)
    )
    assert trainer.get_decay_parameter_names(trainer.model) == ["dense.weight", "classifier.weight"]
    optimizer = trainer.create_optimizer()
    decays = [(g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    assert decays == [(0.1, 2), (0.0, 4)]


def test_max_grad_norm_clips(tmp_path):
    recorder = GradientRecorder()

    class After(TrainerCallback):
        def __init__(self):
            self.norms = []

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            total = sum(
                float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in model.parameters()
            )
            self.norms.append(total**0.5)

    after = After()
    args = _args(
        tmp_path, per_device_train_batch_size=8, max_steps=3, max_grad_norm=0.05, logging_steps=1
    )
    trainer = Trainer(
        make_model(), args, train_dataset=classification_data(40), callbacks=[recorder, after]
    )
    trainer.train()
    logged = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    assert all(n > 0.05 for n in logged)  # the logged norm is the one before clipping
    assert all(abs(n - 0.05) < 1e-3 for n in after.norms)


def test_remove_unused_columns_and_missing_loss(tmp_path):
    data = classification_data(8, extra_field=True)
    trainer = Trainer(make_model(), _args(tmp_path, max_steps=1), train_dataset=data)
    trainer.train()
    loose = Trainer(
        make_model(), _args(tmp_path, max_steps=1, remove_unused_columns=False), train_dataset=data
    )
    with pytest.raises(TypeError):
        loose.train()  # forward() does not take "index"
    unlabeled = [{"x": d["x"]} for d in data]
    with pytest.raises(ValueError, match="returned no loss"):
        Trainer(make_model(), _args(tmp_path, max_steps=1), train_dataset=unlabeled).train()


def test_trainer_argument_errors(tmp_path):
    data = classification_data(8)
    with pytest.raises(ValueError, match="no eval_dataset"):
        Trainer(make_model(), _args(tmp_path, eval_strategy="epoch"), train_dataset=data)
    with pytest.raises(ValueError, match="make no batch"):
        Trainer(
            make_model(),
            _args(tmp_path, per_device_train_batch_size=16, dataloader_drop_last=True),
            train_dataset=data,
        ).train()
    with pytest.raises(TypeError, match="indexable"):
        Trainer(make_model(), _args(tmp_path), train_dataset=iter(data)).train()


def test_save_model_writes_safetensors_and_config(tmp_path):
    model = make_model()
    model.config = {"hidden": 12, "n_classes": 3}
    trainer = Trainer(model, _args(tmp_path), train_dataset=classification_data(8))
    trainer.save_model(str(tmp_path / "final"))
    names = set(os.listdir(tmp_path / "final"))
    assert {"model.safetensors", "config.json", "training_args.json"} <= names
    assert json.loads((tmp_path / "final" / "config.json").read_text()) == model.config
    loaded = ember.io.load_file(str(tmp_path / "final" / "model.safetensors"))
    assert set(loaded) == set(model.state_dict())


def test_checkpoint_contents_and_trainer_state(tmp_path):
    args = _args(
        tmp_path,
        per_device_train_batch_size=4,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
    )
    Trainer(make_model(), args, train_dataset=classification_data(40)).train()
    last = get_last_checkpoint(str(tmp_path / "out"))
    assert last.endswith("checkpoint-4")
    names = set(os.listdir(last))
    assert names >= {
        "model.safetensors",
        "optimizer.safetensors",
        "scheduler.safetensors",
        "rng_state.json",
        "training_position.json",
        "trainer_state.json",
        "checkpoint_complete.json",
    }
    state = _read_json(last, "trainer_state.json")
    assert state["global_step"] == 4 and len(state["log_history"]) == 4
    marker = _read_json(last, "checkpoint_complete.json")
    assert marker["step"] == 4 and "model.safetensors" in marker["files"]


def test_compiled_training_step_matches_eager(tmp_path):
    data = classification_data(32)

    def run(compiled):
        args = _args(
            tmp_path,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            num_train_epochs=2,
            torch_compile=compiled,
            logging_steps=1,
        )
        trainer = Trainer(make_model(dropout=0.0), args, train_dataset=data)
        trainer.train()
        return trainer

    eager, compiled = run(False), run(True)
    assert compiled._compiled_step is not None and compiled._compiled_step.trace_count >= 1
    worst = max(
        np.abs(weights(eager.model)[n] - weights(compiled.model)[n]).max()
        for n in weights(eager.model)
    )
    print(f"compiled vs eager training: max abs weight difference {worst:.3e}")
    assert worst < 1e-5


def test_lists_and_ember_datasets_of_dicts(tmp_path):
    rows = classification_data(12)

    class Rows(ember.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    for dataset in (rows, Rows(), tuple(rows)):
        trainer = Trainer(
            make_model(),
            _args(tmp_path, max_steps=2, per_device_train_batch_size=4),
            train_dataset=dataset,
        )
        assert trainer.train().global_step == 2


def test_dataloader_workers_give_the_same_run(tmp_path):
    data = classification_data(24)

    def run(workers):
        args = _args(
            tmp_path,
            per_device_train_batch_size=4,
            num_train_epochs=1,
            dataloader_num_workers=workers,
        )
        trainer = Trainer(make_model(), args, train_dataset=data)
        trainer.train()
        return weights(trainer.model)

    single, multi = run(0), run(2)
    for name in single:
        assert np.array_equal(single[name], multi[name])


def test_classifier_is_a_module():
    assert isinstance(Classifier(), ember.nn.Module)
