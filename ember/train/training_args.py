"""`TrainingArguments`: every knob of the Trainer, with HuggingFace's names and defaults.

Arguments are checked when they are made: an unknown name, a value out of range, or two
arguments that contradict each other raise a ValueError that names them and says why, so a
mistake surfaces before any training time is spent.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["SCHEDULER_TYPES", "IntervalStrategy", "SaveStrategy", "TrainingArguments"]

#: values of eval_strategy / logging_strategy
IntervalStrategy = ("no", "steps", "epoch")
#: values of save_strategy ("best": save whenever the tracked metric improves)
SaveStrategy = ("no", "steps", "epoch", "best")
#: values of lr_scheduler_type (formulas in ember/train/schedules.py)
SCHEDULER_TYPES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
_REPORTERS = ("tensorboard",)

# HuggingFace arguments that ember's Trainer does not implement: a clear refusal beats a
# silently ignored option.
_NOT_SUPPORTED = {
    "fp16": "mixed precision is not implemented; ember trains in the model's dtype",
    "bf16": "mixed precision is not implemented; ember trains in the model's dtype",
    "deepspeed": "DeepSpeed is a PyTorch integration",
    "fsdp": "FSDP is a PyTorch integration",
    "push_to_hub": "ember has no network access to the Hub",
    "gradient_checkpointing": "activation checkpointing is not implemented",
    "optim": "the optimizer is AdamW; pass optimizers=(optimizer, scheduler) for another",
    "local_rank": "distributed training lives in ember.distributed",
}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"TrainingArguments: {message}")


@dataclass(init=False)
class TrainingArguments:
    """What the Trainer does and how: batch sizes, optimizer, schedule, logging, evaluation,
    checkpoints. Names and defaults follow HuggingFace's `TrainingArguments`.

    Example:
        >>> args = TrainingArguments("out", num_train_epochs=1, learning_rate=1e-3)
        >>> args.per_device_train_batch_size, args.lr_scheduler_type
        (8, 'linear')
        >>> TrainingArguments("out", learning_rat=1e-3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: TrainingArguments: unknown argument 'learning_rat' (did you mean ...

    Args:
        output_dir: where checkpoints (`checkpoint-N/`) and the final model go.
        num_train_epochs / max_steps: how long to train; max_steps > 0 wins over epochs.
        per_device_train_batch_size / per_device_eval_batch_size: batch sizes.
        gradient_accumulation_steps: micro-batches per optimizer step (Note [Accumulation]).
        learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon: AdamW's settings.
            Weight decay skips biases and LayerNorm weights.
        max_grad_norm: clip the global gradient norm to this (0 or None: no clipping).
        lr_scheduler_type: one of SCHEDULER_TYPES; lr_scheduler_kwargs go to it.
        warmup_steps: linear warmup steps (a float below 1 is a ratio of the total steps);
            warmup_ratio: the same as a ratio (HuggingFace 4.x); give one or the other.
        logging_strategy / logging_steps / logging_first_step: when to log the training loss.
        eval_strategy / eval_steps: when to evaluate ("no", "steps", "epoch").
        save_strategy / save_steps / save_total_limit: checkpoints and their rotation.
        load_best_model_at_end, metric_for_best_model, greater_is_better: best-model tracking.
        report_to: "none", "tensorboard" or a list; logging_dir: TensorBoard's folder.
        logging_weight_histograms: with TensorBoard, also a histogram of every trainable
            weight at each training log step (ember's; TensorBoardCallback(histograms=True)
            does the same for one callback).
        seed / data_seed: the seed for weights, dropout and (unless data_seed) shuffling.
        dataloader_num_workers, dataloader_drop_last: DataLoader settings.
        remove_unused_columns: drop dataset fields the model's forward does not take.
        label_names: the input keys that hold labels (default: "labels" and the like).
        disable_tqdm: no progress bar (then each log line is printed instead).
        torch_compile: run the forward and backward of each micro-batch compiled with
            `ember.compile` (the HuggingFace name kept so ported scripts run unchanged; see
            Note [Compiled training step] in ember/train/trainer.py for what it needs).
        resume_from_checkpoint: kept for scripts, as in HuggingFace; pass it to `train()`.
    """

    output_dir: str | None = None
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    eval_strategy: str = "no"
    prediction_loss_only: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict | None = None
    warmup_ratio: float = 0.0
    warmup_steps: float = 0
    logging_dir: str | None = None
    logging_strategy: str = "steps"
    logging_first_step: bool = False
    logging_steps: float = 500
    logging_nan_inf_filter: bool = True
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    seed: int = 42
    data_seed: int | None = None
    eval_steps: float | None = None
    eval_delay: float = 0
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    run_name: str | None = None
    disable_tqdm: bool | None = None
    remove_unused_columns: bool = True
    label_names: list | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    report_to: str | list | None = "none"
    logging_weight_histograms: bool = False
    resume_from_checkpoint: str | None = None
    torch_compile: bool = False
    use_cpu: bool = False
    include_for_metrics: list = field(default_factory=list)

    def __init__(self, output_dir: str | None = None, **kwargs):
        known = {f.name: f for f in dataclasses.fields(self)}
        for name in kwargs:
            if name in known:
                continue
            if name in _NOT_SUPPORTED:
                raise ValueError(
                    f"TrainingArguments: {name!r} is not supported by ember's Trainer: "
                    f"{_NOT_SUPPORTED[name]}"
                )
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"TrainingArguments: unknown argument {name!r}{hint}")
        self.output_dir = output_dir
        for name, spec in known.items():
            if name == "output_dir":
                continue
            if name in kwargs:
                value = kwargs[name]
            elif spec.default_factory is not dataclasses.MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            setattr(self, name, value)
        self.__post_init__()

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(os.fspath(self.output_dir))
        if self.logging_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            self.logging_dir = os.path.join(
                self.output_dir, "runs", f"{stamp}_{socket.gethostname()}"
            )
        if self.disable_tqdm is None:
            self.disable_tqdm = False
        for name, allowed in (
            ("eval_strategy", IntervalStrategy),
            ("logging_strategy", IntervalStrategy),
            ("save_strategy", SaveStrategy),
            ("lr_scheduler_type", SCHEDULER_TYPES),
        ):
            value = getattr(self, name)
            value = getattr(value, "value", value)  # enums from ported code
            _check(value in allowed, f"{name} should be one of {list(allowed)}, got {value!r}")
            setattr(self, name, value)
        self._check_numbers()
        self._check_report_to()
        self._check_intervals()
        self._check_best_model()

    def _check_numbers(self) -> None:
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and value >= 1,
                f"{name} should be a positive integer, got {value!r}",
            )
        _check(self.learning_rate >= 0, f"learning_rate should be >= 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0, f"weight_decay should be >= 0, got {self.weight_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"{name} should be in [0, 1), got {value}")
        _check(self.adam_epsilon >= 0, f"adam_epsilon should be >= 0, got {self.adam_epsilon}")
        _check(
            self.max_grad_norm is None or self.max_grad_norm >= 0,
            f"max_grad_norm should be >= 0 or None, got {self.max_grad_norm}",
        )
        _check(
            isinstance(self.max_steps, int),
            f"max_steps should be an integer (-1: train for num_train_epochs), "
            f"got {self.max_steps!r}",
        )
        _check(
            self.num_train_epochs >= 0,
            f"num_train_epochs should be >= 0, got {self.num_train_epochs}",
        )
        _check(
            0.0 <= self.warmup_ratio <= 1.0,
            f"warmup_ratio should be in [0, 1], got {self.warmup_ratio}",
        )
        _check(self.warmup_steps >= 0, f"warmup_steps should be >= 0, got {self.warmup_steps}")
        _check(
            not (self.warmup_ratio > 0 and self.warmup_steps > 0),
            f"warmup_steps={self.warmup_steps} and warmup_ratio={self.warmup_ratio} "
            f"contradict each other: give one of them",
        )
        if self.warmup_steps > 1:
            _check(
                float(self.warmup_steps).is_integer(),
                f"warmup_steps should be an integer when above 1 (below 1 it is a ratio), "
                f"got {self.warmup_steps}",
            )
            self.warmup_steps = int(self.warmup_steps)
        _check(
            self.save_total_limit is None
            or (isinstance(self.save_total_limit, int) and self.save_total_limit >= 1),
            f"save_total_limit should be None or a positive integer, got {self.save_total_limit!r}",
        )
        _check(
            isinstance(self.dataloader_num_workers, int) and self.dataloader_num_workers >= 0,
            f"dataloader_num_workers should be a non-negative integer, "
            f"got {self.dataloader_num_workers!r}",
        )
        if isinstance(self.label_names, str):
            self.label_names = [self.label_names]

    def _check_report_to(self) -> None:
        report = self.report_to
        if report is None or report == "none" or report == ["none"]:
            self.report_to = []
            return
        if report == "all" or report == ["all"]:
            self.report_to = list(_REPORTERS)
            return
        if isinstance(report, str):
            report = [report]
        for name in report:
            _check(
                name in _REPORTERS,
                f"report_to names {name!r}, which ember cannot report to; supported: "
                f"{list(_REPORTERS)}, 'all' or 'none'",
            )
        self.report_to = list(report)

    def _check_intervals(self) -> None:
        for name in ("logging_steps", "save_steps"):
            value = getattr(self, name)
            _check(
                value > 0,
                f"{name} should be > 0 (a float below 1 is a ratio of the total "
                f"steps), got {value}",
            )
            if value > 1:
                _check(
                    float(value).is_integer(),
                    f"{name} should be an integer when above 1, got {value}",
                )
                setattr(self, name, int(value))
        if self.eval_strategy == "steps" and not self.eval_steps:
            _check(
                self.logging_strategy == "steps" and self.logging_steps > 0,
                "eval_strategy='steps' needs eval_steps (or logging_steps, which it "
                "falls back to, as in HuggingFace)",
            )
            self.eval_steps = self.logging_steps
        if self.eval_steps is not None:
            _check(self.eval_steps > 0, f"eval_steps should be > 0, got {self.eval_steps}")
            if self.eval_steps > 1:
                _check(
                    float(self.eval_steps).is_integer(),
                    f"eval_steps should be an integer when above 1, got {self.eval_steps}",
                )
                self.eval_steps = int(self.eval_steps)
        if self.eval_strategy != "no":
            self.do_eval = True

    def _check_best_model(self) -> None:
        if self.save_strategy == "best":
            _check(
                self.eval_strategy != "no",
                "save_strategy='best' saves when an evaluation improves the metric, but "
                "eval_strategy='no' never evaluates",
            )
            _check(
                self.metric_for_best_model is not None or self.load_best_model_at_end,
                "save_strategy='best' needs metric_for_best_model",
            )
        if self.load_best_model_at_end:
            _check(
                self.eval_strategy != "no",
                "load_best_model_at_end needs evaluations, but eval_strategy='no'",
            )
            _check(
                self.save_strategy != "no",
                "load_best_model_at_end needs checkpoints, but save_strategy='no'",
            )
            if self.save_strategy != "best":
                _check(
                    self.eval_strategy == self.save_strategy,
                    f"load_best_model_at_end requires the save and eval strategies to match "
                    f"(or save_strategy='best'), but eval_strategy={self.eval_strategy!r} "
                    f"and save_strategy={self.save_strategy!r}",
                )
                if self.eval_strategy == "steps":
                    save, every = self.save_steps, self.eval_steps
                    _check(
                        (save >= 1) == (every >= 1)
                        and round(save * 1_000_000) % round(every * 1_000_000) == 0,
                        f"load_best_model_at_end requires save_steps to be a round multiple "
                        f"of eval_steps, but save_steps={save} and eval_steps={every}",
                    )
            if self.metric_for_best_model is None:
                self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

    # ------------------------------------------------------------------ derived values
    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    @property
    def world_size(self) -> int:
        """Processes training together (the MPI job's ranks; 1 in a single process)."""
        from ember.backend import comm

        return comm.world_size() if comm.is_initialized() else comm.mpi_launched_size()

    @property
    def process_index(self) -> int:
        from ember.backend import comm

        return comm.rank() if comm.is_initialized() or comm.mpi_launched_size() > 1 else 0

    @property
    def should_log(self) -> bool:
        """Whether this process logs (rank 0 of a distributed run)."""
        return self.process_index == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints and models (rank 0)."""
        return self.process_index == 0

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps for a run of `num_training_steps` optimizer steps."""
        if self.warmup_ratio > 0:
            return math.ceil(num_training_steps * self.warmup_ratio)
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)
