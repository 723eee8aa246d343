"""The executor: a compiled graph as one generated straight-line Python function.

Note [Executor]: `Executor(graph)` turns the equations into Python source, one line per
equation, each line a single kernel call on local variables (no per-op dispatch, no dicts).
Every line calls what the op's OpDef names (Note [OpDef]): its NumPy `ufunc`, or its registered
kernel or reference forward; the executor has no kernel of its own. Ufuncs and ops whose OpDef
says `writes_out` (matmul, linear, relu: the forward takes `out=`) write into buffers allocated
once when the executor is built, so a compiled matmul runs the same layout checks and BLAS
dispatch (Note [Small GEMMs]) as an eager one. Ops whose OpDef says `quiet` run with
floating-point warnings off, as eager does. Buffers are planned
from value lifetimes: a buffer returns to the pool after the last use of every value that may
alias it (a view, or an op whose kernel may return its input), and the next value of the same
shape and dtype takes it. Parameter updates whose old value is dead by then are computed
straight into the parameter's own buffer (`out=` the captured array, the in-place update);
other updates are copied back at the end. A fused kernel with several results (an optimizer's
update: the parameter and its moments) gets a buffer for each (`o0=`, `o1=`, ...), so one
kernel updates all of a parameter's state in place (Note [In-place fused kernels]). Which
results may share an input's storage is decided per op: a view op's or a one-input op's may,
a reduction's and a 0-d loss's never, another op's only an input of its own shape and dtype.
Results that may alias a pooled buffer are copied, so what the caller gets is never overwritten
by a later call. Executors are not re-entrant.

When a kernel raises, the graph is run again equation by equation to find the failing one, and
the error names its op, the input shapes and dtypes and the user's line that created it.
"""

from __future__ import annotations

import numpy as np

from ember._util.errors import format_location
from ember.backend import blas, get_backend, mkl_packed
from ember.graph.ir import Graph, GraphError, Var

_XP = get_backend("cpu").xp


def _literal(plan, value) -> str:
    """Source for a literal operand: simple values inline, anything else bound by name."""
    if (
        value is None
        or isinstance(value, (bool, int))
        or (isinstance(value, float) and np.isfinite(value))
    ):
        return repr(value)
    return plan.bind(value, "l")


class _Plan:
    """Per-equation decisions: the kernel line and the buffer it writes."""

    def __init__(self):
        self.lines: list[str] = []
        self.globals: dict = {
            "np": np,
            "xp": _XP,
            "asarray": np.asarray,
            "copyto": np.copyto,
        }
        self.n = 0

    def bind(self, value, prefix="g") -> str:
        self.n += 1
        name = f"{prefix}{self.n}"
        self.globals[name] = value
        return name


class Executor:
    """Runs `graph` (after the passes) with preallocated buffers (Note [Executor])."""

    def __init__(self, graph: Graph, inplace_updates: bool = True):
        self.graph = graph
        self.inplace_updates = inplace_updates
        self.buffers_bytes = 0
        if any(getattr(e.op, "name", None) in ("matmul", "linear") for e in graph.eqns):
            blas.prepare_split()  # Note [Split on numba's threads] in ember/backend/blas.py
        self._build()

    # --- planning ------------------------------------------------------------------------------
    def _build(self):
        g = self.graph
        plan = _Plan()
        names: dict = {}
        for i, v in enumerate(g.inputs):
            names[v] = f"i{i}"
        for i, (v, _) in enumerate(g.captures):
            names[v] = f"c{i}"
        for v, arr in g.consts.items():
            names[v] = plan.bind(arr, "k")
        n_eqn = len(g.eqns)
        last_use: dict = {}
        for idx, e in enumerate(g.eqns):
            for a in e.inputs:
                if isinstance(a, Var):
                    last_use[a] = idx
        forever = n_eqn + 1
        for v in g.roots():
            last_use[v] = forever
        # in-place updates: capture var -> update var, when legal (checked below)
        update_of = {new: cap for cap, new in g.updates}
        # aliases: var -> set of storage keys ("b<n>" pooled buffer, "c<n>" capture, "k" const)
        aliases: dict = {v: {names[v]} for v, _ in g.captures}
        for v in g.consts:
            aliases[v] = {"const"}
        for v in g.inputs:
            aliases[v] = {names[v]}
        pool: dict = {}  # (shape, dtype) -> [buffer names]
        buffer_live: dict = {}  # buffer name -> set of live vars aliasing it
        buffer_key: dict = {}
        inplace_done = set()
        quiet = False
        produced_at: dict = {}
        grad_vars = {v for _, v in g.grads}

        def place(v, idx, e):
            """The buffer name kernel result `v` of equation `e` is written into, or None (a
            fresh array); records what it aliases."""
            cap = update_of.get(v)
            if (
                cap is not None
                and self.inplace_updates
                and cap not in inplace_done
                and v.shape == cap.shape
                and v.dtype == cap.dtype
                and self._old_value_dead(g, cap, idx, last_use, aliases, names)
                and self._reads_in_step(e, cap, aliases, names)
            ):
                inplace_done.add(cap)
                aliases[v] = {names[cap]}
                return names[cap]
            if last_use.get(v) == forever and v not in update_of and v not in grad_vars:
                aliases[v] = set()  # a result: a fresh array each call
                return None
            key = (v.shape, v.dtype.str)
            free = pool.get(key)
            if free:
                target = free.pop()
            else:
                target = plan.bind(np.empty(v.shape, v.dtype), "b")
                self.buffers_bytes += v.nbytes
                buffer_key[target] = key
            aliases[v] = {target}
            buffer_live.setdefault(target, set()).add(v)
            return target

        for idx, e in enumerate(g.eqns):
            out = e.out
            produced_at[out] = idx
            args = [names[a] if isinstance(a, Var) else _literal(plan, a) for a in e.inputs]
            kind = self._kernel_kind(e)
            quiet = quiet or getattr(e.op, "quiet", False)
            target = None
            if kind is not None:
                target = place(out, idx, e)
                line = self._kernel_line(plan, e, kind, args, target)
            else:
                targets = None
                if getattr(e.op, "accepts_outs", False):
                    # a fused kernel with several results: each elementwise result goes into a
                    # planned buffer or straight into the captured state it updates
                    targets = [place(v, idx, e) for v in e.outs[: len(e.op.outputs)]]
                    for v in e.outs[len(e.op.outputs) :]:
                        aliases[v] = set()
                line = self._generic_line(plan, e, args, targets)
                if targets is None:
                    if getattr(e.op, "fresh_outputs", False):  # fused kernels: new arrays
                        for v in e.outs:
                            aliases[v] = set()
                    aliases[out] = (
                        set()
                        if getattr(e.op, "fresh_outputs", False) or self._scalar_result(e)
                        else set().union(*(aliases[a] for a in self._may_return(e)))
                    )
                    for key in aliases[out]:
                        if key in buffer_live:
                            buffer_live[key].add(out)
            for v in e.outs:
                names[v] = f"v{v.id}"
            if len(e.outs) > 1:
                line = ", ".join(names[v] for v in e.outs) + " = " + line
            else:
                line = f"{names[out]} = {line}"
            plan.lines.append(line)
            # values dead after this equation: drop the local now, so an array a kernel made
            # (not a planned buffer) is freed here, not when the whole graph returns
            dead = [
                names[a]
                for a in dict.fromkeys([*e.inputs, *e.outs])
                if isinstance(a, Var)
                and last_use.get(a, -1) <= idx
                and names.get(a, "").startswith("v")
            ]
            if dead:
                plan.lines.append("del " + ", ".join(dead))
            # free buffers whose values are all dead after this equation
            for a in list(e.inputs) + list(e.outs):
                if isinstance(a, Var) and last_use.get(a, -1) <= idx:
                    for key in aliases.get(a, ()):
                        live = buffer_live.get(key)
                        if live is not None and a in live:
                            live.discard(a)
                            if not live:
                                pool.setdefault(buffer_key[key], []).append(key)
        # results
        body = plan.lines
        for cap, new in g.updates:
            if cap not in inplace_done:
                body.append(f"copyto({names[cap]}, {self._atom(names, new)})")
        outs = []
        for a in g.outputs:
            if isinstance(a, Var):
                ref = names[a]
                if aliases.get(a):
                    ref = f"{ref}.copy()"
                outs.append(ref)
            else:
                outs.append(_literal(plan, a))
        # Note [Gradient buffers]: a gradient computed into a buffer of this executor's own
        # (not a view of an input, a capture or a constant, and not another gradient's) becomes
        # its owner's .grad as it is, with no copy; the next call writes its new value there,
        # as copying into the existing .grad would. Others are copied by the caller.
        grads = [names[v] for _, v in g.grads]
        seen: set = set()
        self.grads_owned = []  # per gradient: the name of the buffer it is computed in, or None
        for _, v in g.grads:
            keys = aliases.get(v, {"?"}) if isinstance(v, Var) else {"?"}
            own = (
                len(keys) == 1
                and all(k in buffer_key for k in keys)
                and not (keys & seen)
                and v not in g.outputs
            )
            seen |= keys
            self.grads_owned.append(next(iter(keys)) if own else None)
        params = [names[v] for v in g.inputs] + [f"c{i}" for i in range(len(g.captures))]
        src = [f"def run({', '.join(params)}):"]
        indent = "    "
        if quiet:
            src.append("    with np.errstate(all='ignore'):")
            indent = "        "
        src += [indent + line for line in body] or [indent + "pass"]
        src.append(
            indent + f"return ({', '.join(outs)}{',' if outs else ''}), "
            f"({', '.join(grads)}{',' if grads else ''})"
        )
        self.source = "\n".join(src)
        namespace = dict(plan.globals)
        exec(compile(self.source, f"<ember graph {g.name}>", "exec"), namespace)
        self.run = namespace["run"]
        self.globals = namespace  # the buffers by name (a gradient's may be swapped per call)
        self.captures = [t for _, t in g.captures]

    @staticmethod
    def _atom(names, a):
        return names[a] if isinstance(a, Var) else repr(a)

    def _old_value_dead(self, g, cap, idx, last_use, aliases, names) -> bool:
        """The captured value and everything aliasing its buffer are unused after eqn idx."""
        key = names[cap]
        for v, keys in aliases.items():
            if key in keys and last_use.get(v, -1) > idx:
                return False
        return True

    @staticmethod
    def _may_return(e) -> list:
        """The inputs whose storage a kernel's result may share: any input of a view op or of
        a one-input op (a kernel may hand back its operand, or a view of it, as NumPy's einsum
        does for a transpose); of ops with several inputs, those with the result's shape and
        dtype (the operand itself returned unchanged). A kernel of several inputs computes a
        result of another shape anew (linear, cross entropy's gradient)."""
        from ember.ops.registry import OpDef

        vars_ = [a for a in e.inputs if isinstance(a, Var)]
        if not isinstance(e.op, OpDef) or e.op.view or len(vars_) <= 1:
            return vars_
        out = e.out
        return [a for a in vars_ if a.shape == out.shape and a.dtype == out.dtype]

    @staticmethod
    def _scalar_result(e) -> bool:
        """A result that is a new array, never a view of an input, so it pins no buffer or
        capture: a 0-d result of a non-view op computed from arrays (a loss; the line wraps it
        in `asarray`), or a reduction's (its OpDef has an accumulator template)."""
        from ember.ops.registry import OpDef

        op = e.op
        if not isinstance(op, OpDef) or op.view or len(e.outs) != 1:
            return False
        if isinstance(op.template, tuple):
            return True
        return e.out.ndim == 0 and all(a.ndim > 0 for a in e.inputs if isinstance(a, Var))

    @staticmethod
    def _overwritten(e, args, targets) -> dict:
        """{output k: operand j} for the fused kernel's outputs written over an operand's own
        buffer (Note [In-place fused kernels])."""
        pairs = {}
        for k, t in enumerate(targets):
            if t is not None and t in args:
                j = args.index(t)
                if isinstance(e.inputs[j], Var) and e.inputs[j].shape == e.outs[k].shape:
                    pairs[k] = j
        return pairs

    @staticmethod
    def _reads_in_step(e, cap, aliases, names) -> bool:
        """Writing `cap`'s buffer while `e` runs is safe: an elementwise kernel (a ufunc handles
        overlap itself), a fused kernel that reads the buffer only as `cap` itself, element i
        before it writes element i, or an op that `writes_out` none of whose inputs shares the
        buffer (Note [OpDef])."""
        writes_out = getattr(e.op, "writes_out", False)
        if not (
            writes_out
            or getattr(e.op, "accepts_out", False)
            or getattr(e.op, "accepts_outs", False)
        ):
            return True
        key = names[cap]
        return all(
            (a is cap and not writes_out) or key not in aliases.get(a, ())
            for a in e.inputs
            if isinstance(a, Var)
        )

    @staticmethod
    def _kernel_kind(e):
        from ember.ops.registry import OpDef

        op = e.op
        if getattr(op, "accepts_out", False) and len(e.outs) == 1:
            return "fused"  # a fused kernel (ember.graph.fusion) writing one result
        if not isinstance(op, OpDef):
            return None
        vars_ = [a for a in e.inputs if isinstance(a, Var)]
        if not vars_:
            return None
        if op.ufunc is not None and op.kernels.get("numpy") is None:
            if any(not isinstance(a, (Var, bool, int, float)) for a in e.inputs):
                return None
            kinds = {a.dtype for a in vars_}
            out = e.out
            if len(kinds) != 1:
                return None
            if out.dtype.kind != "b" and out.dtype != vars_[0].dtype:
                return None
            if out.dtype.kind not in "fb" and op.name in ("div", "pow", "reciprocal"):
                return None
            return "ufunc"
        if (
            op.writes_out
            and len(e.outs) == 1
            and all(a.dtype == e.out.dtype for a in vars_)
            and not any(type(a) in (bool, int, float) for a in e.inputs)
        ):
            # the op's own forward writes into the planned buffer (Note [OpDef], `writes_out`),
            # which has the dtype it computes in (no operand to promote)
            return "forward"
        return None

    def _kernel_line(self, plan, e, kind, args, target):
        out = f", out={target}" if target is not None else ""
        scalar = e.out.ndim == 0 and target is None  # NumPy gives scalars for 0-d results
        if kind == "ufunc":
            fn = plan.bind(getattr(np, e.op.ufunc), "u")
            call = f"{fn}({', '.join(args)}{out})"
            return f"asarray({call})" if scalar else call
        if kind == "fused":
            inplace = self._overwritten(e, args, [target]) if target is not None else None
            fn = plan.bind(e.op.make_runner(e, inplace=inplace), "p")
            return f"{fn}({', '.join(args)}{out})"
        if kind == "forward":
            call = self._forward_call(plan, e, args, out)
            return f"asarray({call})" if scalar else call
        raise AssertionError(kind)

    @staticmethod
    def _forward_call(plan, e, args, out=""):
        """The call of an op's registered kernel (or reference forward) on `args`; `out` is
        "" or ", out=<buffer>" for an op whose OpDef says it `writes_out`."""
        fn = plan.bind(e.op.kernels.get("numpy") or e.op.forward, "f")
        call = f"{fn}(xp" + "".join(f", {a}" for a in args)  # ops may have no inputs
        if e.attrs:
            call += f", **{plan.bind(dict(e.attrs), 'a')}"
        return call + out + ")"

    def _generic_line(self, plan, e, args, targets=None):
        from ember.ops.registry import OpDef

        if isinstance(e.op, OpDef):
            call = self._forward_call(plan, e, args)
            if e.op.promote is not None and any(type(v) in (bool, int, float) for v in e.inputs):
                # Python-number operands: NumPy would widen the result (float64 from
                # where(c, 1.5, -0.5)); the graph's dtype is the rule's, as in eager dispatch
                call = f"asarray({call}, dtype={plan.bind(e.out.dtype, 'd')})"
            elif e.out.ndim == 0 or e.name in ("sum", "prod", "amax", "amin"):
                call = f"asarray({call})"
            return call
        # graph-level primitives (fused kernels, cond, while_loop) have a `run(*arrays)`
        if targets:
            runner = e.op.make_runner(e, inplace=self._overwritten(e, args, targets))
        else:
            runner = e.op.make_runner(e)
        fn = plan.bind(runner, "p")
        outs = [f"o{k}={t}" for k, t in enumerate(targets or ()) if t is not None]
        return f"{fn}({', '.join(list(args) + outs)})"

    # --- running -------------------------------------------------------------------------------
    def __call__(self, *arrays):
        try:
            return self.run(*arrays, *[t.array for t in self.captures])
        except GraphError:
            raise
        except Exception as error:  # find the failing equation (slow path, errors only)
            caps = [t.array for t in self.captures]
            raise self._locate(arrays, caps, error) from error
        finally:
            if self.graph.updates:  # captured tensors written in place, no version bumped
                mkl_packed.weights_written()  # Note [Pack validity]

    def _locate(self, arrays, caps, error):
        from ember.ops.registry import OpDef

        g = self.graph
        env = {}
        for v, a in zip(g.inputs, arrays):
            env[v] = a
        for (v, _), a in zip(g.captures, caps):
            env[v] = a.copy()
        env.update(g.consts)
        for e in g.eqns:
            vals = [env[a] if isinstance(a, Var) else a for a in e.inputs]
            try:
                with np.errstate(all="ignore"):
                    if isinstance(e.op, OpDef):
                        out = (e.op.kernels.get("numpy") or e.op.forward)(_XP, *vals, **e.attrs)
                        outs = [np.asarray(out)]
                    else:
                        out = e.op.make_runner(e)(*vals)
                        outs = list(out) if len(e.outs) > 1 else [out]
            except Exception as inner:
                shapes = ", ".join(
                    f"{tuple(np.shape(x))} {np.asarray(x).dtype}" if isinstance(a, Var) else repr(a)
                    for a, x in zip(e.inputs, vals)
                )
                where = f" (created at {format_location(e.site)})" if e.site else ""
                return GraphError(
                    f"compiled graph {g.name!r}: op {e.name} failed{where}: "
                    f"{type(inner).__name__}: {inner} [inputs: {shapes}]"
                )
            for v, o in zip(e.outs, outs):
                env[v] = o
        return GraphError(f"compiled graph {g.name!r} failed: {type(error).__name__}: {error}")
