"""Shape buckets for compiled encoder models: `ember.compile(model)` pads the sequence length
up to a bucket, so that a few graphs serve every length.

Note [Sequence buckets]: a compiled graph has fixed shapes (Note [Compile cache]), so each new
(batch, sequence) shape would trace and compile a new graph. For the encoders whose attention
takes a padding mask (BERT, RoBERTa, DistilBERT: `PADDABLE`), a padded position changes nothing
at the real ones: its key gets the additive mask's lowest value, so exactly zero attention
weight, and its own outputs are sliced away. So a call with sequence length S runs the graph of
length `bucket_length(S)` (the next of four steps per octave: ..., 64, 80, 96, 112, 128, 160,
...; multiples of `MIN_BUCKET` below 64; at most the model's `max_position_embeddings`):
`input_ids` is padded with the pad token, `attention_mask` with 0 (made of ones first when not
given, also at a bucket's own length, and the keywords put in the signature's order, so that
every call of a bucket has one cache key), `token_type_ids` with 0, `position_ids` by
continuing the count, token-level `labels` with -100 (the ignored label, so a loss is
unchanged), and the output's sequence axes are cut back to S. The results equal the unpadded
model's up to the order of float32 sums (softmax and reductions over more, zero, terms). The
batch size is not padded (a mean loss over a padded batch would change); each batch size traces
its own graph, in the compiled function's bounded cache. Retraces name the bucket; the first
graph of each bucket is planned and does not count toward `RetraceWarning` (Note [Compile
cache]).
Why four steps per octave: the padded positions cost their full share of every GEMM (and more
of attention), and the compiled forward gains only ~10% on eager at equal length (MiniLM
32x128, 0.87-0.90x eager at 1 and 2 threads, quiet 2-core machine). With powers of two a length
of 100 ran in the 128 graph at 1.19-1.21x eager's time; a step of an eighth of the power of two
above keeps the padding under 25% (12% on average) for ~3x the graphs, and a new graph costs
about one forward of its shape to trace and compile (kernels are cached).
"""

from __future__ import annotations

import inspect

import ember
from ember.tensor import Tensor

__all__ = ["PADDABLE", "MIN_BUCKET", "bucket_length", "padded_call"]

PADDABLE = {"bert", "roberta", "distilbert"}  # model_type -> padding keeps the real outputs
MIN_BUCKET = 8
STEPS_PER_OCTAVE = 4

_TOKEN_INPUTS = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}
# output fields -> the axes that run over the sequence (where the padded length shows)
_SEQUENCE_AXES = {
    "last_hidden_state": (1,),
    "hidden_states": (1,),
    "attentions": (-2, -1),
    "start_logits": (1,),
    "end_logits": (1,),
    "prediction_logits": (1,),
}


def bucket_length(length: int, limit: int | None = None) -> int:
    """The padded length of a sequence of `length` tokens: the octave (P/2, P] that holds it,
    P a power of two, is cut in STEPS_PER_OCTAVE steps (of at least MIN_BUCKET), and the step
    at or above `length` is the bucket; capped at `limit` (the model's position table)."""
    n = max(MIN_BUCKET, int(length))
    top = 1 << (n - 1).bit_length()
    step = max(MIN_BUCKET, top // (2 * STEPS_PER_OCTAVE))
    bucket = -(-n // step) * step
    if limit is not None and length <= limit < bucket:
        return int(limit)
    return bucket


def padded_call(model, args, kwargs):
    """(keyword arguments padded to the bucket, restore(output)) for a call of `model`, or None
    when the model or the call is not one that padding leaves unchanged (Note [Sequence
    buckets])."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PADDABLE:
        return None
    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    call = dict(bound.arguments)
    extra = call.pop("kwargs", None)
    if extra:
        call.update(extra)
    ids = call.get("input_ids")
    embeds = call.get("inputs_embeds")
    ref = ids if ids is not None else embeds
    if not isinstance(ref, Tensor) or ref.ndim < 2 + (ids is None):
        return None
    seq_axis = ref.ndim - 1 if ids is not None else ref.ndim - 2
    length = int(ref.shape[seq_axis])
    target = bucket_length(length, getattr(config, "max_position_embeddings", None))
    token_shape = tuple(ref.shape[: seq_axis + 1])
    pad = target - length
    return_dict = call.get("return_dict")
    call["return_dict"] = True
    if call.get("attention_mask") is None and "attention_mask" in signature.parameters:
        # made in every call, padded or not, so that the calls of one bucket share a graph
        call["attention_mask"] = ember.ones(token_shape, dtype=ember.int64)
    # the keyword order is part of the graph's cache key: the signature's order, whatever
    # the caller's (and whether the mask was given or made here)
    order = {name: i for i, name in enumerate(signature.parameters)}
    call = dict(sorted(call.items(), key=lambda item: order.get(item[0], len(order))))
    if pad <= 0:  # already a bucket's length: nothing to pad or cut
        return (
            call,
            (lambda out: out if return_dict is not False else out.to_tuple()),
            (length, length),
        )
    for name, value in list(call.items()):
        if not isinstance(value, Tensor) or value.ndim == 0:
            continue
        if name in _TOKEN_INPUTS and tuple(value.shape) == token_shape:
            fill = (getattr(config, "pad_token_id", 0) or 0) if name == "input_ids" else 0
            call[name] = _pad_last(value, pad, fill)
        elif name == "position_ids" and value.shape[-1] == length:
            step = ember.arange(length, target, dtype=value.dtype)
            call[name] = ember.cat([value, step.expand(*value.shape[:-1], pad)], dim=-1)
        elif name == "inputs_embeds" and value.ndim == 3 and value.shape[1] == length:
            zeros = ember.zeros((value.shape[0], pad, value.shape[2]), dtype=value.dtype)
            call[name] = ember.cat([value, zeros], dim=1)
        elif name == "labels" and tuple(value.shape) == token_shape:
            call[name] = _pad_last(value, pad, -100)

    def restore(out):
        out = _cut(out, length, target)
        return out if return_dict is not False else out.to_tuple()

    return call, restore, (length, target)


def _pad_last(t: Tensor, pad: int, fill) -> Tensor:
    block = ember.full((*t.shape[:-1], pad), fill, dtype=t.dtype)
    return ember.cat([t, block], dim=-1)


def _cut(out, length, target):
    from ember.transformers.modeling_outputs import ModelOutput

    if not isinstance(out, ModelOutput):
        return out
    changes = {}
    for name in out.keys():
        axes = _SEQUENCE_AXES.get(name)
        value = getattr(out, name)
        if name == "logits" and isinstance(value, Tensor) and value.ndim >= 3:
            axes = (1,)  # token-level logits (batch, seq, classes)
        if axes is None:
            continue
        changes[name] = _cut_value(value, axes, length, target)
    for name, value in changes.items():
        setattr(out, name, value)
    return out


def _cut_value(value, axes, length, target):
    if isinstance(value, (tuple, list)):
        return type(value)(_cut_value(v, axes, length, target) for v in value)
    if not isinstance(value, Tensor):
        return value
    index = [slice(None)] * value.ndim
    for axis in axes:
        if value.shape[axis] == target:
            index[axis] = slice(0, length)
    return value[tuple(index)]
