"""The backward engine: graph nodes recorded by eager ops, and reverse accumulation.

Note [Autograd graph]: each op that gets an input requiring grad records a `Node` on its
output: the op, its attributes, the inputs its VJP needs (the others are kept as `TensorMeta`:
shape, dtype, device and whether the input required grad, so a VJP can skip a gradient nobody
takes), and one edge per input: the input's own Node, the input itself when it is a leaf that
requires grad, or None. The output keeps its data only by reference from the Node when the VJP
needs it, and is rebuilt at backward time (no reference cycle). `backward` counts each node's
consumers, then runs ready nodes from a stack (one Python loop, no per-edge calls: small
graphs are dominated by this overhead), summing gradients per node and per leaf; a leaf's
gradient becomes its `.grad` without a copy when nothing else holds it (`_accumulate_into`).
A node holds no reference to itself (its own output's version record names it by the
`OWN_OUTPUT` marker), and a backward without retain_graph drops each node's saved tensors and
version records once the node has run. A cycle through a node would keep the node, and through
its edges every node and saved activation above it, alive until Python's cyclic collector
happened to run: measured on MiniLM's training step (issue 21), every softmax node did, so
~190 MB of activations per step outlived the step, the heap grew by that much on each of
several steps between collections (the process grew past 2 GB in 25 steps) and every step that
grew it faulted in ~30k fresh pages (~40 ms at 2 threads; Note [Freed memory] in
ember/backend/memory.py).

Note [Saved tensor versions]: each saved tensor's version counter value is recorded when it is
saved; in-place ops bump the counter shared by a tensor and its views. At backward, a changed
version raises an error naming the op that saved the tensor, where that op ran, where the
tensor was made and which in-place op changed it. In-place ops on views rewrite the base's
history and regenerate stale views' (Note [Views and in-place] in ember/tensor.py).

Note [Gradient-ready hooks]: `Tensor.register_post_accumulate_grad_hook(hook)` (PyTorch's name)
calls `hook(tensor)` as soon as a leaf's `.grad` holds this backward's whole contribution, while
the rest of the graph is still being walked: for the leaves that have such hooks, step 1 also
counts the edges into them, and the walk finishes a leaf (tensor hooks, accumulation, post hooks)
when its count reaches zero. Data-parallel training starts each gradient bucket's allreduce
from these hooks, so communication overlaps the remaining backward. Leaves without such hooks
are accumulated after the walk, as before, and cost nothing extra. `queue_callback(fn)` runs `fn`
once when the outermost `backward` ends (DDP waits for its allreduces there).

Note [Slot gradients]: the VJP of a view that selects part of its input (basic indexing,
`x[:, :, 0]`) is a scatter of g into zeros of the input's shape (Note [Scatter into zeros] in
ember/ops/shape.py), which the walk then adds into the input node's gradient buffer: for k
views of one tensor, k full-size arrays and k - 1 full-size adds where the parts' gradients
fill one buffer. Where the op names its place (`OpDef.slot_gradient`), and the walk records no
graph (no `create_graph`), g is added straight into the buffer at the view's place instead: the
first part finds no buffer and makes one of zeros, the others add into it while the engine
alone holds it (the conditions of `_add_into_buffer`), else the VJP runs as always. The sums
are the VJP's additions (0 + g, then + g2 where views overlap, in the order the parts
arrive), so the same bits; the writes run in row chunks on ember's pool. Measured (quiet
2-core machine, medians, the same process): the backward of three products of a (16, 64, 1152)
tensor's `split(384, -1)` 2.69 -> 1.56 ms at 1 thread, 3.09 -> 2.12 at 2; GPT-2's attention,
which takes its query, key and value as `qkv[:, :, i]` of one product, in a 6-layer, 384-wide
model's backward at 16 x 64: 364 -> 358 ms at 1 thread, 198 -> 197 at 2 (min 190 -> 181);
gradients bit-equal. (BERT's projections are three products: a joined one in training, by
`cat` of the weights and these slots, measured level with them: the joined products gained
what the weights' `cat`, the zeros and the slot writes cost.)

Note [Eager VJPs]: a VJP is written with ember ops (it traces, and with create_graph records a
differentiable graph), and each op it runs costs the dispatch of an eager op: wrapping, checks,
shape resolution (Note [Eager dispatch] in ember/autograd/dispatch.py). Inside a training step
that Python runs with cold caches between large kernels and costs several times its isolated
figure (MiniLM 16 x 64 at 2 threads: ~90 us per linear VJP, 38 a step, beside ~4 us an op in a
loop). Where an op names an `eager_vjp` and the walk records no graph, the walk calls it on the
gradient's NumPy array with the node's saved inputs instead: the same kernels on the same
operands (the views the plain VJP's reshapes and transposes make), so the same bits, without
the Tensors between them; it returns arrays, which the walk wraps, or None (a case it does not
cover: a strided gradient, mixed dtypes), and the VJP runs. tests/core/test_autograd.py checks
each against the VJP bit for bit. Measured on MiniLM's training step (16 x 64, 2 threads, the
same process, backward walls interleaved, medians of 12): linear's alone 214.9 -> 212.8 ms.

Note [Gradients into buffers]: where a tensor feeds several ops, its gradients meet in one
buffer, and each after the first was a full pass `buffer += g` (`_add_into_buffer`); in a
Transformer they are a hidden state's: the residual's gradient and the input gradients of the
projections that read it (MiniLM 16 x 64: 24 adds of 1.5 MB a step, 4.7 ms at 2 threads, all
of them linear's `g @ w`). So `_eager_vjp` offers an op's `eager_vjp` the buffers it may
write (`into`: per input, the buffer's array where the engine alone holds it,
`_exclusive_array`), and linear's product adds its result into it as BLAS's beta = 1 (`out
+= g @ w` in one pass, `blas.matmul(..., accumulate=True)`); the gradient comes back as that
same array, which the walk takes as already delivered. The buffer's value is then summed
inside the product's accumulation rather than after it, so the bits differ from the add's
(within float32 rounding; tests/core/test_autograd.py against PyTorch and the add path); they
stay the same from run to run and at any thread count (each element's sum is one MKL call's,
tests/ops/test_blas.py). A graph recorded for create_graph keeps the add. Measured (MiniLM
16 x 64, backward walls interleaved in one process, medians of 14): 230.2 -> 224.1 ms at 2
threads, 355.9 -> 352.7 at 1; bench/profile_minilm.py --train at 2 threads, main then this
branch (with Note [Eager VJPs]): the adds' 3.8 ms a step gone, backward 205.0 -> 191.5 ms.
"""

from __future__ import annotations

import sys
import weakref

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import AutogradError, format_location
from ember.autograd.grad_mode import _state
from ember.autograd.sparse import add_gradients
from ember.backend import Device, parallel, runs_eagerly

_SCALARS = (bool, int, float)
_NDARRAY = np.ndarray
_DT_OF = _dt.BY_NUMPY  # shared: bfloat16 joins it when first used
_CPU = Device("cpu")

# Note [Autograd graph]: the producer named in a node's version record of its own output (the
# node itself, which it must not reference)
OWN_OUTPUT = "own output"

# Note [Gradient-ready hooks]: id(leaf) -> its post-accumulate hooks (entries leave with the
# tensor), the callbacks queued for the end of the current backward, and the backward depth.
_post_hooks: dict = {}
_final_callbacks: list = []
_depth = [0]

# The graph tracers' stack (owned here so that the engine reads it without an import per call;
# ember.autograd.dispatch re-exports it and pushes/pops).


class TensorMeta:
    """Shape, dtype and device of an input whose data a VJP does not need, and whether it
    required grad when recorded (its edge is None otherwise, so a VJP may skip its gradient)."""

    __slots__ = ("shape", "dtype", "device", "ndim", "requires_grad")

    def __init__(self, t):
        d = t._data
        if type(d) is _NDARRAY:  # the common case, without the Tensor properties
            self.shape = d.shape
            self.dtype = _DT_OF[d.dtype]
            self.device = _CPU
        else:
            self.shape = tuple(t.shape)
            self.dtype = t.dtype
            self.device = t.device
        self.ndim = len(self.shape)
        self.requires_grad = t._requires_grad


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class Node:
    """A recorded op in the backward graph (what PyTorch calls grad_fn)."""

    __slots__ = (
        "op",
        "attrs",
        "saved",
        "edges",
        "in_meta",
        "out_data",
        "out_version",
        "versions",
        "site",
        "pre_hooks",
        "retained",
        "freed",
        "__weakref__",
    )

    def __init__(self, op, attrs, saved, edges, in_meta, site):
        self.op = op
        self.attrs = attrs
        self.saved = saved
        self.edges = edges
        self.in_meta = in_meta
        self.out_data = None
        self.out_version = None
        self.versions = None
        self.site = site
        self.pre_hooks = None
        self.retained = None
        self.freed = False

    def name(self) -> str:
        return f"{_camel(self.op.name)}Backward0"

    def __repr__(self) -> str:
        return f"<{self.name()}>"

    @property
    def next_functions(self):
        out = []
        for e in self.edges:
            if e is None:
                out.append((None, 0))
            elif isinstance(e, Node):
                out.append((e, 0))
            else:
                out.append((AccumulateGrad(e), 0))
        return tuple(out)

    def register_hook(self, fn):
        if self.pre_hooks is None:
            self.pre_hooks = []
        self.pre_hooks.append(fn)
        return _RemovableHandle(self.pre_hooks, fn)


def register_post_accumulate_grad_hook(tensor, hook):
    """Note [Gradient-ready hooks]: `hook(tensor)` after `tensor.grad` is accumulated."""
    hooks = _post_hooks.get(id(tensor))
    if hooks is None:
        hooks = _post_hooks[id(tensor)] = []
        weakref.finalize(tensor, _post_hooks.pop, id(tensor), None)
    hooks.append(hook)
    return _RemovableHandle(hooks, hook)


def queue_callback(fn) -> None:
    """Run `fn()` once when the outermost running backward ends (PyTorch's
    `Variable._execution_engine.queue_callback`)."""
    if _depth[0] == 0:
        raise AutogradError("queue_callback: no backward is running")
    _final_callbacks.append(fn)


class AccumulateGrad:
    """Shown in `next_functions` for leaf tensors, as in PyTorch."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self) -> str:
        return "AccumulateGrad"

    def __repr__(self) -> str:
        return "<AccumulateGrad>"


class _RemovableHandle:
    def __init__(self, hooks: list, fn):
        self._hooks = hooks
        self._fn = fn

    def remove(self) -> None:
        try:
            self._hooks.remove(self._fn)
        except ValueError:
            pass


def _check_versions(node: Node) -> None:
    for tensor, counter, value, producer in node.versions:
        if counter[0] != value:
            if producer is OWN_OUTPUT:
                producer = node
            made = (
                "a leaf tensor"
                if producer is None
                else (
                    f"the output of {producer.op.name}"
                    + (f" made at {format_location(producer.site)}" if producer.site else "")
                )
            )
            if tensor is None:
                tensor_shape = node.out_data.shape if node.out_data is not None else None
            else:
                tensor_shape = tuple(tensor.shape)
            changed = ""
            if len(counter) > 1 and counter[1]:
                op_name, site = counter[1]
                changed = f" by {op_name}" + (f" at {format_location(site)}" if site else "")
            saved_at = f" at {format_location(node.site)}" if node.site else ""
            shape = "" if tensor_shape is None else f" of shape {tuple(tensor_shape)}"
            raise AutogradError(
                f"one of the tensors needed for gradient computation has been modified by an "
                f"in-place operation: {node.op.name}{saved_at} saved a tensor{shape}, "
                f"{made}, which was then changed in place{changed}; it is at version "
                f"{counter[0]}, expected version {value}. Use an out-of-place op or .clone() "
                f"before modifying it."
            )


def _raise_freed(node: Node):
    raise AutogradError(
        f"trying to backward through the graph a second time (through {node.name()}"
        + (f" made at {format_location(node.site)}" if node.site else "")
        + "): its saved tensors were freed after the first backward. "
        "Pass retain_graph=True to the first backward() if you need to call it twice."
    )


def backward(*args, **kwargs):
    """Reverse-mode accumulation (see `_backward`), then the queued callbacks (Note
    [Gradient-ready hooks])."""
    _depth[0] += 1
    try:
        result = _backward(*args, **kwargs)
    except BaseException:
        if _depth[0] == 1:
            _final_callbacks.clear()
        raise
    finally:
        _depth[0] -= 1
    if _depth[0] == 0:
        while _final_callbacks:
            _final_callbacks.pop(0)()
    return result


def _backward(
    roots,
    root_grads,
    retain_graph=False,
    create_graph=False,
    inputs=None,
    accumulate=True,
    allow_unused=False,
):
    """Reverse-mode accumulation from `roots` (Tensors) seeded with `root_grads`.

    With `accumulate`, leaf gradients are added to `.grad`; otherwise the gradients of
    `inputs` are returned (ember.autograd.grad).
    """

    for group in (roots, inputs or ()):
        for t in group:
            if t._view is not None and t._view[3] != t._version[0]:
                from ember.autograd.dispatch import refresh_view

                refresh_view(t)  # a stale view's history (Note [Views and in-place])

    # 1. dependency counts over the reachable graph (and into hooked leaves: Note
    # [Gradient-ready hooks])
    deps: dict = {}
    stack = []
    for r in roots:
        if r._node is not None and r._node not in deps:
            deps[r._node] = 0
            stack.append(r._node)
    hooked = _post_hooks if (_post_hooks and accumulate and inputs is None) else None
    leaf_deps: dict | None = {} if hooked is not None else None
    while stack:
        node = stack.pop()
        for e in node.edges:
            if e.__class__ is Node:
                if e in deps:
                    deps[e] += 1
                else:
                    deps[e] = 1
                    stack.append(e)
            elif hooked is not None and e is not None and id(e) in hooked:
                leaf_deps[id(e)] = leaf_deps.get(id(e), 0) + 1

    wanted = None
    captured = {}
    if inputs is not None:
        wanted = {}
        for t in inputs:
            key = t._node if t._node is not None else t
            wanted.setdefault(key, []).append(t)

    buffers: dict = {}
    # leaf gradients by id(leaf) (Tensor.__hash__ is a Python call): id -> [leaf, gradient]
    leaf_grads: dict = {}
    ready = []

    for r, g in zip(roots, root_grads):
        if r._node is None:
            if r.requires_grad:
                entry = leaf_grads.get(id(r))
                if entry is None:
                    leaf_grads[id(r)] = [r, g]
                else:
                    entry[1] = add_gradients(entry[1], g)
            continue
        prev = buffers.get(r._node)
        buffers[r._node] = g if prev is None else prev + g
    for r in roots:
        if r._node is not None and deps.get(r._node) == 0 and r._node not in ready:
            ready.append(r._node)

    # 2. the walk: a node runs when every node that feeds it has delivered (a stack of ready
    # nodes, so a chain runs depth first); Note [Autograd graph]
    prev_mode = _state.enabled
    _state.enabled = create_graph
    finished: list = []  # hooked leaves whose last edge delivered, finished after each node
    try:
        while ready:
            node = ready.pop()
            g = buffers.pop(node)
            if node.pre_hooks:
                for hook in list(node.pre_hooks):
                    result = hook(g)
                    if result is not None:
                        g = result
            if node.retained is not None:
                t = node.retained()
                if t is not None:
                    _accumulate_into(t, g, create_graph)
            if wanted is not None and node in wanted:
                captured[node] = g
            if node.freed:
                _raise_freed(node)
            if node.versions:
                _check_versions(node)
            grads = None
            if not create_graph:
                op = node.op
                if op.slot_gradient is not None:
                    grads = _into_slot(node, g, buffers)  # Note [Slot gradients]
                elif op.eager_vjp is not None:
                    grads = _eager_vjp(node, g, buffers)  # Note [Eager VJPs]
                op = None
            if grads is None:
                out = None if node.out_data is None else _tensor._from_node(node.out_data, node)
                grads = node.op.vjp(g, out, *node.saved, **node.attrs)
                out = None
            if not retain_graph:  # Note [Autograd graph]: the activations go now
                node.saved = ()
                node.out_data = None
                node.versions = None
                node.freed = True
                if node.op.release is not None:  # a custom Function's ctx holds its saved tensors
                    node.op.release()
            for edge, ig, meta in zip(node.edges, grads, node.in_meta):
                if edge is None:
                    continue
                if ig is None:
                    _deliver_none(edge, deps, buffers, leaf_grads, ready, leaf_deps, finished)
                    continue
                if ig is _IN_BUFFER:  # in edge's buffer already (Notes [Slot gradients] and
                    # [Gradients into buffers])
                    left = deps[edge] - 1
                    deps[edge] = left
                    if left == 0:
                        ready.append(edge)
                    continue
                if ig.is_sparse:  # Note [Sparse gradients]: sparse into leaves only
                    if edge.__class__ is Node:
                        ig = ig.to_dense()
                else:
                    shape, dtype = meta
                    if ig._data.dtype is not dtype.numpy or ig._data.shape != shape:
                        ig = _conform(node, ig, shape, dtype)
                if edge.__class__ is Node:
                    prev = buffers.get(edge)
                    if prev is None:
                        buffers[edge] = ig
                    elif create_graph or not _add_into_buffer(prev, ig):
                        buffers[edge] = prev + ig
                    prev = None
                    left = deps[edge] - 1
                    deps[edge] = left
                    if left == 0:
                        ready.append(edge)
                else:  # a leaf tensor
                    entry = leaf_grads.get(id(edge))
                    if entry is None:
                        leaf_grads[id(edge)] = [edge, ig]
                    else:
                        entry[1] = add_gradients(entry[1], ig)
                    if leaf_deps is not None and id(edge) in leaf_deps:
                        _leaf_delivered(edge, leaf_deps, finished)
            # no stray references to the gradients (_accumulate_into steals exclusive ones)
            grads = ig = g = result = entry = None
            while finished:
                entry = leaf_grads.pop(finished.pop(), None)
                if entry is not None:
                    _finish_leaf(entry, create_graph)
    finally:
        _state.enabled = prev_mode

    for entry in leaf_grads.values():
        if wanted is not None:
            leaf, g = entry
            entry[1] = None
            if leaf._hooks:
                for hook in list(leaf._hooks):
                    result = hook(g)
                    if result is not None:
                        g = result
            if leaf in wanted:
                captured[leaf] = g
            continue
        if accumulate:
            _finish_leaf(entry, create_graph)

    if wanted is None:
        return None
    results = []
    for t in inputs:
        key = t._node if t._node is not None else t
        g = captured.get(key)
        if g is None and not allow_unused:
            raise AutogradError(
                f"one of the differentiated tensors (shape {tuple(t.shape)}) was not used in "
                f"the graph; pass allow_unused=True to get None for it"
            )
        results.append(g)
    return tuple(results)


def _leaf_delivered(leaf, leaf_deps, finished) -> None:
    left = leaf_deps[id(leaf)] - 1
    leaf_deps[id(leaf)] = left
    if left == 0:
        finished.append(id(leaf))


def _finish_leaf(entry, create_graph) -> None:
    """A leaf's whole gradient `entry = [leaf, g]`: its tensor hooks, `.grad`, its post
    hooks (Note [Gradient-ready hooks])."""
    leaf, g = entry
    entry[1] = None  # leave `g` as the gradient's only owner (_accumulate_into steals it)
    if leaf._hooks:
        for hook in list(leaf._hooks):
            result = hook(g)
            if result is not None:
                g = result
        result = None
    _accumulate_into(leaf, g, create_graph)
    g = None
    post = _post_hooks.get(id(leaf)) if _post_hooks else None
    if post:
        for hook in list(post):
            hook(leaf)


def _deliver_none(edge, deps, buffers, leaf_grads, ready, leaf_deps=None, finished=None):
    """No gradient along `edge`: a node whose last dependency has delivered becomes ready, or,
    if nothing reached it, passes None on in turn."""
    pending = [edge]
    while pending:
        edge = pending.pop()
        if edge.__class__ is not Node:
            if leaf_deps is not None and edge is not None and id(edge) in leaf_deps:
                _leaf_delivered(edge, leaf_deps, finished)
            continue
        if edge.__class__ is Node:
            deps[edge] -= 1
            if deps[edge] == 0:
                if edge in buffers:
                    ready.append(edge)
                else:
                    pending.extend(e for e in edge.edges if e is not None)


def _conform(node, ig, shape, dtype):
    """A VJP's gradient in its input's dtype and shape (a 0-d or one-element gradient of a
    0-d input is reshaped; anything else is an internal error)."""
    if ig.dtype is not dtype:
        ig = ig.to(dtype)
    if tuple(ig.shape) != tuple(shape):
        if ig.ndim == 0 or ig.numel() == 1 and len(shape) == 0:
            ig = ig.reshape(shape)
        else:
            raise AutogradError(
                f"internal error: the VJP of {node.op.name} returned a gradient of "
                f"shape {tuple(ig.shape)} for an input of shape {tuple(shape)}"
            )
    return ig


def _accumulate_into(t, g, create_graph):
    if g.is_sparse or (t.grad is not None and t.grad.is_sparse):  # Note [Sparse gradients]
        t.grad = g if t.grad is None else add_gradients(t.grad, g)
        return
    if create_graph or not runs_eagerly(g._data):  # staged gradients are never written into
        t.grad = g if t.grad is None else t.grad + g
        return
    if t.grad is None:
        # A fresh buffer, unless the incoming one is provably exclusive (as PyTorch steals a
        # gradient whose use count is 1): a contiguous, writable, non-view NumPy array held
        # only by `g`, and `g` held only by the engine's bookkeeping. Anything else may be
        # shared with another leaf, the caller or a read-only broadcast view, and is copied.
        arr = g._data
        if (
            type(arr) is np.ndarray
            and arr.base is None
            and arr.flags.writeable
            and arr.flags.c_contiguous
            and sys.getrefcount(arr) <= _ARRAY_REFS
            and sys.getrefcount(g) <= _TENSOR_REFS
            and g._version is None
        ):
            t.grad = _tensor._wrap(arr)
        else:
            t.grad = _tensor._wrap(arr.copy())
    else:
        if t.grad._data.shape != g._data.shape:
            raise AutogradError(
                f"accumulating a gradient of shape {tuple(g.shape)} into .grad "
                f"of shape {tuple(t.grad.shape)}"
            )
        t.grad._data += g._data


def _eager_vjp(node, g, buffers):
    """The node's gradients from its op's `eager_vjp` on NumPy arrays, as Tensors (Note [Eager
    VJPs]); None (nothing done) where that does not apply. An input's gradient buffer that the
    engine alone holds is offered as `into`; a gradient returned as that very array has been
    added into it (Note [Gradients into buffers])."""
    arr = g._data
    if type(arr) is not np.ndarray:
        return None
    into = []
    for edge in node.edges:
        buffer = buffers.get(edge) if edge.__class__ is Node else None
        into.append(None if buffer is None else _exclusive_array(buffer, _INTO_REFS))
        buffer = None
    grads = node.op.eager_vjp(arr, *node.saved, into=tuple(into), **node.attrs)
    if grads is None:
        return None
    wrap = _tensor._wrap
    return tuple(
        None if a is None else (_IN_BUFFER if a is target else wrap(a))
        for a, target in zip(grads, into)
    )


# Note [Slot gradients], Note [Gradients into buffers]: a gradient already added into its
# input's buffer
_IN_BUFFER = object()


def _into_slot(node, g, buffers):
    """Add the gradient `g` of a view node into its input node's gradient buffer at the view's
    place (Note [Slot gradients]): the node's gradients, (_IN_BUFFER, None...), or None (nothing
    done) where that does not apply."""
    edge = node.edges[0]
    arr = g._data
    if edge.__class__ is not Node or type(arr) is not np.ndarray:
        return None
    shape, dtype = node.in_meta[0]
    if arr.dtype is not dtype.numpy:
        return None
    prev = buffers.get(edge)
    if prev is None:
        base = np.zeros(shape, arr.dtype)
        place = node.op.slot_gradient(base, **node.attrs)
        if not _is_place(place, base, arr):
            return None
        parallel.chunked(np.add, place, arr, 0.0)  # the VJP's 0 + g, reading no zeros
        buffers[edge] = _tensor._wrap(base)
    elif not _add_into_buffer(prev, g, node):
        return None
    return (_IN_BUFFER,) + (None,) * (len(node.edges) - 1)


def _is_place(place, base, g) -> bool:
    """`place` is a view into `base`'s memory of g's shape (Note [Slot gradients])."""
    owner = base if base.base is None else base.base
    return type(place) is np.ndarray and place.base is owner and place.shape == g.shape


def _add_into_buffer(buffer, g, view=None) -> bool:
    """Add `g` into a node's gradient buffer in place where the engine alone holds the buffer
    (`_exclusive_array`; as PyTorch's InputBuffer accumulates into a gradient whose use count
    is 1). The sum is the same elementwise float additions as `buffer + g` (so the same bits),
    without a new array: MiniLM's backward sums 24 gradients of 1.5 MB a step where a hidden
    state feeds the query, key and value projections and a residual. With `view` (a node of an
    op with a `slot_gradient`), g is the view's gradient and goes to the view's place in the
    buffer (Note [Slot gradients]). False (nothing done) otherwise."""
    other = g._data
    if type(other) is not np.ndarray:
        return False
    arr = _exclusive_array(buffer, _BUFFER_REFS + 1)
    if arr is None or (view is None and arr.shape != other.shape) or arr.dtype != other.dtype:
        return False
    if view is None:
        parallel.chunked(np.add, arr, arr, other)
        return True
    place = view.op.slot_gradient(arr, **view.attrs)
    if not _is_place(place, arr, other):
        return False
    parallel.chunked(np.add, place, place, other)
    return True


def _exclusive_array(buffer, refs):
    """The NumPy array of the gradient buffer `buffer` where the engine alone holds it: a
    contiguous, writable array held only by `buffer` (and, if it is a view, such as a reshaped
    matmul result, its base held only by it), and `buffer` held by no more than `refs`
    references (the caller's, this parameter and getrefcount's argument); else None."""
    arr = buffer._data
    if (
        type(arr) is not np.ndarray
        or not arr.flags.writeable
        or not arr.flags.c_contiguous
        or buffer._version is not None
        or sys.getrefcount(arr) > _ARRAY_REFS
        or sys.getrefcount(buffer) > refs
    ):
        return None
    base = arr.base
    if base is not None and (type(base) is not np.ndarray or sys.getrefcount(base) > _BASE_REFS):
        return None
    return arr


# References held while `_add_into_buffer` inspects the buffer: the buffers dict, the walk's
# local `prev`, the parameter and getrefcount's argument (and `_exclusive_array`'s parameter)
_BUFFER_REFS = 4
# ... while `_eager_vjp` does: the buffers dict, its local, `_exclusive_array`'s parameter and
# getrefcount's argument
_INTO_REFS = 4
# ... and its base, if the buffer is a view: the view, the local `base` and getrefcount's argument
_BASE_REFS = 3


# References held while `_accumulate_into` inspects an exclusive gradient: g._data, the local
# `arr` and getrefcount's argument; for g: the caller's local (the engine has cleared its
# leaf_grads entry), this function's parameter and getrefcount's argument.
_ARRAY_REFS = 3
_TENSOR_REFS = 3


def weak(t):
    return weakref.ref(t)


from ember import tensor as _tensor  # noqa: E402  (circular: tensor imports autograd)
