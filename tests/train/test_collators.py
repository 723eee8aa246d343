"""Collators: stacking, label renaming, padding with a real tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.train import DataCollatorWithPadding, Trainer, default_data_collator


def test_default_collator_stacks_and_renames_labels():
    batch = default_data_collator(
        [
            {"x": np.ones(3, np.float32), "label": 1, "name": "a"},
            {"x": np.zeros(3, np.float32), "label": 0, "name": "b"},
        ]
    )
    assert sorted(batch) == ["labels", "x"]
    assert batch["labels"].numpy().tolist() == [1, 0] and batch["labels"].dtype == ember.int64
    assert batch["x"].shape == (2, 3)
    floats = default_data_collator([{"label": 0.5}, {"label": 1.5}])
    assert floats["labels"].dtype == ember.float32
    with pytest.raises(ValueError, match="different lengths"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1, 2, 3]}])
    with pytest.raises(ValueError, match="empty batch"):
        default_data_collator([])


def test_padding_collator_with_the_minilm_tokenizer(minilm):
    folder = minilm
    from ember.text import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    features = [
        dict(tokenizer("a fine film"), label=1),
        dict(tokenizer("dull, long and not very funny at all"), label=0),
    ]
    batch = DataCollatorWithPadding(tokenizer)(features)
    longest = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == (2, longest)
    assert batch["attention_mask"].numpy()[0].sum() == len(features[0]["input_ids"])
    assert batch["input_ids"].numpy()[0, -1] == tokenizer.pad_token_id
    assert batch["labels"].numpy().tolist() == [1, 0]
    fixed = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=16)(features)
    assert fixed["input_ids"].shape == (2, 16)

    class Model:
        def parameters(self):
            return iter(())

        def __call__(self, input_ids, attention_mask=None, labels=None):
            return {}

    trainer = Trainer(Model(), processing_class=tokenizer)
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    assert Trainer(Model()).data_collator is default_data_collator
