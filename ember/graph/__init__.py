"""L4: the static graph. IR (`Graph`, printable like a jaxpr), tracing (`compile` /
`function`), symbolic autodiff (traced VJPs), passes, the executor, graph-level control flow
(`cond`, `while_loop`) and the TF1 Session/placeholder/Variable API (`ember.graph.tf1`).
"""

from __future__ import annotations

from ember.graph import config as config
from ember.graph.compile import (
    CompiledFunction as CompiledFunction,
    RetraceWarning as RetraceWarning,
    compile as compile,
    function as function,
    trace as trace,
)
from ember.graph.executor import Executor as Executor
from ember.graph.ir import (
    ConcretizationError as ConcretizationError,
    Eqn as Eqn,
    Graph as Graph,
    GraphError as GraphError,
    Var as Var,
    check as check,
)
from ember.graph.passes import (
    cse as cse,
    dce as dce,
    fold_constants as fold_constants,
    run_passes as run_passes,
    simplify as simplify,
)
