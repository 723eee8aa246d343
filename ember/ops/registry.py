"""The op registry: every primitive once, with its rules, reference forward and VJP.

Note [OpDef]: a primitive is an `OpDef` holding, side by side,
- `forward(xp, *arrays, **attrs)`: the reference kernel on the backend's array namespace;
- `vjp(g, out, *inputs, **attrs)`: the backward rule, written with ember ops on Tensors so that
  it runs eagerly, traces into graphs and can itself be differentiated; it returns one gradient
  (or None) per input;
- `shape(*shapes, **attrs)` and `dtype(*dtypes, **attrs)`: the output's shape and dtype from the
  inputs' (used by graph tracing, by error messages and checked against eager by the tests);
- `promote`: how inputs are cast before the forward (Note [Type promotion] in ember.dtypes):
  None (no casting), "common" (to the common dtype), "float" (common, integers to default float).
Attributes are hashable Python values (ints, tuples, DTypes, strings) so that compiled graphs
can key caches and common-subexpression elimination on them.
Besides its rules, an OpDef holds every other fact about the op, so that no layer keeps a
table of op names of its own (a test checks that every name-keyed table names registered ops):
- `methods`, `functions`, `operators`, `inplace`: the Tensor methods, the `ember.*` /
  `ember.ops.*` functions, the Python operators (`"__add__"`, `"__radd__"`) and the in-place
  methods and operators (`"exp_"`, `"__iadd__"`) it provides; `api` is the hand-written
  public function (argument checks, defaults) where a plain `apply(op, *args)` does not do
  (Note [Op surface] in ember.ops.surface);
- `ufunc`: the NumPy ufunc (name) that computes the forward and accepts `out=` (the executor
  writes into preallocated buffers with it);
- `writes_out`: the forward (and every kernel registered for it) also takes a keyword `out=`:
  an array of the result's shape and dtype, sharing no memory with the inputs, which it fills
  and returns. Eager dispatch never passes it; the graph executor passes its planned buffers,
  so an op that needs more than one ufunc call (matmul: its layout checks and the BLAS it
  dispatches to, Note [Small GEMMs]) still writes into them through its one forward, not
  through a second implementation in the executor (Note [Executor]);
- `joint`: kernels that compute this op's result together with another op's over the same
  operands, by the other op's name: `joint[name](xp, *inputs of name, **attrs)` returns (this
  op's result, that op's result), or None where it does not apply (both kernels then run).
  This op's inputs are the last inputs of the other, with the same attributes: a loss and its
  gradient, which a compiled training step computes one after the other (Note [Joint
  kernels] in ember.graph.fusion);
- `template`: the scalar expression of one element for generated fused kernels, over the
  operands `{0}`, `{1}`, `{2}` (`D(...)` casts to the result dtype; Note [Fusion]);
- `quiet`: the NumPy kernel may warn on valid input (log(0), x/0): eager and compiled run it
  with floating-point warnings off (Note [Quiet kernels] in ember/backend/numpy_backend.py);
- `onnx`: its ONNX lowering (used by the exporter), None where it has none;
- `slot_gradient`: for a view op (getitem), the place its gradient lands on in its input's
  gradient, which the backward engine adds into directly (Note [Slot gradients]);
- `eager_vjp`: the VJP's kernels called on NumPy arrays, which the backward engine runs instead
  of the VJP where it records no graph (Note [Eager VJPs]).

Note [Fused composites]: a composite gets a primitive of its own (one kernel, one VJP) only
where a benchmark shows the decomposition's per-op cost matters (linear, softmax cross
entropy, and the Transformer hot path: Note [Fused Transformer ops] in ember.ops.fused). Its
decomposition stays in the code as `<name>_reference`, and the op table checks the fused op
against it, against PyTorch and against finite differences. The rule: every fused kernel has
a decomposition and a test comparing the two; a fused primitive also gets an ONNX lowering
written with ONNX primitives (the exporter may swap in ONNX's own fused op).

Layers above install the dispatcher (`set_dispatcher`): eager execution with autograd (L3), and
graph tracing (L4) is a staging backend (Note [Staging backends] in ember/backend/__init__.py).
Ops never create Tensors themselves.
"""

from __future__ import annotations

from typing import Callable

from ember import dtypes as _dt
from ember._util.errors import ShapeError

__all__ = [
    "OpDef",
    "REGISTRY",
    "COMPOSITES",
    "defop",
    "public",
    "apply",
    "set_dispatcher",
    "infer",
    "onnx_lowering",
]


class OpDef:
    # a custom Function's op (ember/autograd/function.py) drops its ctx's saved tensors when a
    # backward without retain_graph has run it; a registered op's node drops its own
    release = None

    __slots__ = (
        "name",
        "forward",
        "vjp",
        "shape",
        "dtype",
        "promote",
        "save_inputs",
        "save_output",
        "view",
        "stateful",
        "differentiable",
        "kernels",
        "doc",
        "needed_by",
        "methods",
        "functions",
        "operators",
        "inplace",
        "api",
        "ufunc",
        "writes_out",
        "joint",
        "template",
        "quiet",
        "onnx",
        "slot_gradient",
        "eager_vjp",
        "__weakref__",
    )

    def __init__(
        self,
        name,
        forward,
        vjp,
        shape,
        dtype,
        promote,
        save_inputs,
        save_output,
        view,
        stateful,
        doc,
    ):
        self.name = name
        self.forward = forward
        self.vjp = vjp
        self.shape = shape
        self.dtype = dtype
        self.promote = promote
        self.save_inputs = save_inputs
        self.save_output = save_output
        self.view = view
        self.stateful = stateful
        self.differentiable = vjp is not None
        self.kernels: dict[str, Callable] = {}  # backend name -> faster kernel, same signature
        self.doc = doc
        # needed_by[i]: the inputs whose gradients use saved input i (None: all of them).
        # A saved input is version-checked only if one of those requires grad, as in PyTorch
        # (x[0] * 3 does not keep x[0]'s value).
        self.needed_by: dict | None = None
        self.methods: tuple = ()
        self.functions: tuple = ()
        self.operators: tuple = ()
        self.inplace: tuple = ()
        self.api: Callable | None = None
        self.ufunc: str | None = None
        self.writes_out = False
        self.joint: dict[str, Callable] = {}
        self.template: str | None = None
        self.quiet = False
        self.onnx = None
        # Note [Slot gradients] in ember/autograd/engine.py: for a view op whose VJP is "zeros
        # of the input's shape with g added at the view's place", `slot_gradient(base,
        # **attrs)` returns that place as a view of the NumPy array `base` (None where not)
        self.slot_gradient: Callable | None = None
        # Note [Eager VJPs] in ember/autograd/engine.py: the VJP's kernels called on NumPy
        # arrays, `eager_vjp(g, *saved, **attrs)` -> arrays (None where it does not apply)
        self.eager_vjp: Callable | None = None

    def __repr__(self) -> str:
        return f"<op {self.name}>"

    def def_vjp(self, fn):
        self.vjp = fn
        self.differentiable = True
        return fn

    def def_kernel(self, backend_name: str):
        """Register a faster kernel for one backend; tests check it against `forward`."""

        def register(fn):
            self.kernels[backend_name] = fn
            return fn

        return register

    def def_fast_kernel(self, backend_name: str, fast: Callable) -> Callable:
        """Register `fast(*arrays, **attrs)` as the kernel for one backend, with the reference
        `forward` run wherever it returns None (a case it does not cover: a dtype, a layout,
        no numba); tests check both against each other. Each call first gives the calling
        thread ember's numba thread count (Note [Per-thread numba count] in
        ember/backend/numba_kernels.py)."""
        from ember.backend.numba_kernels import follow_budget

        reference = self.forward

        def kernel(xp, *arrays, **attrs):
            follow_budget()
            out = fast(*arrays, **attrs)
            return reference(xp, *arrays, **attrs) if out is None else out

        self.kernels[backend_name] = kernel
        return kernel

    def public(self, *names: str, method: bool = True, function: bool = True):
        """Decorator: `fn` is this op's public function, provided under `names` as Tensor
        methods (self first) and/or `ember.*` functions (Note [Op surface])."""

        def register(fn):
            self.api = fn
            if method:
                self.methods = names
            if function:
                self.functions = names
            _surface_changed()
            return fn

        return register


# Composites (functions without an OpDef of their own) that the op surface provides:
# (function, method names, function names), in definition order (Note [Op surface]).
COMPOSITES: list = []


def public(*names: str, method: bool = True, function: bool = True):
    """Decorator for a composite: provide `fn` under `names` as Tensor methods (self first)
    and/or `ember.*` functions (Note [Op surface] in ember.ops.surface)."""

    def register(fn):
        COMPOSITES.append((fn, names if method else (), names if function else ()))
        _surface_changed()
        return fn

    return register


def _surface_changed():
    import sys

    surface = sys.modules.get("ember.ops.surface")
    if surface is not None:
        surface.refresh()


REGISTRY: dict[str, OpDef] = {}


def defop(
    name: str,
    forward: Callable,
    vjp: Callable | None = None,
    *,
    shape,
    dtype,
    promote: str | None = None,
    save_inputs: bool = True,
    save_output: bool = False,
    view: bool = False,
    stateful: bool = False,
    doc: str = "",
    names: tuple = (),
    operators: tuple = (),
    inplace: tuple = (),
    ufunc: str | None = None,
    writes_out: bool = False,
    template: str | None = None,
    quiet: bool = False,
    onnx=None,
) -> OpDef:
    """Register a primitive (Note [OpDef]); `names` are both Tensor methods and functions."""
    if name in REGISTRY:
        raise ValueError(f"op {name!r} is already registered")
    if quiet:
        from ember.backend.numpy_backend import quiet as _quiet

        forward = _quiet(forward)
    op = OpDef(
        name, forward, vjp, shape, dtype, promote, save_inputs, save_output, view, stateful, doc
    )
    op.methods = op.functions = tuple(names)
    op.operators = tuple(operators)
    op.inplace = tuple(inplace)
    op.ufunc = ufunc
    op.writes_out = writes_out
    op.template = template
    op.quiet = quiet
    op.onnx = onnx
    REGISTRY[name] = op
    _surface_changed()
    return op


def onnx_lowering(name: str):
    """Attach an ONNX lowering to the registered primitive `name` (Note [ONNX lowerings]).

    Note [ONNX lowerings]: an op's ONNX lowering sits in the op's module right after its
    definition, as JAX keeps `mlir.register_lowering` beside each primitive. It is a function
    `lower(b, *inputs, **attrs)`: `b` is the node builder of ember.onnx (L9; the lowering never
    imports onnx), `inputs` are ONNX value names (None for an absent optional input; Python
    scalars of the traced equation arrive as constants of the compute dtype), `attrs` the
    equation's attributes. It returns the output's value name (a list for several outputs).
    Shape-valued attributes that may follow a dynamic axis go through `b.ints(...)`, which
    emits them as constants where static and as shape arithmetic where they vary. An op whose
    `onnx` is None cannot be exported: the exporter names it and the user's line.
    """

    def attach(fn):
        REGISTRY[name].onnx = fn
        return fn

    return attach


# --- dispatch -------------------------------------------------------------------------------
_dispatcher: Callable | None = None


def apply(op: OpDef, *args, **attrs):
    """Run `op` on Tensors / Python scalars through the installed dispatcher."""
    return _dispatcher(op, *args, **attrs)


_forward_to_dispatcher = apply


def set_dispatcher(fn: Callable) -> None:
    """Install `fn(op, *args, **attrs)` as the dispatcher. The op modules that imported
    `apply` from here get `fn` itself in its place, as does any later import of the name, so
    an op's public function reaches the dispatcher without a forwarding call (~0.2 us of a
    ~1.5 us op); `apply` keeps working before a dispatcher is installed, as the forwarder."""
    global _dispatcher, apply
    import sys

    previous = _dispatcher
    _dispatcher = fn
    apply = fn
    for name, module in list(sys.modules.items()):
        if name.startswith("ember.ops."):
            bound = getattr(module, "apply", None)
            if bound is not None and (bound is _forward_to_dispatcher or bound is previous):
                module.apply = fn
    from ember.ops import surface

    surface.bind(fn)


# --- shape and dtype rules ------------------------------------------------------------------
def broadcast_shapes(*shapes) -> tuple:
    ndim = max((len(s) for s in shapes), default=0)
    result = [1] * ndim
    for s in shapes:
        for i, d in enumerate(s, ndim - len(s)):
            r = result[i]
            if d == r or d == 1:
                continue
            if r == 1:
                result[i] = d
            else:
                raise ShapeError(
                    "shapes "
                    + ", ".join(str(tuple(x)) for x in shapes)
                    + f" cannot be broadcast: dimension {i - ndim} is {r} in one and {d} in another"
                )
    return tuple(result)


def same_shape(shape, *rest, **attrs):
    return tuple(shape)


def same_dtype(dtype, *rest, **attrs):
    return dtype


def bool_dtype(*dtypes, **attrs):
    return _dt.bool_


def int64_dtype(*dtypes, **attrs):
    return _dt.int64


def compute_dtype(promote: str | None, operands) -> _dt.DType | None:
    """The dtype inputs are cast to. `operands`: DTypes, ("weak", DType) or Python scalars."""
    if promote is None:
        return None
    result = _dt.result_type(*operands)
    if promote == "float" and not result.is_floating_point:
        return _dt.get_default_dtype()
    return result


def infer(op: OpDef, avals, attrs):
    """Output (shape, dtype) of `op` from input (shape, dtype) pairs; scalars as Python values.

    Used by graph tracing and by eager error messages (the rule raises ShapeError with the
    reason). Promotion follows the same `compute_dtype` as eager dispatch.
    """
    operands = []
    shapes = []
    for a in avals:
        if isinstance(a, tuple):
            shape, dt = a
            shapes.append(tuple(shape))
            operands.append(("weak", dt) if len(shape) == 0 else dt)
        else:
            shapes.append(())
            operands.append(a)
    cdt = compute_dtype(op.promote, operands)
    dts = [cdt if cdt is not None else (o[1] if isinstance(o, tuple) else o) for o in operands]
    return op.shape(*shapes, **attrs), op.dtype(*dts, **attrs)
