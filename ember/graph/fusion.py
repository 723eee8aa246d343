"""Elementwise fusion: chains of elementwise ops, and the reductions that end one, become one
generated kernel.

Note [Fusion]: `fuse_elementwise` walks the equations in order and grows groups of fusible
elementwise equations that produce values of one shape S (their inputs may broadcast to S). An
equation joins the open groups that produce its inputs (merging them); a group closes when an
equation outside it reads one of its values (a reduction's result counts as outside: it is
known only after the loops). Reductions (`sum`, `amax`, `amin` over a float value) of its
values join it too, accumulated in the same loops. The fused equation takes the
place of the group's last member, so every value it reads is defined before it and every
outside reader comes after it. Its results are the members' values read outside the group (or
by the graph's results, updates and gradients) and the reductions. An `expand` feeding a member
is read through (the kernel broadcasts its source itself), so the expanded copy never exists.

What an op contributes is a fact of its OpDef (Note [OpDef]): its scalar `template` (a string
for an elementwise op, (start, update) of a float64 accumulator for a reduction); an op without
one is not fused. Comparisons and logical ops are told apart by their dtype and promotion rules.

Each fused equation has two implementations, chosen when the executor is built:
- a kernel generated as Python source (nested loops over S, one local per member, each rounded
  to its equation's dtype so results match eager up to the last bit of transcendental
  functions; sums accumulate in float64), compiled by numba (`ember.backend.numba_kernels`,
  the `fast` extra, loaded lazily; off with EMBER_NO_NUMBA=1) and cached by its source, which
  spells the expression, the dtypes, the rank and the broadcast pattern (literals are kernel
  arguments, so a new learning rate reuses the kernel);
- the NumPy path: the members' reference kernels one after the other (used when numba is
  absent or cannot compile the kernel).
Groups of a single elementwise equation are left alone: the executor already runs those as
ufuncs into preallocated buffers (Note [Executor]); so are two-op chains without a reduction
over large arrays (`_LARGE`), where the scalar generated loop measured slower than two
vectorised ufunc passes (the SGD update of a 128x784 weight: 59 us against 52 us).

Note [Joint kernels]: a training step computes a loss and, in its backward, the loss's gradient
from the same operands (softmax cross entropy's logits and targets): two kernels that each
redo the row's maximum, exponentials and sum. Where an OpDef offers a `joint` kernel for the
pair (Note [OpDef]), `pair_joint` replaces the two equations by one `JointOp` equation with both
results, at the first one's place; it does so only where the second's other operands (the
upstream gradient) are known by then, which they are for a loss at the end of the graph. The
joint kernel returning None (an input it does not handle) runs the two ops' kernels instead.
"""

from __future__ import annotations

import math

import numpy as np

from ember.backend import parallel
from ember.graph.ir import Eqn, Graph, Var
from ember.ops.registry import REGISTRY, OpDef, bool_dtype

__all__ = ["fuse_elementwise", "FusedOp", "pair_joint", "JointOp"]

_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}
_INTS = {np.dtype(np.int32), np.dtype(np.int64)}
_BOOL = np.dtype(bool)
# a two-op chain over this many elements or more stays unfused: the generated loop is scalar
# code, which no longer beats two vectorised NumPy passes once the arrays leave the L1 cache
_LARGE = 1 << 14
# Note [Parallel loops]: a fused kernel over at least parallel.threshold(costly=True) elements
# (several ops per element cost as much as a transcendental function) runs one loop, the
# outermost with at least _MIN_PARALLEL_TRIPS trips, as numba's `prange` (compiled with
# parallel=True, on numba's threads, which ember.set_num_threads governs), unless a reduction
# reduces over that loop's axis (its iterations would share accumulators). Each iteration
# computes its elements, and its own accumulators, with the same code in the same order as the
# serial kernel (no reassociation: fastmath stays off), so the results are equal bit for bit;
# only which thread runs an iteration changes. Smaller kernels stay serial loops, and so does
# every kernel in a process forked from one that used numba's threads, or while the machine is
# overloaded (`_fork_safe`).
_MIN_PARALLEL_TRIPS = 4


def _compare(op) -> bool:
    """eq, lt, ...: bool results of operands promoted to a common dtype."""
    return op.dtype is bool_dtype and op.promote == "common"


def _logical(op) -> bool:
    """logical_and, ...: bool results of bool operands."""
    return op.dtype is bool_dtype and op.promote is None


def _strided(op) -> bool:
    """A view op whose results are usually not C-contiguous (kernels are warmed up so)."""
    return op.view and op.name != "reshape"


def _fusible(e) -> bool:
    op = e.op
    if not isinstance(op, OpDef):
        return False
    name = op.name
    # the template is the spec of the op's part in a fused kernel: an op with a faster NumPy
    # kernel of its own (where's bitwise select) fuses too, which saves its pass over memory
    if not isinstance(op.template, str) or len(e.outs) != 1:
        return False
    if any(
        not isinstance(a, Var) and (isinstance(a, bool) or not isinstance(a, (int, float)))
        for a in e.inputs
    ):
        return False
    if not any(isinstance(a, Var) for a in e.inputs):
        return False
    out = e.out.dtype
    dtypes = {a.dtype for a in e.inputs if isinstance(a, Var)}
    if _logical(op):
        return dtypes == {_BOOL} and out == _BOOL
    if _compare(op):
        return len(dtypes) == 1 and dtypes <= (_FLOATS | _INTS)
    if name == "where":
        c, a, b = e.inputs
        vals = {x.dtype for x in (a, b) if isinstance(x, Var)}
        return (
            isinstance(c, Var) and c.dtype == _BOOL and vals <= {out} and out in (_FLOATS | _INTS)
        )
    if name == "cast":
        return dtypes <= (_FLOATS | _INTS | {_BOOL}) and out in (_FLOATS | _INTS | {_BOOL})
    if name == "pow" and any(not isinstance(a, Var) and isinstance(a, int) for a in e.inputs):
        return out in _FLOATS and dtypes == {out}
    return out in _FLOATS and dtypes == {out}


def _reducible(e) -> bool:
    """A reduction whose OpDef gives an accumulator template (sum, amax, amin)."""
    if not isinstance(e.op, OpDef) or not isinstance(e.op.template, tuple):
        return False
    x = e.inputs[0]
    return (
        isinstance(x, Var)
        and x.dtype in _FLOATS
        and e.out.dtype == x.dtype
        and x.ndim > 0
        and x.size > 0
    )


class _Group:
    __slots__ = ("members", "shape", "closed", "reductions", "merged_into")

    def __init__(self, shape):
        self.members: list[int] = []
        self.shape = shape
        self.closed = False
        self.reductions: list[int] = []
        self.merged_into = None

    def root(self):
        g = self
        while g.merged_into is not None:
            g = g.merged_into
        return g


def fuse_elementwise(graph: Graph) -> Graph:
    """Replace elementwise chains (and reductions ending them) by fused equations
    (Note [Fusion])."""
    eqns = graph.eqns
    group_of: dict = {}  # member output Var -> _Group (follow .root())
    reduced: set = set()  # outputs of reductions in groups (known only after the loops)
    groups: list[_Group] = []

    def open_group(a):
        g = group_of.get(a)
        return g.root() if g is not None else None

    for idx, e in enumerate(eqns):
        if _fusible(e):
            shape = e.out.shape
            mine = None
            for a in e.inputs:  # a reduction's result is known only after its group's loops
                if isinstance(a, Var) and a in reduced:
                    open_group(a).closed = True
            for a in e.inputs:
                g = open_group(a) if isinstance(a, Var) else None
                if g is None or g is mine:
                    continue
                if g.closed or g.shape != shape:
                    g.closed = True
                    continue
                if mine is None:
                    mine = g
                else:  # merge g into mine
                    mine.members.extend(g.members)
                    g.merged_into = mine
            if mine is None:
                mine = _Group(shape)
                groups.append(mine)
            mine.members.append(idx)
            group_of[e.out] = mine
            continue
        if _reducible(e):
            g = open_group(e.inputs[0])
            if g is not None and not g.closed and e.inputs[0] not in reduced:
                g.reductions.append(idx)
                group_of[e.out] = g  # its readers close the group
                reduced.add(e.out)
                continue
        for a in e.inputs:
            g = open_group(a) if isinstance(a, Var) else None
            if g is not None:
                g.closed = True
    roots = set(graph.roots())
    readers: dict = {}
    for idx, e in enumerate(eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                readers.setdefault(a, set()).add(idx)
    replace: dict = {}  # eqn index -> fused Eqn (at the group's last index) or None (dropped)
    for g in groups:
        if g.merged_into is not None:
            continue
        members = sorted(g.members)
        if len(members) + len(g.reductions) < 2:
            continue
        if not g.reductions and len(members) <= 2 and math.prod(g.shape) >= _LARGE:
            continue  # one saved pass over memory: NumPy's SIMD ufuncs do as well (measured)
        fused = _build(eqns, members, g.reductions, readers, roots, graph)
        last = max(members + g.reductions)
        for i in members + g.reductions:
            replace[i] = None
        replace[last] = fused
    if not replace:
        return graph
    new = []
    for idx, e in enumerate(eqns):
        if idx in replace:
            if replace[idx] is not None:
                new.append(replace[idx])
        else:
            new.append(e)
    graph.eqns = new
    from ember.graph.passes import dce

    return dce(graph)


def _build(eqns, members, reductions, readers, roots, graph):
    inside = set(members) | set(reductions)
    produced = {eqns[i].out for i in members}
    producer = {}
    for _i, e in enumerate(eqns):
        for v in e.outs:
            producer[v] = e
    shape = eqns[members[0]].out.shape
    ext: list = []  # external Vars read, in order
    steps = []  # (op name, operand refs, attrs, out dtype)
    outputs = []  # member Vars read outside
    for i in members:
        e = eqns[i]
        refs = []
        for a in e.inputs:
            if isinstance(a, Var):
                if a not in produced:
                    src = producer.get(a)
                    if (
                        src is not None
                        and src.name == "expand"
                        and isinstance(src.inputs[0], Var)
                        and src.inputs[0].ndim <= len(shape)
                    ):
                        a = src.inputs[0]  # read through the broadcast copy
                    if a not in ext:
                        ext.append(a)
                    refs.append(("in", ext.index(a)))
                else:
                    refs.append(("val", a))
            else:
                refs.append(("lit", a))
        steps.append((e.name, refs, dict(e.attrs), e.out))
        if e.out in roots or any(r not in inside for r in readers.get(e.out, ())):
            outputs.append(e.out)
    red = []
    for i in reductions:
        r = eqns[i]
        red.append((r.name, r.inputs[0], r.attrs.get("dim"), bool(r.attrs.get("keepdim")), r.out))
    names = [s[0] for s in steps] + [r[0] for r in red]
    layouts = [
        "A" if (producer.get(a) is not None and _strided(producer[a].op)) else "C" for a in ext
    ]
    # Note [Flat fused loops]: every operand either has the group's shape or is one value, and
    # none is usually strided: the kernel runs one loop over the flattened arrays, which LLVM
    # vectorises (a nested loop over (128, 784) ran the Adam update ~2x slower)
    flat = (
        len(shape) >= 2
        and all(a.ndim == 0 or a.shape == tuple(shape) for a in ext)
        and all(layout == "C" for layout in layouts)
        and all(dim is None or len(_axes(dim, len(shape))) == len(shape) for _, _, dim, _, _ in red)
    )
    op = FusedOp(shape, ext, steps, outputs, red, layouts=layouts, flat=flat)
    outs = outputs + [r[4] for r in red]
    site = eqns[members[-1]].site
    return Eqn(op, ext, {"ops": ",".join(names)}, outs, site)


class FusedOp:
    """A graph-level primitive: one fused elementwise group (Note [Fusion])."""

    name = "fused"
    stateful = False
    fresh_outputs = True  # its results never alias its inputs (the executor's buffer plan)

    @property
    def accepts_out(self) -> bool:
        """One elementwise result: the executor may pass a buffer (`out=`) to write it in."""
        return not self.red and len(self.outputs) == 1

    @property
    def accepts_outs(self) -> bool:
        """Elementwise results (with or without reductions): the executor may pass a buffer for
        each (`o0=`, `o1=`, ...; None: a new array), e.g. an optimizer's state to update in
        place (Note [Executor])."""
        return bool(self.outputs)

    def __init__(self, shape, ext, steps, outputs, red, layouts, flat=False):
        self.shape = tuple(shape)
        self.ext = list(ext)
        self.steps = steps
        self.outputs = list(outputs)
        self.red = red
        self.layouts = layouts
        self.flat = flat  # Note [Flat fused loops]
        self.loop_shape = (math.prod(self.shape),) if flat else self.shape

    def __repr__(self):
        return f"<fused {len(self.steps)} ops>"

    # --- NumPy path --------------------------------------------------------------------------
    def numpy_runner(self):
        from ember.backend import get_backend

        xp = get_backend("cpu").xp
        plan = []
        for name, refs, attrs, out in self.steps:
            op = REGISTRY[name]
            plan.append((op.kernels.get("numpy") or op.forward, refs, attrs, out))
        reds = []
        for name, x, dim, keep, _rout in self.red:
            rop = REGISTRY[name]
            reds.append((rop.kernels.get("numpy") or rop.forward, x, dim, keep))
        outputs = self.outputs
        single = len(outputs) + len(reds) == 1

        def run(*arrays, out=None, **targets):
            env = {}
            with np.errstate(all="ignore"):
                for fn, refs, attrs, var in plan:
                    vals = [
                        arrays[r[1]] if r[0] == "in" else env[r[1]] if r[0] == "val" else r[1]
                        for r in refs
                    ]
                    value = np.asarray(fn(xp, *vals, **attrs))
                    # an `expand` read through (see _build) leaves operands smaller than the
                    # member: its value has the member's shape, as in the compiled kernel
                    if value.shape != var.shape:
                        value = np.broadcast_to(value, var.shape)
                    env[var] = value
                results = [env[v] for v in outputs]
                for red_fn, x, dim, keep in reds:
                    results.append(np.asarray(red_fn(xp, env[x], dim=dim, keepdim=keep)))
            if out is not None:
                np.copyto(out, results[0])
                return out
            for k in range(len(outputs)):
                target = targets.get(f"o{k}")
                if target is not None:
                    np.copyto(target, results[k])
                    results[k] = target
            return results[0] if single else tuple(results)

        return run

    # --- numba kernel ------------------------------------------------------------------------
    def kernel_source(self, inplace=None, in_parallel=True):
        """(source, literal values with their dtypes) of the loop kernel; `inplace` maps an
        output to the operand whose buffer it overwrites (Note [In-place fused kernels]); its
        loop over `parallel_axis()` is a prange unless `in_parallel` is False (Note [Parallel
        loops])."""
        inplace = inplace or {}
        shape = self.loop_shape
        n = len(shape)
        idx_all = ", ".join(f"i{d}" for d in range(n)) if n else "()"
        if n == 1:
            idx_all = "i0"
        params_out = [f"o{k}" for k in range(len(self.outputs)) if k not in inplace]
        params_in = [f"a{k}" for k in range(len(self.ext))]
        lits = []
        body = []
        hoisted = []  # one-value operands are read once, before the loops: a read inside
        # them may alias an output's store, which keeps LLVM from vectorising the loop
        for k, a in enumerate(self.ext):
            if a.ndim == 0:
                hoisted.append(f"x{k} = a{k}[()]")
                continue
            in_shape = shape if self.flat else a.shape
            body.append(f"x{k} = a{k}[{_index(in_shape, shape)}]")
        local = {}
        for j, (name, refs, _attrs, out) in enumerate(self.steps):
            operands = []
            ref_dtype = out.dtype
            op = REGISTRY[name]
            if _compare(op):
                ref_dtype = next(
                    r[1].dtype if r[0] == "val" else self.ext[r[1]].dtype
                    for r in refs
                    if r[0] != "lit"
                )
            for r in refs:
                if r[0] == "in":
                    operands.append(f"x{r[1]}")
                elif r[0] == "val":
                    operands.append(local[r[1]])
                else:
                    lits.append(np.dtype(ref_dtype).type(r[1]))
                    operands.append(f"s{len(lits) - 1}")
            dname = _dtype_name(out.dtype)
            if name == "cast":
                expr = (
                    f"({operands[0]} != 0)" if out.dtype == _BOOL else f"np.{dname}({operands[0]})"
                )
            else:
                expr = op.template.format(*operands).replace("D(", f"np.{dname}(")
            if out.dtype == _BOOL:
                body.append(f"t{j} = bool({expr})")
            else:
                body.append(f"t{j} = np.{dname}({expr})")
            local[out] = f"t{j}"
        for k, v in enumerate(self.outputs):
            dest = f"a{inplace[k]}" if k in inplace else f"o{k}"
            body.append(f"{dest}[{idx_all}] = {local[v]}")
        params_red, pre, post = [], [], []
        for q, (name, x, dim, keep, rout) in enumerate(self.red):
            axes = _axes(dim, n)
            value = local[x]
            dname = _dtype_name(rout.dtype)
            start, update = REGISTRY[name].template
            if len(axes) == n:  # a full reduction: a scalar accumulator
                acc = f"acc{q}"
                pre.append(f"{acc} = np.float64({start})")
                out_idx = "()" if rout.ndim == 0 else ", ".join("0" for _ in range(rout.ndim))
                post.append((0, f"R{q}[{out_idx}] = np.{dname}({acc})"))
                params_red.append(f"R{q}")
            else:  # partial: a float64 accumulator array (the runner's), then one pass
                ridx = ", ".join("0" if d in axes else f"i{d}" for d in range(n))
                acc = f"r{q}[{ridx}]"
                params_red += [f"r{q}", f"R{q}"]
                kept = [d for d in range(n) if d not in axes]
                out_idx = (
                    ", ".join("0" if d in axes else f"i{d}" for d in range(n))
                    if keep
                    else ", ".join(f"i{d}" for d in kept)
                )
                for depth, d in enumerate(kept):
                    post.append((depth, f"for i{d} in range(n{d}):"))
                post.append((len(kept), f"R{q}[{out_idx}] = np.{dname}({acc})"))
            body.append(update.format(value, acc=acc))
        params = (
            params_out
            + params_red
            + params_in
            + [f"s{k}" for k in range(len(lits))]
            + [f"n{d}" for d in range(n)]
        )
        src = [f"def kernel({', '.join(params)}):"]
        src += ["    " + line for line in hoisted + pre]
        indent = "    "
        split = self.parallel_axis() if in_parallel else None
        for d in range(n):
            loop = "prange" if d == split else "range"
            src.append(f"{indent}for i{d} in {loop}(n{d}):")
            indent += "    "
        src += [indent + line for line in body]
        src += ["    " + "    " * depth + line for depth, line in post]
        return "\n".join(src) + "\n", lits

    def parallel_axis(self):
        """The loop that runs in parallel (prange), or None for a serial kernel (Note [Parallel
        loops])."""
        shape = self.loop_shape
        n = len(shape)
        if n == 0 or math.prod(shape) < parallel.threshold(costly=True):
            return None
        split = next((d for d, size in enumerate(shape) if size >= _MIN_PARALLEL_TRIPS), None)
        if split is None:
            return None
        for _name, _x, dim, _keep, _rout in self.red:
            if self.flat or split in _axes(dim, n):
                return None  # iterations would share accumulators
        return split

    def make_runner(self, eqn, inplace=None):
        from ember.backend import numba_kernels

        if not numba_kernels.available():
            return self.numpy_runner()
        in_parallel = self.parallel_axis() is not None
        attempts = [(True, in_parallel), (False, in_parallel)]  # a bad disk cache: compile
        if in_parallel:
            attempts.append((False, False))  # numba cannot parallelise it: the serial loop
        error = None
        for disk, par in attempts:
            source, lits = self.kernel_source(inplace, in_parallel=par)
            try:
                kernel = numba_kernels.jit_source(source, "kernel", disk=disk, parallel=par)
                if kernel is None:
                    return self.numpy_runner()
                if par:
                    serial = self.kernel_source(inplace, in_parallel=False)[0]
                    kernel = _fork_safe(kernel, serial)
                run = self._numba_runner(kernel, lits, inplace or {})
                self._warm_up(run)
                return run
            except Exception as exc:  # noqa: BLE001 - any numba failure: the NumPy path
                error = exc
        _warn_fallback(eqn, error)
        return self.numpy_runner()

    def _numba_runner(self, kernel, lits, inplace):
        """Note [In-place fused kernels]: an output the executor writes over one of the
        kernel's operands (an optimizer's state, a parameter) is stored through that operand's
        own argument, element i after it was read: the kernel then has one pointer for both,
        and LLVM vectorises the loop, where two arguments that overlap fail its runtime alias
        check and leave the loop scalar (Adam over 100k floats: 54 us against 252 us)."""
        shape = self.shape
        flat = self.flat
        out_dtypes = [v.dtype for v in self.outputs]
        g = {
            "kernel": kernel,
            "empty": np.empty,
            "full": np.full,
            "zeros": np.zeros,
            "copyto": np.copyto,
        }
        args = []
        lines = []
        post = []
        if self.accepts_out:
            lines.append("o0 = out if out is not None else o0")
        flat_in = {}  # operand -> the name its flat view is passed as
        for k, j in inplace.items():
            lines.append(f"o{k} = a{j}")
            if flat:
                flat_in[j] = f"w_a{j}"
                lines.append(f"w_a{j} = a{j}.reshape(-1)")
                lines.append(f"if not a{j}.flags.c_contiguous:")
                lines.append(f"    w_a{j} = w_a{j}.copy()")
                post.append(f"if not a{j}.flags.c_contiguous:")
                post.append(f"    copyto(a{j}, w_a{j}.reshape({shape!r}))")
        for k, dt in enumerate(out_dtypes):
            g[f"d{k}"] = dt
            if k in inplace:
                continue
            lines.append(f"if o{k} is None:")
            lines.append(f"    o{k} = empty({shape!r}, d{k})")
            if flat:  # a target that is not C-contiguous is written through a flat copy
                lines.append(f"w{k} = o{k}.reshape(-1)")
                lines.append(f"if not o{k}.flags.c_contiguous:")
                lines.append(f"    w{k} = w{k}.copy()")
                post.append(f"if not o{k}.flags.c_contiguous:")
                post.append(f"    copyto(o{k}, w{k}.reshape({shape!r}))")
                args.append(f"w{k}")
            else:
                args.append(f"o{k}")
        results = [f"o{k}" for k in range(len(out_dtypes))]
        loop = self.loop_shape
        n = len(loop)
        for q, (name, _x, dim, _keep, rout) in enumerate(self.red):
            axes = set(range(n)) if flat else _axes(dim, n)
            g["np"] = np
            g[f"rdt{q}"] = rout.dtype
            if len(axes) != n:
                kshape = tuple(1 if d in axes else s for d, s in enumerate(shape))
                g["f64"] = np.float64
                fill = REGISTRY[name].template[0]
                lines.append(f"r{q} = full({kshape!r}, {fill}, f64)")
                args.append(f"r{q}")
            lines.append(f"R{q} = empty({tuple(rout.shape)!r}, rdt{q})")
            args.append(f"R{q}")
            results.append(f"R{q}")
        params = [f"a{k}" for k in range(len(self.ext))]
        args += [
            flat_in.get(k, f"a{k}.reshape(-1)") if flat and a.ndim else f"a{k}"
            for k, a in enumerate(self.ext)
        ]
        for k, value in enumerate(lits):
            g[f"s{k}"] = value
            args.append(f"s{k}")
        args += [str(int(s)) for s in loop]
        lines.append(f"kernel({', '.join(args)})")
        lines += post
        ret = results[0] if len(results) == 1 else "(" + ", ".join(results) + ",)"
        lines.append(f"return {ret}")
        sig = params + [f"o{k}=None" for k in range(len(out_dtypes))]
        if self.accepts_out:
            sig.append("out=None")
        src = f"def run({', '.join(sig)}):\n" + "\n".join("    " + x for x in lines)
        exec(compile(src, "<ember fused runner>", "exec"), g)
        run = g["run"]
        run.source = src
        return run

    def _warm_up(self, run):
        """Compile now (not inside the first step) for the layouts the graph will pass."""
        import time

        from ember.backend import numba_kernels

        start = time.perf_counter()
        dummies = []
        for a, layout in zip(self.ext, self.layouts):
            if layout == "A" and a.ndim >= 2:
                dummies.append(np.ones(a.shape[::-1], a.dtype).T)
            else:
                dummies.append(np.ones(a.shape, a.dtype))
        with np.errstate(all="ignore"):
            run(*dummies)
        numba_kernels.note_compile_time(time.perf_counter() - start)


def _fork_safe(kernel, serial_source):
    """`kernel` (a prange build), or the serial build of the same loop in a process forked
    after numba's OpenMP threads ran (a DataLoader worker: GNU OpenMP kills a forked child that
    starts a parallel region) and on an overloaded machine (Note [Overloaded machine] in
    ember/backend/parallel.py) (Note [Parallel loops])."""
    from ember.backend import numba_kernels

    serial = []

    follow_budget = numba_kernels.follow_budget

    def call(*args):
        if parallel.in_forked_child() or parallel.overloaded():
            if not serial:
                serial.append(numba_kernels.jit_source(serial_source, "kernel", disk=False))
            return serial[0](*args)
        follow_budget()  # numba's count is per thread (Note [Per-thread numba count])
        return kernel(*args)

    return call


_warned: set = set()


def _warn_fallback(eqn, error) -> None:
    """numba could not compile a fused kernel: say so once per expression (the NumPy path is
    exact but slower)."""
    import warnings

    key = eqn.attrs.get("ops")
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"ember.graph fusion: numba could not compile the fused kernel [{key}] "
        f"({type(error).__name__}: {error}); running it with NumPy instead",
        RuntimeWarning,
        stacklevel=2,
    )


def _axes(dim, n) -> set:
    return set(range(n)) if dim is None else {d % n for d in dim}


def _dtype_name(dt) -> str:
    return "bool_" if dt == _BOOL else np.dtype(dt).name


def _index(in_shape, out_shape) -> str:
    n, k = len(out_shape), len(in_shape)
    if k == 0:
        return "()"
    off = n - k
    parts = []
    for j, s in enumerate(in_shape):
        d = off + j
        parts.append("0" if s == 1 and out_shape[d] != 1 else f"i{d}")
    return ", ".join(parts)


# --- joint kernels (Note [Joint kernels]) ------------------------------------------------------
def _same_atom(a, b) -> bool:
    if isinstance(a, Var) or isinstance(b, Var):
        return a is b
    return type(a) is type(b) and a == b


def pair_joint(graph: Graph) -> Graph:
    """Compute each pair of equations that an OpDef's `joint` kernel covers with one call
    (Note [Joint kernels])."""
    eqns = graph.eqns
    produced_at = {v: i for i, e in enumerate(eqns) for v in e.outs}
    replace: dict = {}  # eqn index -> joint Eqn, or None (dropped)
    for i, first in enumerate(eqns):
        op = first.op
        if not isinstance(op, OpDef) or not op.joint or len(first.outs) != 1 or i in replace:
            continue
        n = len(first.inputs)
        for j in range(i + 1, len(eqns)):
            second = eqns[j]
            if (
                j in replace
                or not isinstance(second.op, OpDef)
                or second.op.name not in op.joint
                or len(second.outs) != 1
                or len(second.inputs) < n
                or second.attrs != first.attrs
                or not all(
                    _same_atom(a, b)
                    for a, b in zip(second.inputs[len(second.inputs) - n :], first.inputs)
                )
                or any(
                    produced_at.get(a, -1) >= i
                    for a in second.inputs[: len(second.inputs) - n]
                    if isinstance(a, Var)
                )
            ):
                continue
            joint = JointOp(op, second.op, n)
            replace[i] = Eqn(joint, second.inputs, first.attrs, [first.out, second.out], first.site)
            replace[j] = None
            break
    if not replace:
        return graph
    graph.eqns = [replace.get(i, e) for i, e in enumerate(eqns) if replace.get(i, e) is not None]
    return graph


class JointOp:
    """A graph-level primitive: two registered ops computed by the first one's `joint` kernel
    (Note [Joint kernels]); its inputs are the second op's."""

    stateful = False
    view = False  # read by the fusion of the elementwise chains that consume its results
    fresh_outputs = True  # new arrays: the executor's buffer plan keeps nothing of them

    def __init__(self, first: OpDef, second: OpDef, n_first: int):
        self.first = first
        self.second = second
        self.n_first = n_first  # the first op's operands: the last n_first inputs
        self.name = f"joint[{first.name},{second.name}]"
        self.quiet = first.quiet or second.quiet

    def __repr__(self):
        return f"<{self.name}>"

    def make_runner(self, e, inplace=None):
        from ember.backend import get_backend

        xp = get_backend("cpu").xp
        joint = self.first.joint[self.second.name]
        first = self.first.kernels.get("numpy") or self.first.forward
        second = self.second.kernels.get("numpy") or self.second.forward
        attrs = dict(e.attrs)
        skip = len(e.inputs) - self.n_first

        def run(*arrays):
            both = joint(xp, *arrays, **attrs)
            if both is None:
                return (
                    np.asarray(first(xp, *arrays[skip:], **attrs)),
                    np.asarray(second(xp, *arrays, **attrs)),
                )
            return both

        return run
