"""TrainingArguments: HuggingFace's defaults, and clear errors for unknown or contradictory
arguments."""

from __future__ import annotations

import pytest

from ember.train import TrainingArguments

# (arguments, what the error must say)
BAD_ARGUMENTS = [
    ({"learning_rat": 1e-3}, "unknown argument 'learning_rat' (did you mean 'learning_rate'?)"),
    ({"fp16": True}, "'fp16' is not supported by ember's Trainer: mixed precision"),
    ({"eval_strategy": "sometimes"}, "eval_strategy should be one of ['no', 'steps', 'epoch']"),
    ({"save_strategy": "always"}, "save_strategy should be one of"),
    ({"lr_scheduler_type": "exponential"}, "lr_scheduler_type should be one of"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size should be a positive"),
    ({"gradient_accumulation_steps": 1.5}, "gradient_accumulation_steps should be a positive"),
    ({"learning_rate": -1.0}, "learning_rate should be >= 0"),
    ({"adam_beta2": 1.0}, "adam_beta2 should be in [0, 1)"),
    ({"max_steps": 10.5}, "max_steps should be an integer"),
    ({"warmup_ratio": 1.5}, "warmup_ratio should be in [0, 1]"),
    (
        {"warmup_ratio": 0.1, "warmup_steps": 10},
        "warmup_steps=10 and warmup_ratio=0.1 contradict each other",
    ),
    ({"warmup_steps": 2.5}, "warmup_steps should be an integer when above 1"),
    ({"save_total_limit": 0}, "save_total_limit should be None or a positive integer"),
    ({"logging_steps": 0}, "logging_steps should be > 0"),
    ({"report_to": "wandb"}, "report_to names 'wandb', which ember cannot report to"),
    (
        {"eval_strategy": "steps", "logging_strategy": "epoch"},
        "eval_strategy='steps' needs eval_steps",
    ),
    (
        {"load_best_model_at_end": True},
        "load_best_model_at_end needs evaluations, but eval_strategy='no'",
    ),
    (
        {"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps"},
        "requires the save and eval strategies to match",
    ),
    (
        {
            "load_best_model_at_end": True,
            "eval_strategy": "steps",
            "eval_steps": 30,
            "save_steps": 50,
        },
        "save_steps to be a round multiple of eval_steps",
    ),
    (
        {"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "no"},
        "load_best_model_at_end needs checkpoints",
    ),
    ({"save_strategy": "best"}, "save_strategy='best' saves when an evaluation improves"),
    ({"dataloader_num_workers": -1}, "dataloader_num_workers should be a non-negative"),
]


@pytest.mark.parametrize(
    "kwargs, message", BAD_ARGUMENTS, ids=[",".join(k) for k, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError) as info:
        TrainingArguments("out", **kwargs)
    print(info.value)
    assert message in str(info.value)


def test_defaults_match_huggingface():
    from transformers import TrainingArguments as HFArguments

    ours = TrainingArguments("out")
    theirs = HFArguments("out", report_to="none")
    same = [
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "num_train_epochs",
        "max_steps",
        "warmup_steps",
        "logging_first_step",
        "logging_steps",
        "save_steps",
        "seed",
        "save_total_limit",
        "load_best_model_at_end",
        "metric_for_best_model",
        "greater_is_better",
        "remove_unused_columns",
        "label_names",
        "dataloader_num_workers",
        "dataloader_drop_last",
        "eval_steps",
    ]
    for name in same:
        assert getattr(ours, name) == getattr(theirs, name), name
    for name in ("eval_strategy", "logging_strategy", "save_strategy", "lr_scheduler_type"):
        assert getattr(ours, name) == getattr(theirs, name).value, name


def test_derived_values():
    args = TrainingArguments("out", eval_strategy="steps", logging_steps=20)
    assert args.eval_steps == 20 and args.do_eval  # falls back to logging_steps
    args = TrainingArguments(
        "out", load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch"
    )
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    args = TrainingArguments("out", metric_for_best_model="accuracy")
    assert args.greater_is_better is True
    assert TrainingArguments("out", warmup_ratio=0.1).get_warmup_steps(95) == 10
    assert TrainingArguments("out", warmup_steps=0.1).get_warmup_steps(95) == 10
    assert TrainingArguments("out", warmup_steps=7).get_warmup_steps(95) == 7
    assert TrainingArguments("out", report_to="all").report_to == ["tensorboard"]
    assert TrainingArguments("out").report_to == []
    assert TrainingArguments("out", logging_dir="logs").logging_dir == "logs"
    assert TrainingArguments("out").logging_dir.startswith("out/runs/")
    assert '"learning_rate": 5e-05' in TrainingArguments("out").to_json_string()
