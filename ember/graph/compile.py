"""`ember.compile` (alias `ember.function`): trace a Python function into a graph, optimise
it, and run the compiled graph on later calls.

Note [Compile cache]: a compiled function keeps one graph per call signature: for each tensor
argument its shape, dtype and requires_grad; for each module its identity and training flag;
every other argument by value (Python numbers, strings, tuples are unrolled into the graph, so
a new value means a new graph). The cache is bounded (`ember.config.max_cache_size`, least
recently used dropped). Every retrace records why (`compiled.retrace_reasons`: which argument
changed, from what to what, against the nearest cached call; or that the cache dropped the
call's graph) and after `ember.config.retrace_warning_after` retraces a
`RetraceWarning` says so with the reasons. The first trace of each new shape bucket (Note
[Shape buckets]) is planned and not counted; the warning says how many there were.
`ember.config.run_eagerly = True` (or EMBER_RUN_EAGERLY=1) runs the Python function instead,
for debugging.

Note [Shape buckets]: a compiled module that has a `_compile_padding(args, kwargs)` method
(the Transformer encoders, Note [Sequence buckets] in ember/transformers/compile_buckets.py)
is called with its inputs padded up to a bucket, and its result cut back: the cache then
holds one graph per bucket rather than one per length, and a retrace names the bucket.
Callers that pad themselves (the Trainer's compiled step) say so with `call_in_bucket`.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
import warnings
from collections import OrderedDict
from operator import ne

import numpy as np

from ember._util.pytree import flatten_with_paths, map_leaves
from ember.graph import config as _config
from ember.graph.executor import Executor
from ember.graph.passes import run_passes
from ember.graph.trace import Tracer, tracing
from ember.tensor import Tensor

__all__ = ["compile", "function", "CompiledFunction", "RetraceWarning"]


class RetraceWarning(UserWarning):
    """A compiled function was traced again many times (each trace costs a compile)."""


def _is_module(obj) -> bool:
    return hasattr(obj, "parameters") and hasattr(obj, "training") and callable(obj)


def _describe(desc) -> str:
    kind = desc[0]
    if kind == "tensor":
        _, shape, dtype, rg = desc
        return f"tensor {dtype}{list(shape)}" + (" requires_grad" if rg else "")
    if kind == "module":
        return f"module {desc[2]} at 0x{desc[1]:x} ({'train' if desc[3] else 'eval'})"
    if kind == "tree":
        return f"structure {desc[1]!r}"
    return f"{desc[1]!r}"


class _Entry:
    __slots__ = (
        "graph",
        "executor",
        "out_tree",
        "grad_owners",
        "grad_none",
        "trace_seconds",
        "guards",
        "state_guards",
    )

    def __init__(self, graph, executor, out_tree, grad_owners, grad_none, trace_seconds):
        self.graph = graph
        self.executor = executor
        self.out_tree = out_tree
        self.grad_owners = grad_owners
        self.grad_none = grad_none
        self.guards: list = []  # (tensor, had .grad when traced): the graph depends on it
        self.state_guards: list = []  # (fn, value when traced): Tracer.add_guard
        self.trace_seconds = trace_seconds


def _flatten(obj, path, leaves, descs, names):
    """Tensor leaves in order, and the static description of everything (the cache key): the
    container structure (Note [Pytrees]), then one description per leaf, named by its path."""
    pairs, treedef = flatten_with_paths(obj, path)
    descs.append(("tree", treedef))
    names.append(path)
    for where, leaf in pairs:
        names.append(where)
        if isinstance(leaf, Tensor):
            leaves.append(leaf)
            d = leaf.array
            descs.append(("tensor", d.shape, d.dtype.name, leaf._requires_grad))
        elif _is_module(leaf):
            descs.append(("module", id(leaf), type(leaf).__name__, bool(leaf.training)))
        elif isinstance(leaf, np.ndarray):
            raise TypeError(
                f"compiled function argument {where}: pass NumPy arrays as ember tensors "
                f"(ember.from_numpy)"
            )
        else:
            try:
                hash(leaf)
                descs.append(("value", leaf))
            except TypeError:
                descs.append(("value", id(leaf)))


def _rebuild(obj, it):
    return map_leaves(lambda _: next(it), obj, Tensor)


class _Leaf:
    """Placeholder for a tensor result in the output tree."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


def _out_tree(obj, atoms, tracer):
    def leaf(t):
        atoms.append(tracer.atom(t))
        return _Leaf(len(atoms) - 1)

    return map_leaves(leaf, obj, Tensor)


def _fill(tree, arrays):
    return map_leaves(lambda leaf: Tensor.from_array(arrays[leaf.index]), tree, _Leaf)


class CompiledFunction:
    """A Python function compiled to graphs, one per call signature (Note [Compile cache]).

    Example:
        >>> import ember
        >>> f = ember.compile(lambda x: (x * 2.0).sum())
        >>> f(ember.ones(3))
        tensor(6.)
        >>> print(f.graph)  # doctest: +SKIP
    """

    def __init__(
        self,
        fn,
        name: str | None = None,
        fuse: bool | None = None,
        max_cache_size: int | None = None,
        buckets: bool = True,
    ):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        # Note [Shape buckets]: a module may pad a call up to a shape bucket (and cut the
        # result back), so that a few graphs serve every sequence length
        self._pad = getattr(fn, "_compile_padding", None) if buckets else None
        self._bucket_note = ""
        self._bucket = None  # the shape bucket of the call being run, if padded
        self._buckets_traced: list = []  # buckets with a graph traced: planned traces
        self._unplanned: list[str] = []  # the retraces that count toward RetraceWarning
        self._dropped: OrderedDict = OrderedDict()  # keys the bounded cache dropped (recent)
        # Note [Trace ahead]; off for callers that always clear .grad before calling
        self.trace_ahead = True
        self.fuse = fuse
        self.max_cache_size = max_cache_size
        self.cache: OrderedDict = OrderedDict()
        self._fast: dict = {}
        self._captured: set = set()
        self.retrace_reasons: list[str] = []
        self.trace_count = 0
        self._warned = False
        self._last = None
        try:
            params = list(inspect.signature(fn).parameters.values())
            self._param_names = [
                p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            self._param_names = []
        functools.update_wrapper(self, fn, updated=())

    def __get__(self, instance, owner):  # compiled methods bind like functions
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)

    # --- calling -------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if _config.run_eagerly:
            return self.fn(*args, **kwargs)
        if self._pad is not None:
            padded = self._pad(args, kwargs)
            if padded is not None:  # Note [Shape buckets]
                call, restore, bucket = padded
                return restore(self.call_in_bucket(bucket, (), call))
        return self._call(args, kwargs)

    def call_in_bucket(self, bucket: tuple[int, int], args: tuple, kwargs: dict):
        """Call with inputs already padded to a shape bucket (Note [Shape buckets]): `bucket`
        is (sequence length, bucket length). The first graph traced for a bucket is planned
        and does not count toward `RetraceWarning`; retraces name the bucket."""
        length, target = bucket
        self._bucket = target
        self._bucket_note = f" (sequence length {length} runs in its bucket {target})"
        try:
            return self._call(args, kwargs)
        finally:
            self._bucket = None
            self._bucket_note = ""

    def _call(self, args, kwargs):
        if not kwargs:
            # fast path: only tensor arguments (the common training-step call)
            try:
                fast = tuple([(a.array.shape, a.array.dtype, a._requires_grad) for a in args])
            except AttributeError:
                fast = None
            if fast is not None:
                hit = self._fast.get(fast)
                if hit is not None and _state_holds(*hit):
                    entry = hit[0]
                    self._last = entry
                    return self._run(entry, args)
        leaves: list = []
        descs: list = []
        names: list = []
        for i, a in enumerate(args):
            _flatten(a, self._arg_name(i), leaves, descs, names)
        for k, a in kwargs.items():
            _flatten(a, k, leaves, descs, names)
        key = (tuple(descs), tuple(kwargs))
        entry = self.cache.get(key)
        reason = None
        if entry is not None and not _guards_hold(entry):
            # a captured tensor's .grad appeared or went away since tracing, or state the
            # traced Python branched on (an optimizer's state) changed: its own variant
            state = tuple(t.grad is not None for t, _ in entry.guards)
            extra = tuple(fn() for fn, _ in entry.state_guards)
            if not all(v == old for (_, old), v in zip(entry.state_guards, extra)):
                reason = (
                    "state the traced function branched on changed since tracing "
                    "(an optimizer's per-parameter state was created)"
                )
            else:
                reason = "the .grad of a captured tensor " + (
                    "was set since tracing" if any(state) else "was cleared since tracing"
                )
            key = key + (("grads", state, extra),)
            entry = self.cache.get(key)
        if entry is None:
            entry = self._trace(key, args, kwargs, leaves, names, reason)
            if self.trace_ahead:
                self._trace_ahead(entry, key[:2], args, kwargs, leaves, names)
        else:
            self.cache.move_to_end(key)
            if not kwargs and all(isinstance(a, Tensor) for a in args):
                # Note [Fast path]: the cached entry chosen for this state (.grad present or
                # not, the optimizer state's values), as observed before this call runs; the
                # next call with the same shapes checks the same state (an entry traced after
                # `zero_grad()` cleared .grad has guards that a call with .grad set fails,
                # though its cache key says which state it is for)
                fast = tuple([(a.array.shape, a.array.dtype, a._requires_grad) for a in args])
                self._fast[fast] = (
                    entry,
                    tuple([t.grad is not None for t, _ in entry.guards]),
                    tuple([fn() for fn, _ in entry.state_guards]),
                )
        self._last = entry
        return self._run(entry, leaves)

    def _trace_ahead(self, entry, key, args, kwargs, leaves, names):
        """Note [Trace ahead]: a training step traced while its parameters have no `.grad`
        yet writes them, so the next call would retrace for the variant where they exist.
        Trace that variant now, with the `.grad` tensors it will find already in place
        (zeros that this call's gradients are copied into), so the second call runs a compiled
        graph at once; the first call pays the second trace instead."""
        missing = [
            t
            for t in entry.grad_owners
            if t.grad is None and any(g is t and not had for g, had in entry.guards)
        ]
        if not missing or len(self.cache) >= (self.max_cache_size or _config.max_cache_size):
            return
        for t in missing:
            t.grad = Tensor.from_array(np.zeros(t.array.shape, t.array.dtype))
        state = tuple(t.grad is not None for t, _ in entry.guards)
        extra = tuple(fn() for fn, _ in entry.state_guards)
        ahead = key + (("grads", state, extra),)
        if ahead in self.cache:
            return
        try:
            self._trace(
                ahead,
                args,
                kwargs,
                leaves,
                names,
                reason="traced ahead: the .grad of captured tensors exists after the first call",
            )
        except Exception:  # the variant will be traced (and fail visibly) when it is called
            for t in missing:
                t.grad = None

    def _arg_name(self, i):
        return self._param_names[i] if i < len(self._param_names) else f"args[{i}]"

    def _run(self, entry, leaves):
        executor = entry.executor
        owned = executor.grads_owned
        if owned:
            _release_shared_buffers(executor, entry.grad_owners, owned)
        outs, grads = executor(*[t.array for t in leaves])
        if grads:
            captured = self._captured
            for owner, g, own in zip(entry.grad_owners, grads, owned):
                current = owner.grad
                if current is not None and current._data is g:
                    continue  # Note [Gradient buffers]: already the executor's buffer
                if (
                    current is not None
                    and id(current) in captured
                    and current._data.shape == g.shape
                    and current._data.dtype == g.dtype
                ):
                    np.copyto(current._data, g)  # a graph reads this tensor: keep it
                elif own:
                    # a new tensor (as eager's backward makes), holding the graph's buffer
                    owner.grad = Tensor.from_array(g)
                elif (
                    current is not None
                    and sys.getrefcount(current) <= 3  # held by its owner only
                    and type(current._data) is np.ndarray
                    and current._data.shape == g.shape
                    and current._data.dtype == g.dtype
                ):
                    np.copyto(current._data, g)
                else:
                    owner.grad = Tensor.from_array(np.array(g, copy=True))
        for owner in entry.grad_none:
            owner.grad = None
        tree = entry.out_tree
        if type(tree) is _Leaf:
            return Tensor.from_array(outs[0])
        return _fill(tree, outs)

    # --- tracing -------------------------------------------------------------------------------
    def _trace(self, key, args, kwargs, leaves, names, reason=None):
        start = time.perf_counter()
        # Note [Shape buckets]: the first graph of a new bucket is planned, not a retrace to
        # warn about (a new dtype or Python value in a bucket already traced still counts)
        planned = self._bucket is not None and self._bucket not in self._buckets_traced
        if planned:
            self._buckets_traced.append(self._bucket)
        if self.cache:
            if reason is None:
                reason = self._explain(key, names)
            if self._dropped.pop(key, None) is not None:
                limit = self.max_cache_size or _config.max_cache_size
                reason = (
                    f"its graph was dropped from the full cache (max_cache_size {limit}); "
                    f"from the nearest cached call: {reason}"
                )
            self.retrace_reasons.append(reason + self._bucket_note)
            if not planned:
                self._unplanned.append(reason + self._bucket_note)
            limit = _config.retrace_warning_after
            if len(self._unplanned) >= limit and not self._warned:
                self._warned = True
                warnings.warn(self._retrace_message(limit), RetraceWarning, stacklevel=_caller())
        leaf_names = [n for n, d in zip(names, key[0]) if d[0] == "tensor"]  # one per leaf
        graph, out_tree, grad_owners, grad_none, guards = trace(
            self.fn, args, kwargs, leaves, leaf_names, self.name, with_guards=True
        )
        fuse = _config.fusion if self.fuse is None else self.fuse
        graph = run_passes(graph, fuse=fuse)
        executor = Executor(graph)
        entry = _Entry(
            graph, executor, out_tree, grad_owners, grad_none, time.perf_counter() - start
        )
        entry.guards, entry.state_guards = guards
        self.trace_count += 1
        self.cache[key] = entry
        limit = self.max_cache_size or _config.max_cache_size
        while len(self.cache) > limit:
            old_key, dropped = self.cache.popitem(last=False)
            self._dropped[old_key] = True
            if len(self._dropped) > 4 * limit:
                self._dropped.popitem(last=False)
            self._fast = {k: v for k, v in self._fast.items() if v[0] is not dropped}
        # tensors some graph reads by reference (a .grad it accumulates into): their .grad
        # owners keep them, and receive gradients by copy (Note [Gradient buffers])
        self._captured = {id(t) for e in self.cache.values() for t in e.executor.captures}
        return entry

    def _retrace_message(self, limit: int) -> str:
        buckets = self._buckets_traced
        planned = (
            f" (and {len(buckets)} planned traces, one per sequence bucket: "
            f"{', '.join(map(str, sorted(buckets)))})"
            if buckets
            else ""
        )
        return (
            f"ember.compile: {self.name} has been retraced {len(self._unplanned)} "
            f"time{'s' if len(self._unplanned) > 1 else ''}"
            f"{planned}; each trace compiles a new graph. Retraces: "
            + "; ".join(self._unplanned[-limit:])
            + ". Pass tensors instead of changing Python values, or keep shapes and dtypes "
            "fixed."
        )

    def _explain(self, key, names) -> str:
        """What changed from the cached signature nearest to `key` (the most recent of those
        with the fewest changes), every changed argument named."""

        def distance(old):
            return (old[1] != key[1], len(old[0]) != len(key[0]), sum(map(ne, key[0], old[0])))

        old = min(reversed(self.cache), key=distance)
        new_descs, old_descs = key[0], old[0]
        if key[1] != old[1]:
            return f"keyword arguments changed from {list(old[1])} to {list(key[1])}"
        if len(new_descs) != len(old_descs):
            return f"the number of arguments changed ({len(old_descs)} -> {len(new_descs)})"
        changes = []
        for i, (n, o) in enumerate(zip(new_descs, old_descs)):
            if n != o:
                where = names[i] if i < len(names) else f"argument {i}"
                if n[0] == o[0] == "tensor":
                    parts = []
                    if n[1] != o[1]:
                        parts.append(f"shape {list(o[1])} -> {list(n[1])}")
                    if n[2] != o[2]:
                        parts.append(f"dtype {o[2]} -> {n[2]}")
                    if n[3] != o[3]:
                        parts.append(f"requires_grad {o[3]} -> {n[3]}")
                    changes.append(f"{where}: " + ", ".join(parts))
                else:
                    changes.append(f"{where}: {_describe(o)} -> {_describe(n)}")
        return " and ".join(changes) or "the graph's guarded state changed"

    # --- inspection ----------------------------------------------------------------------------
    @property
    def graph(self):
        """The optimised graph of the most recent call (prints like a jaxpr)."""
        if self._last is None:
            raise RuntimeError(f"{self.name}: not traced yet; call it (or use .trace(*args)) first")
        return self._last.graph

    def trace(self, *args, **kwargs):
        """Trace for these arguments without running; returns the optimised graph."""
        leaves: list = []
        descs: list = []
        names: list = []
        for i, a in enumerate(args):
            _flatten(a, self._arg_name(i), leaves, descs, names)
        for k, a in kwargs.items():
            _flatten(a, k, leaves, descs, names)
        key = (tuple(descs), tuple(kwargs))
        entry = self.cache.get(key) or self._trace(key, args, kwargs, leaves, names)
        self._last = entry
        return entry.graph

    @property
    def compile_seconds(self) -> float:
        return self._last.trace_seconds if self._last is not None else 0.0

    def __repr__(self) -> str:
        return f"<ember.compile {self.name}: {len(self.cache)} graph(s)>"


def _caller() -> int:
    """The `stacklevel` of the first frame outside this file (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _release_shared_buffers(executor, owners, owned) -> None:
    """Note [Gradient buffers]: the graph writes each gradient into a buffer of its own, and
    that buffer becomes the owner's `.grad`. If anything else still holds it (the old `.grad`
    kept by gradient accumulation, a view of it), the graph gets a new buffer for this call, so
    what is held keeps its values, as with eager's new gradient tensors."""
    names = executor.globals
    for owner, name in zip(owners, owned):
        if name is None:
            continue
        buf = names[name]
        current = owner.grad
        # the references expected: the executor's namespace, `buf`, getrefcount's argument,
        # and the owner's .grad tensor if it is the buffer's (itself held by the owner only:
        # its attribute, `current`, the argument)
        mine = current is not None and current._data is buf and sys.getrefcount(current) <= 3
        if sys.getrefcount(buf) > 3 + mine:
            names[name] = np.empty_like(buf)


def _state_holds(entry, grads, state) -> bool:
    """The captured tensors' .grad presence and the guarded state are as when `entry` was
    chosen for this call signature (Note [Fast path])."""
    for (t, _), had in zip(entry.guards, grads):
        if (t.grad is not None) is not had:
            return False
    for (fn, _), value in zip(entry.state_guards, state):
        if fn() != value:
            return False
    return True


def _guards_hold(entry) -> bool:
    for t, had in entry.guards:
        if (t.grad is not None) is not had:
            return False
    for fn, value in entry.state_guards:
        if fn() != value:
            return False
    return True


def trace(fn, args, kwargs, leaves, names, name="graph", with_guards=False):
    """Trace `fn(*args, **kwargs)` with symbolic tensors in place of `leaves`."""
    tracer = Tracer(name)
    symbolic = [
        tracer.new_input(t.array.shape, t.array.dtype, _safe_name(n), t._requires_grad)
        for t, n in zip(leaves, names)
    ]
    it = iter(symbolic)
    sym_args = [_rebuild(a, it) for a in args]
    sym_kwargs = {k: _rebuild(v, it) for k, v in kwargs.items()}
    try:
        with tracing(tracer):
            result = fn(*sym_args, **sym_kwargs)
        atoms: list = []
        out_tree = _out_tree(result, atoms, tracer)
    except BaseException:
        tracer.abort()
        raise
    del result, sym_args, sym_kwargs, symbolic, it
    graph = tracer.finish(atoms)
    owners = tracer.grad_writes
    grad_owners = [owners[c][1] for c, _ in graph.grads]
    grad_none = [t for c, (v, t) in owners.items() if v is None]
    graph.check()
    if with_guards:
        return (
            graph,
            out_tree,
            grad_owners,
            grad_none,
            (tracer.guards, list(tracer.state_guards.values())),
        )
    return graph, out_tree, grad_owners, grad_none


def _safe_name(path: str) -> str | None:
    if path.isidentifier():
        return path
    return None


def compile(
    fn=None,
    *,
    name: str | None = None,
    fuse: bool | None = None,
    max_cache_size: int | None = None,
    buckets: bool = True,
):
    """Compile `fn` (a function of tensors and modules: forward, loss, backward(), optimizer
    step; or a model) into a graph; later calls with the same signature run the compiled graph.

    A model that knows how to pad its inputs (the Transformer encoders: Note [Sequence buckets]
    in ember/transformers/compile_buckets.py) runs each sequence length in the graph of its
    length bucket; `buckets=False` traces every length as it comes.

    Example:
        >>> import ember
        >>> step = ember.compile(lambda x, y: ((x - y) ** 2).sum())
        >>> step(ember.ones(4), ember.zeros(4))
        tensor(4.)
    """
    if fn is None:
        return lambda f: compile(
            f, name=name, fuse=fuse, max_cache_size=max_cache_size, buckets=buckets
        )
    if isinstance(fn, CompiledFunction):
        return fn
    return CompiledFunction(
        fn, name=name, fuse=fuse, max_cache_size=max_cache_size, buckets=buckets
    )


function = compile
