"""L0: ember's dtypes and the one promotion table.

Note [Type promotion]: close to PyTorch's rules.
- Categories are ordered bool < integer < floating. Operands of the same category promote to
  the wider type (uint8 with int8 gives int16); across categories the higher category wins
  (int32 with float16 gives float16, unlike NumPy's float32).
- Python scalars and zero-dimensional tensors are "weak": they only take part when their
  category is higher than every dimensioned operand's. A Python float then brings the default
  float dtype (float32), a zero-dim tensor brings its own dtype.
- Ops that always produce floating results (true division, exp, sqrt, ...) turn integer and
  bool results into the default float dtype.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DType",
    "bool_",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "promote_types",
    "result_type",
    "get_default_dtype",
    "set_default_dtype",
    "as_dtype",
    "from_numpy_dtype",
]

_BOOL, _INT, _FLOAT = 0, 1, 2


class DType:
    """A tensor element type, e.g. `ember.float32`."""

    __slots__ = ("name", "numpy", "itemsize", "category", "is_floating_point", "is_signed")

    def __init__(self, name: str, numpy_dtype: str, category: int):
        self.name = name
        self.numpy = np.dtype(numpy_dtype)
        self.itemsize = self.numpy.itemsize
        self.category = category
        self.is_floating_point = category == _FLOAT
        self.is_signed = category == _FLOAT or (category == _INT and self.numpy.kind == "i")

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):
        return (as_dtype, (self.name,))

    @property
    def is_integer(self) -> bool:
        return self.category == _INT


bool_ = DType("bool", "bool", _BOOL)
uint8 = DType("uint8", "uint8", _INT)
int8 = DType("int8", "int8", _INT)
int16 = DType("int16", "int16", _INT)
int32 = DType("int32", "int32", _INT)
int64 = DType("int64", "int64", _INT)
float16 = DType("float16", "float16", _FLOAT)
float32 = DType("float32", "float32", _FLOAT)
float64 = DType("float64", "float64", _FLOAT)


class _BFloat16(DType):
    """bfloat16, whose NumPy dtype comes from `ml_dtypes` (Note [Half-precision weights]).

    `ml_dtypes` is imported when the NumPy dtype is first needed (a cast, an array of that
    type), never by `import ember`; it then joins the NumPy -> ember dtype table.
    """

    __slots__ = ()

    def __init__(self):
        self.name = "bfloat16"
        self.itemsize = 2
        self.category = _FLOAT
        self.is_floating_point = True
        self.is_signed = True

    @property
    def numpy(self):
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError(
                "ember.bfloat16 needs the ml_dtypes package (NumPy has no bfloat16): "
                "pip install 'ember[llm]' (or pip install ml_dtypes)"
            ) from None
        numpy_dtype = np.dtype(ml_dtypes.bfloat16)
        BY_NUMPY.setdefault(numpy_dtype, self)
        return numpy_dtype


bfloat16 = _BFloat16()

ALL_DTYPES = (bool_, uint8, int8, int16, int32, int64, float16, float32, float64)
FLOATING_DTYPES = (float16, float32, float64)
INTEGER_DTYPES = (uint8, int8, int16, int32, int64)
# Note [Half-precision weights]: float16 and bfloat16 are storage types for weights. A model
# cast to one of them (`model.to(ember.bfloat16)`, `from_pretrained(dtype=...)`) keeps its
# parameters in 2 bytes each, and computes in float32: an op mixing a half-precision weight
# with float32 activations promotes to float32 (Note [Type promotion]), so the weight is
# widened for that op only (NumPy has no fast half-precision matmul: a float16 GEMM is
# hundreds of times slower than float32), and `F.embedding` returns float32 rows from a
# half-precision table, so that activations are float32 from the first layer on.
HALF_DTYPES = (float16, bfloat16)

# NumPy dtype -> ember dtype; bfloat16 joins when ml_dtypes is first loaded (the tensor,
# dispatch and graph modules share this one table).
BY_NUMPY = {d.numpy: d for d in ALL_DTYPES}
_BY_NUMPY = BY_NUMPY
_BY_NAME = {d.name: d for d in (*ALL_DTYPES, bfloat16)}
_BY_NAME.update(
    bool_=bool_,
    half=float16,
    float=float32,
    double=float64,
    short=int16,
    int=int32,
    long=int64,
)
_default_float = float32


def get_default_dtype() -> DType:
    return _default_float


def set_default_dtype(dtype) -> None:
    global _default_float
    dtype = as_dtype(dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {dtype}")
    _default_float = dtype


def from_numpy_dtype(numpy_dtype) -> DType:
    try:
        return _BY_NUMPY[numpy_dtype]
    except KeyError:
        pass
    try:
        return _BY_NUMPY[np.dtype(numpy_dtype)]
    except (KeyError, TypeError):
        if "bfloat16" in str(numpy_dtype):  # ml_dtypes' type, first seen: register it
            resolved = bfloat16.numpy
            if np.dtype(numpy_dtype) == resolved:
                return bfloat16
        raise TypeError(
            f"ember has no dtype for NumPy's {numpy_dtype}; supported: "
            + ", ".join(d.name for d in ALL_DTYPES)
        ) from None


def as_dtype(value) -> DType:
    """Accept an ember dtype, a name ('float32'), a NumPy dtype or a Python type."""
    if isinstance(value, DType):
        return value
    if value is float:
        return _default_float
    if value is int:
        return int64
    if value is bool:
        return bool_
    if isinstance(value, str):
        name = value.removeprefix("ember.").removeprefix("torch.").removeprefix("tf.")
        if name in _BY_NAME:
            return _BY_NAME[name]
    # Objects from other libraries that describe a dtype by name (torch.float32, tf.float32).
    name = getattr(value, "name", None) or str(value).rsplit(".", 1)[-1]
    if isinstance(name, str) and name in _BY_NAME and not isinstance(value, (np.dtype, type)):
        return _BY_NAME[name]
    try:
        return from_numpy_dtype(np.dtype(value))
    except TypeError:
        raise TypeError(f"not a dtype: {value!r}") from None


def _same_category(a: DType, b: DType) -> DType:
    return _BY_NUMPY[np.promote_types(a.numpy, b.numpy)]


def promote_types(a: DType, b: DType) -> DType:
    """Promotion of two dimensioned operands (Note [Type promotion]); bfloat16 with float16
    gives float32 (as in PyTorch), with a wider float that float."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a is bfloat16 or b is bfloat16:
        other = b if a is bfloat16 else a
        return float32 if other is float16 else other
    return _same_category(a, b)


_PROMOTE_CACHE: dict = {}


def result_type(*operands) -> DType:
    """Result dtype of operands: DTypes (dimensioned), ("weak", DType) for zero-dim tensors,
    or Python scalars (bool, int, float)."""
    strong = None
    weak = None  # highest-category weak dtype
    for op in operands:
        if isinstance(op, DType):
            strong = op if strong is None else promote_types(strong, op)
            continue
        if isinstance(op, tuple):
            w = op[1]
        elif isinstance(op, bool):
            w = bool_
        elif isinstance(op, int):
            w = int64
        elif isinstance(op, float):
            w = _default_float
        else:
            raise TypeError(f"result_type: cannot promote {type(op).__name__}")
        if weak is None or w.category > weak.category:
            weak = w
        elif w.category == weak.category and isinstance(op, tuple):
            weak = promote_types(weak, w)
    if strong is None:
        return weak if weak is not None else _default_float
    if weak is not None and weak.category > strong.category:
        return weak
    return strong
