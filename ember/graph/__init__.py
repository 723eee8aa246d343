"""L4: the static graph. IR (`Graph`, printable like a jaxpr), tracing (`compile` /
`function`), symbolic autodiff (traced VJPs), passes, the executor, graph-level control flow
(`cond`, `while_loop`) and the TF1 Session/placeholder/Variable API (`ember.graph.tf1`).
"""

from __future__ import annotations

from ember.graph import config as config
from ember.graph.compile import (
    CompiledFunction as CompiledFunction,
)
from ember.graph.compile import (
    RetraceWarning as RetraceWarning,
)
from ember.graph.compile import (
    compile as compile,
)
from ember.graph.compile import (
    function as function,
)
from ember.graph.compile import (
    trace as trace,
)
from ember.graph.executor import Executor as Executor
from ember.graph.ir import (
    ConcretizationError as ConcretizationError,
)
from ember.graph.ir import (
    Eqn as Eqn,
)
from ember.graph.ir import (
    Graph as Graph,
)
from ember.graph.ir import (
    GraphError as GraphError,
)
from ember.graph.ir import (
    Var as Var,
)
from ember.graph.ir import (
    check as check,
)
from ember.graph.passes import (
    cse as cse,
)
from ember.graph.passes import (
    dce as dce,
)
from ember.graph.passes import (
    fold_constants as fold_constants,
)
from ember.graph.passes import (
    run_passes as run_passes,
)
from ember.graph.passes import (
    simplify as simplify,
)
