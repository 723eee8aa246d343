"""Data-dependent control flow: `ember.cond` and `ember.while_loop`.

Eagerly both just run Python. While tracing, a `while_loop` on a traced predicate becomes one
graph equation holding the compiled condition and body graphs (the loop runs inside the
executor); a `cond` on a traced predicate traces both branches and selects elementwise
(`where`), so gradients flow through it with the same VJPs (both branches are computed).
"""

from __future__ import annotations

from ember.graph.ir import GraphError, Var
from ember.tensor import Tensor


def _symbolic(x) -> bool:
    return isinstance(x, Tensor) and isinstance(x.array, Var)


def cond(pred, true_fn, false_fn, *operands):
    """`true_fn(*operands)` if pred else `false_fn(*operands)`; pred may be a traced tensor.

    Example:
        >>> import ember
        >>> ember.cond(ember.tensor(True), lambda x: x + 1, lambda x: x - 1, ember.tensor(1.0))
        tensor(2.)
    """
    if not _symbolic(pred):
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    import ember

    a, b = true_fn(*operands), false_fn(*operands)
    if isinstance(a, (tuple, list)):
        return type(a)(ember.where(pred, x, y) for x, y in zip(a, b))
    return ember.where(pred, a, b)


class _WhileOp:
    """Graph primitive: loop `body` while `cond` holds, on the loop-carried values."""

    name = "while_loop"
    stateful = True  # never merged or folded

    def __init__(self, cond_graph, body_graph):
        self.cond_graph = cond_graph
        self.body_graph = body_graph

    def make_runner(self, eqn):
        from ember.graph.executor import Executor

        cond_exec = Executor(self.cond_graph, inplace_updates=False)
        body_exec = Executor(self.body_graph, inplace_updates=False)
        single = len(eqn.outs) == 1

        def run(*state):
            while bool(cond_exec(*state)[0][0]):
                state = body_exec(*state)[0]
            return state[0] if single else tuple(state)

        return run


def while_loop(cond_fn, body_fn, loop_vars):
    """Repeat `loop_vars = body_fn(*loop_vars)` while `cond_fn(*loop_vars)`.

    `loop_vars` is a tensor or a tuple of tensors whose shapes and dtypes the body keeps.
    Under `ember.compile` the loop is one graph equation; the body must take everything it
    computes with from the loop state (parameters and other concrete tensors may be read).

    Example:
        >>> import ember
        >>> ember.while_loop(lambda i: i < 10, lambda i: i * 2, ember.tensor(1))
        tensor(16)
    """
    single = isinstance(loop_vars, Tensor)
    state = (loop_vars,) if single else tuple(loop_vars)

    def as_tuple(x):
        return (x,) if isinstance(x, Tensor) else tuple(x)

    if not any(_symbolic(t) for t in state):
        while bool(cond_fn(*state)):
            state = as_tuple(body_fn(*state))
        return state[0] if single else state
    from ember.graph.compile import trace
    from ember.graph.passes import run_passes
    from ember.graph.trace import current_tracer

    outer = current_tracer()
    state = tuple(t if isinstance(t, Tensor) else outer.atom(t) for t in state)
    names = [f"s{i}" for i in range(len(state))]
    from ember.backend import _staging

    saved = list(_staging)
    _staging.clear()  # the nested traces own the dispatcher while they run
    try:
        probes = [Tensor.from_array(t.array) for t in state]
        cond_graph = trace(lambda *s: cond_fn(*s), tuple(probes), {}, probes, names, "while_cond")[
            0
        ]
        body_graph = trace(
            lambda *s: tuple(as_tuple(body_fn(*s))), tuple(probes), {}, probes, names, "while_body"
        )[0]
    finally:
        _staging.extend(saved)
    for g in (cond_graph, body_graph):
        if any(isinstance(t.array, Var) for _, t in g.captures):
            raise GraphError(
                "while_loop: the condition or body uses a tensor computed "
                "outside the loop; pass it in loop_vars"
            )
    for v, s in zip(body_graph.outputs, state):
        if not isinstance(v, Var) or v.shape != s.array.shape or v.dtype != s.array.dtype:
            raise GraphError(
                "while_loop: the body must return tensors of the loop_vars' shapes and dtypes"
            )
    run_passes(cond_graph, fuse=False)
    run_passes(body_graph, fuse=False)
    op = _WhileOp(cond_graph, body_graph)
    ins = [outer.atom(t) for t in state]
    outs = outer.emit(op, ins, {}, [s.array.shape for s in state], [s.array.dtype for s in state])
    results = tuple(Tensor.from_array(v) for v in outs)
    return results[0] if single else results
