"""PyTorch-style printing of tensors: `tensor([[0.1000, 2.0000], ...], requires_grad=True)`."""

from __future__ import annotations

import numpy as np

PRECISION = 4
EDGEITEMS = 3
THRESHOLD = 1000
LINEWIDTH = 80


def _float_formatter(values: np.ndarray):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return lambda v: _special(v) or f"{v:.{PRECISION}f}"
    abs_nonzero = np.abs(finite[finite != 0])
    ints = np.all(np.ceil(finite) == finite)
    if ints:
        if abs_nonzero.size and (
            abs_nonzero.max() / abs_nonzero.min() > 1000.0 or abs_nonzero.max() > 1e8
        ):
            return lambda v: _special(v) or f"{v:.{PRECISION}e}"
        return lambda v: _special(v) or f"{v:.0f}."
    sci = abs_nonzero.size and (
        abs_nonzero.max() / abs_nonzero.min() > 1000.0
        or abs_nonzero.max() > 1e8
        or abs_nonzero.min() < 1e-4
    )
    if sci:
        return lambda v: _special(v) or f"{v:.{PRECISION}e}"
    return lambda v: _special(v) or f"{v:.{PRECISION}f}"


def _special(v):
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return None


def _summarize(a: np.ndarray) -> np.ndarray:
    """The elements that will be printed (for the width computation)."""
    if a.size <= THRESHOLD or a.ndim == 0:
        return a.reshape(-1)
    parts = []
    if a.shape[0] > 2 * EDGEITEMS:
        rows = list(a[:EDGEITEMS]) + list(a[-EDGEITEMS:])
    else:
        rows = list(a)
    for r in rows:
        parts.append(_summarize(np.asarray(r)) if np.ndim(r) else np.asarray(r).reshape(-1))
    return np.concatenate(parts) if parts else a.reshape(-1)


def format_array(a: np.ndarray, indent: int) -> str:
    summarize = a.size > THRESHOLD
    if a.dtype.name == "bfloat16":  # ml_dtypes' kind is 'V'; its values print as floats
        a = a.astype(np.float32)
    if a.dtype.kind == "f":
        fmt = _float_formatter(_summarize(a).astype(np.float64))
    elif a.dtype.kind == "b":
        fmt = lambda v: "True" if v else "False"  # noqa: E731
    else:
        fmt = lambda v: str(int(v))  # noqa: E731
    shown = _summarize(a)
    if a.dtype.kind == "f":  # like PyTorch, the width comes from the finite values
        shown = shown[np.isfinite(shown)]
    width = max((len(fmt(v)) for v in shown), default=1)

    def render(x, depth):
        if x.ndim == 0:
            return fmt(x.item()).rjust(width)
        n = x.shape[0]
        if summarize and n > 2 * EDGEITEMS:
            idx = list(range(EDGEITEMS)) + [None] + list(range(n - EDGEITEMS, n))
        else:
            idx = list(range(n))
        if x.ndim == 1:
            items = [" ..." if i is None else fmt(x[i].item()).rjust(width) for i in idx]
            per_line = max(1, (LINEWIDTH - indent - depth) // (width + 2))
            lines = [", ".join(items[k : k + per_line]) for k in range(0, len(items), per_line)]
            return "[" + (",\n" + " " * (indent + depth + 1)).join(lines) + "]"
        sep = "," + "\n" * (x.ndim - 1) + " " * (indent + depth + 1)
        rows = ["..." if i is None else render(x[i], depth + 1) for i in idx]
        return "[" + sep.join(rows) + "]"

    return render(a, 0)


def tensor_repr(t, prefix: str = "tensor(") -> str:
    from ember import dtypes as _dt

    data = t._data
    if t.device.type != "cpu":
        data = t._backend().to_numpy(data)
    suffixes = []
    if data.size == 0 and data.shape != (0,):
        body = "[]"
        suffixes.append(f"size={tuple(data.shape)}")
    else:
        body = format_array(np.asarray(data), len(prefix))
    if t.device.type != "cpu":
        suffixes.append(f"device='{t.device}'")
    default_ok = t.dtype in (_dt.get_default_dtype(), _dt.int64, _dt.bool_)
    if not default_ok or (
        data.size == 0
        and t.dtype is not _dt.get_default_dtype()
        and t.dtype is not _dt.bool_
        and t.dtype is not _dt.int64
    ):
        suffixes.append(f"dtype={t.dtype!r}")
    if t._node is not None:
        suffixes.append(f"grad_fn=<{t._node.name()}>")
    elif t._requires_grad:
        suffixes.append("requires_grad=True")
    return prefix + body + "".join(", " + s for s in suffixes) + ")"
