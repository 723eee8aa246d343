"""Fast CPU kernels for the Transformer hot path, registered by `ember.ops.fused`.

The reference forwards in `ember.ops.fused` are the spec (Note [Fused composites] in
ember.ops.registry). With numba (the `fast` extra) each op here is one compiled pass over its
rows: bias + GELU and its gradient, layer norm (with an optional residual added on the fly)
and its input and parameter gradients, scale + mask + softmax and its gradient, and dropout
whose keep mask is a counter-based hash of (seed, element index), so the backward regenerates
it instead of storing it.

Note [Row-parallel kernels]: every kernel runs `prange` over rows (the last dim is the row):
one row is computed by one thread from start to end, in the same order of operations as the
serial build of the same source, so the parallel result equals the serial one bit for bit (no
fast-math reassociation: sums run in a fixed order, in float64; Note [Vectorised rows]; the
float32 layer-norm sums reassociate in functions of their own, whose order is fixed by their
code alone: Note [Float32 layer norm]). The parameter gradient of layer norm sums over rows:
it adds fixed blocks of `_BLOCK` rows in parallel and then the blocks in order, so its bits do
not depend on the thread count either.
Below `COMPILED_MIN_SIZE` elements an op runs NumPy passes with the kernel's own bits or its
reference forward (a short sequence's activations: a fresh process answers without loading
numba, as Note [Fast erf] does for erf; Note [Kernel-exact small paths]); below
`PARALLEL_MIN_SIZE` a serial build would run (the two are equal by default, so every compiled
call is parallel; the tests lower them to compare the builds). The parallel build uses the
threads `ember.set_num_threads` asks for (numba's own count). Without numba (or
EMBER_NO_NUMBA=1 / EMBER_FAST_KERNELS=0) every function returns None (above the small size)
and the op runs its reference forward (NumPy). tests/ops/test_fused.py checks both.

Note [Vectorised rows]: the inner loops are written so that LLVM turns them into SIMD code
(AVX2/AVX-512), which a loop with a call (libm's exp), a branch or one running sum cannot be:
at MiniLM 32 x 128 (1 thread) the scalar softmax took 5.7 ns per element, 214 ms of a 970 ms
forward, against PyTorch's whole fused attention at 36 ms.
- Each kernel is built per variant (float32 or float64, exact or tanh GELU, bias or not), the
  variant written into its source, so no flag is tested inside a loop.
- Sums and maxima over a row run in 8 interleaved partial results (`s0 .. s7`, element j into
  lane j % 8; `_lanes`), combined in one fixed order at the end: independent chains the CPU
  overlaps, still float64 and without fast-math reassociation, so the serial and parallel
  builds (and any thread count) give the same bits. float32 layer norm sums with
  reassociation instead, in functions of their own (Note [Float32 layer norm]).
- float32 exp is `exp32`: Cody-Waite reduction, Cephes' polynomial in float32 and 2^n written
  into the exponent bits, no call and no branch (selects only): within 2 float32 ulp of the
  correctly rounded value on [-87, 88.5], 0 below -87 (where exp is subnormal), NaN for NaN.
  Exact float32 GELU runs in float32 throughout (Note [Float32 GELU]) on 16 lanes (Note
  [Wide vectors]).
  float64 work keeps libm's exp, erf and tanh; float32 tanh GELU is a sigmoid of exp32 (Note
  [Float32 tanh GELU]).
- Small inputs (below `COMPILED_MIN_SIZE`): Note [Kernel-exact small paths] at the end of
  this file. A switch from the NumPy reference to the compiled kernel after some calls made
  results depend on the process's history (a training run resumed in a fresh process no
  longer matched the uninterrupted one bit for bit, tests/train/test_checkpoints.py); the
  small paths now compute the kernel's exact operations in NumPy, so the switch is safe.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from ember._util.env import flag
from ember.backend import numba_kernels, parallel
from ember.backend.memory import empty_apart

COMPILED_MIN_SIZE = 1 << 16
PARALLEL_MIN_SIZE = 1 << 16
_BLOCK = 64  # rows per partial sum of the layer-norm parameter gradient

_SQRT_HALF = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2PI = 0.3989422804014327


def _lanes(name: str, params: str, term: str, combine: str = "+", start: str = "0.0") -> str:
    """Source of an inlined numba function `name(params, n)` reducing `term` (an expression in
    the index `j`, every index written `[j]`) over j < n in 8 interleaved lanes, combined in a
    fixed order (Note [Vectorised rows]). `combine` "+" sums (float64); "max" keeps the
    largest, ignoring NaN (the callers' results turn NaN through the other passes)."""

    def step(k):
        value = term.replace("[j]", f"[j + {k}]")
        if combine == "+":
            return f"        s{k} += {value}"
        return f"        v = {value}\n        s{k} = v if v > s{k} else s{k}"

    def join(a, b):
        return f"({a} + {b})" if combine == "+" else f"({a} if {a} >= {b} else {b})"

    init = "\n".join(f"    s{k} = {start}" for k in range(8))
    body = "\n".join(step(k) for k in range(8))
    tail = step(0).replace("[j + 0]", "[j]").replace("        ", "        ")
    pairs = [join(f"s{2 * k}", f"s{2 * k + 1}") for k in range(4)]
    total = join(join(pairs[0], pairs[1]), join(pairs[2], pairs[3]))
    if combine != "+":  # the nested conditional expressions need names
        total = "\n".join(
            [f"    t{k} = {join(f's{2 * k}', f's{2 * k + 1}')}" for k in range(4)]
            + [f"    u0 = {join('t0', 't1')}", f"    u1 = {join('t2', 't3')}"]
        )
        ret = f"{total}\n    return {join('u0', 'u1')}"
    else:
        ret = f"    return {total}"
    return f"""
@numba.njit(inline="always")
def {name}({params}, n):
{init}
    n8 = n - n % 8
    for j in range(0, n8, 8):
{body}
    for j in range(n8, n):
{tail}
{ret}
"""


_EXP32 = """
LOG2E32 = np.float32(1.4426950408889634)
LN2_HI32 = np.float32(0.693359375)
LN2_LO32 = np.float32(-2.12194440e-4)
EXP_P0 = np.float32(1.9875691500e-4)
EXP_P1 = np.float32(1.3981999507e-3)
EXP_P2 = np.float32(8.3334519073e-3)
EXP_P3 = np.float32(4.1665795894e-2)
EXP_P4 = np.float32(1.6666665459e-1)
EXP_P5 = np.float32(5.0000001201e-1)
EXP_LO32 = np.float32(-87.0)
EXP_HI32 = np.float32(88.5)
HALF32 = np.float32(0.5)
ONE32 = np.float32(1.0)
ZERO32 = np.float32(0.0)
BIAS32 = np.float32(127.0)


@numba.njit(inline="always")
def exp32(x):
    # Note [Vectorised rows]: float32 exp with no call and no branch
    z = min(max(x, EXP_LO32), EXP_HI32)
    n = np.floor(z * LOG2E32 + HALF32)
    r = z - n * LN2_HI32
    r = r - n * LN2_LO32
    p = ((((EXP_P0 * r + EXP_P1) * r + EXP_P2) * r + EXP_P3) * r + EXP_P4) * r + EXP_P5
    y = p * (r * r) + r + ONE32
    y = y * np.int32(np.int32(n + BIAS32) << 23).view(np.float32)
    if x < EXP_LO32:
        y = ZERO32
    elif x > EXP_HI32:
        y = np.float32(np.inf)
    elif x != x:
        y = x
    return y
"""


def _erf32_constants() -> str:
    """Source lines binding Note [Fast erf]'s rational approximation's coefficients as float32
    globals (EN0..EN6 over ED0..ED4)."""
    from ember.backend.numpy_backend import _ERF_DENOMINATOR, _ERF_NUMERATOR

    lines = [f"EN{k} = np.float32({c!r})" for k, c in enumerate(_ERF_NUMERATOR)]
    lines += [f"ED{k} = np.float32({c!r})" for k, c in enumerate(_ERF_DENOMINATOR)]
    return "\n".join(lines) + "\n"


# Note [Float32 GELU]: exact float32 GELU and its slope in float32 arithmetic throughout: erf is
# Note [Fast erf]'s rational approximation (Eigen's and XLA's float32 erf) evaluated in float32
# on z clamped to [-4, 4] (beyond, float32 erf is +-1 to the last bit), the slope's density
# exp(-u^2 / 2) is exp32; no call, no branch, so each loop runs 16 float32 lanes of AVX-512
# (Note [Wide vectors]). The float64 evaluation it replaces ran 8 lanes of float64 with float64
# divisions; 4096 x 1536 with bias, 1 thread (a busy machine; one process, medians): forward
# 9.4 -> 3.4 ms, backward 17.4 -> 7.5 ms (PyTorch's gelu without bias 2.1-3.3 ms, gelu_backward
# 5-8 ms in the same runs). The formulas and their order are
# PyTorch's (u * 0.5 * (1 + erf(u / sqrt 2)); 0.5 (1 + erf) + u exp(-u^2 / 2) / sqrt(2 pi)),
# so the results share PyTorch's float32 rounding: within a few float32 ulp of the exact GELU
# where it is not small, and an absolute error of a few 1e-8 |u| in the negative tail, where
# 1 + erf cancels in float32 as it does in PyTorch (tests/ops/test_fused.py prints and bounds
# both against float64 and against torch). NaN stays NaN, +inf gives +inf, -inf gives NaN (as
# PyTorch's float32 GELU does; 0 * inf). The NumPy twin (`_small_gelu`) performs the same
# float32 operations, so small inputs get the kernel's bits (Note [Kernel-exact small paths]).
_GELU_32 = """
SQRT_HALF32 = np.float32(0.7071067811865476)
INV_SQRT_2PI32 = np.float32(0.3989422804014327)
MINUS_HALF32 = np.float32(-0.5)
ERF_LIMIT32 = np.float32(4.0)
"""


def _gelu32_source() -> str:
    """erf32f, gelu_value and gelu_slope of Note [Float32 GELU]: float32 in, float32 out."""
    return (
        _EXP32
        + _GELU_32
        + _erf32_constants()
        + """

@numba.njit(inline="always")
def erf32f(z):
    c = z if z < ERF_LIMIT32 else ERF_LIMIT32
    c = c if c > -ERF_LIMIT32 else -ERF_LIMIT32
    z2 = c * c
    p = ((((((EN0 * z2 + EN1) * z2 + EN2) * z2 + EN3) * z2 + EN4) * z2 + EN5) * z2 + EN6)
    q = ((((ED0 * z2 + ED1) * z2 + ED2) * z2 + ED3) * z2 + ED4)
    return c * p / q


@numba.njit(inline="always")
def gelu_value(u):
    return u * HALF32 * (ONE32 + erf32f(u * SQRT_HALF32))


@numba.njit(inline="always")
def gelu_slope(u):
    cdf = HALF32 * (ONE32 + erf32f(u * SQRT_HALF32))
    return cdf + u * (exp32(u * u * MINUS_HALF32) * INV_SQRT_2PI32)
"""
    )


# Note [Float32 tanh GELU]: the tanh approximation in float32 arithmetic throughout, written
# as a sigmoid: (1 + tanh z) / 2 = 1 / (1 + exp(-2z)), z = sqrt(2 / pi) (u + 0.044715 u^3), so
# gelu(u) = u s with s = 1 / (1 + e), e = exp(-2z) (exp32: no call, no branch, 16 lanes; Note
# [Wide vectors]), and its slope s + 2 u z' e s^2 (z' = dz / du), which is PyTorch's
# 0.5 (1 + t) + 0.5 u (1 - t^2) z' with 1 - t^2 = 4 e s^2. libm's tanhf per element, which
# this replaces, ran scalar: 4096 x 1536, 1 thread, forward 183 ms, backward 231 ms (PyTorch
# 16 / 22 ms). The sigmoid form also keeps the negative tail's relative accuracy, where
# 1 + tanh z cancels in float32 (PyTorch's is exactly -0 below u ~ -5). u is clamped to
# [-20, 20] inside the formula (where u^3 and z' stay finite; beyond it s is 0 or 1 to
# float32's last bit), -2z to 80 inside exp (so e s stays finite), and s set to 0 above it
# (u < ~-9.5, where exp(-2z) > 1e34). Edges: NaN stays NaN; +inf gives +inf with slope 1;
# -inf gives NaN (0 * inf, as PyTorch's float32 GELU does) with slope 0 (PyTorch: NaN for
# both slopes). The NumPy twin (`_small_gelu`) performs the same float32 operations, so
# small inputs get the kernel's bits (Note [Kernel-exact small paths]); tests/ops/
# test_fused.py sweeps both against float64 and PyTorch.
_GELU_TANH_32 = """
MINUS_TWO_K32 = np.float32(-1.5957691216057308)
GELU_C32 = np.float32(0.044715)
GELU_3C32 = np.float32(0.134145)
TWO_K32 = np.float32(1.5957691216057308)
U_LIMIT32 = np.float32(20.0)
T_LIMIT32 = np.float32(80.0)


@numba.njit(inline="always")
def gelu_parts(u):
    # (c, e, s) of Note [Float32 tanh GELU]: u clamped, exp(-2z), 1 / (1 + exp(-2z))
    c = U_LIMIT32 if u > U_LIMIT32 else u
    c = -U_LIMIT32 if c < -U_LIMIT32 else c
    t = (c + c * c * c * GELU_C32) * MINUS_TWO_K32
    e = exp32(T_LIMIT32 if t > T_LIMIT32 else t)
    s = ONE32 / (ONE32 + e)
    s = ZERO32 if t > T_LIMIT32 else s
    return c, e, s


@numba.njit(inline="always")
def gelu_value(u):
    c, e, s = gelu_parts(u)
    return u * s


@numba.njit(inline="always")
def gelu_slope(u):
    c, e, s = gelu_parts(u)
    return s + (c * TWO_K32) * (ONE32 + GELU_3C32 * (c * c)) * (e * s * s)
"""


def _gelu_tanh32_source() -> str:
    """gelu_value and gelu_slope of Note [Float32 tanh GELU]: float32 in, float32 out."""
    return _EXP32 + _GELU_TANH_32


def _gelu64_source(approximate: bool) -> str:
    """gelu_value and gelu_slope in float64 (libm's erf, exp, tanh)."""
    tanh = "math.tanh(z)"
    if approximate:
        value = f"""    z = {_SQRT_2_OVER_PI} * (u + 0.044715 * u * u * u)
    return 0.5 * u * (1.0 + {tanh})"""
        slope = f"""    z = {_SQRT_2_OVER_PI} * (u + 0.044715 * u * u * u)
    t = {tanh}
    return 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * {_SQRT_2_OVER_PI} * (
        1.0 + 3.0 * 0.044715 * u * u
    )"""
    else:
        value = f"""    z = u * {_SQRT_HALF}
    return 0.5 * u * (1.0 + math.erf(z))"""
        slope = f"""    z = u * {_SQRT_HALF}
    e = math.erf(z)
    z = -0.5 * u * u
    return 0.5 * (1.0 + e) + u * {_INV_SQRT_2PI} * math.exp(z)"""
    return f"""
@numba.njit(inline="always")
def gelu_value(u):
{value}


@numba.njit(inline="always")
def gelu_slope(u):
{slope}
"""


# Note [Contracted GELU]: `gelu_backward` (every variant), and `gelu_forward` over large inputs
# (COMPILED_MIN_SIZE elements and up), are compiled with numba's fastmath flag "contract" and
# no other: LLVM may fuse a multiply and the add that uses it into one FMA instruction (one
# rounding instead of two), which the polynomials of erf, exp32 and the slope are made of.
# Exact float32 GELU's backward over 2048 x 1536 with bias (one process, medians): 1 thread
# 6.3 -> 4.5 ms, 2 threads 3.3 -> 2.3 ms (a busy machine; the ratio held across rounds). Its
# forward over 1024 x 1536 with bias (MiniLM's Trainer batch, 16 x 64; one process, quiet
# machine, medians): 1 thread 0.86 -> 0.63 ms, 2 threads 0.45 -> 0.33 ms (PyTorch's gelu
# without bias ~0.60 / ~0.34 ms). Contraction follows the expression alone, so the serial
# and parallel builds and every thread count give the same bits (tests/ops/test_fused.py);
# the results move by at most a float32 ulp or two against the uncontracted ones, within the
# error bounds of Note [Float32 GELU] (the forward's largest error against float64 fell:
# 1.39e-6 -> 1.11e-6 over N(0, 9) inputs). Small inputs keep the uncontracted serial build
# (`_small_kernel`), whose bits their NumPy twins reproduce (Note [Kernel-exact small paths]:
# NumPy has no fused multiply-add); each size class has one set of bits, as with layer norm.
# `fused_feed_forward`'s GELU (Note [Row-blocked feed-forward]) stays uncontracted: its kernel
# also normalises, with the layer-norm kernels' bits.


def _gelu_source(approximate: bool, single: bool, has_bias: bool) -> str:
    """GELU's forward and backward for one variant (Note [Vectorised rows]): u = x (+ b),
    float32 GELU in float32 (Note [Float32 GELU], Note [Float32 tanh GELU]), float64 in
    float64."""
    if single:
        head = _gelu_tanh32_source() if approximate else _gelu32_source()
        u = "x[i, j] + b[j]" if has_bias else "x[i, j]"
    else:
        head = _gelu64_source(approximate)
        u = "np.float64(x[i, j])" + (" + np.float64(b[j])" if has_bias else "")
    return (
        head
        + f"""

def gelu_forward(x, b, out):
    rows, d = x.shape
    for i in prange(rows):
        wide_vectors()
        for j in range(d):
            out[i, j] = gelu_value({u})


def gelu_backward(g, x, b, out):
    # built with fused multiply-add contraction (Note [Contracted GELU])
    rows, d = x.shape
    for i in prange(rows):
        wide_vectors()
        for j in range(d):
            out[i, j] = g[i, j] * gelu_slope({u})
"""
    )


_SUM_BLOCKS = """
@numba.njit(inline="always")
def clear_block(p0, p1, d):
    # a block's two partial parameter-gradient sums start at zero
    for j in range(d):
        p0[j] = 0.0
        p1[j] = 0.0


@numba.njit(inline="always")
def sum_blocks(partial, out):
    # the parameter gradient's per-block sums (blocks, 2, d), added block by block in order
    # (Note [Row-parallel kernels])
    blocks, _, d = partial.shape
    for j in range(d):
        s0 = 0.0
        s1 = 0.0
        for k in range(blocks):
            s0 += partial[k, 0, j]
            s1 += partial[k, 1, j]
        out[0, j] = s0
        out[1, j] = s1
"""

# Note [Layer norm row buffer]: the general layer-norm forward (float64 rows, and the small
# float32 inputs of Note [Kernel-exact small paths]) converts a row's u = x (+ r) to float64
# once, into a row buffer, and then works on the buffer: the mean as a lane sum (Note
# [Vectorised rows]), u - mean written back, the variance as the lane sum of its squares, the
# output from the buffer. These are the operations, in the order, that the earlier kernel
# performed (it converted and added x + r again in each of its three passes) and that
# `_small_layer_norm` performs, so the bits are the same (tests/ops/test_fused.py); but the
# conversion and the last pass are now loops LLVM vectorises, and the lane sums read float64
# without converting. The lane sums stay scalar: numba builds without LLVM's SLP vectoriser,
# and eight running sums are a dependency chain the loop vectoriser does not take.
# MiniLM 1 x 16 (16 x 384 float32, residual), one call, 1 thread: 13.0 -> 6.2 us; 4096 x 384
# float64, 1 thread: 2.93 -> 2.21 ms.
_LAYER_NORM = (
    _lanes("sum1", "a", "np.float64(a[j])")
    + _lanes("sum2", "a, c", "(np.float64(a[j]) + np.float64(c[j]))")
    + _lanes("sqdev1", "a, m", "(np.float64(a[j]) - m) * (np.float64(a[j]) - m)")
    + _lanes(
        "sqdev2",
        "a, c, m",
        "(np.float64(a[j]) + np.float64(c[j]) - m) * (np.float64(a[j]) + np.float64(c[j]) - m)",
    )
    + _lanes("sum_row", "a", "a[j]")
    + _lanes("sum_squares", "a", "a[j] * a[j]")
    + _lanes("dot_w", "a, w", "np.float64(a[j]) * w[j]")
    + _lanes("dot_wx1", "a, w, c, m", "np.float64(a[j]) * w[j] * (np.float64(c[j]) - m)")
    + _lanes(
        "dot_wx2",
        "a, w, c, e, m",
        "np.float64(a[j]) * w[j] * (np.float64(c[j]) + np.float64(e[j]) - m)",
    )
    + """
@numba.njit(inline="always")
def row_moments(x, r, has_residual, i, d):
    if has_residual:
        mean = sum2(x[i], r[i], d) / d
        return mean, sqdev2(x[i], r[i], mean, d) / d
    mean = sum1(x[i], d) / d
    return mean, sqdev1(x[i], mean, d) / d


def layer_norm_forward(x, r, has_residual, w, b, eps, out):
    # u = x (+ r) in float64 once, in a row buffer (Note [Layer norm row buffer])
    rows, d = x.shape
    for i in prange(rows):
        xi = x[i]
        u = np.empty(d)
        if has_residual:
            ri = r[i]
            for j in range(d):
                u[j] = np.float64(xi[j]) + np.float64(ri[j])
        else:
            for j in range(d):
                u[j] = np.float64(xi[j])
        mean = sum_row(u, d) / d
        for j in range(d):
            u[j] -= mean
        rstd = 1.0 / math.sqrt(sum_squares(u, d) / d + eps)
        oi = out[i]
        for j in range(d):
            oi[j] = u[j] * rstd * w[j] + b[j]


def layer_norm_input_grad(g, x, r, has_residual, w, eps, out):
    # gx = rstd (gw - mean(gw) - xhat mean(gw xhat)), gw = g * w
    rows, d = x.shape
    for i in prange(rows):
        mean, var = row_moments(x, r, has_residual, i, d)
        rstd = 1.0 / math.sqrt(var + eps)
        m1 = dot_w(g[i], w, d) / d
        if has_residual:
            m2 = dot_wx2(g[i], w, x[i], r[i], mean, d) * rstd / d
        else:
            m2 = dot_wx1(g[i], w, x[i], mean, d) * rstd / d
        gi = g[i]
        xi = x[i]
        ri = r[i]
        oi = out[i]
        for j in range(d):
            v = np.float64(xi[j])
            if has_residual:
                v += np.float64(ri[j])
            oi[j] = rstd * (np.float64(gi[j]) * w[j] - m1 - (v - mean) * rstd * m2)


def layer_norm_param_grad(g, x, r, has_residual, eps, block, partial, out):
    # out[0] = sum over rows of g * xhat, out[1] = sum of g; blocks of rows in parallel, then
    # the blocks in order (Note [Row-parallel kernels])
    rows, d = x.shape
    blocks = partial.shape[0]
    for k in prange(blocks):
        clear_block(partial[k, 0], partial[k, 1], d)
        for i in range(k * block, min(rows, (k + 1) * block)):
            mean, var = row_moments(x, r, has_residual, i, d)
            rstd = 1.0 / math.sqrt(var + eps)
            gi = g[i]
            xi = x[i]
            ri = r[i]
            p0 = partial[k, 0]
            p1 = partial[k, 1]
            for j in range(d):
                v = np.float64(xi[j])
                if has_residual:
                    v += np.float64(ri[j])
                gv = np.float64(gi[j])
                p0[j] += gv * (v - mean) * rstd
                p1[j] += gv
    sum_blocks(partial, out)
"""
)


def _sums(name: str, params: str, terms) -> str:
    """Source of a numba function `name(params, n)` returning the float64 sums of several
    `terms` (expressions in the index `j`, after the `setup` lines) over j < n, in one pass.
    It is compiled on its own with fast-math reassociation (Note [Float32 layer norm]), so
    LLVM vectorises the sums; no other function gets the flag."""
    setup, terms = terms
    names = [f"s{k}" for k in range(len(terms))]
    init = "\n".join(f"    {c} = 0.0" for c in names)
    body = "\n".join(
        [f"        {line}" for line in setup]
        + [f"        {c} += {t}" for c, t in zip(names, terms)]
    )
    return f"""
@numba.njit(fastmath={{"reassoc"}}, nogil=True)
def {name}({params}, n):
{init}
    for j in range(n):
{body}
    return {", ".join(names)}
"""


def _sums32(name: str, params: str, terms) -> str:
    """Source of a numba function `name(params, n)` returning the sums of `terms` (after the
    `setup` lines) over j < n in one pass, in float32, compiled on its own with fast-math
    reassociation on 16 lanes (Note [Float32 layer norm backward])."""
    setup, terms = terms
    names = [f"s{k}" for k in range(len(terms))]
    init = "\n".join(f"    {c} = np.float32(0.0)" for c in names)
    body = "\n".join(
        [f"        {line}" for line in setup]
        + [f"        {c} += {t}" for c, t in zip(names, terms)]
    )
    result = ", ".join(names) if len(names) > 1 else names[0]
    return f"""
@numba.njit(fastmath={{"reassoc"}}, nogil=True)
def {name}({params}, n):
    wide_vectors()
{init}
    for j in range(n):
{body}
    return {result}
"""


# Note [Float32 layer norm]: float32 rows take one pass for their moments: the sum and the sum
# of squares of u = x (+ r), in float64 (a float32 product is exact in float64 and a 384-term
# float64 sum is good to ~1e-14 relative; the sums are of v = u - u[0], so that E[v^2] - E[v]^2
# cancels nothing however far the mean lies from zero); the residual sum u is rounded to
# float32, as the reference's x + r is; the second pass normalises in float32 as PyTorch does,
# subtracting the mean as two float32 parts (u - hi is exact where u is near the mean, - lo
# then rounds once), so a mean far from zero costs no more than float32's last bit.
# The moment sums are small functions of their own (`_sums`) compiled with fast-math
# reassociation and nothing else: LLVM then vectorises them (8 interleaved float64 lanes
# written out by hand, `_lanes`, stayed scalar: 1.1 ms against 0.28 ms for the moments of
# 4096 x 384). Their order of additions is fixed by the compiled code and the row length
# alone, so every row gives the same bits whichever thread runs it and in the serial and
# parallel builds (tests/ops/test_fused.py); only another CPU (another vector width) may round
# differently. Measured on the quiet machine, 4096 x 384, 1 / 2 threads: forward with residual
# 3.8 / 1.8 ms -> 0.75 / 0.43 ms. float64 rows keep the two-pass kernels above (one float64
# pass cannot give their moments the same accuracy). The gradients: Note [Float32 layer norm
# backward].
#
# Note [Float32 layer norm backward]: the float32 gradient kernels work in float32 as
# PyTorch's do, on 16 lanes (Note [Wide vectors]): each row takes one pass of four float32
# sums (`_sums32`, fast-math reassociation on their own as above, so their order is fixed by
# the code and the row length): v = u - k, v^2, g w and g w v, with k the mean of the row's
# first 16 values (u = x (+ r) rounded to float32, as the reference adds them); the mean is k
# + mean(v), the variance mean(v^2) - mean(v)^2. That difference loses float32 digits when
# the shift mean(v) is large against the deviation (an outlier among the first values, a row
# far from zero), so where mean(v)^2 exceeds the variance the row is summed again around the
# mean found (a second pass; the choice depends on the row alone, so every thread and build
# makes it alike). Then one loop writes the input gradient (the mean subtracted as two float32
# parts, as the forward does) and one adds the row's share of the parameter gradient: g xhat
# and g summed over each block of `_BLOCK` rows in float32, the blocks then added in order in
# float64 (Note [Row-parallel kernels]; PyTorch sums each thread's rows in float32). Two
# loops, not one: LLVM vectorises a loop only where it can check at run time that its stores
# overlap no other array it touches, up to 8 checks; one loop over out, p0, p1, x, r, g and w
# needs 15 and ran scalar (0.3 ms of 1.3). The float64 sums this replaces (two passes a row
# for the moments, one more for the parameter gradient, float64 accumulation): 4096 x 384
# with residual, both gradients, 1 / 2 threads (one process, medians): 2.1 / 1.2 ms -> 1.2 /
# 0.69 ms (PyTorch, reading x + r already added: 0.90 / 0.64 ms). Errors against float64 of
# the same float32 inputs, rows of 384 and 1536, means 0 to 1e4 with deviations down to 1e-3
# and outlier columns at 40x: at most 2.6e-7 of the largest gradient (PyTorch 1e-7 .. 5e-7
# with means near zero, 1e-4 .. 4e-3 with large means; tests/ops/test_fused.py).
_LAYER_NORM_32 = (
    _sums("moments", "a, k", (("v = np.float64(a[j]) - k",), ("v", "v * v")))
    + _sums("moments_res", "a, c, k", (("v = np.float64(a[j] + c[j]) - k",), ("v", "v * v")))
    + _sums32(
        "grad_sums",
        "a, c, gg, w, k",
        (("v = (a[j] + c[j]) - k", "gw = gg[j] * w[j]"), ("v", "v * v", "gw", "gw * v")),
    )
    + _sums32(
        "grad_sums1",
        "a, gg, w, k",
        (("v = a[j] - k", "gw = gg[j] * w[j]"), ("v", "v * v", "gw", "gw * v")),
    )
    + """

@numba.njit(inline="always")
def scale_of(k, s, q, d, eps):
    # s, q: sums of v = u - k and of v * v (k: the row's first value, a shift that keeps the
    # float64 sums small however far the mean lies from zero)
    shift = s / d
    var = max(q / d - shift * shift, 0.0)
    return k + shift, shift, 1.0 / math.sqrt(var + eps)


@numba.njit(inline="always")
def first(x, r, has_residual, i):
    if has_residual:
        return np.float64(x[i, 0] + r[i, 0])
    return np.float64(x[i, 0])


@numba.njit(inline="always")
def row_stats(x, r, has_residual, i, d, eps):
    k = first(x, r, has_residual, i)
    if has_residual:
        s, q = moments_res(x[i], r[i], k, d)
    else:
        s, q = moments(x[i], k, d)
    mean, shift, rstd = scale_of(k, s, q, d, eps)
    return mean, rstd


def layer_norm_forward(x, r, has_residual, w, b, eps, out):
    rows, d = x.shape
    for i in prange(rows):
        wide_vectors()
        xi = x[i]
        oi = out[i]
        mean, rstd = row_stats(x, r, has_residual, i, d, eps)
        m32 = np.float32(mean)
        lo32 = np.float32(mean - np.float64(m32))  # u - m32 - lo32: u - mean to float32's ulp
        r32 = np.float32(rstd)
        if has_residual:
            ri = r[i]
            for j in range(d):
                oi[j] = ((xi[j] + ri[j] - m32) - lo32) * r32 * w[j] + b[j]
        else:
            for j in range(d):
                oi[j] = ((xi[j] - m32) - lo32) * r32 * w[j] + b[j]


@numba.njit(inline="always")
def backward_sums(x, r, has_residual, g, w, i, d, k):
    if has_residual:
        return grad_sums(x[i], r[i], g[i], w, k, d)
    return grad_sums1(x[i], g[i], w, k, d)


@numba.njit(inline="always")
def backward_row(x, r, has_residual, g, w, i, d, eps):
    # Note [Float32 layer norm backward]: the row's mean as two float32 parts, its 1/std and
    # the input gradient's float32 factors mean(gw) and mean(gw (u - mean)) rstd^2 (gw = g * w)
    # from one pass of float32 sums of v = u - k, k the mean of the row's first 16 values; a
    # second pass with k the mean found where the shift from k exceeds the deviation
    xi = x[i]
    ri = r[i]
    n = min(d, 16)
    k = np.float32(0.0)
    for j in range(n):
        k += (xi[j] + ri[j]) if has_residual else xi[j]
    k = k / np.float32(n)
    s1, s2, s3, s4 = backward_sums(x, r, has_residual, g, w, i, d, k)
    shift = np.float64(s1) / d
    var = np.float64(s2) / d - shift * shift
    if shift * shift > var:  # cancellation: sum again around the mean found
        k = np.float32(np.float64(k) + shift)
        s1, s2, s3, s4 = backward_sums(x, r, has_residual, g, w, i, d, k)
        shift = np.float64(s1) / d
        var = np.float64(s2) / d - shift * shift
    mean = np.float64(k) + shift
    rstd = 1.0 / math.sqrt(max(var, 0.0) + eps)
    m32 = np.float32(mean)
    lo32 = np.float32(mean - np.float64(m32))
    m1 = np.float64(s3) / d
    m2 = np.float64(s4) / d - shift * m1  # mean(gw (u - mean)), u - mean = v - shift
    return m32, lo32, np.float32(rstd), np.float32(m1), np.float32(m2 * rstd * rstd)


@numba.njit(inline="always")
def input_grad_loop(xi, ri, has_residual, gi, w, m32, lo32, r32, a32, c32, d, oi):
    # one row's input gradient from backward_row's factors
    if has_residual:
        for j in range(d):
            oi[j] = r32 * (gi[j] * w[j] - a32 - (((xi[j] + ri[j]) - m32) - lo32) * c32)
    else:
        for j in range(d):
            oi[j] = r32 * (gi[j] * w[j] - a32 - ((xi[j] - m32) - lo32) * c32)


@numba.njit(inline="always")
def param_grad_loop(xi, ri, has_residual, gi, m32, lo32, r32, d, p0, p1):
    # one row's share of the parameter gradient: p0 += g * xhat, p1 += g
    if has_residual:
        for j in range(d):
            gv = gi[j]
            p0[j] += gv * ((((xi[j] + ri[j]) - m32) - lo32) * r32)
            p1[j] += gv
    else:
        for j in range(d):
            gv = gi[j]
            p0[j] += gv * (((xi[j] - m32) - lo32) * r32)
            p1[j] += gv


def layer_norm_input_grad(g, x, r, has_residual, w, eps, out):
    rows, d = x.shape
    for i in prange(rows):
        wide_vectors()
        m32, lo32, r32, a32, c32 = backward_row(x, r, has_residual, g, w, i, d, eps)
        input_grad_loop(x[i], r[i], has_residual, g[i], w, m32, lo32, r32, a32, c32, d, out[i])


def layer_norm_param_grad(g, x, r, has_residual, eps, block, partial, out):
    # out[0] = sum over rows of g * xhat, out[1] = sum of g; float32 sums over blocks of rows
    # in parallel, then the blocks in order in float64 (Note [Row-parallel kernels])
    # (the row statistics as the input gradient computes them, with w = 1: the same bits)
    rows, d = x.shape
    blocks = partial.shape[0]
    ones = np.ones(d, np.float32)
    for k in prange(blocks):
        wide_vectors()
        p0 = partial[k, 0]
        p1 = partial[k, 1]
        clear_block(p0, p1, d)
        for i in range(k * block, min(rows, (k + 1) * block)):
            m32, lo32, r32, a32, c32 = backward_row(x, r, has_residual, g, ones, i, d, eps)
            param_grad_loop(x[i], r[i], has_residual, g[i], m32, lo32, r32, d, p0, p1)
    sum_blocks(partial, out)


def layer_norm_grads(g, x, r, has_residual, w, eps, block, partial, out, sums):
    # both kernels above in one pass over g, x (and r) (Note [Layer norm gradients together]):
    # each row's statistics once, then its input gradient and its share of the parameter
    # gradient while the row is in cache, each as the two kernels compute it
    rows, d = x.shape
    blocks = partial.shape[0]
    for k in prange(blocks):
        wide_vectors()
        p0 = partial[k, 0]
        p1 = partial[k, 1]
        clear_block(p0, p1, d)
        for i in range(k * block, min(rows, (k + 1) * block)):
            m32, lo32, r32, a32, c32 = backward_row(x, r, has_residual, g, w, i, d, eps)
            # two loops: LLVM vectorises a loop only where it can check at run time that its
            # stores overlap no other array it touches, and gives up past 8 such checks (one
            # loop over out, p0, p1, x, r, g and w needs 15: it ran scalar, 0.3 ms of 1.3)
            xi, ri, gi = x[i], r[i], g[i]
            input_grad_loop(xi, ri, has_residual, gi, w, m32, lo32, r32, a32, c32, d, out[i])
            param_grad_loop(xi, ri, has_residual, gi, m32, lo32, r32, d, p0, p1)
    sum_blocks(partial, sums)
"""
)

_SOFTMAX_BACKWARD = (
    _lanes("dot", "a, c", "np.float64(a[j]) * np.float64(c[j])")
    + """

def softmax_backward(g, y, scale, out):
    rows, n = y.shape
    # memory-bound: 16 lanes (Note [Wide vectors]) gained nothing at (16, 12, 128, 128)
    for i in prange(rows):
        gi = g[i]
        yi = y[i]
        oi = out[i]
        d = dot(gi, yi, n)
        for j in range(n):
            oi[j] = scale * np.float64(yi[j]) * (np.float64(gi[j]) - d)
"""
)

# Note [Float32 softmax backward]: float32 rows take the softmax gradient in float32, as the
# reference (`_softmax_grad_forward`: float32 NumPy ops) and PyTorch do: the row's dot product
# <g, y> in 8 float32 lanes combined in a fixed order (Note [Vectorised rows]), then
# (y (g - dot)) * scale. The float64 version (converting every element) took 2.3-2.7x the time
# (min of 30, one process): (16, 12, 64, 64) 0.88 -> 0.33 ms at 1 thread, 0.52 -> 0.20 ms at 2;
# (16, 12, 128, 128) 3.0 -> 1.17 ms, 1.70 -> 0.73 ms (not memory-bound: the conversions were
# the work). The float32 dot of a row differs from a float64 one by float32 rounding of its
# terms (y sums to 1, so |dot| <= max |g|); each row is computed by one thread in one order, so
# serial and parallel builds and every thread count still agree bit for bit.
_SOFTMAX_BACKWARD_32 = (
    _lanes("dot32", "a, c", "a[j] * c[j]", start="np.float32(0.0)")
    + """

def softmax_backward(g, y, scale, out):
    rows, n = y.shape
    s32 = np.float32(scale)
    for i in prange(rows):
        gi = g[i]
        yi = y[i]
        oi = out[i]
        d = dot32(gi, yi, n)
        for j in range(n):
            oi[j] = (yi[j] * (gi[j] - d)) * s32
"""
)

# float64: libm's exp per element, the sum in lanes
_SOFTMAX_64 = (
    _lanes("row_sum", "a", "np.float64(a[j])")
    + """

def softmax_forward(s, m, has_mask, scale, out):
    # s, out: (A, B, C, S) C-contiguous; m: (ma, mb, mc, ms), each 1 or s's dim
    na, nb, nc, n = s.shape
    ma, mb, mc, ms = m.shape
    for flat in prange(na * nb * nc):
        a = flat // (nb * nc)
        bb = (flat // nc) % nb
        c = flat % nc
        ia = a if ma > 1 else 0
        ib = bb if mb > 1 else 0
        ic = c if mc > 1 else 0
        si = s[a, bb, c]
        oi = out[a, bb, c]
        mi = m[ia, ib, ic]
        for j in range(n):
            v = si[j] * scale
            if has_mask:
                v = v + mi[j if ms > 1 else 0]
            oi[j] = v
        top = oi[0]
        for j in range(1, n):
            v = oi[j]
            if v > top or v != v:
                top = v
        for j in range(n):
            oi[j] = math.exp(oi[j] - top)
        total = row_sum(oi, n)
        for j in range(n):
            oi[j] = oi[j] / total
"""
)

# Note [Row max over order keys]: the softmax row passes (attention's, Note [Attention blocks]
# in attention_kernels.py, and the float32 softmax kernel below, training's attention) take the
# row's max over order keys: the float's bits as a signed integer with the magnitude bits
# flipped where the sign is set (an involution), which order as the floats do (-0.0 just below
# +0.0). An integer max is a reduction LLVM vectorises without fast-math flags (a float max
# needs `nnan`), so it runs in the scale and mask loop, 16 lanes wide (Note [Wide vectors]),
# instead of a pass of its own in 8 scalar lanes: a block of 12 heads x 128 x 128 float32
# attention scores with a padding mask, 1 thread, min of 200 calls on the quiet machine:
# 207-221 us -> 155-173 us (the max pass alone cost ~55 us; 16 lanes without order keys gained
# nothing). The max is the same value as before (and as `_small_softmax`'s np.fmax), so each
# probability is too; a NaN score with its sign bit clear becomes the max, one with it set is
# passed over, and either way the row comes out NaN through exp and the sum, as in the
# reference. The key is cast back to int32: numba widens int32 shifts and xors to int64, so the
# max ran 8 int64 lanes per AVX-512 register (vpmovsxdq, vpmaxsq) instead of 16 int32 ones
# (vpmaxsd); the same block, 1 thread, one process: 180 -> 153 us (same keys, same max).
_ORDER_KEYS = {
    single: f"""
KEY_LOWEST = np.{itype}({-(1 << (bits - 1))})
KEY_MAGNITUDE = np.{itype}({(1 << (bits - 1)) - 1})
KEY_SIGN = np.{itype}({bits - 1})


@numba.njit(inline="always")
def order_key(x):
    i = np.{ftype}(x).view(np.{itype})
    return np.{itype}(i ^ ((i >> KEY_SIGN) & KEY_MAGNITUDE))  # not widened to int64


@numba.njit(inline="always")
def key_value(k):
    return np.{itype}(k ^ ((k >> KEY_SIGN) & KEY_MAGNITUDE)).view(np.{ftype})
"""
    for single, itype, ftype, bits in (
        (True, "int32", "float32", 32),
        (False, "int64", "float64", 64),
    )
}


# float32: every pass vectorises (Note [Vectorised rows])
_SOFTMAX_32 = (
    _EXP32
    + _lanes("row_sum", "a", "np.float64(a[j])")
    + _ORDER_KEYS[True]
    + """

def softmax_forward(s, m, has_mask, scale, out):
    # s, out: (A, B, C, S) C-contiguous float32; m: (ma, mb, mc, ms), each 1 or s's dim
    na, nb, nc, n = s.shape
    ma, mb, mc, ms = m.shape
    sc = np.float32(scale)
    for flat in prange(na * nb * nc):
        wide_vectors()  # Note [Wide vectors]
        a = flat // (nb * nc)
        bb = (flat // nc) % nb
        c = flat % nc
        ia = a if ma > 1 else 0
        ib = bb if mb > 1 else 0
        ic = c if mc > 1 else 0
        si = s[a, bb, c]
        oi = out[a, bb, c]
        mi = m[ia, ib, ic]
        # the max over order keys in the scale and mask loop (Note [Row max over order keys])
        top = KEY_LOWEST
        if has_mask and ms > 1:
            for j in range(n):
                x = si[j] * sc + mi[j]
                oi[j] = x
                key = order_key(x)
                top = key if key > top else top
        elif has_mask:
            mv = mi[0]
            for j in range(n):
                x = si[j] * sc + mv
                oi[j] = x
                key = order_key(x)
                top = key if key > top else top
        else:
            for j in range(n):
                x = si[j] * sc
                oi[j] = x
                key = order_key(x)
                top = key if key > top else top
        largest = key_value(top)
        for j in range(n):
            oi[j] = exp32(oi[j] - largest)
        inverse = 1.0 / row_sum(oi, n)
        for j in range(n):
            oi[j] = np.float32(np.float64(oi[j]) * inverse)
"""
)

# fused_dropout's keep test, shared by every kernel that makes or rebuilds its mask (dropout
# here, ember/backend/dropout_norm_kernels.py): element `index` (flat, from 0) is kept where
# the top 24 bits of splitmix64(seed + (index + 1) * golden) reach the threshold
KEEP = """
@numba.njit(inline="always")
def kept(base, limit, index):
    z = base + (index + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)) >= limit
"""

_DROPOUT = (
    KEEP
    + """

def dropout_forward(x, seed, threshold, scale, out):
    rows, d = x.shape
    base = np.uint64(seed)
    limit = np.uint64(threshold)
    for i in prange(rows):
        for j in range(d):
            if kept(base, limit, np.uint64(i * d + j)):
                out[i, j] = x[i, j] * scale
            else:
                out[i, j] = 0.0
"""
)

_HEADER = (
    "import math\nimport numba\nimport numpy as np\nfrom numba import prange\n"
    "from ember.backend.transformer_kernels import wide_vectors_intrinsic\n"
    "wide_vectors = wide_vectors_intrinsic()\n"
)


# Note [Wide vectors]: LLVM's x86 cost model prefers 256-bit vectors on the AVX-512 server CPUs
# (its tuning for Skylake-X to Emerald Rapids), so a numba loop runs 8 float32 lanes where the
# CPU has 16. A kernel that calls `wide_vectors()` at the top of its row loop (an intrinsic
# that emits no code) marks the LLVM function it lands in (the serial kernel, or the parallel
# build's outlined row loop) with "prefer-vector-width"="512", as clang's
# -mprefer-vector-width=512 does, for that function only: numba's other kernels and the
# process's own numba code keep their settings. On a CPU without AVX-512 the attribute is a
# no-op. Elementwise results do not depend on the width (each lane rounds as the scalar code
# does); a fast-math sum would, so only kernels without one use it. Float32 GELU at 1 thread,
# 4096 x 1536: forward 4.5 -> 3.0 ms, backward 11.1 -> 7.2 ms (measured with the whole process
# at 512 bits, NUMBA_CPU_FEATURES=...,-prefer-256-bit, which is what this does per function).
# The attribute is added to llvmlite's attribute set past its list of known names (it has no
# entry for string attributes); if that fails the intrinsic does nothing.
def wide_vectors_intrinsic():
    """The `wide_vectors()` intrinsic of Note [Wide vectors] (numba is loaded)."""
    made = _KERNELS.get("wide_vectors")
    if made is not None:
        return made
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def wide_vectors(typingctx):
        def codegen(context, builder, signature, args):
            try:
                set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            except Exception:  # noqa: BLE001 - another llvmlite: the default width
                pass
            return context.get_dummy_value()

        return types.none(), codegen

    _KERNELS["wide_vectors"] = wide_vectors
    return wide_vectors


def _source(group: str) -> str:
    """The source of one kernel group; `group` names the variant ("gelu:1:0:1" = tanh,
    float64, with bias; "softmax32" / "softmax64")."""
    if group.startswith("gelu:"):
        approximate, single, has_bias = (flag == "1" for flag in group.split(":")[1:])
        return _gelu_source(approximate, single, has_bias)
    if group in _GROUPS:
        return _GROUPS[group]()
    return {
        "layer_norm": _SUM_BLOCKS + _LAYER_NORM,
        "layer_norm32": layer_norm32_source(),
        "softmax32": _SOFTMAX_32 + _SOFTMAX_BACKWARD_32,
        "softmax64": _SOFTMAX_64 + _SOFTMAX_BACKWARD,
        "dropout": _DROPOUT,
    }[group]


_GROUPS: dict = {}  # kernel groups that other kernel files add (`register_group`)


def register_group(group: str, source) -> None:
    """Add a kernel group whose source `source()` returns (built by `_kernel` as this file's
    groups are: the same header, serial and parallel builds, numba's disk cache)."""
    _GROUPS[group] = source


def layer_norm32_source() -> str:
    """The float32 layer-norm kernels with their inlined row functions (`row_stats`,
    `input_grad_row`, `param_grad_row`; Note [Float32 layer norm]), for kernels that reuse them."""
    return _SUM_BLOCKS + _LAYER_NORM_32


_KERNELS: dict = {}


def _threads():
    """Start numba's threads with ember's thread budget (Note [Thread budget] in
    ember/backend/parallel.py)."""
    try:
        numba_kernels.start_threads()
    except Exception:  # noqa: BLE001 - numba's threading layer could not start: serial
        pass


def _kernel(group: str, name: str, parallel: bool, contract: bool = False):
    """The compiled kernel, or None without numba (Note [Row-parallel kernels]); `contract`:
    built with fused multiply-add contraction (Note [Contracted GELU])."""
    if not numba_kernels.available():
        return None
    key = (group, name, parallel, contract)
    kernel = _KERNELS.get(key)
    if kernel is None:
        numba = numba_kernels._load()
        source = _HEADER + _source(group)
        if not parallel:
            # the serial build is its own source, so its own cache file: numba's disk cache
            # does not tell a parallel build from a serial one of the same function, and a
            # serial call (a forked child) that loads the parallel machine code is killed
            source = source.replace(" in prange(", " in range(")
        if contract:  # nor one built with other flags: a source (a cache file) of its own
            source += "\n# built with fused multiply-add contraction\n"
        fn, on_disk = numba_kernels._define(numba, source, name)
        kernel = numba.njit(
            parallel=parallel,
            nogil=True,
            cache=on_disk,
            error_model="numpy",
            fastmath={"contract"} if contract else False,
        )(fn)
        if parallel:
            _threads()
        _KERNELS[key] = kernel
    return kernel


def _pick(group, name, size, contract=False):
    if size < COMPILED_MIN_SIZE:  # the NumPy reference (Note [Vectorised rows])
        return None
    # the serial build in a forked child (GNU OpenMP kills one that starts a parallel region
    # after its parent's threads ran) and on an overloaded machine (Note [Overloaded machine])
    in_parallel = (
        size >= PARALLEL_MIN_SIZE and not parallel.in_forked_child() and not parallel.overloaded()
    )
    return _kernel(group, name, in_parallel, contract)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _rows(a):
    """a as a C-contiguous (rows, last dim) array."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1])


def _floats(*arrays):
    return all(a is None or a.dtype in _FLOATS for a in arrays)


def _empty_bias(dtype):
    return np.zeros(1, dtype)


def _gelu_group(approximate, dtype, b):
    return f"gelu:{int(approximate == 'tanh')}:{int(dtype == np.float32)}:{int(b is not None)}"


def _softmax_group(dtype):
    return "softmax32" if np.dtype(dtype) == np.float32 else "softmax64"


# Each function returns None where its kernel does not apply (no numba, other dtypes, empty or
# 0-d input): the op then runs its reference forward.
def gelu(x, b, approximate):
    if x.ndim == 0 or x.size == 0:
        return None
    dtype = x.dtype
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[-1]:
            return None
        if b.dtype != dtype:
            if not _floats(x, b):
                return None
            dtype = np.result_type(x, b)
    if dtype not in _FLOATS:
        return None
    group = _gelu_group(approximate, dtype, b)
    if x.size < COMPILED_MIN_SIZE:
        if dtype != np.float32:
            return None  # the reference (Note [Kernel-exact small paths])
        xs = _plain(_rows(x.astype(dtype, copy=False)))
        bias = _empty_bias(dtype) if b is None else _plain(b.astype(dtype, copy=False))
        d = 1 if b is None else 8
        example = lambda: (np.zeros((1, 8), dtype), np.zeros(d, dtype), np.empty((1, 8), dtype))  # noqa: E731
        kernel = _small_kernel(group, "gelu_forward", dtype, example)
        if kernel is None:
            return _small_gelu(xs, None if b is None else bias, approximate).reshape(x.shape)
        # no empty_apart: a small GELU is bound by its arithmetic, not its stores (Note [Small
        # call costs])
        out = np.empty(xs.shape, dtype)
    else:
        # large inputs: the contracted build (Note [Contracted GELU]); small ones above keep
        # the serial build that equals their NumPy twin
        kernel = _pick(group, "gelu_forward", x.size, contract=True)
        if kernel is None:
            return None
        xs = _rows(x.astype(dtype, copy=False))
        bias = _empty_bias(dtype) if b is None else b.astype(dtype, copy=False)
        out = empty_apart(xs.shape, dtype, xs)  # Note [Store aliasing]
    kernel(xs, bias, out)
    return out.reshape(x.shape)


def gelu_grad(g, x, b, approximate):
    if x.ndim == 0 or x.size == 0 or g.shape != x.shape or not _floats(g, x, b):
        return None
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[-1]):
        return None
    dtype = np.result_type(g, x) if b is None else np.result_type(g, x, b)
    kernel = _pick(_gelu_group(approximate, dtype, b), "gelu_backward", x.size, contract=True)
    if kernel is None:
        return None
    xs = _rows(x.astype(dtype, copy=False))
    gs = _rows(g.astype(dtype, copy=False))
    out = empty_apart(xs.shape, dtype, xs, gs)
    bias = _empty_bias(dtype) if b is None else b.astype(dtype, copy=False)
    kernel(gs, xs, bias, out)
    return out.reshape(x.shape)


def _norm_group(dtype, g=None):
    """The float32 kernels where every operand is float32 (Note [Float32 layer norm])."""
    single = dtype == np.float32 and (g is None or g.dtype == np.float32)
    return "layer_norm32" if single else "layer_norm"


def _norm_args(x, r, *params):
    if x.ndim == 0 or x.size == 0:
        return None
    # plain loops, not generators: a short row's whole norm takes a few microseconds
    width = x.shape[-1:]
    dtype = x.dtype
    for p in params:
        if p.shape != width:
            return None
        if p.dtype != dtype:
            dtype = None
    if r is not None:
        if r.shape != x.shape:
            return None
        if r.dtype != dtype:
            dtype = None
    if dtype is None:
        if not _floats(x, r, *params):
            return None
        dtype = np.result_type(x, *params) if r is None else np.result_type(x, r, *params)
    elif dtype not in _FLOATS:
        return None
    xs = _rows(x.astype(dtype, copy=False))
    rs = xs if r is None else _rows(r.astype(dtype, copy=False))
    return dtype, xs, rs


def layer_norm(x, r, w, b, eps):
    args = _norm_args(x, r, w, b)
    if args and x.size < COMPILED_MIN_SIZE:
        return _small_layer_norm_call(args, r is not None, w, b, float(eps), x.shape)
    kernel = args and _pick(_norm_group(args[0]), "layer_norm_forward", x.size)
    if not kernel:
        return None
    dtype, xs, rs = args
    out = empty_apart(xs.shape, dtype, xs, rs)
    kernel(
        xs, rs, r is not None, w.astype(dtype, copy=False), b.astype(dtype, copy=False), eps, out
    )
    return out.reshape(x.shape)


def layer_norm_input_grad(g, x, r, w, eps):
    if g.shape != x.shape:
        return None
    args = _norm_args(x, r, w)
    if not args or not _floats(g):
        return None
    group = _norm_group(args[0], g)
    together = getattr(_together, "active", False) and group == "layer_norm32"
    name = "layer_norm_grads" if together else "layer_norm_input_grad"
    kernel = _pick(group, name, x.size)
    if not kernel:
        return None
    dtype, xs, rs = args
    gs = _rows(g)
    out = empty_apart(xs.shape, np.result_type(dtype, g), gs, xs, rs)
    # C-contiguous: the parameter-gradient kernel's row sums run the same compiled code (Note
    # [Float32 layer norm backward])
    w = np.ascontiguousarray(w.astype(dtype, copy=False))
    if not together:
        kernel(gs, xs, rs, r is not None, w, eps, out)
        return out.reshape(x.shape)
    partial, sums = _param_sums(xs, group)
    kernel(gs, xs, rs, r is not None, w, eps, _BLOCK, partial, out, sums)
    _together.saved = (g, x, r, eps, sums.astype(np.result_type(xs.dtype, g)))
    return out.reshape(x.shape)


def _param_sums(xs, group):
    """The per-block partial sums (float32 for the float32 kernels) and the (2, D) result."""
    blocks = -(-xs.shape[0] // _BLOCK)
    partial = np.float32 if group == "layer_norm32" else np.float64
    return np.empty((blocks, 2, xs.shape[1]), partial), np.empty((2, xs.shape[1]), np.float64)


def layer_norm_param_grad(g, x, r, eps):
    if g.shape != x.shape:
        return None
    saved = getattr(_together, "saved", None)
    if saved is not None:  # Note [Layer norm gradients together]
        _together.saved = None
        if saved[0] is g and saved[1] is x and saved[2] is r and saved[3] == eps:
            return saved[4]
    args = _norm_args(x, r)
    if not args or not _floats(g):
        return None
    group = _norm_group(args[0], g)
    kernel = _pick(group, "layer_norm_param_grad", x.size)
    if not kernel:
        return None
    dtype, xs, rs = args
    partial, out = _param_sums(xs, group)
    kernel(_rows(g), xs, rs, r is not None, eps, _BLOCK, partial, out)
    return out.astype(np.result_type(dtype, g))


# Note [Layer norm gradients together]: a layer norm's backward needs the input gradient and
# the parameter gradient of the same (g, x, r); as two kernels, each reads g, x and r from
# memory and computes each row's moments (float32, 4096 x 384 with residual: ~1.0 ms each at
# 1 thread, PyTorch's one backward kernel ~0.9 ms for both). Inside
# `layer_norm_grads_together()` (the fused op's VJP when both are wanted) the input-gradient
# call runs `layer_norm_grads`, which computes both in one pass, row by row with the same
# inlined row code as the two kernels and the same blocks of rows, so its results equal theirs
# bit for bit (tests/ops/test_fused.py); it keeps the parameter gradient for the
# parameter-gradient call that follows with the same arrays (the same objects, nothing runs
# between the two calls in the VJP), which takes it instead of running its kernel. Any other
# call (another thread, other arrays, no context, float64) runs its own kernel as before.
# 4096 x 384 with residual, both gradients, 1 / 2 threads (busy machine, minimum of 20): two
# kernels 2.4 / 1.25 ms, together 2.0 / 1.08 ms, and with Note [Wide vectors] on the float32
# layer-norm kernels 1.8 / 1.02 ms (PyTorch ~0.9 / ~0.57 ms); in float32 (Note [Float32 layer
# norm backward]) the row statistics are computed once a row: 1.2 / 0.69 ms.
_together = threading.local()


@contextlib.contextmanager
def layer_norm_grads_together():
    """Compute the layer-norm input and parameter gradients of the calls inside in one pass
    (Note [Layer norm gradients together])."""
    _together.active, _together.saved = True, None
    try:
        yield
    finally:
        _together.active, _together.saved = False, None


def softmax(s, m, scale):
    """softmax(s * scale + m) over the last dim; m (additive, float) broadcasts to s."""
    if s.ndim == 0 or s.ndim > 4 or s.size == 0 or not _floats(s, m):
        return None
    if m is not None and (m.ndim > s.ndim or m.shape[-1] not in (1, s.shape[-1])):
        return None
    dtype = s.dtype if m is None else np.result_type(s, m)
    small = s.size < COMPILED_MIN_SIZE
    if small and dtype != np.float32:
        return None  # the reference (Note [Kernel-exact small paths])
    kernel = None if small else _pick(_softmax_group(dtype), "softmax_forward", s.size)
    if kernel is None and not small:
        return None
    lead = (1,) * (4 - s.ndim)
    s4 = np.ascontiguousarray(s.astype(dtype, copy=False)).reshape(lead + s.shape)
    if m is None:
        m4 = np.zeros((1, 1, 1, 1), dtype)
    else:
        m4 = m.astype(dtype, copy=False).reshape((1,) * (4 - m.ndim) + m.shape)
        if any(md not in (1, sd) for md, sd in zip(m4.shape, s4.shape)):
            return None
    if small:
        s4, m4 = _plain(s4), _plain(m4)
        example = lambda: (  # noqa: E731
            np.zeros((1, 1, 1, 8), dtype),
            np.zeros((1, 1, 1, 8), dtype),
            True,
            1.0,
            np.empty((1, 1, 1, 8), dtype),
        )
        kernel = _small_kernel("softmax32", "softmax_forward", dtype, example)
        if kernel is None:
            return _small_softmax(s4, m4, m is not None, float(scale)).reshape(s.shape)
    out = empty_apart(s4.shape, dtype, s4)  # Note [Store aliasing]
    kernel(s4, m4, m is not None, float(scale), out)
    return out.reshape(s.shape)


def softmax_grad(g, y, scale):
    if y.ndim == 0 or y.size == 0 or g.shape != y.shape or not _floats(g, y):
        return None
    dtype = np.result_type(g, y)
    kernel = _pick(_softmax_group(dtype), "softmax_backward", y.size)
    if kernel is None:
        return None
    out = empty_apart(y.shape, dtype, g, y)  # Note [Store aliasing]
    kernel(_rows(g), _rows(y), scale, out.reshape(-1, y.shape[-1]))
    return out


def dropout(x, seed, threshold, scale):
    kept = getattr(_kept_dropout, "value", None)
    if kept is not None:  # computed by the pass that made x (`keep_dropout`)
        _kept_dropout.value = None
        if kept[0] is x and kept[1] == seed and kept[2] == threshold:
            return kept[3]
    if x.size == 0 or not _floats(x):
        return None
    kernel = _pick("dropout", "dropout_forward", x.size)
    if kernel is None:
        return None
    xs = np.ascontiguousarray(x).reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    out = empty_apart(xs.shape, x.dtype, xs)
    kernel(xs, int(seed), int(threshold), scale, out)
    return out.reshape(x.shape)


_kept_dropout = threading.local()


def keep_dropout(kept) -> None:
    """`kept` = (x, seed, threshold, result): the next `dropout` call on this thread, if it is
    for this very array, seed and threshold, returns `result` (which a kernel that made x
    computed in the same pass: the backward of fused_dropout_add_layer_norm, Note [Dropout,
    add and norm in one pass] in ember/backend/dropout_norm_kernels.py); None forgets it."""
    _kept_dropout.value = kept


# --- small inputs ---------------------------------------------------------------------------
# Note [Kernel-exact small paths]: below COMPILED_MIN_SIZE elements the forwards of exact GELU
# (float32), layer norm (float32 and float64) and softmax (float32) run `_small_*`: NumPy
# passes that perform the compiled kernel's own operations in its own order and precision
# (float64 values, the lane sums of Note [Vectorised rows] as a sum over 8 columns, exp32 and
# GELU's float32 erf written out; the serial kernels that small inputs use are built without
# fast-math, so no fused multiply-add either; large GELU inputs: Note [Contracted GELU]).
# Their results equal the kernel's bit for bit (tests/ops/test_fused.py checks it on edge
# values too), so which of the two runs a call cannot change a result: a short request's GELU
# costs ~17 ns per element in these passes against ~1.5 compiled, and once the serial kernels
# have loaded the small inputs use them. They load in the background (`_warm_up`, a daemon
# thread) after WARM_UP_AFTER small calls in the process, from numba's disk cache or compiled
# there: a process's first calls never wait for numba (Note [Fast erf]), a process that keeps
# answering short requests gets the compiled kernels, and a training run resumed in a fresh
# process still equals the uninterrupted one (tests/train/test_checkpoints.py; a switch from
# the earlier NumPy reference broke that). Float32 tanh GELU (Note [Float32 tanh GELU]) has its
# twin too, and so has the float32 softmax of small attention (Note [Small attention] in
# attention_kernels.py). Other variants (float64 GELU and softmax: libm's erf, tanh and exp,
# which NumPy does not reproduce) and every backward keep the reference forward below
# COMPILED_MIN_SIZE. Only the serial builds serve small inputs. A small
# float32 layer norm follows the general kernels (group "layer_norm"), not the one-pass float32
# kernels of large inputs (Note [Float32 layer norm]): each size class has one set of bits.
#
# Note [Small call costs]: at MiniLM 1 x 16 a call's Python around the kernel is as long as the
# kernel: the GELU over (16, 1536) computes in ~11 us, and `empty_apart` (Note [Store aliasing]
# in ember/backend/memory.py) spent ~8 us placing its 96 KiB result apart from the input (the
# heap puts it 864 bytes above, modulo 4 KiB, on every call), so small GELUs take `np.empty`:
# the kernel's time did not move with the output 16 bytes to 4 KiB above the input, modulo 1
# MiB or 4 KiB (1 thread, min of 7 x 5000: 10.7-12.6 us at every offset; the stall of Note
# [Store aliasing] needs a memory-bound pass). `_norm_args` checks with plain loops, not
# generators (3.0 -> 1.6 us). One call of `gelu` (with bias) 23 -> 16 us, of `layer_norm`
# (with residual; and Note [Layer norm row buffer]) 17-19 -> 10 us (PyTorch: bias add + GELU
# ~20 us, add + layer_norm ~7 us, in the same runs).
WARM_UP_AFTER = 16  # small calls before the kernels load in the background; None: never
# (EMBER_KERNEL_WARM_UP=0 turns the warm-up off; the small inputs then keep the NumPy passes).
# A fork waits for a warm-up in progress: a child must not inherit numba half imported or
# LLVM's locks held by a thread it does not have.
_small_state: dict = {"calls": 0, "thread": None, "failed": False, "wanted": {}}
_READY: dict = {}  # (group, name, dtype char) -> the serial kernel, once run on warm-up arguments


def _plain(a):
    """`a` as the small paths pass it to a kernel: C-contiguous and writeable (numba types a
    read-only or strided array differently: another specialisation, compiled on the call)."""
    return a if a.flags.c_contiguous and a.flags.writeable else a.copy(order="C")


def _small_layer_norm_call(args, has_residual, w, b, eps, shape):
    dtype, xs, rs = args
    xs, rs = _plain(xs), _plain(rs)
    w, b = _plain(w.astype(dtype, copy=False)), _plain(b.astype(dtype, copy=False))

    def example():
        a = np.zeros((1, 8), dtype)
        return a, a, True, np.ones(8, dtype), np.zeros(8, dtype), 1e-5, np.empty((1, 8), dtype)

    kernel = _small_kernel("layer_norm", "layer_norm_forward", dtype, example)
    if kernel is None:
        return _small_layer_norm(xs, rs, has_residual, w, b, eps, dtype).reshape(shape)
    out = np.empty(xs.shape, dtype)
    kernel(xs, rs, has_residual, w, b, eps, out)
    return out.reshape(shape)


def _small_kernel(group, name, dtype, example):
    """The loaded serial kernel for a small input of `dtype`, else None (and the call counts
    towards the background warm-up, which runs `example()`'s arguments through it; Note
    [Kernel-exact small paths])."""
    key = (group, name, dtype.char)  # dtype: a np.dtype (every caller's result_type)
    kernel = _READY.get(key)
    if kernel is not None and not numba_kernels._state["forced_off"]:
        return kernel
    state = _small_state
    state["wanted"].setdefault(key, example)
    state["calls"] += 1
    if (
        state["thread"] is None
        and not state["failed"]
        and WARM_UP_AFTER is not None
        and state["calls"] >= WARM_UP_AFTER
        and not parallel.in_forked_child()
    ):
        if not flag("EMBER_KERNEL_WARM_UP", True):  # tests/conftest.py: no background builds
            state["failed"] = True
            return None
        import threading

        thread = threading.Thread(target=_warm_up, name="ember-kernel-warm-up", daemon=True)
        state["thread"] = thread
        thread.start()
    return None


def _warm_up():
    """Load (or compile) the serial kernels the small calls asked for and run each once on
    arguments of the types the small paths pass, so that no later call compiles."""
    state = _small_state
    try:
        if not numba_kernels.available():
            state["failed"] = True
            return
        while True:
            pending = [k for k in list(state["wanted"]) if k not in _READY]
            if not pending:
                return
            for key in pending:
                kernel = _kernel(key[0], key[1], False)
                kernel(*state["wanted"][key]())
                _READY[key] = kernel
    except Exception:  # noqa: BLE001 - the small inputs keep their NumPy path
        state["failed"] = True
    finally:
        state["thread"] = None


def _finish_warm_up_before_fork():
    thread = _small_state["thread"]
    if thread is not None:
        thread.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_finish_warm_up_before_fork)


def _lane_sum(a):
    """The sum over the last dim of (rows, n) float64 `a` as `_lanes` adds it: element j into
    lane j % 8 in order, the lanes combined pairwise (Note [Vectorised rows])."""
    rows, n = a.shape
    n8 = n - n % 8
    # lane l of row i sums a[i, l], a[i, 8 + l], ... in order: NumPy reduces over the leading
    # axis of a contiguous (n // 8, rows * 8) array one slice after another
    blocks = np.ascontiguousarray(a[:, :n8].reshape(rows, n8 // 8, 8).transpose(1, 0, 2))
    s = np.add.reduce(blocks.reshape(n8 // 8, rows * 8), axis=0, initial=0.0).reshape(rows, 8)
    for j in range(n8, n):  # the tail goes into lane 0
        s[:, 0] += a[:, j]
    pairs = s[:, 0::2] + s[:, 1::2]
    halves = pairs[:, 0::2] + pairs[:, 1::2]
    return halves[:, 0] + halves[:, 1]


def _small_gelu(xs, bias, approximate="none"):
    """gelu_forward of the float32 kernel, exact or tanh, with or without bias (Note [Float32
    GELU], Note [Float32 tanh GELU]): its float32 operations in its order (Note
    [Kernel-exact small paths])."""
    from ember.backend.numpy_backend import _ERF_DENOMINATOR, _ERF_NUMERATOR

    f = np.float32
    u = xs + bias if bias is not None else xs.copy()
    if approximate == "tanh":
        c = np.where(u > f(20.0), f(20.0), u)  # NaN passes, as through the kernel's selects
        c = np.where(c < f(-20.0), f(-20.0), c)
        t = c * c
        t *= c
        t *= f(0.044715)
        t += c
        t *= f(-1.5957691216057308)
        with np.errstate(invalid="ignore"):  # NaN stays NaN
            far = t > f(80.0)
            e = _exp32(np.where(far, f(80.0), t))
        e += f(1.0)
        s = f(1.0) / e
        s[far] = 0.0
        with np.errstate(invalid="ignore"):  # -inf * 0 gives NaN, as in the kernel
            u *= s
        return u
    z = u * f(_SQRT_HALF)
    np.clip(z, f(-4.0), f(4.0), out=z)  # a NaN u gives NaN whatever erf gives, as in the kernel
    z2 = z * z
    p = z2 * f(_ERF_NUMERATOR[0])
    p += f(_ERF_NUMERATOR[1])
    for c in _ERF_NUMERATOR[2:]:
        p *= z2
        p += f(c)
    q = z2 * f(_ERF_DENOMINATOR[0])
    q += f(_ERF_DENOMINATOR[1])
    for c in _ERF_DENOMINATOR[2:]:
        q *= z2
        q += f(c)
    p *= z
    p /= q
    p += f(1.0)
    u *= f(0.5)
    with np.errstate(invalid="ignore"):  # -inf * 0 gives NaN, as in the kernel
        u *= p
    return u


def _small_layer_norm(xs, rs, has_residual, w, b, eps, dtype):
    """layer_norm_forward (Note [Kernel-exact small paths])."""
    s = xs.astype(np.float64)
    if has_residual:
        s += rs
    d = s.shape[1]
    mean = _lane_sum(s) / d
    s -= mean[:, None]
    var = _lane_sum(s * s) / d
    rstd = 1.0 / np.sqrt(var + eps)
    s *= rstd[:, None]
    s *= w.astype(np.float64)
    s += b
    return s.astype(dtype)


_E32 = {
    name: np.float32(value)
    for name, value in (
        ("log2e", 1.4426950408889634),
        ("ln2_hi", 0.693359375),
        ("ln2_lo", -2.12194440e-4),
        ("lo", -87.0),
        ("hi", 88.5),
    )
}
_EXP32_P = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2)
    + (1.6666665459e-1, 5.0000001201e-1)
)


def _exp32(x):
    """exp32 of _EXP32 on a float32 array, operation for operation."""
    e = _E32
    z = np.clip(x, e["lo"], e["hi"])
    n = z * e["log2e"]
    n += np.float32(0.5)
    np.floor(n, out=n)
    r = z - n * e["ln2_hi"]
    r -= n * e["ln2_lo"]
    p = r * _EXP32_P[0]
    p += _EXP32_P[1]
    for c in _EXP32_P[2:]:
        p *= r
        p += c
    p *= r * r
    p += r
    p += np.float32(1.0)
    n += np.float32(127.0)
    p *= (n.astype(np.int32) << 23).view(np.float32)
    p[x < e["lo"]] = 0.0
    p[x > e["hi"]] = np.inf
    nan = np.isnan(x)
    if nan.any():
        p[nan] = x[nan]
    return p


def _small_softmax(s4, m4, has_mask, scale):
    """softmax_forward of the float32 kernel (Note [Kernel-exact small paths])."""
    z = s4 * np.float32(scale)
    if has_mask:
        z += m4
    n = z.shape[-1]
    rows = z.reshape(-1, n)
    with np.errstate(invalid="ignore"):  # row_max ignores NaN; an all -inf row gives NaN
        top = np.fmax.reduce(rows, axis=1, initial=-np.inf)
        e = _exp32(rows - top[:, None])
    inverse = 1.0 / _lane_sum(e.astype(np.float64))
    return (e * inverse[:, None]).astype(np.float32).reshape(z.shape)
