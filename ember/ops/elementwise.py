"""Elementwise primitives: unary math, binary arithmetic and comparisons, where, clamp, cast,
bitcast.

Every VJP is written with ember ops (Tensor methods and the functions here), so it can be
traced and differentiated again (Note [OpDef] in ember.ops.registry).
"""

from __future__ import annotations

import math

from ember import dtypes as _dt
from ember._util.errors import (
    DTypeError,
    DTypeNotImplemented,
    IntegerDivisionByZero,
    ShapeError,
    ValueOutOfRange,
    at_user_line,
)
from ember.ops.registry import (
    REGISTRY,
    apply,
    bool_dtype,
    broadcast_shapes,
    defop,
    onnx_lowering,
    public,
    same_dtype,
    same_shape,
)

_SCALARS = (bool, int, float)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_LN2 = math.log(2.0)


def unbroadcast(g, like):
    """Sum `g` down to the shape of `like` (a Tensor or meta); None for Python scalars.

    Hot in every broadcasting VJP, so it applies the sum and reshape primitives directly."""
    if isinstance(like, _SCALARS):
        return None
    shape = like.shape  # a tuple (Size for a Tensor)
    gshape = g._data.shape
    if gshape == shape:
        return g
    shape = tuple(shape)
    lead = len(gshape) - len(shape)
    inner = tuple(i + lead for i, n in enumerate(shape) if n == 1 and gshape[i + lead] != 1)
    if lead == 0:
        if inner:  # (4, 3) -> (1, 3): one sum that keeps the dims, no reshape
            g = apply(_LATE.SUM, g, dim=inner, keepdim=True)
    else:
        dims = tuple(range(lead)) + inner
        if dims:
            g = apply(_LATE.SUM, g, dim=dims, keepdim=False)
    if g._data.shape != shape:
        g = apply(_LATE.RESHAPE, g, shape=shape)
    return g


def _wants_grad(x) -> bool:
    """Whether a VJP must compute a gradient for its input `x` (a Tensor, a TensorMeta, which
    records it, or a Python scalar): one that does not require grad has no edge to take it."""
    return not isinstance(x, _SCALARS) and getattr(x, "requires_grad", True)


class _LATE:
    """Primitives defined in modules that import this one (set by ember.ops.__init__)."""

    SUM = None
    RESHAPE = None
    EXPAND = None


# --- unary ------------------------------------------------------------------------------------
def _float_out(dtype, **attrs):
    return dtype  # compute dtype is already floating (promote="float")


def _unary(name, forward, vjp=None, *, promote="float", dtype=_float_out, **facts):
    """A unary elementwise primitive; `facts`: the rest of Note [OpDef] (names, ufunc, ...)."""
    facts.setdefault("names", (name,))
    return defop(name, forward, vjp, shape=same_shape, dtype=dtype, promote=promote, **facts)


def _exact(name, forward, vjp=None, **facts):
    """A unary primitive that keeps the input dtype (integers stay integers)."""
    return _unary(name, forward, vjp, promote=None, dtype=same_dtype, **facts)


def _no_grad(g, y, x):
    # piecewise-constant ops (sign, floor, ...): a zero gradient, as torch's (not None)
    return (g.new_zeros(tuple(g.shape)),)


NEG = _exact(
    "neg",
    lambda xp, x: xp.negative(x),
    lambda g, y, x: (-g,),
    save_inputs=False,
    names=("neg", "negative"),
    operators=("__neg__",),
    inplace=("neg_",),
    ufunc="negative",
    template="-{0}",
)
ABS = _exact(
    "abs",
    lambda xp, x: xp.abs(x),
    lambda g, y, x: (g * x.sign(),),
    operators=("__abs__",),
    inplace=("abs_",),
    ufunc="absolute",
    template="abs({0})",
)
SIGN = _exact(
    "sign",
    lambda xp, x: xp.sign(x),
    _no_grad,
    save_inputs=False,
    inplace=("sign_",),
    ufunc="sign",
    template="sign({0})",
)
EXP = _unary(
    "exp",
    lambda xp, x: xp.exp(x),
    lambda g, y, x: (g * y,),
    save_inputs=False,
    save_output=True,
    inplace=("exp_",),
    ufunc="exp",
    template="np.exp({0})",
)
LOG = _unary(
    "log",
    lambda xp, x: xp.log(x),
    lambda g, y, x: (g / x,),
    quiet=True,
    inplace=("log_",),
    ufunc="log",
    template="np.log({0})",
)
LOG2 = _unary(
    "log2",
    lambda xp, x: xp.log2(x),
    lambda g, y, x: (g / (x * _LN2),),
    quiet=True,
    ufunc="log2",
    template="np.log2({0})",
    onnx=lambda b, x: b.op("Div", b.op("Log", x), b.const(_LN2, b.out.dtype)),
)
LOG1P = _unary(
    "log1p",
    lambda xp, x: xp.log1p(x),
    lambda g, y, x: (g / (x + 1),),
    quiet=True,
    ufunc="log1p",
    template="np.log1p({0})",
)
EXPM1 = _unary(
    "expm1",
    lambda xp, x: xp.expm1(x),
    lambda g, y, x: (g * (y + 1),),
    save_inputs=False,
    save_output=True,
    ufunc="expm1",
    template="np.expm1({0})",
)
SQRT = _unary(
    "sqrt",
    lambda xp, x: xp.sqrt(x),
    lambda g, y, x: (g / (y * 2),),
    save_inputs=False,
    save_output=True,
    quiet=True,
    inplace=("sqrt_",),
    ufunc="sqrt",
    template="np.sqrt({0})",
)
RSQRT = _unary(
    "rsqrt",
    lambda xp, x: 1 / xp.sqrt(x),
    lambda g, y, x: (g * (y * y * y) * -0.5,),
    save_inputs=False,
    save_output=True,
    quiet=True,
    template="D(1) / np.sqrt({0})",
)
RECIPROCAL = _unary(
    "reciprocal",
    lambda xp, x: 1 / x,
    lambda g, y, x: (-g * y * y,),
    save_inputs=False,
    save_output=True,
    quiet=True,
    ufunc="reciprocal",
    template="D(1) / {0}",
)
SIN = _unary(
    "sin",
    lambda xp, x: xp.sin(x),
    lambda g, y, x: (g * x.cos(),),
    ufunc="sin",
    template="np.sin({0})",
)
COS = _unary(
    "cos",
    lambda xp, x: xp.cos(x),
    lambda g, y, x: (-g * x.sin(),),
    ufunc="cos",
    template="np.cos({0})",
)
TANH = _unary(
    "tanh",
    lambda xp, x: xp.tanh(x),
    lambda g, y, x: (g * (1 - y * y),),
    save_inputs=False,
    save_output=True,
    inplace=("tanh_",),
    ufunc="tanh",
    template="np.tanh({0})",
)
ERF = _unary(
    "erf", lambda xp, x: xp.erf(x), lambda g, y, x: (g * (-(x * x)).exp() * _TWO_OVER_SQRT_PI,)
)


@ERF.def_kernel("numpy")
def _erf_numpy_fast(xp, x):  # Note [Fast erf] in ember/backend/numpy_backend.py
    from ember.backend.numpy_backend import erf_fast

    return erf_fast(x)


def _sigmoid_forward(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


SIGMOID = _unary(
    "sigmoid",
    _sigmoid_forward,
    lambda g, y, x: (g * y * (1 - y),),
    save_inputs=False,
    save_output=True,
    inplace=("sigmoid_",),
    template="(D(1) / (D(1) + D(np.exp(-{0}))) if {0} >= 0 else "
    "D(np.exp({0})) / (D(1) + D(np.exp({0}))))",
)
RELU = _exact(
    "relu",
    lambda xp, x, out=None: xp.maximum(x, 0) if out is None else xp.maximum(x, 0, out=out),
    lambda g, y, x: (where(y > 0, g, 0.0),),
    save_inputs=False,
    save_output=True,
    inplace=("relu_",),
    writes_out=True,
    template="maximum({0}, D(0))",
)
FLOOR = _exact(
    "floor",
    lambda xp, x: xp.floor(x),
    _no_grad,
    save_inputs=False,
    inplace=("floor_",),
    ufunc="floor",
)
CEIL = _exact("ceil", lambda xp, x: xp.ceil(x), _no_grad, save_inputs=False, ufunc="ceil")
ROUND = _exact(
    "round",
    lambda xp, x, decimals: xp.round(x, decimals),
    lambda g, y, x, decimals: (g.new_zeros(tuple(g.shape)),),
    save_inputs=False,
    names=(),
)
TRUNC = _exact("trunc", lambda xp, x: xp.trunc(x), _no_grad, save_inputs=False, ufunc="trunc")
LOGICAL_NOT = _unary(
    "logical_not",
    lambda xp, x: xp.logical_not(x),
    promote=None,
    dtype=bool_dtype,
    ufunc="logical_not",
    template="not {0}",
)
ISNAN = _unary("isnan", lambda xp, x: xp.isnan(x), promote=None, dtype=bool_dtype)
ISINF = _unary("isinf", lambda xp, x: xp.isinf(x), promote=None, dtype=bool_dtype)
ISFINITE = _unary("isfinite", lambda xp, x: xp.isfinite(x), promote=None, dtype=bool_dtype)


@ROUND.public("round")
def round(x, decimals=0):  # noqa: A001
    """Round to `decimals` decimal places (half to even, as PyTorch and NumPy)."""
    return apply(ROUND, x, decimals=int(decimals))


# ONNX lowerings of the unary ops (Note [ONNX lowerings] in ember.ops.registry)
def _onnx_same(name, onnx_type):
    REGISTRY[name].onnx = lambda b, *xs, **attrs: b.op(onnx_type, *xs)


for _name, _type in [
    ("neg", "Neg"), ("abs", "Abs"), ("sign", "Sign"), ("exp", "Exp"), ("log", "Log"),
    ("sqrt", "Sqrt"), ("reciprocal", "Reciprocal"), ("sin", "Sin"), ("cos", "Cos"),
    ("tanh", "Tanh"), ("erf", "Erf"), ("sigmoid", "Sigmoid"), ("relu", "Relu"),
    ("logical_not", "Not"), ("isnan", "IsNaN"), ("isinf", "IsInf"),
]:  # fmt: skip
    _onnx_same(_name, _type)


@onnx_lowering("log1p")
def _log1p_onnx(b, x):
    return b.op("Log", b.op("Add", x, b.const(1, b.out.dtype)))


@onnx_lowering("expm1")
def _expm1_onnx(b, x):
    return b.op("Sub", b.op("Exp", x), b.const(1, b.out.dtype))


@onnx_lowering("rsqrt")
def _rsqrt_onnx(b, x):
    return b.op("Reciprocal", b.op("Sqrt", x))


def _onnx_rounding(onnx_type):
    def lower(b, x):  # integers are already whole: ONNX's rounding ops take floats only
        return b.op(onnx_type, x) if b.out.dtype.kind == "f" else b.op("Identity", x)

    return lower


REGISTRY["floor"].onnx = _onnx_rounding("Floor")
REGISTRY["ceil"].onnx = _onnx_rounding("Ceil")


@onnx_lowering("round")
def _round_onnx(b, x, decimals):
    if b.out.dtype.kind != "f":
        return b.op("Identity", x)
    if not decimals:
        return b.op("Round", x)  # half to even, as NumPy
    scale = b.const(10.0**decimals, b.out.dtype)
    return b.op("Div", b.op("Round", b.op("Mul", x, scale)), scale)


@onnx_lowering("trunc")
def _trunc_onnx(b, x):
    if b.out.dtype.kind != "f":
        return b.op("Identity", x)
    negative = b.op("Less", x, b.const(0, b.out.dtype))
    return b.op("Where", negative, b.op("Ceil", x), b.op("Floor", x))


@onnx_lowering("isfinite")
def _isfinite_onnx(b, x):
    return b.op("Not", b.op("Or", b.op("IsNaN", x), b.op("IsInf", x)))


# --- binary -----------------------------------------------------------------------------------
def _binary(name, forward, vjp=None, *, promote="common", dtype=same_dtype, **facts):
    """A broadcasting binary primitive; `facts`: the rest of Note [OpDef]."""
    facts.setdefault("names", (name,))
    return defop(name, forward, vjp, shape=broadcast_shapes, dtype=dtype, promote=promote, **facts)


def _compare(name, forward, ufunc, symbol, operator):
    return _binary(
        name,
        forward,
        dtype=bool_dtype,
        operators=(operator,),
        ufunc=ufunc,
        template="{0} " + symbol + " {1}",
    )


def _pow_vjp(g, y, a, b):
    # Note [Zero-safe gradients]: where torch's backward gives a finite value at an edge (x ** 0
    # at x = 0, norm and std of zeros, BCE at saturation), the rule masks the 0 * inf term.
    if isinstance(a, _SCALARS):
        ga = None
    elif isinstance(b, _SCALARS) and b == 0:  # x ** 0 is constant: torch's gradient is 0
        ga = unbroadcast(g * 0.0, a)
    elif isinstance(b, _SCALARS) and b == 2:  # x ** 2: a ** 1 is a, exactly
        ga = unbroadcast(g * b * a, a)
    elif isinstance(b, _SCALARS):
        ga = unbroadcast(g * b * a ** (b - 1), a)
    else:
        exponent_zero = b == 0
        base = where(exponent_zero, 1.0, a)  # no 0 ** -1 computed where it is not used
        ga = unbroadcast(where(exponent_zero, 0.0, g * b * base ** (b - 1)), a)
    if isinstance(b, _SCALARS):
        return ga, None
    if isinstance(a, _SCALARS):
        log_a = math.log(a) if a > 0 else 0.0
    else:
        log_a = where(a > 0, a, 1.0).log()
    return ga, unbroadcast(g * y * log_a, b)


def _max_min_vjp(g, y, a, b):
    # Ties share the gradient equally, as in PyTorch.
    a_wins = where(a == b, g * 0.5, where(y == a, g, 0.0))
    b_wins = g - a_wins
    return unbroadcast(a_wins, a), unbroadcast(b_wins, b)


ADD = _binary(
    "add",
    lambda xp, a, b: xp.add(a, b),
    lambda g, y, a, b: (
        unbroadcast(g, a) if _wants_grad(a) else None,
        unbroadcast(g, b) if _wants_grad(b) else None,
    ),
    save_inputs=False,
    names=(),
    operators=("__add__", "__radd__"),
    inplace=("__iadd__",),
    ufunc="add",
    template="{0} + {1}",
)
SUB = _binary(
    "sub",
    lambda xp, a, b: xp.subtract(a, b),
    lambda g, y, a, b: (
        unbroadcast(g, a) if _wants_grad(a) else None,
        unbroadcast(-g, b) if _wants_grad(b) else None,
    ),
    save_inputs=False,
    names=(),
    operators=("__sub__", "__rsub__"),
    inplace=("__isub__",),
    ufunc="subtract",
    template="{0} - {1}",
)


def _mul_vjp(g, y, a, b):
    ga = unbroadcast(g * b, a) if getattr(a, "requires_grad", False) else None
    gb = unbroadcast(g * a, b) if getattr(b, "requires_grad", False) else None
    return ga, gb


MUL = _binary(
    "mul",
    lambda xp, a, b: xp.multiply(a, b),
    _mul_vjp,
    names=("mul", "multiply"),
    operators=("__mul__", "__rmul__"),
    inplace=("mul_", "__imul__"),
    ufunc="multiply",
    template="{0} * {1}",
)
MUL.needed_by = {0: (1,), 1: (0,)}
DIV = _binary(
    "div",
    lambda xp, a, b: xp.true_divide(a, b),
    lambda g, y, a, b: (unbroadcast(g / b, a), unbroadcast(-g * y / b, b)),
    promote="float",
    save_output=True,
    quiet=True,
    names=(),
    operators=("__truediv__", "__rtruediv__"),
    inplace=("div_", "__itruediv__"),
    ufunc="true_divide",
    template="{0} / {1}",
)
POW = _binary(
    "pow",
    lambda xp, a, b: xp.power(a, b),
    _pow_vjp,
    save_output=True,
    quiet=True,
    operators=("__pow__", "__rpow__"),
    inplace=("pow_",),
    ufunc="power",
    template="{0} ** {1}",
)
MAXIMUM = _binary(
    "maximum",
    lambda xp, a, b: xp.maximum(a, b),
    _max_min_vjp,
    save_output=True,
    ufunc="maximum",
    template="maximum({0}, {1})",
)
MINIMUM = _binary(
    "minimum",
    lambda xp, a, b: xp.minimum(a, b),
    _max_min_vjp,
    save_output=True,
    ufunc="minimum",
    template="minimum({0}, {1})",
)
HYPOT = _binary(
    "hypot",
    lambda xp, a, b: xp.hypot(a, b),
    lambda g, y, a, b: (unbroadcast(g * a / y, a), unbroadcast(g * b / y, b)),
    promote="float",
    save_output=True,
    ufunc="hypot",
    template="np.hypot({0}, {1})",
    onnx=lambda b, x, y: b.op("Sqrt", b.op("Add", b.op("Mul", x, x), b.op("Mul", y, y))),
)


def _is_integer(value) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u", "b") if kind is not None else isinstance(value, int)


def _integer_divisor_check(xp, a, b, op):
    """Integer division by zero raises, as in torch (NumPy would give 0 with a warning)."""
    if _is_integer(a) and _is_integer(b) and not bool(xp.all(xp.asarray(b) != 0)):
        raise IntegerDivisionByZero(f"{op}: integer division by zero")


def _remainder_forward(xp, a, b):
    _integer_divisor_check(xp, a, b, "remainder")
    return xp.mod(a, b)


def _floor_divide_forward(xp, a, b):
    _integer_divisor_check(xp, a, b, "floor_divide")
    return xp.floor_divide(a, b)


REMAINDER = _binary(
    "remainder",
    _remainder_forward,
    lambda g, y, a, b: (unbroadcast(g, a), unbroadcast(-g * (a / b).floor(), b)),
    quiet=True,
    operators=("__mod__", "__rmod__"),
)
FLOOR_DIVIDE = _binary(
    "floor_divide",
    _floor_divide_forward,
    quiet=True,
    operators=("__floordiv__", "__rfloordiv__"),
)
EQ = _compare("eq", lambda xp, a, b: xp.equal(a, b), "equal", "==", "__eq__")
NE = _compare("ne", lambda xp, a, b: xp.not_equal(a, b), "not_equal", "!=", "__ne__")
LT = _compare("lt", lambda xp, a, b: xp.less(a, b), "less", "<", "__lt__")
LE = _compare("le", lambda xp, a, b: xp.less_equal(a, b), "less_equal", "<=", "__le__")
GT = _compare("gt", lambda xp, a, b: xp.greater(a, b), "greater", ">", "__gt__")
GE = _compare("ge", lambda xp, a, b: xp.greater_equal(a, b), "greater_equal", ">=", "__ge__")
LOGICAL_AND = _binary(
    "logical_and",
    lambda xp, a, b: xp.logical_and(a, b),
    promote=None,
    dtype=bool_dtype,
    ufunc="logical_and",
    template="{0} and {1}",
)
LOGICAL_OR = _binary(
    "logical_or",
    lambda xp, a, b: xp.logical_or(a, b),
    promote=None,
    dtype=bool_dtype,
    ufunc="logical_or",
    template="{0} or {1}",
)
LOGICAL_XOR = _binary(
    "logical_xor",
    lambda xp, a, b: xp.logical_xor(a, b),
    promote=None,
    dtype=bool_dtype,
    ufunc="logical_xor",
    template="{0} != {1}",
)


@ADD.public("add")
def add(a, b, alpha=1):
    """a + alpha * b."""
    return apply(ADD, a, b if alpha == 1 else b * alpha)


@SUB.public("sub", "subtract")
def sub(a, b, alpha=1):
    """a - alpha * b."""
    return apply(SUB, a, b if alpha == 1 else b * alpha)


@DIV.public("div", "divide", "true_divide")
def div(a, b, rounding_mode=None):
    """a / b; rounding_mode "floor" or "trunc" rounds the quotient (PyTorch's div)."""
    if rounding_mode is None:
        return apply(DIV, a, b)
    if rounding_mode == "floor":
        return apply(FLOOR_DIVIDE, a, b)
    if rounding_mode == "trunc":
        return apply(TRUNC, apply(DIV, a, b)).to(_result_of(a, b))
    raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")


# ONNX lowerings of the binary ops (Note [ONNX lowerings] in ember.ops.registry)
for _name, _type in [
    ("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div"), ("pow", "Pow"),
    ("maximum", "Max"), ("minimum", "Min"), ("eq", "Equal"), ("lt", "Less"),
    ("le", "LessOrEqual"), ("gt", "Greater"), ("ge", "GreaterOrEqual"),
    ("logical_and", "And"), ("logical_or", "Or"), ("logical_xor", "Xor"),
]:  # fmt: skip
    _onnx_same(_name, _type)


@onnx_lowering("ne")
def _ne_onnx(b, x, y):
    return b.op("Not", b.op("Equal", x, y))


@onnx_lowering("remainder")
def _remainder_onnx(b, x, y):
    if b.out.dtype.kind != "f":
        return b.op("Mod", x, y)  # integer Mod takes the divisor's sign, as Python's %
    return b.op("Sub", x, b.op("Mul", b.op("Floor", b.op("Div", x, y)), y))


@onnx_lowering("floor_divide")
def _floor_divide_onnx(b, x, y):
    if b.out.dtype.kind == "f":
        return b.op("Floor", b.op("Div", x, y))
    # ONNX's integer Div truncates; Python's // floors: divide in float64, floor, cast back
    as_double = [b.op("Cast", v, to=b.onnx_type("float64")) for v in (x, y)]
    return b.op("Cast", b.op("Floor", b.op("Div", *as_double)), to=b.onnx_type(b.out.dtype))


# --- ternary, clamp, cast -----------------------------------------------------------------------
def _where_shape(c, a, b, **attrs):
    return broadcast_shapes(c, a, b)


def _where_dtype(c, a, b, **attrs):
    if isinstance(a, _dt.DType):
        return a
    return b if isinstance(b, _dt.DType) else _dt.result_type(a, b)


WHERE = defop(
    "where",
    lambda xp, c, a, b: xp.where(c, a, b),
    lambda g, y, c, a, b: (
        None,
        unbroadcast(where(c, g, 0.0), a),
        unbroadcast(where(c, 0.0, g), b),
    ),
    shape=_where_shape,
    dtype=_where_dtype,
    promote="common_tail",
    doc="where(condition, a, b): a where condition is true, else b (promotes a with b).",
    template="({1} if {0} else {2})",
)


@WHERE.def_kernel("numpy")
def _where_numpy_fast(xp, c, a, b):  # Note [Bitwise where] in ember/backend/numpy_backend.py
    from ember.backend.numpy_backend import where_bits

    return where_bits(c, a, b)


def _clamp_forward(xp, x, min, max):
    if min is not None:
        x = xp.maximum(x, min)
    if max is not None:
        x = xp.minimum(x, max)
    return x


def _clamp_vjp(g, y, x, min, max):
    keep = None
    if min is not None:
        keep = x >= min
    if max is not None:
        keep = (x <= max) if keep is None else apply(LOGICAL_AND, keep, x <= max)
    return (g if keep is None else where(keep, g, 0.0),)


CLAMP = defop(
    "clamp",
    _clamp_forward,
    _clamp_vjp,
    shape=same_shape,
    dtype=same_dtype,
    doc="clamp(x, min, max) with scalar bounds (tensor bounds use maximum/minimum).",
)


def _cast_forward(xp, x, dtype):
    if hasattr(xp, "astype"):  # the array API's function (NumPy's runs large casts in parallel)
        return xp.astype(x, dtype.numpy, copy=False)
    return x.astype(dtype.numpy, copy=False)


CAST = defop(
    "cast",
    _cast_forward,
    lambda g, y, x, dtype: (g,),
    shape=same_shape,
    dtype=lambda d, dtype: dtype,
    save_inputs=False,
    doc="cast(x, dtype): convert elements (gradient flows back in the input dtype).",
    template="D({0})",
)


@onnx_lowering("where")
def _where_onnx(b, c, x, y):
    return b.op("Where", c, x, y)


@onnx_lowering("clamp")
def _clamp_onnx(b, x, min, max):
    low = b.const(min, b.out.dtype) if min is not None else ""
    high = b.const(max, b.out.dtype) if max is not None else ""
    return b.op("Clip", x, low, high)


@onnx_lowering("cast")
def _cast_onnx(b, x, dtype):
    return b.op("Cast", x, to=b.onnx_type(dtype))


# Note [Bit views]: `x.view(dtype)` reinterprets the bytes, PyTorch's rules: the same element
# size keeps the shape; another size rescales the last dim, which needs a tensor of at least
# one dim whose last dim has stride 1 and, going to a larger element, a last dim, storage
# offset and other strides divisible by the size ratio. Bits have no derivative: like
# PyTorch's, the result never requires grad (the op has no VJP).
def _bitcast_kind(source, dtype):
    return f"{source.name} as {dtype.name}"


def _bitcast_shape(shape, dtype, source):
    shape = tuple(shape)
    if dtype.itemsize == source.itemsize:
        return shape
    if not shape:
        raise ShapeError(
            f"view(dtype): viewing {_bitcast_kind(source, dtype)} changes the "
            f"element size, which needs a tensor of at least 1 dim, got a 0-d one"
        )
    if dtype.itemsize < source.itemsize:
        return shape[:-1] + (shape[-1] * (source.itemsize // dtype.itemsize),)
    ratio = dtype.itemsize // source.itemsize
    if shape[-1] % ratio:
        raise ShapeError(
            f"view(dtype): viewing {_bitcast_kind(source, dtype)} needs the last "
            f"dim to be divisible by {ratio}, got shape {shape}"
        )
    return shape[:-1] + (shape[-1] // ratio,)


def _element_offset(x):
    """x's offset in elements from the start of the memory it views (NumPy arrays)."""
    root = x
    while getattr(root, "base", None) is not None and hasattr(root.base, "__array_interface__"):
        root = root.base
    try:
        start = root.__array_interface__["data"][0]
        return (x.__array_interface__["data"][0] - start) // x.itemsize
    except (AttributeError, TypeError):
        return 0


def _bitcast_forward(xp, x, dtype, source):
    old, new = x.itemsize, dtype.itemsize
    if old != new and x.size == 0:  # no bytes to read: strides do not matter
        return xp.empty(_bitcast_shape(x.shape, dtype, source), dtype=dtype.numpy)
    if old != new:
        kind = _bitcast_kind(source, dtype)
        if x.ndim and x.shape[-1] > 1 and x.strides[-1] != old:
            raise ShapeError(
                f"view(dtype): viewing {kind} (different element sizes) needs the "
                f"last dim to have stride 1, got stride {x.strides[-1] // old}; "
                f"call .contiguous() first"
            )
        _bitcast_shape(x.shape, dtype, source)  # 0-d and divisibility
        if new > old:
            ratio = new // old
            offset = _element_offset(x)
            if offset % ratio:
                raise ShapeError(
                    f"view(dtype): viewing {kind} needs a storage offset divisible "
                    f"by {ratio}, got {offset}; call .contiguous() first"
                )
            for d, (n, step) in enumerate(zip(x.shape[:-1], x.strides[:-1])):
                if n > 1 and (step // old) % ratio:
                    raise ShapeError(
                        f"view(dtype): viewing {kind} needs dim {d}'s stride to be "
                        f"divisible by {ratio}, got {step // old}; call "
                        f".contiguous() first"
                    )
    return x.view(dtype.numpy)


BITCAST = defop(
    "bitcast",
    _bitcast_forward,
    None,
    shape=_bitcast_shape,
    dtype=lambda d, dtype, source: dtype,
    view=True,
    save_inputs=False,
    doc="bitcast(x, dtype): the same bytes read as another dtype (x.view(dtype), "
    "Note [Bit views]); not differentiable.",
)


# --- public functions that are not a plain apply (Note [Op surface]) -------------------------
@WHERE.public("where", method=False)
def where(condition, a, b):
    """a where condition is true, else b (promoting a with b)."""
    _bool_condition(condition, "where")
    return apply(WHERE, condition, a, b)


def _bool_condition(condition, op):
    dtype = getattr(condition, "dtype", None)
    if isinstance(dtype, _dt.DType) and dtype is not _dt.bool_:  # an ember tensor's
        raise DTypeError(f"{op}: the condition must be a bool tensor, got {dtype}")


@public("where", function=False)
def _where_method(self, condition, other):
    """x.where(condition, other): x where condition is true, else other."""
    _bool_condition(condition, "where")
    return apply(WHERE, condition, self, other)


@CLAMP.public("clamp", "clip")
def clamp(x, min=None, max=None):  # noqa: A002
    """clamp(x, min, max); bounds may be Python numbers or tensors."""
    if min is None and max is None:
        raise ValueOutOfRange("clamp: at least one of min and max must be given")
    if isinstance(min, _SCALARS + (type(None),)) and isinstance(max, _SCALARS + (type(None),)):
        return apply(CLAMP, x, min=min, max=max)
    if min is not None:
        x = apply(MAXIMUM, x, min)
    if max is not None:
        x = apply(MINIMUM, x, max)
    return x


def bitcast(x, dtype):
    """x.view(dtype): the same memory read as `dtype` (Note [Bit views])."""
    dtype = _dt.as_dtype(dtype)
    return apply(BITCAST, x, dtype=dtype, source=x.dtype)


@CAST.public("cast", method=False)
def cast(x, dtype):
    """x converted to `dtype` (x itself when it has it already)."""
    dtype = _dt.as_dtype(dtype)
    if x.dtype is dtype:
        return x
    return apply(CAST, x, dtype=dtype)


def _result_of(a, b):
    def operand(v):
        if isinstance(v, _SCALARS):
            return v
        return ("weak", v.dtype) if v.ndim == 0 else v.dtype

    return _dt.result_type(operand(a), operand(b))


@public("square")
def square(x):
    """x * x."""
    return apply(MUL, x, x)


@public("lerp")
def lerp(x, end, weight):
    """x + (end - x) * weight."""
    return x + (end - x) * weight


@public("isclose")
def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Elementwise |a - b| <= atol + rtol * |b| (and a == b, which covers equal infinities),
    as `torch.isclose`; NaNs are close to each other only with equal_nan=True.

    Example:
        >>> import ember
        >>> a = ember.tensor([1.0, float("nan"), float("inf"), 1e-9])
        >>> ember.isclose(a, ember.tensor([1.0 + 1e-6, float("nan"), float("inf"), 0.0])).tolist()
        [True, False, True, True]
    """
    if rtol < 0 or atol < 0:
        raise ValueError(
            at_user_line(
                f"isclose: rtol and atol must be non-negative, got rtol={rtol}, atol={atol}"
            )
        )
    if not hasattr(b, "dtype"):
        b = a.new_tensor(b, dtype=a.dtype)
    a_dtype, b_dtype = a.dtype, b.dtype
    if a_dtype is not b_dtype:
        raise DTypeError(
            f"isclose: expected both inputs to have the same dtype, got {a_dtype} and {b_dtype}"
        )
    close = apply(EQ, a, b)
    floating = a_dtype.is_floating_point
    if equal_nan and floating:
        close = apply(LOGICAL_OR, close, apply(LOGICAL_AND, apply(ISNAN, a), apply(ISNAN, b)))
    if rtol == 0 and atol == 0:
        return close
    if not floating:  # integers and bools compare in the default float dtype, as torch
        a, b = a.to(_dt.get_default_dtype()), b.to(_dt.get_default_dtype())
    equal = apply(EQ, a, b)  # equal infinities: their difference would be nan (and warn)
    error = apply(ABS, where(equal, 0.0, a) - where(equal, 0.0, b))
    allowed = apply(ABS, b * rtol) + atol
    within = apply(LOGICAL_AND, apply(ISFINITE, error), apply(LE, error, allowed))
    return apply(LOGICAL_OR, close, within)


# --- inverse and hyperbolic trig, log10, exp2 (issue 18) ----------------------------------------
_LN10 = math.log(10.0)


def _trig(name, ufunc, vjp, onnx_type, alias, **facts):
    """A float unary primitive with its NumPy ufunc, torch's alias (`arcsin`) and in-place
    names (`asin_`, `arcsin_`)."""
    return _unary(
        name,
        lambda xp, x: getattr(xp, ufunc)(x),
        vjp,
        names=(name, alias) if alias else (name,),
        inplace=(name + "_", alias + "_") if alias else (name + "_",),
        ufunc=ufunc,
        template=f"np.{ufunc}({{0}})",
        onnx=(lambda b, x: b.op(onnx_type, x)) if isinstance(onnx_type, str) else onnx_type,
        **facts,
    )


ASIN = _trig(
    "asin", "arcsin", lambda g, y, x: (g / (1 - x * x).sqrt(),), "Asin", "arcsin", quiet=True
)
ACOS = _trig(
    "acos", "arccos", lambda g, y, x: (-g / (1 - x * x).sqrt(),), "Acos", "arccos", quiet=True
)
ATAN = _trig("atan", "arctan", lambda g, y, x: (g / (x * x + 1),), "Atan", "arctan")
SINH = _trig("sinh", "sinh", lambda g, y, x: (g * x.cosh(),), "Sinh", None, quiet=True)
COSH = _trig("cosh", "cosh", lambda g, y, x: (g * x.sinh(),), "Cosh", None, quiet=True)
ASINH = _trig("asinh", "arcsinh", lambda g, y, x: (g / (x * x + 1).sqrt(),), "Asinh", "arcsinh")
ACOSH = _trig(
    "acosh", "arccosh", lambda g, y, x: (g / (x * x - 1).sqrt(),), "Acosh", "arccosh", quiet=True
)
ATANH = _trig(
    "atanh", "arctanh", lambda g, y, x: (g / (1 - x * x),), "Atanh", "arctanh", quiet=True
)
LOG10 = _trig(
    "log10",
    "log10",
    lambda g, y, x: (g / (x * _LN10),),
    lambda b, x: b.op("Div", b.op("Log", x), b.const(_LN10, b.out.dtype)),
    None,
    quiet=True,
)
EXP2 = _trig(
    "exp2",
    "exp2",
    lambda g, y, x: (g * y * _LN2,),
    lambda b, x: b.op("Pow", b.const(2.0, b.out.dtype), x),
    None,
    save_inputs=False,
    save_output=True,
    quiet=True,
)
REGISTRY["log2"].inplace = ("log2_",)


# --- binary math: atan2, copysign, fmod, logaddexp, logaddexp2 (issue 18) ------------------------
def _atan2_vjp(g, y, a, b):
    # at the origin torch's gradient is 0 (Note [Zero-safe gradients])
    norm2 = a * a + b * b
    origin = norm2 == 0
    scale = where(origin, 0.0, g / where(origin, 1.0, norm2))
    return unbroadcast(scale * b, a), unbroadcast(-scale * a, b)


ATAN2 = _binary(
    "atan2",
    lambda xp, a, b: xp.arctan2(a, b),
    _atan2_vjp,
    promote="float",
    names=("atan2", "arctan2"),
    inplace=("atan2_", "arctan2_"),
    ufunc="arctan2",
    template="np.arctan2({0}, {1})",
)


@onnx_lowering("atan2")
def _atan2_onnx(b, y, x):
    # atan(y / x), moved to the right quadrant; on the axis x == 0: +-pi/2 (0 at the origin)
    dt = b.out.dtype
    zero, pi = b.const(0, dt), b.const(math.pi, dt)
    base = b.op("Atan", b.op("Div", y, x))
    shifted = b.op("Where", b.op("Less", y, zero), b.op("Sub", base, pi), b.op("Add", base, pi))
    on_axis = b.op("Mul", b.op("Sign", y), b.const(math.pi / 2, dt))
    off_axis = b.op("Where", b.op("Less", x, zero), shifted, base)
    return b.op("Where", b.op("Equal", x, zero), on_axis, off_axis)


def _copysign_vjp(g, y, a, b):
    # torch: grad * result / a, 0 where a == 0; b gets no gradient (its sign only)
    ratio = where(a == 0, 0.0, y / where(a == 0, 1.0, a))
    return unbroadcast(g * ratio, a), None


COPYSIGN = _binary(
    "copysign",
    lambda xp, a, b: xp.copysign(a, b),
    _copysign_vjp,
    promote="float",
    save_output=True,
    inplace=("copysign_",),
    ufunc="copysign",
    template="np.copysign({0}, {1})",
)


@onnx_lowering("copysign")
def _copysign_onnx(b, x, y):
    dt = b.out.dtype
    zero = b.const(0, dt)
    # a negative y, or -0.0 (1 / -0.0 is -inf): ONNX has no sign-bit test
    negative = b.op("Or", b.op("Less", y, zero), b.op("Less", b.op("Div", b.const(1, dt), y), zero))
    magnitude = b.op("Abs", x)
    return b.op("Where", negative, b.op("Neg", magnitude), magnitude)


def _fmod_forward(xp, a, b):
    _integer_divisor_check(xp, a, b, "fmod")
    return xp.fmod(a, b)


FMOD = _binary(
    "fmod",
    _fmod_forward,
    lambda g, y, a, b: (
        unbroadcast(g, a) if _wants_grad(a) else None,
        unbroadcast(-g * (a / b).trunc(), b) if _wants_grad(b) else None,
    ),
    quiet=True,
    inplace=("fmod_",),
)


@onnx_lowering("fmod")
def _fmod_onnx(b, x, y):
    return b.op("Mod", x, y, fmod=1)  # C's fmod: the sign of the dividend, floats and ints


def _logaddexp_vjp(g, y, a, b):
    return unbroadcast(g * (a - y).exp(), a), unbroadcast(g * (b - y).exp(), b)


def _logaddexp2_vjp(g, y, a, b):
    return unbroadcast(g * (a - y).exp2(), a), unbroadcast(g * (b - y).exp2(), b)


LOGADDEXP = _binary(
    "logaddexp",
    lambda xp, a, b: xp.logaddexp(a, b),
    _logaddexp_vjp,
    promote="float",
    save_output=True,
    ufunc="logaddexp",
    template="np.logaddexp({0}, {1})",
)
LOGADDEXP2 = _binary(
    "logaddexp2",
    lambda xp, a, b: xp.logaddexp2(a, b),
    _logaddexp2_vjp,
    promote="float",
    save_output=True,
    ufunc="logaddexp2",
    template="np.logaddexp2({0}, {1})",
)


def _logaddexp_onnx(scale):
    def lower(b, x, y):
        # max(x, y) + log1p(exp(-|x - y| * s)) / s, s = ln 2 for base 2; equal infinities
        # (x - y = nan) give max(x, y)
        dt = b.out.dtype
        high = b.op("Max", x, y)
        gap = b.op("Abs", b.op("Sub", x, y))
        gap = b.op("Where", b.op("IsNaN", gap), b.const(float("inf"), dt), gap)
        if scale != 1:
            gap = b.op("Mul", gap, b.const(scale, dt))
        tail = b.op("Log", b.op("Add", b.const(1, dt), b.op("Exp", b.op("Neg", gap))))
        if scale != 1:
            tail = b.op("Div", tail, b.const(scale, dt))
        return b.op("Add", high, tail)

    return lower


REGISTRY["logaddexp"].onnx = _logaddexp_onnx(1)
REGISTRY["logaddexp2"].onnx = _logaddexp_onnx(_LN2)
REGISTRY["hypot"].inplace = ("hypot_",)
REGISTRY["remainder"].inplace = ("remainder_", "__imod__")


# --- integer bitwise ops (issue 18) -------------------------------------------------------------
# Note [Bitwise ops]: & | ^ ~ << >> and bitwise_* take integer and bool tensors (shifts:
# integers only), as torch's; a float operand is refused with DTypeNotImplemented (a
# NotImplementedError, hence a RuntimeError, as torch's "not implemented for 'Float'"),
# checked by the dtype rule (graph tracing) and the kernel (eager and compiled alike).
def _bitwise_check(op, kinds, *dtypes):
    for dt in dtypes:
        kind = dt.numpy.kind if isinstance(dt, _dt.DType) else getattr(dt, "kind", None)
        if kind is not None and kind not in kinds:
            name = dt.name if isinstance(dt, _dt.DType) else str(dt)
            wanted = "integer and bool" if "b" in kinds else "integer"
            raise DTypeNotImplemented(
                f"{op}: takes {wanted} tensors only, got {name} (not implemented for "
                f"floating point)"
            )


def _bitwise(name, ufunc, kinds, operators, inplace, template):
    def forward(xp, a, b):
        _bitwise_check(name, kinds, *(getattr(v, "dtype", None) for v in (a, b)))
        return getattr(xp, ufunc)(a, b)

    def dtype(a, b, **attrs):
        _bitwise_check(name, kinds, a, b)
        return a if isinstance(a, _dt.DType) else b

    return _binary(
        name,
        forward,
        dtype=dtype,
        names=(name,),
        operators=operators,
        inplace=inplace,
        ufunc=ufunc,
        template=template,
    )


BITWISE_AND = _bitwise(
    "bitwise_and", "bitwise_and", "iub", ("__and__", "__rand__"),
    ("bitwise_and_", "__iand__"), "{0} & {1}",
)  # fmt: skip
BITWISE_OR = _bitwise(
    "bitwise_or", "bitwise_or", "iub", ("__or__", "__ror__"),
    ("bitwise_or_", "__ior__"), "{0} | {1}",
)  # fmt: skip
BITWISE_XOR = _bitwise(
    "bitwise_xor", "bitwise_xor", "iub", ("__xor__", "__rxor__"),
    ("bitwise_xor_", "__ixor__"), "{0} ^ {1}",
)  # fmt: skip
BITWISE_LEFT_SHIFT = _bitwise(
    "bitwise_left_shift", "left_shift", "iu", ("__lshift__", "__rlshift__"),
    ("bitwise_left_shift_", "__ilshift__"), None,
)  # fmt: skip
BITWISE_RIGHT_SHIFT = _bitwise(
    "bitwise_right_shift", "right_shift", "iu", ("__rshift__", "__rrshift__"),
    ("bitwise_right_shift_", "__irshift__"), None,
)  # fmt: skip


def _bitwise_not_forward(xp, x):
    _bitwise_check("bitwise_not", "iub", x.dtype)
    return xp.invert(x)


def _bitwise_not_dtype(x, **attrs):
    _bitwise_check("bitwise_not", "iub", x)
    return x


BITWISE_NOT = _unary(
    "bitwise_not",
    _bitwise_not_forward,
    promote=None,
    dtype=_bitwise_not_dtype,
    operators=("__invert__",),
    inplace=("bitwise_not_",),
    ufunc="invert",
)


def _onnx_bitwise(logical, bitwise):
    def lower(b, *xs):
        return b.op(logical if b.out.dtype.kind == "b" else bitwise, *xs)

    return lower


REGISTRY["bitwise_and"].onnx = _onnx_bitwise("And", "BitwiseAnd")
REGISTRY["bitwise_or"].onnx = _onnx_bitwise("Or", "BitwiseOr")
REGISTRY["bitwise_xor"].onnx = _onnx_bitwise("Xor", "BitwiseXor")
REGISTRY["bitwise_not"].onnx = _onnx_bitwise("Not", "BitwiseNot")


def _onnx_shift(direction):
    def lower(b, x, y):
        # x * 2**y, and floor(x / 2**y) for the arithmetic right shift, in integers (ONNX's
        # BitShift takes unsigned types only); 2**y is exact in float64 up to y = 62
        dt = b.out.dtype
        power = b.op("Pow", b.const(2.0, "float64"), b.op("Cast", y, to=b.onnx_type("float64")))
        power = b.op("Cast", power, to=b.onnx_type(dt))
        if direction == "LEFT":
            return b.op("Mul", x, power)
        quotient = b.op("Div", x, power)  # truncates toward zero
        inexact = b.op("Not", b.op("Equal", b.op("Mul", quotient, power), x))
        below = b.op("And", b.op("Less", x, b.const(0, dt)), inexact)
        return b.op("Where", below, b.op("Sub", quotient, b.const(1, dt)), quotient)

    return lower


REGISTRY["bitwise_left_shift"].onnx = _onnx_shift("LEFT")
REGISTRY["bitwise_right_shift"].onnx = _onnx_shift("RIGHT")


def __getattr__(name):
    """The generated public functions of the ops above (`exp`, `maximum`; Note [Op surface])."""
    from ember.ops.surface import function

    fn = globals()[name] = function(name, __name__)
    return fn
