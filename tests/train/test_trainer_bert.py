"""The Trainer with ember.transformers' BertForSequenceClassification (a tiny config, as
HuggingFace's model testers use): outputs objects, save_pretrained checkpoints, exact resume."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import ember
from ember.train import DataCollatorWithPadding, Trainer, TrainingArguments, strip_runtime
from tests.train.trainer_helpers import accuracy, weights

transformers_face = pytest.importorskip("ember.transformers")


class Pad:
    """A padding stand-in for a tokenizer (pad id 0), for DataCollatorWithPadding."""

    pad_token_id = 0

    def pad(
        self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors=None
    ):
        width = max(len(f["input_ids"]) for f in features)
        out = {}
        for key in features[0]:
            out[key] = [list(f[key]) + [0] * (width - len(f[key])) for f in features]
        return out


def _model():
    ember.manual_seed(0)
    config = transformers_face.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=2,
    )
    return transformers_face.BertForSequenceClassification(config)


def _data(n=24):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        length = int(rng.integers(3, 9))
        ids = rng.integers(5, 99, size=length).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "label": int(ids[0] > 50)})
    return rows


def _args(out, **kwargs):
    base = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "num_train_epochs": 2,
        "logging_steps": 1,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "eval_strategy": "epoch",
        "disable_tqdm": True,
        "seed": 5,
    }
    base.update(kwargs)
    return TrainingArguments(str(out), **base)


def test_bert_fine_tune_checkpoints_and_exact_resume(tmp_path):
    data = _data()
    collator = DataCollatorWithPadding(Pad())
    full = Trainer(
        _model(),
        _args(tmp_path / "full"),
        train_dataset=data,
        eval_dataset=data[:8],
        data_collator=collator,
        compute_metrics=accuracy,
    )
    full.train()
    assert full.state.global_step == 6
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert {"config.json", "model.safetensors"} <= set(os.listdir(checkpoint))
    reloaded = transformers_face.BertForSequenceClassification.from_pretrained(str(checkpoint))
    assert reloaded.config.num_labels == 2
    os.makedirs(tmp_path / "resumed")
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-4")
    resumed = Trainer(
        _model(),
        _args(tmp_path / "resumed"),
        train_dataset=data,
        eval_dataset=data[:8],
        data_collator=collator,
        compute_metrics=accuracy,
    )
    resumed.train(resume_from_checkpoint=True)
    for name, value in weights(full.model).items():
        assert np.array_equal(weights(resumed.model)[name], value), name
    assert strip_runtime(resumed.state.log_history) == strip_runtime(full.state.log_history)
    prediction = full.predict(data[:5])
    assert prediction.predictions.shape == (5, 2)
