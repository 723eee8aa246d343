"""L8: training: the Trainer and its arguments, callbacks, checkpoints, schedules, collators
and TensorBoard logs.

Names load on first use (PEP 562), so `import ember.train` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "SummaryWriter": "ember.train.tensorboard",
    "Trainer": "ember.train.trainer",
    "EvalPrediction": "ember.train.trainer",
    "PredictionOutput": "ember.train.trainer",
    "TrainOutput": "ember.train.trainer",
    "set_seed": "ember.train.trainer",
    "strip_runtime": "ember.train.trainer",
    "TrainingArguments": "ember.train.training_args",
    "TrainerCallback": "ember.train.callbacks",
    "TrainerState": "ember.train.callbacks",
    "TrainerControl": "ember.train.callbacks",
    "CallbackHandler": "ember.train.callbacks",
    "DefaultFlowCallback": "ember.train.callbacks",
    "EarlyStoppingCallback": "ember.train.callbacks",
    "PrinterCallback": "ember.train.callbacks",
    "ProgressCallback": "ember.train.callbacks",
    "TensorBoardCallback": "ember.train.callbacks",
    "DataCollatorWithPadding": "ember.train.collators",
    "default_data_collator": "ember.train.collators",
    "get_scheduler": "ember.train.schedules",
    "get_last_checkpoint": "ember.train.checkpointing",
}
__all__ = list(_LAZY)  # noqa: PLE0605  (the lazy table is the public surface)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
