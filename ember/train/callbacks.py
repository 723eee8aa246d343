"""Callbacks: `TrainerState` (what happened), `TrainerControl` (what to do next) and
`TrainerCallback` (hooks called at HuggingFace's event names).

The Trainer calls `on_init_end`, `on_train_begin`, `on_epoch_begin`, `on_step_begin`,
`on_pre_optimizer_step`, `on_optimizer_step`, `on_substep_end`, `on_step_end`, `on_log`,
`on_evaluate`, `on_predict`, `on_save`, `on_epoch_end`, `on_train_end`, each with
`(args, state, control, **kwargs)` (kwargs: model, optimizer, lr_scheduler, train_dataloader,
eval_dataloader, processing_class, metrics or logs). A callback steers training by setting
flags on `control` (or returning a TrainerControl); `DefaultFlowCallback` turns the logging,
evaluation and saving strategies into those flags, so replacing it changes the flow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field

__all__ = [
    "CallbackHandler",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "PrinterCallback",
    "ProgressCallback",
    "TensorBoardCallback",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
]


@dataclass
class TrainerState:
    """The Trainer's progress; saved as `trainer_state.json` in every checkpoint."""

    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    trial_name: str | None = None
    stateful_callbacks: dict = field(default_factory=dict)

    def save_to_json(self, json_path: str) -> None:
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def to_json_string(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load_from_json(cls, json_path: str) -> TrainerState:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainerControl:
    """Flags callbacks set to make the Trainer log, evaluate, save or stop."""

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False


class TrainerCallback:
    """Base class: override the events you need; each may set flags on `control`.

    Example:
        >>> class StopAt(TrainerCallback):
        ...     def on_step_end(self, args, state, control, **kwargs):
        ...         control.should_training_stop = state.global_step >= 3
    """

    def on_init_end(self, args, state, control, **kwargs): ...
    def on_train_begin(self, args, state, control, **kwargs): ...
    def on_train_end(self, args, state, control, **kwargs): ...
    def on_epoch_begin(self, args, state, control, **kwargs): ...
    def on_epoch_end(self, args, state, control, **kwargs): ...
    def on_step_begin(self, args, state, control, **kwargs): ...
    def on_pre_optimizer_step(self, args, state, control, **kwargs): ...
    def on_optimizer_step(self, args, state, control, **kwargs): ...
    def on_substep_end(self, args, state, control, **kwargs): ...
    def on_step_end(self, args, state, control, **kwargs): ...
    def on_evaluate(self, args, state, control, **kwargs): ...
    def on_predict(self, args, state, control, metrics, **kwargs): ...
    def on_save(self, args, state, control, **kwargs): ...
    def on_log(self, args, state, control, logs=None, **kwargs): ...
    def on_prediction_step(self, args, state, control, **kwargs): ...


class CallbackHandler:
    """Calls every callback in order for each event; holds what they receive as kwargs."""

    def __init__(self, callbacks, model, processing_class, optimizer, lr_scheduler):
        self.callbacks: list[TrainerCallback] = []
        for callback in callbacks:
            self.add_callback(callback)
        self.model = model
        self.processing_class = processing_class
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = None
        self.eval_dataloader = None

    def add_callback(self, callback) -> None:
        instance = callback() if isinstance(callback, type) else callback
        if not isinstance(instance, TrainerCallback):
            raise TypeError(
                f"Trainer: callbacks should be TrainerCallback instances or "
                f"classes, got {type(instance).__name__}"
            )
        if type(instance) in {type(c) for c in self.callbacks}:
            import warnings

            warnings.warn(
                f"Trainer: a {type(instance).__name__} is already registered; "
                f"it will be called twice",
                stacklevel=3,
            )
        self.callbacks.append(instance)

    def pop_callback(self, callback):
        for c in self.callbacks:
            if c is callback or (isinstance(callback, type) and type(c) is callback):
                self.callbacks.remove(c)
                return c
        return None

    def remove_callback(self, callback) -> None:
        self.pop_callback(callback)

    def call_event(self, event: str, args, state, control, **kwargs):
        for callback in self.callbacks:
            result = getattr(callback, event)(
                args,
                state,
                control,
                model=self.model,
                processing_class=self.processing_class,
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader,
                **kwargs,
            )
            if result is not None:
                control = result
        return control


def _every(step: int, interval) -> bool:
    return interval is not None and interval > 0 and step % interval == 0


class DefaultFlowCallback(TrainerCallback):
    """Turns logging_/eval_/save_strategy into control flags; stops at max_steps."""

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and _every(step, state.logging_steps):
            control.should_log = True
        if (
            args.eval_strategy == "steps"
            and _every(step, state.eval_steps)
            and args.eval_delay <= step
        ):
            control.should_evaluate = True
        if args.save_strategy == "steps" and _every(step, state.save_steps):
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if args.save_strategy == "steps":  # the last step is saved, as in HuggingFace
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


def _format_logs(logs: dict) -> str:
    parts = []
    for key, value in logs.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"'{key}': {value}")
    return "{" + ", ".join(parts) + "}"


class PrinterCallback(TrainerCallback):
    """Prints each log as one line (the default when the progress bar is off)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # one printer for all ranks
            return
        logs = dict(logs or {})
        logs.pop("total_flos", None)
        print(_format_logs(logs), flush=True)


class ProgressCallback(TrainerCallback):
    """A tqdm progress bar over the optimizer steps, with the latest loss and the rate.

    tqdm loads on first use. When stdout is not a terminal (a log file, CI) the bar is not
    drawn; each log is printed as one line instead, so logs stay clean.
    """

    def __init__(self, stream=None):
        self.stream = stream
        self.bar = None
        self.eval_bar = None

    def _interactive(self) -> bool:
        stream = self.stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def on_train_begin(self, args, state, control, **kwargs):
        if self._interactive() and state.is_world_process_zero:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # no bar without tqdm: logs print as lines
                return

            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                unit="step",
                dynamic_ncols=True,
                file=self.stream or sys.stderr,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        logs.pop("total_flos", None)
        if self.bar is not None:
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
            self.bar.write(_format_logs(logs), file=self.stream or sys.stderr)
        else:
            print(_format_logs(logs), flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EarlyStoppingCallback(TrainerCallback):
    """Stop when metric_for_best_model has not improved (by more than the threshold) for
    `early_stopping_patience` evaluations in a row.

    Example:
        >>> callback = EarlyStoppingCallback(early_stopping_patience=2)
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0
        self.best = None

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError(
                "EarlyStoppingCallback needs TrainingArguments.metric_for_best_model "
                "(or load_best_model_at_end=True, which defaults it to 'loss')"
            )
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs evaluations, but eval_strategy='no'")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:
            raise KeyError(
                f"EarlyStoppingCallback: the metric {name!r} is not among the "
                f"evaluation's metrics {sorted(metrics or {})}"
            )
        better = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
        if self.best is None or (
            better(value, self.best) and abs(value - self.best) > self.early_stopping_threshold
        ):
            self.best = value
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict:
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {
                "early_stopping_patience_counter": self.early_stopping_patience_counter,
                "best": self.best,
            },
        }


class TensorBoardCallback(TrainerCallback):
    """Writes every numeric log value as a TensorBoard scalar under `args.logging_dir`
    ("train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "eval/accuracy"...)
    and, when asked, a histogram of every trainable parameter ("weights/<name>") at each
    training log step.

    Args:
        tb_writer: a SummaryWriter to write to (default: one in `args.logging_dir`).
        histograms: log weight histograms (default: `args.logging_weight_histograms`).
    """

    def __init__(self, tb_writer=None, histograms: bool | None = None):
        self.writer = tb_writer
        self.histograms = histograms

    def _writer(self, args):
        if self.writer is None:
            from ember.train.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=args.logging_dir)
        return self.writer

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one event file, written by rank 0
            return
        writer = self._writer(args)
        if state.global_step == 0:
            writer.add_text("args", args.to_json_string(), 0)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        writer = self._writer(args)
        logs = logs or {}
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(float(value)) and key != "loss":
                continue
            if key.startswith("eval_"):
                tag = "eval/" + key[len("eval_") :]
            elif key.startswith("test_"):
                tag = "test/" + key[len("test_") :]
            else:
                tag = "train/" + key
            writer.add_scalar(tag, float(value), state.global_step)
        histograms = (
            self.histograms
            if self.histograms is not None
            else getattr(args, "logging_weight_histograms", False)
        )
        if histograms and model is not None and "loss" in logs:  # training logs only
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    writer.add_histogram(f"weights/{name}", parameter, state.global_step)
        writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
