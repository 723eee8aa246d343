"""tf.summary's TF1 FileWriter and summary ops over ember's event files (tensorboard.py).

`scalar`, `histogram`, `merge` and `merge_all` are graph nodes whose fetched values are
serialized `Summary` protos (host ops, Note [Host ops] in ember/graph/tf1.py), made with the
same encoders as SummaryWriter's; `FileWriter.add_summary(summary, step)` writes them.

`FileWriter(logdir, graph=None)` writes a TensorBoard log folder; `add_graph(graph)` writes
the TF1 graph as a GraphDef (Note [GraphDef events]) so TensorBoard's Graphs tab draws it;
`add_summary` takes the serialized Summary protos ember's writers make, with a step.

Note [GraphDef events]: an Event's field 4 (`graph_def`, bytes) holds a serialized
`GraphDef` (tensorflow/core/framework/graph.proto): `node` = 1, repeated `NodeDef`, each with
`name` = 1, `op` = 2 (the op's type) and `input` = 3 (repeated names of the nodes it reads).
ember's nodes are deferred ember calls (Note [TF1 graphs]); a node's type is its name without
the scope or the `_n` suffix that made it unique ('conv1/Relu_1' -> 'Relu'), and its inputs
are the graph nodes among its arguments (and, for train ops, the loss and the variables).
"""

from __future__ import annotations

import re
import time

import numpy as np

from ember.graph import tf1 as _tf1
from ember.train.tensorboard import (
    EventFileWriter,
    _as_array,
    _event,
    _field_bytes,
    _field_double,
    _field_float,
    _histogram,
    _scalar,
)

_SUFFIX = re.compile(r"_\d+$")


def _node_inputs(node) -> list:
    """The graph nodes a node reads directly (its arguments; a train op's loss and variables)."""
    todo = [*node.args, *node.kwargs.values()]
    fn = node.fn
    for attr in ("loss", "var", "value"):
        if hasattr(fn, attr):
            todo.append(getattr(fn, attr))
    for attr in ("var_list", "deps", "ys", "xs"):
        todo.extend(getattr(fn, attr, None) or [])
    inputs, seen = [], set()
    while todo:
        d = todo.pop(0)
        if isinstance(d, (list, tuple)):
            todo.extend(d)
        elif isinstance(d, _tf1.Tensor) and id(d) not in seen:
            seen.add(id(d))
            inputs.append(d)
    return inputs


def graph_def(graph) -> bytes:
    """The serialized GraphDef of a TF1 graph (Note [GraphDef events])."""
    nodes = []
    for node in graph.operations:
        kind = node._kind
        op = {"placeholder": "Placeholder", "variable": "VariableV2"}.get(kind)
        if op is None:
            op = _SUFFIX.sub("", node.op_name.rsplit("/", 1)[-1]) or "Op"
        message = _field_bytes(1, node.op_name.encode()) + _field_bytes(2, op.encode())
        for dep in _node_inputs(node):
            message += _field_bytes(3, dep.op_name.encode())
        nodes.append(_field_bytes(1, message))
    return b"".join(nodes)


class FileWriter:
    """tf.summary.FileWriter: a TensorBoard event file in `logdir` for a TF1 program."""

    def __init__(self, logdir, graph=None, max_queue=10, flush_secs=120, filename_suffix=""):
        self._writer = EventFileWriter(logdir, max_queue, flush_secs, filename_suffix)
        self.logdir = self._writer.log_dir
        if graph is not None:
            self.add_graph(graph)

    def get_logdir(self) -> str:
        return self.logdir

    def add_graph(self, graph, global_step=None):
        if not isinstance(graph, _tf1.Graph):
            raise TypeError(
                f"FileWriter.add_graph: expected a tf.Graph, got {type(graph).__name__}"
            )
        event = _field_double(1, time.time()) + _field_bytes(4, graph_def(graph))
        self._writer.add_event(event)

    def add_summary(self, summary, global_step=None):
        if not isinstance(summary, bytes):
            raise TypeError(
                "FileWriter.add_summary: expected a serialized Summary (bytes), got "
                f"{type(summary).__name__}"
            )
        event = _event(time.time(), global_step) + _field_bytes(5, summary)
        self._writer.add_event(event)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- summary ops (Note [Host ops] in ember/graph/tf1.py) ---------------------------------------
class _SummaryOp(_tf1._HostOp):
    """A summary node: its input's fetched value -> a serialized Summary proto (bytes)."""

    def __init__(self, tag, inputs):
        super().__init__(inputs)
        self.tag = tag


class _ScalarSummary(_SummaryOp):
    def finish(self, values):
        value = np.asarray(values[0])
        if value.size != 1:
            raise _tf1.InvalidArgumentError(
                f"tf.summary.scalar {self.tag!r}: the value must be a scalar, got shape "
                f"{list(value.shape)}"
            )
        value = _scalar(value.reshape(()), f"tf.summary.scalar({self.tag!r})")
        return _field_bytes(1, _field_bytes(1, self.tag.encode()) + _field_float(2, value))


class _HistogramSummary(_SummaryOp):
    def finish(self, values):
        array = _as_array(values[0], f"tf.summary.histogram({self.tag!r})")
        histo = _histogram(array, "tensorflow", None)
        return _field_bytes(1, _field_bytes(1, self.tag.encode()) + _field_bytes(5, histo))


class _MergeSummary(_SummaryOp):
    """Summary protos concatenate: the merged one holds each input's values in order."""

    def __init__(self, parts):
        super().__init__(None, [i for p in parts for i in p.fn.inputs])
        self.parts = [p.fn for p in parts]

    def finish(self, values):
        out, start = [], 0
        for part in self.parts:
            n = len(part.inputs)
            out.append(part.finish(values[start : start + n]))
            start += n
        return b"".join(out)


def _summary_node(fn_class, name, tensor, collections):
    if not isinstance(name, str) or not name:
        raise ValueError(f"tf.summary: the name must be a non-empty string, got {name!r}")
    node = _tf1.Tensor(fn_class(None, [tensor]), (), name=name)
    node.fn.tag = node.op_name  # the op name, scoped and made unique: TensorFlow's tag
    node._shape = ()
    for key in ["summaries"] if collections is None else collections:
        node.graph.add_to_collection(key, node)
    return node


def scalar(name, tensor, collections=None, family=None):
    """tf.summary.scalar: a node whose fetched value is a Summary proto holding the scalar
    `tensor` under the tag `name` (scoped by tf.name_scope); add it to a FileWriter."""
    return _summary_node(_ScalarSummary, name, tensor, collections)


def histogram(name, values, collections=None, family=None):
    """tf.summary.histogram: a node whose fetched value is a Summary proto with the histogram
    of `values` in TensorFlow's default buckets (TensorBoard's Histograms and Distributions)."""
    return _summary_node(_HistogramSummary, name, values, collections)


def merge(inputs, collections=None, name=None):
    """tf.summary.merge: one Summary holding the values of every summary in `inputs`."""
    inputs = list(inputs)
    for s in inputs:
        if not (isinstance(s, _tf1.Tensor) and isinstance(s.fn, _SummaryOp)):
            raise TypeError(f"tf.summary.merge: expected summary nodes, got {s!r}")
    node = _tf1.Tensor(_MergeSummary(inputs), (), name=name or "Merge/MergeSummary")
    node._shape = ()
    for key in collections or []:
        node.graph.add_to_collection(key, node)
    return node


def merge_all(key="summaries", scope=None, name=None):
    """tf.summary.merge_all: merge every summary of the default graph (None if there are none)."""
    summaries = _tf1.get_collection(key, scope)
    return merge(summaries, name=name) if summaries else None
