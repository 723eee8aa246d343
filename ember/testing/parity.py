"""Comparing ember with a reference framework: tolerances from float32 rounding, and
`assert_close`, which names the worst element when a comparison fails.

Note [Parity tolerances]
~~~~~~~~~~~~~~~~~~~~~~~~
Two float32 implementations of the same computation (ember on NumPy/OpenBLAS, PyTorch on
MKL/oneDNN) both round, in different orders, and neither is the exact answer. A parity bound
must admit both roundings on any machine, and still be far below the errors a real bug makes
(a wrong mask, a missing scale, a transposed weight: 1e-2 and up). It is derived, not read off
one machine:

- u = 2**-24 is float32's unit roundoff. A dot product of length K computed in float32 has a
  relative error of at most K*u, and about sqrt(K)*u when the rounding errors are independent
  (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1 and 2.8); BLAS libraries
  block their sums differently on different CPUs (the kernel OpenBLAS or MKL picks for the
  CPU's vector width), so this is where machines differ.
- The difference of two implementations is bounded by the sum of their errors: 2x.
- A network of depth D applies D such layers; each one carries the error it received into
  the next (layer norm rescales it, softmax and GELU are well conditioned), so errors add up
  over the depth: D x.
- A safety factor of 4 over the typical case covers the correlated rounding the sqrt(K) rule
  leaves out.

So `parity_rtol(depth, width)` = 8 * depth * sqrt(width) * u, and an element passes when
    |actual - expected| <= rtol * (|expected| + scale),
where `scale` is the root mean square of the expected tensor: an element near zero after
cancellation carries the rounding of the terms that cancelled, whose size is the tensor's,
not its own. This is `torch.testing.assert_close`'s rule (atol + rtol*|expected|) with
atol = rtol * scale.

For all-MiniLM-L6-v2 (depth 6, widths up to 1536) that is rtol = 1.1e-4. On this project's
machines ember's hidden states differ from PyTorch float32's by at most 8.6e-5 at |x| = 3.8,
PyTorch's own float32 result differs from its float64 result by 1.3e-4, and ember's by
6.6e-5: ember is the closer of the two to the exact answer, and the bound admits the
reference's own rounding with margin (the MiniLM test checks that too). The op table keeps its
per-row tolerances: those are single ops, depth 1.
"""

from __future__ import annotations

import math

import numpy as np

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


def parity_rtol(depth: int, width: int, dtype=np.float32) -> float:
    """The relative tolerance of Note [Parity tolerances]: 8 * depth * sqrt(width) * u.

    Example:
        >>> from ember.testing.parity import parity_rtol
        >>> f"{parity_rtol(depth=6, width=1536):.2e}"
        '1.12e-04'
    """
    if depth < 1 or width < 1:
        raise ValueError(f"parity_rtol: depth and width must be >= 1, got {depth}, {width}")
    return 8.0 * depth * math.sqrt(width) * UNIT_ROUNDOFF[np.dtype(dtype)]


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor or an ember Tensor that requires grad
        x = x.detach()
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=np.float64)


def close_report(actual, expected, *, rtol: float, scale: float | None = None) -> dict:
    """Errors of `actual` against `expected` under Note [Parity tolerances]'s rule.

    Returns max_abs, max_rel (relative to |expected| + scale), the worst index with its two
    values, the bound's rtol and scale, and `ok`.
    """
    a, e = _as_float64(actual), _as_float64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: actual {a.shape}, expected {e.shape}")
    if scale is None:
        scale = float(np.sqrt(np.mean(e * e))) if e.size else 0.0
    if e.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "ok": True, "rtol": rtol, "scale": scale}
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    denominator = np.where(np.isinf(e), 1.0, np.abs(e)) + scale
    rel = diff / np.maximum(denominator, np.finfo(np.float64).tiny)
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(rel[worst]),
        "index": tuple(int(i) for i in worst),
        "actual": float(a[worst]),
        "expected": float(e[worst]),
        "rtol": rtol,
        "scale": scale,
        "ok": bool(rel[worst] <= rtol),
    }


def assert_close(actual, expected, *, rtol: float, scale: float | None = None, name: str = ""):
    """Assert Note [Parity tolerances]'s rule; the message names the worst element.

    Example:
        >>> import numpy as np
        >>> from ember.testing.parity import assert_close
        >>> assert_close(np.float32([1.0, 2.0]), np.float64([1.0, 2.0000001]), rtol=1e-6)["ok"]
        True
    """
    report = close_report(actual, expected, rtol=rtol, scale=scale)
    if not report["ok"]:
        label = f"{name}: " if name else ""
        raise AssertionError(
            f"{label}not close: |actual - expected| / (|expected| + scale) = "
            f"{report['max_rel']:.3g} > rtol {rtol:.3g} at index {report['index']} "
            f"(actual {report['actual']:.9g}, expected {report['expected']:.9g}, scale "
            f"{report['scale']:.3g}); max abs error {report['max_abs']:.3g}"
        )
    return report


def parity_error(actual, expected, *, scale: float | None = None) -> float:
    """The largest |actual - expected| / (|expected| + scale) (Note [Parity tolerances]): the
    number to hold under `parity_rtol`, and to print.

    Example:
        >>> from ember.testing.parity import parity_error
        >>> parity_error([1.0, 3.0], [1.0, 3.0])
        0.0
    """
    return close_report(actual, expected, rtol=0.0, scale=scale)["max_rel"]
