"""`Trainer`: the training loop, evaluation, prediction and checkpoints for ember models.

A small class with named override points (STYLE.md habit 12), as in HuggingFace:
`compute_loss`, `training_step`, `prediction_step`, `create_optimizer`, `create_scheduler`,
`get_train_dataloader` / `get_eval_dataloader`; the flow (when to log, evaluate, save, stop)
is decided by callbacks (ember/train/callbacks.py). Models are called as `model(**batch)` and
return HuggingFace-style outputs: a mapping or object with `loss` (when labels are given) and
`logits`, or a tuple whose first item is the loss.

Note [Accumulation]: with gradient_accumulation_steps = k, an optimizer step sums the gradients
of k micro-batches (fewer for the last window of an epoch). Each micro-batch's mean loss is
weighted by its share of the window's items, n_micro / n_window, where items are the labels that
count (integer labels other than -100; all elements for float labels; examples when there are
no labels). The weighted losses then add up to the mean loss over the whole window, so
accumulating 4 batches of 4 gives exactly the gradients of one batch of 16, and a short last
window is not under-weighted. A model whose forward takes `num_items_in_batch` is given the
window's count instead and normalises by it itself. The logged `loss` is the mean of these
window losses since the previous log.

Note [Resumable training]: a checkpoint holds, besides the model, optimizer and scheduler, the
random states (ember's generators, `random`, NumPy), the data position (epoch, micro-batches
consumed in it, the shuffling generator's state at the epoch's start) and the loss accumulators
between logs. Resuming restores all of them, redraws the epoch's order from the saved generator
state, skips the consumed batches without loading them, and goes on; the final weights and
log history are then the uninterrupted run's, bit for bit (the runtime entries aside).
Randomness inside a dataset's `__getitem__` (augmentation) is seeded per batch by the DataLoader
from the batch's position in the remaining epoch, so it is not replayed after a mid-epoch resume.

Note [Distributed Trainer]: a script run under MPI (`mpiexec -n 2 python train.py`, `ember
launch`) trains data-parallel with no code change: the Trainer joins the process group, wraps
the model in DistributedDataParallel (the unwrapped `self.model` is what callbacks see and what
is saved), and gives rank r the positions r, r + world, ... of each epoch's shuffled order (the
same order on every rank, padded as DistributedSampler pads), so the global batch is
per_device_train_batch_size x world size and the ranks' k-th batches together are the k-th
batch of one process with world times the batch. The items a window's loss averages over
(Note [Accumulation]) are summed over the ranks and each rank's loss is scaled by the world
size, so DDP's average gives the global mean exactly, even when ranks hold different numbers
of label items; the logged loss is summed over ranks. Micro-batches before a window's last run
under no_sync(). Rank 0 alone prints, writes TensorBoard events, checkpoints and models; the
others wait for each checkpoint, and every rank resumes from the checkpoint rank 0 names.
Evaluation and prediction give rank r the samples r, r + world, ... (no padding), gather the
losses, predictions and labels on every rank and put them back in dataset order, so metrics
are those of one process over the whole set.

Note [Compiled training step]: with `TrainingArguments(torch_compile=True)` each micro-batch's
forward, loss and backward run as one graph compiled by `ember.compile` (the optimizer update
stays eager). The graph is cached per input signature. For the encoders that take a padding
mask (BERT, RoBERTa, DistilBERT) each batch is padded up to its sequence-length bucket first
(Note [Sequence buckets] in ember/transformers/compile_buckets.py), so dynamic padding costs a
few graphs, one per bucket and batch size; for other models pad to a fixed length
(`padding="max_length"`) and use `dataloader_drop_last=True`, or each new shape traces a new
graph (a RetraceWarning says so). The model's forward must be traceable: no Python branches on
tensor values. Random ops (dropout) must be supported by the graph compiler; put the model's
dropout at 0 otherwise.
Gradients are accumulated outside the graph (the graph always starts from cleared .grad), which
gives the same sums as eager accumulation.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ember._util.pytree import flatten, leaves, map_leaves, unflatten
from ember.train.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TensorBoardCallback,
    TrainerControl,
    TrainerState,
)
from ember.train.checkpointing import (
    PREFIX_CHECKPOINT_DIR,
    get_last_checkpoint,
    is_complete,
    rng_states,
    rotate_checkpoints,
    set_rng_states,
    write_checkpoint,
)
from ember.train.collators import DataCollatorWithPadding, default_data_collator
from ember.train.schedules import get_scheduler
from ember.train.training_args import TrainingArguments

__all__ = ["EvalPrediction", "PredictionOutput", "TrainOutput", "Trainer", "set_seed"]

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
OPTIMIZER_NAME = "optimizer.safetensors"
SCHEDULER_NAME = "scheduler.safetensors"
RNG_STATE_NAME = "rng_state.json"
POSITION_NAME = "training_position.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_NO_DECAY_PATTERNS = re.compile(
    r"bias|layernorm|layer_norm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)", re.IGNORECASE
)
_RUNTIME_KEYS = ("_runtime", "_per_second")


class EvalPrediction:
    """What `compute_metrics` receives: NumPy predictions (logits) and label_ids, plus the
    inputs when asked for. Unpacks as HuggingFace's does: `logits, labels = eval_pred` (a
    third item only when `inputs` is set).

    Example:
        >>> from ember.train import EvalPrediction
        >>> logits, labels = EvalPrediction([[0.1, 0.9]], [1])
        >>> labels
        [1]
    """

    def __init__(self, predictions, label_ids, inputs=None):
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs

    def _items(self) -> tuple:
        base = (self.predictions, self.label_ids)
        return base if self.inputs is None else base + (self.inputs,)

    def __iter__(self):
        return iter(self._items())

    def __getitem__(self, index):
        return self._items()[index]

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"EvalPrediction(predictions={self.predictions!r}, label_ids={self.label_ids!r})"


class PredictionOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict | None


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


def set_seed(seed: int) -> None:
    """Seed ember's generators, Python's `random` and NumPy's global generator."""
    from ember.backend.random import manual_seed

    manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- small helpers


def _to_numpy(value):
    if value is None:
        return None
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().numpy()
    return np.asarray(value)


def _output_get(outputs, key: str):
    if isinstance(outputs, Mapping):
        return outputs.get(key)
    return getattr(outputs, key, None)


def _concat_padded(arrays: list, padding_index: int = -100) -> np.ndarray:
    """Concatenate along the batch axis, padding later axes (e.g. sequence length)."""
    if len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays, axis=0)
    ndim = arrays[0].ndim
    shape = [sum(a.shape[0] for a in arrays)] + [
        max(a.shape[i] for a in arrays) for i in range(1, ndim)
    ]
    result = np.full(shape, padding_index, dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        result[(slice(row, row + a.shape[0]),) + tuple(slice(0, s) for s in a.shape[1:])] = a
        row += a.shape[0]
    return result


class _Columns:
    """A dataset view that keeps only the fields the model takes (remove_unused_columns)."""

    def __init__(self, dataset, keep: set):
        self.dataset = dataset
        self.keep = keep

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return {k: v for k, v in item.items() if k in self.keep}


class _EpochBatches:
    """A fixed list of index batches, as a DataLoader batch_sampler."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# --------------------------------------------------------------------------- the Trainer


def _process_group():
    """The process group to train data-parallel over (Note [Distributed Trainer]): the one
    initialised already, or the MPI job this process was launched in; None in one process."""
    from ember.backend import comm

    if not comm.is_initialized() and comm.mpi_launched_size() <= 1:
        return None
    group = comm.init("mpi")
    return group if group.size > 1 else None


def _interleave(parts: list, n: int):
    """Rank-sharded rows (rank r holds rows r, r + world, ...) back in dataset order."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(_interleave([p[i] for p in parts], n) for i in range(len(parts[0])))
    world = len(parts)
    stacked = _concat_padded([np.atleast_1d(p) for p in parts])
    positions = np.concatenate([np.arange(len(p)) * world + r for r, p in enumerate(parts)])
    out = np.empty_like(stacked)
    out[positions] = stacked
    return out[:n]


class Trainer:
    """Train, evaluate and predict with an ember model (HuggingFace's Trainer API).

    Example:
        >>> trainer = Trainer(model=model, args=TrainingArguments("out"),
        ...                   train_dataset=train, eval_dataset=test)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.evaluate()["eval_loss"]  # doctest: +SKIP

    Args:
        model: an ember `nn.Module` called as `model(**batch)` (see the module docstring).
        args: TrainingArguments (defaults with output_dir "tmp_trainer").
        data_collator: list of examples -> batch; default DataCollatorWithPadding when a
            tokenizer is given, else default_data_collator.
        train_dataset / eval_dataset: indexable datasets of dicts (ember Datasets, lists, ...);
            eval_dataset may be a dict of them (metrics then carry each name).
        processing_class (alias tokenizer): saved with the model; pads batches.
        compute_metrics: EvalPrediction -> dict of floats.
        callbacks: TrainerCallback instances or classes added to the defaults.
        optimizers: (optimizer, scheduler); either None is created by create_optimizer /
            create_scheduler.
        preprocess_logits_for_metrics: (logits, labels) -> what is kept for compute_metrics.
    """

    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        preprocess_logits_for_metrics=None,
        tokenizer=None,
    ):
        if args is None:
            args = TrainingArguments("tmp_trainer")
        if not isinstance(args, TrainingArguments):
            raise TypeError(f"Trainer: args should be TrainingArguments, got {type(args).__name__}")
        self.args = args
        set_seed(args.seed)
        self._group = _process_group()  # Note [Distributed Trainer]
        self.model_wrapped = None
        if model is None:
            if model_init is None:
                raise ValueError("Trainer: pass a model (or model_init, a function making one)")
            model = model_init()
        if not callable(model) or not hasattr(model, "parameters"):
            raise TypeError(
                f"Trainer: model should be an ember nn.Module, got {type(model).__name__}"
            )
        self.model = model
        if (
            tokenizer is not None
            and processing_class is not None
            and tokenizer is not processing_class
        ):
            raise ValueError(
                "Trainer: tokenizer and processing_class are the same argument; give one"
            )
        self.processing_class = processing_class if processing_class is not None else tokenizer
        if data_collator is None:
            if self.processing_class is not None and hasattr(self.processing_class, "pad"):
                data_collator = DataCollatorWithPadding(self.processing_class)
            else:
                data_collator = default_data_collator
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        if args.eval_strategy != "no" and eval_dataset is None:
            raise ValueError(
                f"Trainer: eval_strategy={args.eval_strategy!r} evaluates during "
                f"training, but no eval_dataset was given"
            )
        if not isinstance(optimizers, (tuple, list)) or len(optimizers) != 2:
            raise TypeError("Trainer: optimizers should be a pair (optimizer, lr_scheduler)")
        self.optimizer, self.lr_scheduler = optimizers
        if self.optimizer is None and self.lr_scheduler is not None:
            raise ValueError("Trainer: an lr_scheduler was given without its optimizer")

        forward = getattr(model, "forward", model)
        try:
            parameters = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            parameters = {}
        self._forward_params = [
            n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        self._forward_takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        self._model_accepts_num_items = "num_items_in_batch" in parameters
        default_labels = [n for n in self._forward_params if "label" in n] or ["labels"]
        self.label_names = list(args.label_names or default_labels)

        default_callbacks = [
            DefaultFlowCallback,
            PrinterCallback if args.disable_tqdm else ProgressCallback,
        ]
        if "tensorboard" in args.report_to:
            default_callbacks.append(TensorBoardCallback)
        self.callback_handler = CallbackHandler(
            default_callbacks + list(callbacks or []),
            self.model,
            self.processing_class,
            self.optimizer,
            self.lr_scheduler,
        )
        self.state = self._new_state()
        self.control = TrainerControl()
        self._compiled_step = None
        self._column_warning_shown = False
        self.control = self._event("on_init_end")

    # ------------------------------------------------------------------ distributed
    def _new_state(self) -> TrainerState:
        state = TrainerState()
        rank = 0 if self._group is None else self._group.rank
        state.is_world_process_zero = rank == 0
        state.is_local_process_zero = rank == 0
        return state

    @property
    def world_size(self) -> int:
        return 1 if self._group is None else self._group.size

    def is_world_process_zero(self) -> bool:
        return self._group is None or self._group.rank == 0

    def _wrap_model(self):
        """The model the training steps call: DistributedDataParallel over the process group
        (Note [Distributed Trainer]), the model itself in one process or a compiled step."""
        if self._group is None or self.args.torch_compile:
            return self.model
        if self.model_wrapped is None or self.model_wrapped.module is not self.model:
            from ember.nn.parallel.distributed import DistributedDataParallel

            self.model_wrapped = DistributedDataParallel(self.model, process_group=self._group)
        return self.model_wrapped

    def _all_sum(self, value: float) -> float:
        if self._group is None:
            return value
        buffer = np.array([value], dtype=np.float64)
        self._group.allreduce(buffer, "sum")
        return float(buffer[0])

    def _average_gradients(self) -> None:
        """One flat allreduce of every gradient (the compiled step, which DDP's hooks do not
        see), averaged over the ranks."""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        for p in parameters:
            if p.grad is None:
                p.grad = p.detach() * 0
        flat = np.concatenate([p.grad.array.reshape(-1) for p in parameters])
        self._group.allreduce(flat, "avg")
        offset = 0
        for p in parameters:
            size = p.grad.array.size
            p.grad.array[...] = flat[offset : offset + size].reshape(p.grad.array.shape)
            offset += size

    # ------------------------------------------------------------------ callbacks
    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback) -> None:
        self.callback_handler.remove_callback(callback)

    def _event(self, name: str, **kwargs) -> TrainerControl:
        return self.callback_handler.call_event(name, self.args, self.state, self.control, **kwargs)

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, description: str):
        if dataset is None:
            raise ValueError(f"Trainer: no {description} dataset")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"Trainer: the {description} dataset should be indexable with a "
                f"length (an ember Dataset, a list of dicts...), got "
                f"{type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError(f"Trainer: the {description} dataset is empty")
        if not self.args.remove_unused_columns or self._forward_takes_kwargs:
            return dataset
        first = dataset[0]
        if not isinstance(first, Mapping):
            return dataset
        keep = set(self._forward_params) | set(self.label_names) | {"label", "label_ids"}
        dropped = sorted(set(first) - keep)
        if not dropped:
            return dataset
        if not set(first) & keep:
            raise ValueError(
                f"Trainer: none of the {description} dataset's fields {sorted(first)} are "
                f"arguments of {type(self.model).__name__}.forward {self._forward_params}; "
                f"set remove_unused_columns=False or rename the fields"
            )
        if not self._column_warning_shown:
            self._column_warning_shown = True
            print(
                f"Trainer: the fields {dropped} of the {description} dataset are not "
                f"arguments of {type(self.model).__name__}.forward and are left out",
                flush=True,
            )
        return _Columns(dataset, keep)

    def _loader(self, dataset, batch_sampler, seed: int):
        from ember.backend.random import Generator
        from ember.data import DataLoader

        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            generator=Generator().manual_seed(seed),
        )

    def _train_batches(self, dataset) -> list:
        """One epoch's index batches, drawn from the shuffling generator."""
        from ember.data import BatchSampler, RandomSampler

        sampler = RandomSampler(dataset, generator=self._data_generator)
        if self._group is not None:  # Note [Distributed Trainer]
            from ember.data.sampler import shard_indices

            sampler = shard_indices(list(sampler), self._group.size, self._group.rank)
        return list(
            BatchSampler(
                sampler, self.args.per_device_train_batch_size, self.args.dataloader_drop_last
            )
        )

    def get_train_dataloader(self):
        """A DataLoader over one shuffled epoch of the training set."""
        dataset = self._prepare_dataset(self.train_dataset, "training")
        if not hasattr(self, "_data_generator"):
            self._data_generator = self._new_data_generator()
        return self._loader(dataset, _EpochBatches(self._train_batches(dataset)), self.args.seed)

    def get_eval_dataloader(self, eval_dataset=None):
        from ember.data import BatchSampler, SequentialSampler

        dataset = self._prepare_dataset(
            eval_dataset if eval_dataset is not None else self.eval_dataset, "evaluation"
        )
        if self._group is None:
            order = SequentialSampler(dataset)
        else:  # rank r: samples r, r + world, ... (Note [Distributed Trainer])
            order = list(range(self._group.rank, len(dataset), self._group.size))
        batches = BatchSampler(order, self.args.per_device_eval_batch_size, False)
        loader = self._loader(dataset, batches, self.args.seed)
        if self._group is not None:
            loader._ember_sharded_length = len(dataset)
        return loader

    def get_test_dataloader(self, test_dataset):
        return self.get_eval_dataloader(test_dataset)

    def _new_data_generator(self):
        from ember.backend.random import Generator

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return Generator().manual_seed(seed)

    # ------------------------------------------------------------------ optimizer
    def get_decay_parameter_names(self, model) -> list[str]:
        """Parameters that get weight decay: all but biases and normalisation weights."""
        norm_modules = set()
        for name, module in model.named_modules():
            if "norm" in type(module).__name__.lower():
                norm_modules.add(name)
        names = []
        for name, _ in model.named_parameters():
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            if owner in norm_modules or _NO_DECAY_PATTERNS.search(name):
                continue
            names.append(name)
        return names

    def create_optimizer(self):
        """AdamW with args' settings; no weight decay on biases and LayerNorm weights."""
        if self.optimizer is None:
            from ember.optim import AdamW

            decay = set(self.get_decay_parameter_names(self.model))
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = [
                {
                    "params": [p for n, p in named if n in decay],
                    "weight_decay": self.args.weight_decay,
                },
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            groups = [g for g in groups if g["params"]]
            if not groups:
                raise ValueError(
                    f"Trainer: {type(self.model).__name__} has no parameters that require gradients"
                )
            self.optimizer = AdamW(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The args.lr_scheduler_type schedule over `num_training_steps` optimizer steps."""
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)
        self.callback_handler.optimizer = self.optimizer
        self.callback_handler.lr_scheduler = self.lr_scheduler

    def _get_learning_rate(self) -> float:
        return float(self.lr_scheduler.get_last_lr()[0])

    # ------------------------------------------------------------------ steps
    def _count_items(self, inputs) -> int:
        """Items a micro-batch's mean loss averages over (Note [Accumulation])."""
        for name in self.label_names:
            labels = inputs.get(name) if isinstance(inputs, Mapping) else None
            if labels is None:
                continue
            array = _to_numpy(labels)
            if array.dtype.kind in "iu":
                return int((array != -100).sum())
            return int(array.size)
        for value in inputs.values() if isinstance(inputs, Mapping) else inputs:
            if hasattr(value, "shape") and len(value.shape) > 0:
                return int(value.shape[0])
        return 1

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The loss the model returns for `inputs` (which hold the labels)."""
        if num_items_in_batch is not None and self._model_accepts_num_items:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if isinstance(outputs, (tuple, list)):
            loss = outputs[0]
        else:
            loss = _output_get(outputs, "loss")
        if loss is None:
            keys = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"Trainer.compute_loss: {type(model).__name__} returned no loss (it returned "
                f"{keys}) for inputs {sorted(inputs)}; pass the labels under one of "
                f"{self.label_names} or override compute_loss"
            )
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Forward, loss and backward for one micro-batch; returns the loss's share of the
        window's loss, detached (Note [Accumulation])."""
        model.train()
        own = num_items_in_batch is not None and self._model_accepts_num_items
        if num_items_in_batch is None:
            scale = 1.0 / self.args.gradient_accumulation_steps
        else:
            scale = 1.0 if own else self._count_items(inputs) / max(num_items_in_batch, 1)
        # the items are counted over all ranks: DDP's average then needs the world size back
        world = self.world_size if num_items_in_batch is not None else 1
        if self.args.torch_compile:
            return self._compiled_training_step(model, inputs, scale * world) / world
        if own:
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        else:
            loss = self.compute_loss(model, inputs)
            if scale != 1.0:  # x * 1 is x: no extra node in the graph
                loss = loss * scale
        (loss * world if world > 1 else loss).backward()
        return loss.detach()

    def _compiled_training_step(self, model, inputs, scale: float):
        """Note [Compiled training step]."""
        from ember.graph.compile import compile as ember_compile
        from ember.tensor import tensor

        if self._compiled_step is None:
            trainer = self

            def train_step(batch, loss_scale):
                loss = trainer.compute_loss(model, batch) * loss_scale
                loss.backward()
                return loss

            self._compiled_step = ember_compile(train_step, name="train_step")
            self._compiled_step.trace_ahead = False  # .grad is always cleared (below)
        # The graph always runs with .grad cleared and the sum is done here: a graph variant
        # traced with .grad set would capture those gradient tensors (Note [Compiled training
        # step]), and one variant per shape is cheaper to keep anyway.
        parameters = [p for p in model.parameters() if p.requires_grad]
        held = [p.grad for p in parameters]
        for p in parameters:
            p.grad = None
        dtype = parameters[0].dtype
        batch = dict(inputs)
        padding = getattr(model, "_compile_padding", None)
        padded = padding((), batch) if padding is not None else None
        if padded is not None:  # one graph per sequence bucket (Note [Sequence buckets])
            arguments = (padded[0], tensor(scale, dtype=dtype))
            loss = self._compiled_step.call_in_bucket(padded[2], arguments, {}).detach()
        else:
            loss = self._compiled_step(batch, tensor(scale, dtype=dtype)).detach()
        for p, old in zip(parameters, held):
            if old is not None and p.grad is not None:
                np.add(p.grad.array, old.array, out=p.grad.array)
            elif old is not None:
                p.grad = old
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """(loss, logits, labels) for one batch, without gradients; loss is None without
        labels, logits None when prediction_loss_only."""
        from ember.autograd import no_grad

        has_labels = bool(self.label_names) and all(
            inputs.get(n) is not None for n in self.label_names
        )
        labels = None
        if has_labels:
            labels = [inputs[n] for n in self.label_names]
            labels = labels[0] if len(labels) == 1 else tuple(labels)
        ignore = set(ignore_keys or ())
        with no_grad():
            if has_labels:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        if isinstance(outputs, Mapping):
            logits = tuple(
                v for k, v in outputs.items() if k not in ignore | {"loss"} and v is not None
            )
        elif isinstance(outputs, (tuple, list)):
            logits = tuple(outputs[1:] if has_labels else outputs)
        elif hasattr(outputs, "logits"):
            logits = (outputs.logits,)
        else:
            logits = (outputs,)
        logits = logits[0] if len(logits) == 1 else logits
        return loss, logits, labels

    # ------------------------------------------------------------------ training
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> TrainOutput:
        """Train for args.num_train_epochs (or args.max_steps optimizer steps).

        resume_from_checkpoint: True resumes from the newest complete checkpoint in
        args.output_dir; a path resumes from that checkpoint (Note [Resumable training]).
        """
        if kwargs:
            raise TypeError(f"Trainer.train: unexpected arguments {sorted(kwargs)}")
        args = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"Trainer.train: resume_from_checkpoint=True, but "
                    f"{args.output_dir!r} holds no complete checkpoint"
                )
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if self._group is not None:  # every rank resumes from the checkpoint rank 0 names
            resume_from_checkpoint = self._group.broadcast_object(resume_from_checkpoint, 0)
        if resume_from_checkpoint is not None and not is_complete(resume_from_checkpoint):
            raise ValueError(
                f"Trainer.train: {resume_from_checkpoint!r} is not a complete "
                f"checkpoint (no completion marker: its write was interrupted)"
            )

        dataset = self._prepare_dataset(self.train_dataset, "training")
        self._data_generator = self._new_data_generator()
        batch_size = args.per_device_train_batch_size
        n = len(dataset)
        if self._group is not None:  # this rank's share, padded (Note [Distributed Trainer])
            n = math.ceil(n / self._group.size)
        len_dataloader = n // batch_size if args.dataloader_drop_last else math.ceil(n / batch_size)
        if len_dataloader == 0:
            raise ValueError(
                f"Trainer.train: {n} training examples make no batch of "
                f"{batch_size} with dataloader_drop_last=True"
            )
        accumulation = args.gradient_accumulation_steps
        updates_per_epoch = max(math.ceil(len_dataloader / accumulation), 1)
        if args.max_steps > 0:
            max_steps = args.max_steps
            num_train_epochs = math.ceil(max_steps / updates_per_epoch)
        else:
            max_steps = math.ceil(args.num_train_epochs * updates_per_epoch)
            num_train_epochs = math.ceil(args.num_train_epochs)
        if max_steps <= 0:
            raise ValueError(
                "Trainer.train: nothing to train: num_train_epochs and max_steps "
                "give 0 optimizer steps"
            )

        self.state = self._new_state()
        self.state.max_steps = max_steps
        self.state.num_train_epochs = num_train_epochs
        self.state.train_batch_size = batch_size

        def resolve(value):
            return math.ceil(max_steps * value) if value is not None and value < 1 else value

        self.state.logging_steps = resolve(args.logging_steps)
        self.state.eval_steps = resolve(args.eval_steps)
        self.state.save_steps = resolve(args.save_steps)
        self.create_optimizer_and_scheduler(max_steps)

        epochs_trained, skip_batches = 0, 0
        self._tr_loss, self._total_loss, self._last_logged_step = 0.0, 0.0, 0
        position = None
        if resume_from_checkpoint is not None:
            position = self._load_checkpoint(resume_from_checkpoint)
            epochs_trained, skip_batches = position["epoch"], position["steps_in_epoch"]
            self._tr_loss = position["tr_loss"]
            self._total_loss = position["total_loss"]
            self._last_logged_step = position["last_logged_step"]
        self.callback_handler.model = self.model
        self.control = TrainerControl()
        self.control = self._event("on_train_begin")
        start_time = time.perf_counter()
        start_step = self.state.global_step
        grad_norm = None
        model = self._wrap_model()
        distributed = self._group is not None
        if distributed and args.torch_compile:  # the compiled step bypasses DDP's broadcast
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                self._group.broadcast(tensor.array, 0)

        for epoch in range(epochs_trained, num_train_epochs):
            if position is not None and epoch == epochs_trained:
                self._data_generator.set_state(position["sampler_state"])
            self._epoch_start_sampler_state = self._data_generator.get_state()
            batches = self._train_batches(dataset)
            skip = skip_batches if epoch == epochs_trained else 0
            loader = self._loader(dataset, _EpochBatches(batches[skip:]), args.seed * 1000 + epoch)
            self.callback_handler.train_dataloader = loader
            self.control = self._event("on_epoch_begin")
            iterator = iter(loader)
            done = skip
            while done < len_dataloader:
                window_size = min(accumulation, len_dataloader - done)
                window = [next(iterator) for _ in range(window_size)]
                num_items = sum(self._count_items(b) for b in window)
                if distributed:
                    num_items = int(round(self._all_sum(float(num_items))))
                self.control = self._event("on_step_begin")
                window_loss = 0.0
                for i, inputs in enumerate(window):
                    if distributed and i < window_size - 1 and model is not self.model:
                        with model.no_sync():
                            loss = float(self.training_step(model, inputs, num_items).item())
                    else:
                        loss = float(self.training_step(model, inputs, num_items).item())
                    if distributed:
                        window_loss += loss
                    else:
                        if args.logging_nan_inf_filter and not math.isfinite(loss):
                            loss = self._tr_loss / (
                                1 + self.state.global_step - self._last_logged_step
                            )
                        self._tr_loss += loss
                    if i < window_size - 1:
                        self.control = self._event("on_substep_end")
                if distributed:
                    if args.torch_compile:
                        self._average_gradients()
                    window_loss = self._all_sum(window_loss)
                    if args.logging_nan_inf_filter and not math.isfinite(window_loss):
                        window_loss = self._tr_loss / (
                            1 + self.state.global_step - self._last_logged_step
                        )
                    self._tr_loss += window_loss
                done += window_size
                if args.max_grad_norm:
                    from ember.nn.utils import clip_grad_norm_

                    grad_norm = float(
                        clip_grad_norm_(
                            [p for p in model.parameters() if p.grad is not None],
                            args.max_grad_norm,
                        ).item()
                    )
                self.control = self._event("on_pre_optimizer_step")
                self.optimizer.step()
                self.control = self._event("on_optimizer_step")
                self.lr_scheduler.step()
                model.zero_grad(set_to_none=True)
                self.state.global_step += 1
                self.state.epoch = epoch + done / len_dataloader
                self._position = (epoch, done, len_dataloader)
                self.control = self._event("on_step_end")
                self._maybe_log_save_evaluate(grad_norm)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            self.control = self._event("on_epoch_end")
            self._maybe_log_save_evaluate(grad_norm)
            if self.control.should_training_stop:
                break

        if args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_model_weights(self.state.best_model_checkpoint)
        runtime = time.perf_counter() - start_time
        self._total_loss += self._tr_loss
        steps_run = max(self.state.global_step, 1)
        train_loss = self._total_loss / steps_run
        done_steps = self.state.global_step - start_step
        metrics = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(
                done_steps * batch_size * accumulation * self.world_size / max(runtime, 1e-9), 3
            ),
            "train_steps_per_second": round(done_steps / max(runtime, 1e-9), 3),
            "total_flos": float(self.state.total_flos),
            "train_loss": train_loss,
        }
        self.log(metrics)
        self.control = self._event("on_train_end")
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _maybe_log_save_evaluate(self, grad_norm) -> None:
        if self.control.should_log and self.state.global_step > self._last_logged_step:
            steps = self.state.global_step - self._last_logged_step
            logs = {"loss": self._tr_loss / steps}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm
            logs["learning_rate"] = self._get_learning_rate()
            self._total_loss += self._tr_loss
            self._tr_loss = 0.0
            self._last_logged_step = self.state.global_step
            self.log(logs)
        metrics = None
        if self.control.should_evaluate:
            metrics = self._evaluate_all()
            is_new_best = self._determine_best_metric(metrics)
            if self.args.save_strategy == "best":
                self.control.should_save = is_new_best
        if self.control.should_save:
            self._save_checkpoint()
            self.control = self._event("on_save")
        self.control._new_step()

    def _evaluate_all(self) -> dict:
        if isinstance(self.eval_dataset, dict):
            metrics = {}
            for name, dataset in self.eval_dataset.items():
                metrics.update(self.evaluate(dataset, metric_key_prefix=f"eval_{name}"))
            return metrics
        return self.evaluate()

    def _determine_best_metric(self, metrics: dict) -> bool:
        name = self.args.metric_for_best_model
        if name is None:
            return False
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise KeyError(
                f"Trainer: metric_for_best_model={name!r}, but the evaluation "
                f"returned only {sorted(metrics)}"
            )
        value = float(metrics[key])
        best = self.state.best_metric
        better = best is None or (value > best if self.args.greater_is_better else value < best)
        if better:
            self.state.best_metric = value
            self.state.best_global_step = self.state.global_step
        return better

    def log(self, logs: dict) -> None:
        """Append `logs` (with epoch and step) to state.log_history and call on_log. As in
        HuggingFace, `logs` itself gains the epoch (so evaluate()'s metrics carry it)."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self._event("on_log", logs=logs)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict:
        """Loss (and compute_metrics) on the evaluation set; metrics named eval_*."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer.evaluate: no eval_dataset, here or at construction")
        if isinstance(dataset, dict) and eval_dataset is None:
            return self._evaluate_all()
        loader = self.get_eval_dataloader(dataset)
        self.callback_handler.eval_dataloader = loader
        output = self._prediction_loop(
            loader,
            "Evaluation",
            ignore_keys,
            metric_key_prefix,
            prediction_loss_only=self.compute_metrics is None,
        )
        self.log(output.metrics)
        self.control = self._event("on_evaluate", metrics=output.metrics)
        return output.metrics

    def predict(
        self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predictions (logits as NumPy), label_ids and metrics on `test_dataset`."""
        loader = self.get_test_dataloader(test_dataset)
        output = self._prediction_loop(
            loader, "Prediction", ignore_keys, metric_key_prefix, prediction_loss_only=False
        )
        self.control = self._event("on_predict", metrics=output.metrics)
        return output

    def _prediction_loop(
        self, loader, description: str, ignore_keys, prefix: str, prediction_loss_only: bool
    ) -> PredictionOutput:
        model = self.model
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        losses, predictions, labels = [], [], []
        n_samples, n_batches = 0, 0
        try:
            for inputs in loader:
                batch_size = self._batch_size(inputs)
                loss, logits, label = self.prediction_step(
                    model,
                    inputs,
                    prediction_loss_only or self.args.prediction_loss_only,
                    ignore_keys,
                )
                if loss is not None:
                    losses.append(np.full(batch_size, float(_to_numpy(loss).mean())))
                if logits is not None:
                    if self.preprocess_logits_for_metrics is not None:
                        logits = self.preprocess_logits_for_metrics(logits, label)
                    predictions.append(self._nested_numpy(logits))
                if label is not None:
                    labels.append(self._nested_numpy(label))
                n_samples += batch_size
                n_batches += 1
                self.control = self._event("on_prediction_step")
        finally:
            model.train(was_training)
        predictions = self._nested_concat(predictions)
        label_ids = self._nested_concat(labels)
        length = getattr(loader, "_ember_sharded_length", None)
        if self._group is not None and length is not None:  # Note [Distributed Trainer]
            rows = np.concatenate(losses) if losses else None
            parts = self._group.allgather_object((rows, predictions, label_ids))
            rows = _interleave([p[0] for p in parts], length)
            losses = [rows] if rows is not None else []
            predictions = _interleave([p[1] for p in parts], length)
            label_ids = _interleave([p[2] for p in parts], length)
            n_samples = length
            n_batches = self._all_sum(float(n_batches))
        runtime = time.perf_counter() - start
        metrics = {}
        if self.compute_metrics is not None and predictions is not None and label_ids is not None:
            computed = self.compute_metrics(EvalPrediction(predictions, label_ids))
            metrics.update(
                {
                    k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
                    for k, v in computed.items()
                }
            )
        if losses:
            metrics["loss"] = float(np.concatenate(losses).mean())
        metrics["runtime"] = round(runtime, 4)
        metrics["samples_per_second"] = round(n_samples / max(runtime, 1e-9), 3)
        metrics["steps_per_second"] = round(n_batches / max(runtime, 1e-9), 3)
        ordered = {}
        for key in ["loss"] + [k for k in metrics if k != "loss"]:
            if key in metrics:
                name = key if key.startswith(f"{prefix}_") else f"{prefix}_{key}"
                ordered[name] = metrics[key]
        return PredictionOutput(predictions, label_ids, ordered)

    @staticmethod
    def _batch_size(inputs) -> int:
        for value in inputs.values() if isinstance(inputs, Mapping) else inputs:
            if hasattr(value, "shape") and len(value.shape) > 0:
                return int(value.shape[0])
        return 1

    @staticmethod
    def _nested_numpy(value):
        return map_leaves(_to_numpy, value)

    @staticmethod
    def _nested_concat(parts: list):
        """Batches of one structure -> one structure of concatenated leaves (Note [Pytrees])."""
        if not parts:
            return None
        structure = flatten(parts[0])[1]
        columns = zip(*(leaves(p) for p in parts))
        return unflatten(
            structure, (_concat_padded([np.atleast_1d(p) for p in col]) for col in columns)
        )

    # ------------------------------------------------------------------ saving
    def _model_files(self, folder: str) -> None:
        model = self.model
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(folder)
            return
        from ember.io import save_file

        save_file(
            {k: v for k, v in model.state_dict().items()},
            os.path.join(folder, WEIGHTS_NAME),
            metadata={"format": "pt"},
        )
        config = getattr(model, "config", None)
        if config is not None:
            if hasattr(config, "to_json_string"):
                text = config.to_json_string()
            elif hasattr(config, "to_dict"):
                text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
            else:
                text = json.dumps(config, indent=2, sort_keys=True, default=str)
            with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
                f.write(text)

    def save_model(self, output_dir: str | None = None) -> None:
        """Write the model (safetensors + config), the tokenizer and the training arguments."""
        if not self.is_world_process_zero():  # rank 0 writes (Note [Distributed Trainer])
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self._model_files(output_dir)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)
        with open(os.path.join(output_dir, TRAINING_ARGS_NAME), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())

    def _save_checkpoint(self) -> str:
        from ember.io import save

        args = self.args
        step = self.state.global_step
        folder_name = f"{PREFIX_CHECKPOINT_DIR}-{step}"
        final = os.path.join(args.output_dir, folder_name)
        if self.state.best_global_step == step:
            self.state.best_model_checkpoint = final
        epoch, done, length = self._position
        if done >= length:  # an epoch's end: the next epoch starts from the current state
            position = {
                "epoch": epoch + 1,
                "steps_in_epoch": 0,
                "sampler_state": self._data_generator.get_state(),
            }
        else:
            position = {
                "epoch": epoch,
                "steps_in_epoch": done,
                "sampler_state": self._epoch_start_sampler_state,
            }
        position.update(
            tr_loss=self._tr_loss,
            total_loss=self._total_loss,
            last_logged_step=self._last_logged_step,
        )
        self.state.stateful_callbacks = {
            type(c).__name__: c.state()
            for c in self.callback_handler.callbacks
            if hasattr(c, "state") and callable(c.state)
        }

        def write(folder):
            self._model_files(folder)
            if self.processing_class is not None and hasattr(
                self.processing_class, "save_pretrained"
            ):
                self.processing_class.save_pretrained(folder)
            if not args.save_only_model:
                save(self.optimizer.state_dict(), os.path.join(folder, OPTIMIZER_NAME))
                save(self.lr_scheduler.state_dict(), os.path.join(folder, SCHEDULER_NAME))
                with open(os.path.join(folder, RNG_STATE_NAME), "w", encoding="utf-8") as f:
                    json.dump(rng_states(), f)
                with open(os.path.join(folder, POSITION_NAME), "w", encoding="utf-8") as f:
                    json.dump(position, f)
            self.state.save_to_json(os.path.join(folder, TRAINER_STATE_NAME))
            with open(os.path.join(folder, TRAINING_ARGS_NAME), "w", encoding="utf-8") as f:
                f.write(args.to_json_string())

        if self.is_world_process_zero():
            path = write_checkpoint(args.output_dir, step, write)
            rotate_checkpoints(
                args.output_dir, args.save_total_limit, self.state.best_model_checkpoint
            )
        else:
            path = final
        if self._group is not None:  # the others go on once the checkpoint is complete
            self._group.barrier()
        return path

    def _load_model_weights(self, folder: str) -> None:
        from ember.io import load_file

        path = os.path.join(folder, WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Trainer: no {WEIGHTS_NAME} in checkpoint {folder!r}")
        state = load_file(path)
        own = self.model.state_dict()
        missing = [k for k in own if k not in state]
        if missing and all(k.split(".", 1)[-1] in state for k in missing):
            state = {k: state[k.split(".", 1)[-1]] for k in own}  # a base-model prefix
        self.model.load_state_dict(state, strict=True)

    def _load_checkpoint(self, folder: str) -> dict:
        from ember.io import load

        needed = [
            WEIGHTS_NAME,
            OPTIMIZER_NAME,
            SCHEDULER_NAME,
            RNG_STATE_NAME,
            POSITION_NAME,
            TRAINER_STATE_NAME,
        ]
        missing = [n for n in needed if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise ValueError(
                f"Trainer.train: checkpoint {folder!r} lacks {missing} "
                f"(saved with save_only_model=True?); it cannot resume training"
            )
        self._load_model_weights(folder)
        self.optimizer.load_state_dict(load(os.path.join(folder, OPTIMIZER_NAME)))
        self.lr_scheduler.load_state_dict(load(os.path.join(folder, SCHEDULER_NAME)))
        saved = TrainerState.load_from_json(os.path.join(folder, TRAINER_STATE_NAME))
        for name in (
            "max_steps",
            "num_train_epochs",
            "logging_steps",
            "eval_steps",
            "save_steps",
            "train_batch_size",
        ):
            setattr(saved, name, getattr(self.state, name))
        saved.is_world_process_zero = self.state.is_world_process_zero
        saved.is_local_process_zero = self.state.is_local_process_zero
        self.state = saved
        for callback in self.callback_handler.callbacks:
            stored = saved.stateful_callbacks.get(type(callback).__name__)
            if stored and hasattr(callback, "state"):
                for key, value in stored.get("attributes", {}).items():
                    setattr(callback, key, value)
        with open(os.path.join(folder, RNG_STATE_NAME), encoding="utf-8") as f:
            set_rng_states(json.load(f))
        with open(os.path.join(folder, POSITION_NAME), encoding="utf-8") as f:
            position = json.load(f)
        return position


def strip_runtime(log_history: list) -> list:
    """log_history without the wall-clock entries (runtime, rates), for comparing runs."""
    return [
        {k: v for k, v in entry.items() if not k.endswith(_RUNTIME_KEYS)} for entry in log_history
    ]
