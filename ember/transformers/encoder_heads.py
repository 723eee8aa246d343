"""What the encoder families (BERT, RoBERTa, DistilBERT) share, under public names: the
multi-head self-attention and the layer loop, the weight initialisation, calling the base
model, the label losses and the output flags.

Each model file imports these from here and none imports another model's private helpers, so
a rule (e.g. how `problem_type` is inferred) lives in one place and a model file reads on its
own. A head model finds its encoder under `base_model_prefix` (`bert`, `roberta`,
`distilbert`).
"""

from __future__ import annotations

import math

import numpy as np

import ember
from ember import nn
from ember.autograd.packed import joined_rows
from ember.backend import feed_forward_kernels, runs_eagerly
from ember.nn import functional as F
from ember.ops.dropout_norm import folds_in_one_pass
from ember.ops.feed_forward import feed_forward_layer_norm
from ember.tensor import Tensor
from ember.transformers.activations import GELUActivation, GELUTanhActivation
from ember.transformers.modeling_utils import init_normal_weights
from ember.transformers.modeling_outputs import (
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

__all__ = [
    "EncoderHeadMixin",
    "as_labels",
    "biased_add_and_norm",
    "dense_dropout_add_norm",
    "feed_forward_add_norm",
    "feed_forward_in_chunks",
    "finish",
    "flatten_choices",
    "init_encoder_weights",
    "return_flags",
    "run_layers",
    "self_attention",
    "sequence_classification_loss",
    "span_loss",
    "split_heads",
    "token_classification_loss",
]


# --------------------------------------------------------------------------- the encoder
def split_heads(x, num_heads: int, view: bool = False):
    """(batch, seq, hidden) -> (batch, heads, seq, head_size): contiguous (NumPy's batched
    matmul is several times slower on strided views), or the strided view where `view`."""
    batch, length, hidden = x.shape
    heads = x.reshape(batch, length, num_heads, hidden // num_heads).transpose(1, 2)
    return heads if view else heads.contiguous()


def _joined_heads(hidden_states, query, key, value, num_heads: int):
    """The query, key and value heads of `hidden_states` in inference as strided views of one
    product by the projections' joined weights (Note [Joined projections] in
    ember/autograd/packed.py), or None where the three products apply (a projection that is
    not a plain nn.Linear, projections of different shapes, graph tracing)."""
    if type(query) is not nn.Linear or type(key) is not nn.Linear or type(value) is not nn.Linear:
        return None
    # plain reads (Note [Module attribute mirror]) and the arrays' shapes, no Size objects:
    # this runs once per layer of every short request (Note [Eager inference overhead])
    weights = (query.weight, key.weight, value.weight)
    biases = (query.bias, key.bias, value.bias)
    data = hidden_states.array
    if (
        type(data) is not np.ndarray  # traced, or another backend
        or data.ndim != 3
        or not weights[0].array.shape == weights[1].array.shape == weights[2].array.shape
    ):
        return None
    bias = None
    if biases[0] is not None or biases[1] is not None or biases[2] is not None:
        if biases[0] is None or biases[1] is None or biases[2] is None:
            return None
        bias = joined_rows(biases)
        if bias is None:
            return None
    weight = joined_rows(weights)
    if weight is None:
        return None
    out = F.linear(hidden_states, weight, bias).array
    batch, length, _ = out.shape
    heads = out.reshape(batch, length, 3, num_heads, -1).transpose(2, 0, 3, 1, 4)
    return Tensor.from_array(heads[0]), Tensor.from_array(heads[1]), Tensor.from_array(heads[2])


def self_attention(
    hidden_states,
    query,
    key,
    value,
    num_heads: int,
    attention_mask=None,
    output_attentions: bool = False,
    head_mask=None,
    dropout=None,
):
    """Multi-head self-attention of `hidden_states` with the projections `query`, `key`,
    `value` (modules): scaled dot-product attention, or the explicit softmax when the
    probabilities are asked for. `head_mask` (per head) multiplies the probabilities; `dropout`
    (an nn.Dropout) drops them in training. Returns (context (batch, seq, hidden), probs).
    In inference the three projections run as one product (Note [Joined projections] in
    ember/autograd/packed.py)."""
    # the fused attention op (inference) and the decomposition's batched products (training,
    # as MKL batch calls per batch item: Note [Strided batches] in ember/backend/blas.py) read
    # strided heads as they are; the explicit path gets contiguous copies
    views = not output_attentions
    joined = None
    if views and not ember.is_grad_enabled():
        joined = _joined_heads(hidden_states, query, key, value, num_heads)
    if joined is not None:
        q, k, v = joined
    else:
        q = split_heads(query(hidden_states), num_heads, views)
        k = split_heads(key(hidden_states), num_heads, views)
        v = split_heads(value(hidden_states), num_heads, views)
    scale = 1.0 / math.sqrt(q.shape[-1])
    if output_attentions:
        scores = (q @ k.mT.contiguous()) * scale
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = F.softmax(scores, -1)
        dropped = dropout(probs) if dropout is not None else probs
        if head_mask is not None:
            probs = probs * head_mask
            dropped = dropped * head_mask
        context = dropped @ v
    else:
        probs = None
        context = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_mask,
            dropout_p=dropout.p if dropout is not None and dropout.training else 0.0,
            scale=scale,
        )
        if head_mask is not None:  # (p * m) @ v == m * (p @ v): m is per head
            context = context * head_mask
    return _merge_heads(context), probs


def _merge_heads(context):
    """(batch, heads, seq, head_size) -> (batch, seq, heads * head_size), the inverse of
    `split_heads`, for `context` an op's fresh result that nothing else holds. Where it records
    nothing and lives in NumPy memory (eager inference) it is rearranged on its array: no
    other view of it needs the version counter the view ops would share (Note [Views and
    in-place] in ember/tensor.py), and two dispatches per layer are saved (Note [Eager
    inference overhead] in ember/autograd/dispatch.py)."""
    batch, heads, length, size = context.shape
    data = context.array
    if not context._requires_grad and type(data) is np.ndarray:
        return Tensor.from_array(data.transpose(0, 2, 1, 3).reshape(batch, length, heads * size))
    return context.transpose(1, 2).reshape(batch, length, heads * size)


# Note [Feed-forward chunks]: in inference (grad mode off) the feed-forward block (dense,
# GELU, dense, residual + LayerNorm) runs over blocks of FEED_FORWARD_CHUNK_ROWS tokens, so
# the (rows, intermediate) activation of one block stays in the CPU's cache between its four
# passes instead of going to memory and back: at MiniLM 32 x 128 that activation is 25 MB a
# layer. Each token's row is computed by the same operations as unchunked (the GEMMs'
# per-element sums do not depend on the row count), so results equal the whole-batch ones
# within float rounding. Training runs the whole batch (autograd keeps the activations anyway),
# as HuggingFace does with `chunk_size_feed_forward=0`.
FEED_FORWARD_CHUNK_ROWS = 1024


def feed_forward_in_chunks(feed_forward, hidden_states):
    """`feed_forward(hidden_states)` over blocks of rows in inference (Note [Feed-forward
    chunks]); the whole batch when gradients are recorded or the batch is small."""
    rows = hidden_states.shape[0] * hidden_states.shape[1]
    if ember.is_grad_enabled() or rows < 2 * FEED_FORWARD_CHUNK_ROWS:
        return feed_forward(hidden_states)
    flat = hidden_states.reshape(1, rows, hidden_states.shape[-1])
    out = None
    for start in range(0, rows, FEED_FORWARD_CHUNK_ROWS):
        block = feed_forward(flat[:, start : start + FEED_FORWARD_CHUNK_ROWS])
        if out is None:
            out = block.new_empty((1, rows, block.shape[-1]))
        # each block copied while it is still in cache (a `cat` of the blocks at the end read
        # them back from memory: 0.7 ms a MiniLM 32 x 128 layer)
        out[:, start : start + block.shape[1]] = block
    return out.reshape(tuple(hidden_states.shape[:-1]) + (-1,))


# Note [Feed-forward in one op]: in inference the whole feed-forward block, layer_norm(
# dropout(dense_out(act(dense_in(h)))) + h) with GELU and no dropout (BERT's BertIntermediate
# + BertOutput, so RoBERTa's too; DistilBERT's FFN + output_layer_norm), runs as the one op
# `fused_feed_forward` (Note [Row-blocked feed-forward] in ember/backend/
# feed_forward_kernels.py): packed weights, the blocks of rows on the threads, GELU and the
# norm on each block while it is in cache. It applies to the stock parts only (nn.Linear
# with biases, GELUActivation or GELUTanhActivation, nn.LayerNorm, dropout off); a wrapped or
# replaced part, or a forward that records gradients, runs the modules. Eager calls take it
# from FEED_FORWARD_MIN_ROWS rows on: below, the op's packing per call costs what it saves at
# 1 thread (up to 128 rows the modules' products keep their weight packs between calls, Note
# [Packed weights]). MiniLM's block, op / modules, medians of 21 (9 from 1024 rows on), one
# process: 1 thread 64 rows 1.28, 128 1.07, 192 1.06, 256 1.01, 1024 0.96, 4096 0.92;
# 2 threads 0.98, 0.95, 0.86, 0.84, 0.91, 0.82. A trace always takes it
# (without gradients), so its graph is the same at every size (ONNX dynamic axes, compile's
# shape buckets); below the same row count the op runs the decomposition's kernels (in a
# compiled MiniLM 1 x 64 forward the kernel took 1.05 / 1.07 of their time at 1 / 2 threads).
FEED_FORWARD_MIN_ROWS = feed_forward_kernels.MIN_ROWS
_GELU_FORMS = {GELUActivation: "none", GELUTanhActivation: "tanh"}


def feed_forward_add_norm(dense_in, activation, dense_out, dropout, layer_norm, hidden_states):
    """layer_norm(dropout(dense_out(activation(dense_in(h)))) + h) as one op where Note
    [Feed-forward in one op] allows, else None (the caller runs its modules)."""
    if (
        runs_eagerly(hidden_states.array)
        and math.prod(hidden_states.shape[:-1]) < FEED_FORWARD_MIN_ROWS
    ):
        return None
    approximate = _GELU_FORMS.get(type(activation))
    if (
        approximate is None
        or hidden_states.dtype is not ember.float32  # the kernel's dtype (float16: the modules)
        or ember.is_grad_enabled()
        or type(dense_in) is not nn.Linear
        or type(dense_out) is not nn.Linear
        or type(layer_norm) is not nn.LayerNorm
        or type(dropout) is not nn.Dropout
        or (dropout.training and dropout.p > 0.0)
        or dense_in.bias is None
        or dense_out.bias is None
    ):
        return None
    return feed_forward_layer_norm(
        hidden_states,
        dense_in.weight,
        dense_in.bias,
        dense_out.weight,
        dense_out.bias,
        layer_norm.normalized_shape,
        layer_norm.weight,
        layer_norm.bias,
        layer_norm.eps,
        approximate,
    )


def add_and_norm(layer_norm: nn.LayerNorm, x, residual):
    """layer_norm(x + residual) with the add in the norm's pass (Note [Fused Transformer ops]
    in ember.ops.fused): the post-norm residual of BERT-family blocks."""
    return F.residual_layer_norm(
        x, residual, layer_norm.normalized_shape, layer_norm.weight, layer_norm.bias, layer_norm.eps
    )


def dense_dropout_add_norm(dense, dropout, layer_norm: nn.LayerNorm, hidden_states, residual):
    """layer_norm(dropout(dense(hidden_states)) + residual), BERT's BertSelfOutput and
    BertOutput. With the stock modules, the dense layer's bias, the dropout (training), the
    residual add and the norm run as one op (`biased_add_and_norm`), except in eager inference
    on inputs below the one-pass kernel's size, where the product adds its bias; a wrapped or
    replaced part runs the modules."""
    if (
        type(dense) is nn.Linear
        and type(dropout) is nn.Dropout
        and type(layer_norm) is nn.LayerNorm
        and dense.bias is not None
    ):
        p = dropout.p if dropout.training else 0.0
        data = hidden_states.array
        if (
            p == 0.0
            and runs_eagerly(data)
            and not folds_in_one_pass(math.prod(data.shape[:-1]), dense.out_features)
        ):
            # short eager inference: the product adds the bias itself (folds_in_one_pass); a
            # trace keeps the one op, so its graph is the same at every size (ONNX dynamic
            # axes, compile's shape buckets). `dense` is a plain nn.Linear: its forward is
            # this F.linear (Note [Eager inference overhead])
            return add_and_norm(
                layer_norm, F.linear(hidden_states, dense.weight, dense.bias), residual
            )
        return biased_add_and_norm(
            layer_norm, F.linear(hidden_states, dense.weight), dense.bias, residual, p
        )
    return add_and_norm(layer_norm, dropout(dense(hidden_states)), residual)


def biased_add_and_norm(layer_norm: nn.LayerNorm, x, bias, residual, p: float = 0.0):
    """layer_norm(dropout(x + bias, p) + residual) as one op, x a linear layer's output
    without its bias (Note [Dropout, add and norm in one pass] in
    ember/backend/dropout_norm_kernels.py: in training the same mask and the same bits as
    the bias add, dropout and add_and_norm one after another; in inference one row-parallel
    pass instead of the bias written by the product (single-threaded NumPy) and the norm)."""
    return F.dropout_add_layer_norm(
        x,
        residual,
        layer_norm.normalized_shape,
        layer_norm.weight,
        layer_norm.bias,
        p,
        p > 0.0,
        layer_norm.eps,
        input_bias=bias,
    )


def run_layers(
    layers,
    hidden_states,
    attention_mask=None,
    output_attentions: bool = False,
    output_hidden_states: bool = False,
    head_mask=None,
):
    """The encoder loop: each layer maps (hidden, mask, output_attentions, its head mask) to
    (hidden, probs). Returns (last hidden, all hidden states or None, all probs or None);
    `head_mask`: None, or one (1, heads, 1, 1) tensor (or None) per layer."""
    all_hidden = (hidden_states,) if output_hidden_states else None
    all_attentions = () if output_attentions else None
    for i, layer in enumerate(layers):
        hidden_states, probs = layer(
            hidden_states,
            attention_mask,
            output_attentions,
            None if head_mask is None else head_mask[i],
        )
        if output_hidden_states:
            all_hidden += (hidden_states,)
        if output_attentions:
            all_attentions += (probs,)
    return hidden_states, all_hidden, all_attentions


def init_encoder_weights(module: nn.Module, std: float) -> None:
    """HuggingFace's initialisation of the encoders' modules (`init_normal_weights`: normal(0,
    std) Linear and Embedding weights, padding row and biases zero, LayerNorm ones/zeros)."""
    init_normal_weights(module, std)


# --------------------------------------------------------------------------- heads
def return_flags(config, output_attentions, output_hidden_states, return_dict):
    """(output_attentions, output_hidden_states, return_dict), the config's where None."""
    return (
        config.output_attentions if output_attentions is None else output_attentions,
        config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        config.return_dict if return_dict is None else return_dict,
    )


def finish(output, return_dict: bool):
    """The ModelOutput, or its tuple when return_dict is False."""
    return output if return_dict else output.to_tuple()


def as_labels(labels):
    """Labels as a tensor (None stays None)."""
    return None if labels is None else ember.as_tensor(labels)


_CHOICE_ARGS = ("attention_mask", "token_type_ids", "position_ids")


def flatten_choices(model, input_ids, kwargs):
    """Multiple choice's shapes: (batch, choices, seq) ids, masks, token types and positions
    (and (batch, choices, seq, hidden) inputs_embeds) become (batch * choices, ...), as
    HuggingFace's ForMultipleChoice heads do. Returns (choices, flat ids, flat kwargs)."""
    name = type(model).__name__
    if input_ids is not None:
        input_ids = ember.as_tensor(input_ids)
        if input_ids.ndim != 3:
            raise ValueError(
                f"{name}: input_ids must be (batch, choices, seq), got shape "
                f"{tuple(input_ids.shape)}"
            )
        choices = input_ids.shape[1]
    elif kwargs.get("inputs_embeds") is not None:
        if kwargs["inputs_embeds"].ndim != 4:
            raise ValueError(
                f"{name}: inputs_embeds must be (batch, choices, seq, hidden), "
                f"got shape {tuple(kwargs['inputs_embeds'].shape)}"
            )
        choices = kwargs["inputs_embeds"].shape[1]
    else:
        raise ValueError(f"{name}: pass exactly one of input_ids and inputs_embeds")

    def flat(x, keep):
        if x is None:
            return None
        x = ember.as_tensor(x)
        return x.reshape(-1, *x.shape[x.ndim - keep :]) if x.ndim > keep else x

    flat_kwargs = dict(kwargs)
    for arg in _CHOICE_ARGS:
        if arg in kwargs:
            flat_kwargs[arg] = flat(kwargs[arg], 1)
    if "inputs_embeds" in kwargs:
        flat_kwargs["inputs_embeds"] = flat(kwargs["inputs_embeds"], 2)
    return choices, flat(input_ids, 1), flat_kwargs


def sequence_classification_loss(model, logits, labels):
    """`config.problem_type` picks MSE, cross-entropy or BCE-with-logits, inferred from
    `num_labels` and the labels' dtype when unset (and then stored in the config, as
    HuggingFace does)."""
    problem = model.config.problem_type
    num_labels = model.num_labels
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif not labels.dtype.is_floating_point:
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
        model.config.problem_type = problem
    if problem == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_classification_loss(logits, labels, num_labels: int):
    """Cross-entropy per token; labels -100 are ignored."""
    return F.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """The mean of the start and end cross-entropies; positions outside the sequence are
    clamped to its length and ignored, as in HuggingFace."""
    length = start_logits.shape[1]
    start = ember.as_tensor(start_positions).reshape(-1).clamp(0, length)
    end = ember.as_tensor(end_positions).reshape(-1).clamp(0, length)
    return (
        F.cross_entropy(start_logits, start, ignore_index=length)
        + F.cross_entropy(end_logits, end, ignore_index=length)
    ) / 2


class EncoderHeadMixin:
    """For head models: `_encode` runs the base model (attribute `base_model_prefix`) with the
    encoder keyword arguments the family accepts (`_encoder_args`), always as a ModelOutput."""

    _encoder_args: tuple[str, ...] = ()

    def _encode(self, input_ids, kwargs: dict):
        unknown = sorted(set(kwargs) - set(self._encoder_args))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.forward: unexpected keyword arguments "
                f"{unknown}; the encoder takes {list(self._encoder_args)}"
            )
        base = getattr(self, self.base_model_prefix)
        return base(input_ids, **{k: kwargs.get(k) for k in self._encoder_args}, return_dict=True)

    def _return_dict(self, return_dict) -> bool:
        return self.config.return_dict if return_dict is None else return_dict

    def _task_output(self, task: str, out, logits, labels, return_dict):
        """The head's output for `task` ("masked_lm", "sequence", "token" or "choice"):
        its loss when labels are given, the encoder's hidden states and attentions."""
        labels = as_labels(labels)
        loss = None
        if labels is not None:
            if task == "sequence":
                loss = sequence_classification_loss(self, logits, labels)
            elif task == "choice":
                loss = F.cross_entropy(logits, labels)
            else:  # one class per token: "masked_lm" (the vocabulary) or "token"
                loss = token_classification_loss(logits, labels, logits.shape[-1])
        output_type = {
            "masked_lm": MaskedLMOutput,
            "sequence": SequenceClassifierOutput,
            "token": TokenClassifierOutput,
            "choice": MultipleChoiceModelOutput,
        }[task]
        output = output_type(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return finish(output, self._return_dict(return_dict))

    def _span_output(self, out, logits, start_positions, end_positions, return_dict):
        """A question-answering head's output from its (..., 2) logits."""
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return finish(output, self._return_dict(return_dict))
