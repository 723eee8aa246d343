"""tf.summary's TF1 FileWriter over ember's event files (ember/train/tensorboard.py).

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

from ember.graph import tf1 as _tf1
from ember.train.tensorboard import EventFileWriter, _event, _field_bytes, _field_double

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
