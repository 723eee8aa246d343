"""Fast CPU kernels for the fused LSTM and GRU recurrences, registered by `ember.ops.rnn`.

The reference forwards and gradients in `ember.ops.rnn` (NumPy, about a dozen array ops per
time step, each on strided gate slices) are the spec. Here each time step is one NumPy GEMM
for h W_hh^T (BLAS does that best) and one compiled loop (numba, the `fast` extra) for all of
the step's pointwise work: gate activations, the cell update, the masking of finished rows,
and in the backward pass the gate gradients and the carried state gradients. The LSTM's
forward keeps its gate activations in its output for the backward pass; the GRU's backward
rebuilds its gates with one GEMM over all steps. A float32 LSTM step is one GEMM and one call
(Note [Vectorized tanh]); float64 steps call NumPy's tanh between compiled loops.
Without numba (or with EMBER_NO_NUMBA=1 / EMBER_FAST_KERNELS=0) each function returns None
and the op runs its reference. tests/ops/test_kernels.py checks them against the references.
"""

from __future__ import annotations

import numpy as np

from ember.backend import numba_kernels

_SOURCES = {
    # Note [Sigmoid through tanh]: sigmoid(x) = 0.5 tanh(x / 2) + 0.5. The sigmoid gates' rows
    # of W_hh and of the projected input are halved once, so one vectorized np.tanh over the
    # step's whole gate block gives every activation (NumPy's tanh is SIMD; a compiled scalar
    # loop calls libm once per element and is ~10x slower); the loops here only combine.
    # LSTM, part 1: c = f c_prev + i g from the activated gates a (i, f, o as 0.5 a + 0.5)
    # (acts_out: the gate activations i, f, g, o kept for the backward pass; 0 where masked)
    "lstm_cell": """\
def lstm_cell(a, c_prev, active, c_out, acts_out):
    B, G = a.shape
    H = G // 4
    for b in range(B):
        if not active[b]:
            for j in range(H):
                c_out[b, j] = c_prev[b, j]
            for j in range(G):
                acts_out[b, j] = 0.0
            continue
        for j in range(H):
            i = 0.5 * a[b, j] + 0.5
            f = 0.5 * a[b, H + j] + 0.5
            g = a[b, 2 * H + j]
            c_out[b, j] = f * c_prev[b, j] + i * g
            acts_out[b, j] = i
            acts_out[b, H + j] = f
            acts_out[b, 2 * H + j] = g
            acts_out[b, 3 * H + j] = 0.5 * a[b, 3 * H + j] + 0.5
""",
    # LSTM, part 2: h = o tanh(c)
    "lstm_hidden": """\
def lstm_hidden(a, tanh_c, h_prev, active, h_out):
    B, G = a.shape
    H = G // 4
    for b in range(B):
        if not active[b]:
            for j in range(H):
                h_out[b, j] = h_prev[b, j]
            continue
        for j in range(H):
            h_out[b, j] = (0.5 * a[b, 3 * H + j] + 0.5) * tanh_c[b, j]
""",
    # one step back. dh, dc carry the state gradients in and out; rec is the recurrent part
    # of dh that the previous step back computed (its d_gates W_hh, added here so that it
    # needs no NumPy call of its own); dh leaves holding only the carried part. Each row is
    # done in passes over contiguous row slices with a few arrays each, which LLVM vectorizes
    # (one loop over all the arrays at once it did not: too many possible aliases to check).
    "lstm_step_grad": """\
def lstm_step_grad(out_t, tanh_c, c_prev, g_t, rec, active, dh, dc, d_gates):
    B, G = d_gates.shape
    H = G // 4
    dht = np.empty(H, d_gates.dtype)
    dca = np.empty(H, d_gates.dtype)
    for b in range(B):
        g = g_t[b]
        r = rec[b]
        dhb = dh[b]
        dcb = dc[b]
        dg = d_gates[b]
        if not active[b]:
            for j in range(H):
                dhb[j] += g[j] + r[j]
                dcb[j] += g[H + j]
            for j in range(G):
                dg[j] = 0.0
            continue
        a = out_t[b]  # [h, c, i, f, g, o]
        tc = tanh_c[b]
        cp = c_prev[b]
        for j in range(H):
            dht[j] = g[j] + dhb[j] + r[j]
        for j in range(H):
            dca[j] = g[H + j] + dcb[j] + dht[j] * a[5 * H + j] * (1.0 - tc[j] * tc[j])
        for j in range(H):
            i = a[2 * H + j]
            gg = a[4 * H + j]
            dg[j] = dca[j] * gg * i * (1.0 - i)
            dg[2 * H + j] = dca[j] * i * (1.0 - gg * gg)
        for j in range(H):
            f = a[3 * H + j]
            dg[H + j] = dca[j] * cp[j] * f * (1.0 - f)
            dcb[j] = dca[j] * f
        for j in range(H):
            o = a[5 * H + j]
            dg[3 * H + j] = dht[j] * tc[j] * o * (1.0 - o)
            dhb[j] = 0.0
""",
    # GRU, part 1: from rz = tanh((x + hp) / 2) over the r, z columns, pre_n = x_n + r hp_n
    "gru_candidate": """\
def gru_candidate(x_t, hp, rz, pre_n):
    B, G = x_t.shape
    H = G // 3
    for b in range(B):
        for j in range(H):
            pre_n[b, j] = x_t[b, 2 * H + j] + (0.5 * rz[b, j] + 0.5) * hp[b, 2 * H + j]
""",
    # GRU, part 2: h = n + z (h_prev - n)
    "gru_hidden": """\
def gru_hidden(rz, n, h_prev, active, h_out):
    B, H = n.shape
    for b in range(B):
        if not active[b]:
            for j in range(H):
                h_out[b, j] = h_prev[b, j]
            continue
        for j in range(H):
            z = 0.5 * rz[b, H + j] + 0.5
            h_out[b, j] = n[b, j] + z * (h_prev[b, j] - n[b, j])
""",
    "gru_step_grad": """\
def gru_step_grad(rz, n, hp, h_prev, g_t, active, dh, d_x, d_hp):
    B, G = hp.shape
    H = G // 3
    for b in range(B):
        if not active[b]:
            for j in range(H):
                dh[b, j] += g_t[b, j]
            for j in range(G):
                d_x[b, j] = 0.0
                d_hp[b, j] = 0.0
            continue
        for j in range(H):
            r = 0.5 * rz[b, j] + 0.5
            z = 0.5 * rz[b, H + j] + 0.5
            nv = n[b, j]
            hn = hp[b, 2 * H + j]
            dh_t = g_t[b, j] + dh[b, j]
            dn = dh_t * (1.0 - z) * (1.0 - nv * nv)
            dz = dh_t * (h_prev[b, j] - nv) * z * (1.0 - z)
            dr = dn * hn * r * (1.0 - r)
            d_x[b, j] = dr
            d_x[b, H + j] = dz
            d_x[b, 2 * H + j] = dn
            d_hp[b, j] = dr
            d_hp[b, H + j] = dz
            d_hp[b, 2 * H + j] = dn * r
            dh[b, j] = dh_t * z
""",
}


# Note [Vectorized tanh]: a compiled loop that calls math.tanh runs libm once per element
# (~12 ns); NumPy's np.tanh is SIMD (~0.3 ns per float32), which is why the float64 step above
# is split around NumPy calls. For float32 the fused step below computes tanh as Eigen's
# float rational approximation (odd 13/6 rational on [-7.905, 7.905], clamped outside, where
# float32 tanh is +-1 to the last bit): only multiplies, adds, one division and selects, so
# LLVM vectorizes the loop (measured ~4.9 us per 16000 elements, np.tanh 4.2 us), and its
# error is at most ~2.4e-7 absolute (a few float32 ulps; NaN stays NaN). So one call does a
# step's whole pointwise work: gate pre-activations, the four activations, the cell and h,
# instead of five NumPy and numba calls (each call costs microseconds on these small blocks).
def _tanh32(v, out, pad):
    """Source lines: `out` = tanh(`v`) for a float32 scalar `v` (Note [Vectorized tanh])."""
    lines = [
        f"{v} = _CLAMP if {v} > _CLAMP else {v}",
        f"{v} = -_CLAMP if {v} < -_CLAMP else {v}",
        f"_x2 = {v} * {v}",
        "_p = np.float32(-2.76076847742355e-16)",
    ]
    for k in ("2.00018790482477e-13", "-8.60467152213735e-11", "5.12229709037114e-08",
              "1.48572235717979e-05", "6.37261928875436e-04", "4.89352455891786e-03"):  # fmt: skip
        lines.append(f"_p = _p * _x2 + np.float32({k})")
    lines.append("_q = np.float32(1.19825839466702e-06)")
    for k in ("1.18534705686654e-04", "2.26843463243900e-03", "4.89352518554385e-03"):
        lines.append(f"_q = _q * _x2 + np.float32({k})")
    lines.append(f"{out} = _p * {v} / _q")
    return "".join(" " * pad + line + "\n" for line in lines)


# one LSTM step after the GEMM: rec = h_prev W_hh^T, x_t the projected input row; writes
# h, c and the gate activations (0 where the row is masked) of the step
_SOURCES["lstm_step32"] = (
    """\
_CLAMP = np.float32(7.90531110763549805)
_HALF = np.float32(0.5)


def lstm_step32(rec, x_t, scale, prev, active, out_t):
    B, G = rec.shape
    H = G // 4
    a = np.empty(G, np.float32)
    cb = np.empty(H, np.float32)
    tc = np.empty(H, np.float32)
    for b in range(B):
        o = out_t[b]  # [h, c, i, f, g, o] of the step; prev[b] holds the step before's
        p = prev[b]
        if not active[b]:
            for j in range(2 * H):
                o[j] = p[j]
            for j in range(G):
                o[2 * H + j] = 0.0
            continue
        r = rec[b]
        xb = x_t[b]
        for j in range(G):
            v = (r[j] + xb[j]) * scale[j]
"""
    + _tanh32("v", "a[j]", 12)
    + """\
        for j in range(G):
            a[j] = _HALF * a[j] + _HALF if scale[j] == _HALF else a[j]
        for j in range(H):
            cb[j] = a[H + j] * p[H + j] + a[j] * a[2 * H + j]
        for j in range(H):
            v = cb[j]
"""
    + _tanh32("v", "tc[j]", 12)
    + """\
        for j in range(H):
            o[j] = a[3 * H + j] * tc[j]
            o[H + j] = cb[j]
        for j in range(G):
            o[2 * H + j] = a[j]
"""
)

_KERNELS: dict = {}


# fused multiply-adds (no other fast-math flag: NaN and inf keep IEEE semantics)
_FASTMATH = {"lstm_step32": {"contract"}}


def _kernel(name):
    if not numba_kernels.available():
        return None
    if name not in _KERNELS:
        _KERNELS[name] = numba_kernels.jit_source(
            _SOURCES[name], name, fastmath=_FASTMATH.get(name, False)
        )
    return _KERNELS[name]


def _usable(name, *arrays):
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64) or any(a.dtype != dtype for a in arrays):
        return None
    if any(a.size == 0 for a in arrays):
        return None
    return _kernel(name)


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _active(T, B, lengths):
    """(T, B) bool: row b takes part in step t."""
    if lengths is None:
        return np.ones((T, B), dtype=np.bool_)
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


def _previous(states, first, reverse):
    if reverse:
        return np.concatenate([states[1:], first[None]], axis=0)
    return np.concatenate([first[None], states[:-1]], axis=0)


def _halves(G, H, dtype, sigmoid_blocks):
    """(G,) scale: 0.5 on the columns of the sigmoid gates (Note [Sigmoid through tanh])."""
    scale = np.ones(G, dtype=dtype)
    for k in sigmoid_blocks:
        scale[k * H : (k + 1) * H] = 0.5
    return scale


# Each returns None where it does not apply (no numba, other dtypes, empty): the op then runs
# its reference (ember.ops.rnn registers them that way).
def lstm_forward(xproj, w_hh, h0, c0, reverse=False, lengths=None):
    if xproj.dtype == np.float32:
        return _lstm_forward32(xproj, w_hh, h0, c0, reverse, lengths)
    kernels = _usable("lstm_cell", xproj, w_hh, h0, c0), _kernel("lstm_hidden")
    if kernels[0] is None:
        return None
    cell, hidden = kernels
    T, B, G = xproj.shape
    H = G // 4
    scale = _halves(G, H, xproj.dtype, (0, 1, 3))
    x_scaled = xproj * scale
    w_t = np.ascontiguousarray(w_hh.T * scale)
    out = np.empty((T, B, 6 * H), dtype=xproj.dtype)
    active = _active(T, B, lengths)
    h, c = np.ascontiguousarray(h0), np.ascontiguousarray(c0)
    a = np.empty((B, G), dtype=xproj.dtype)
    tanh_c = np.empty((B, H), dtype=xproj.dtype)
    for t in _steps(T, reverse):
        np.matmul(h, w_t, out=a)
        a += x_scaled[t]
        np.tanh(a, out=a)
        c_new = out[t, :, H : 2 * H]
        cell(a, c, active[t], c_new, out[t, :, 2 * H :])
        np.tanh(c_new, out=tanh_c)
        hidden(a, tanh_c, h, active[t], out[t, :, :H])
        h, c = out[t, :, :H], c_new
    return out


def _lstm_forward32(xproj, w_hh, h0, c0, reverse, lengths):
    """The float32 forward: per step one GEMM and one fused call (Note [Vectorized tanh])."""
    step = _usable("lstm_step32", xproj, w_hh, h0, c0)
    if step is None:
        return None
    T, B, G = xproj.shape
    H = G // 4
    xproj = np.ascontiguousarray(xproj)
    w_t = np.ascontiguousarray(w_hh.T)
    out = np.empty((T, B, 6 * H), dtype=xproj.dtype)
    active = _active(T, B, lengths)
    # the kernel reads the step before from a C-contiguous (B, 6H) block (its row slices then
    # have unit stride and its loops vectorize): the previous step's output, or h0, c0 here
    prev = np.empty((B, 6 * H), dtype=xproj.dtype)
    prev[:, :H], prev[:, H : 2 * H] = h0, c0
    rec = np.empty((B, G), dtype=xproj.dtype)
    scale = _halves(G, H, xproj.dtype, (0, 1, 3))
    for t in _steps(T, reverse):
        np.matmul(prev[:, :H], w_t, out=rec)
        step(rec, xproj[t], scale, prev, active[t], out[t])
        prev = out[t]
    return out


def lstm_grad(g_out, out, xproj, w_hh, h0, c0, reverse=False, lengths=None):
    kernel = _usable("lstm_step_grad", g_out, out, xproj, w_hh, h0, c0)
    if kernel is None:
        return None
    T, B, G = xproj.shape
    H = G // 4
    dtype = xproj.dtype
    h_prev = _previous(out[:, :, :H], h0, reverse)
    c_prev = _previous(out[:, :, H : 2 * H], c0, reverse)
    # an active step's own cell is the state it leaves (inactive steps get no gate gradient)
    tanh_c = np.tanh(out[:, :, H : 2 * H])
    active = _active(T, B, lengths)
    # every array the step kernel reads is C-contiguous: its row slices then have unit stride
    # and its loops vectorize
    out, g_out = np.ascontiguousarray(out), np.ascontiguousarray(g_out)
    # the result, [d_xproj, d_w_hh, d_h0, d_c0] flat, is written in place (no concatenation)
    flat = np.empty(T * B * G + G * H + 2 * B * H, dtype=dtype)
    d_gates = flat[: T * B * G].reshape(T, B, G)
    d_w = flat[T * B * G : T * B * G + G * H].reshape(G, H)
    dh = flat[T * B * G + G * H : T * B * G + G * H + B * H].reshape(B, H)
    dc = flat[T * B * G + G * H + B * H :].reshape(B, H)
    dh[...] = 0
    dc[...] = 0
    rec = np.zeros((B, H), dtype=dtype)
    for t in _steps(T, not reverse):
        kernel(out[t], tanh_c[t], c_prev[t], g_out[t], rec, active[t], dh, dc, d_gates[t])
        np.matmul(d_gates[t], w_hh, out=rec)
    dh += rec
    np.matmul(d_gates.reshape(-1, G).T, h_prev.reshape(-1, H), out=d_w)
    return flat


def gru_forward(xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    kernels = _usable("gru_candidate", xproj, w_hh, b_hh, h0), _kernel("gru_hidden")
    if kernels[0] is None:
        return None
    candidate, hidden = kernels
    T, B, G = xproj.shape
    H = G // 3
    out = np.empty((T, B, H), dtype=xproj.dtype)
    active = _active(T, B, lengths)
    w_t = np.ascontiguousarray(w_hh.T)
    h = np.ascontiguousarray(h0)
    hp = np.empty((B, G), dtype=xproj.dtype)
    rz = np.empty((B, 2 * H), dtype=xproj.dtype)
    n = np.empty((B, H), dtype=xproj.dtype)
    for t in _steps(T, reverse):
        np.matmul(h, w_t, out=hp)
        hp += b_hh
        np.add(xproj[t, :, : 2 * H], hp[:, : 2 * H], out=rz)
        rz *= 0.5
        np.tanh(rz, out=rz)
        candidate(xproj[t], hp, rz, n)
        np.tanh(n, out=n)
        hidden(rz, n, h, active[t], out[t])
        h = out[t]
    return out


def gru_grad(g_out, out, xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    kernel = _usable("gru_step_grad", g_out, out, xproj, w_hh, b_hh, h0)
    if kernel is None:
        return None
    T, B, G = xproj.shape
    H = G // 3
    h_prev = _previous(out, h0, reverse)
    hp = np.matmul(h_prev.reshape(-1, H), w_hh.T).reshape(T, B, G)
    hp += b_hh
    rz = xproj[..., : 2 * H] + hp[..., : 2 * H]
    rz *= 0.5
    np.tanh(rz, out=rz)
    n = np.tanh(xproj[..., 2 * H :] + (0.5 * rz[..., :H] + 0.5) * hp[..., 2 * H :])
    active = _active(T, B, lengths)
    g_out = np.ascontiguousarray(g_out)
    d_x = np.empty((T, B, G), dtype=xproj.dtype)
    d_hp = np.empty((T, B, G), dtype=xproj.dtype)
    dh = np.zeros((B, H), dtype=xproj.dtype)
    step = np.empty((B, H), dtype=xproj.dtype)
    for t in _steps(T, not reverse):
        kernel(rz[t], n[t], hp[t], h_prev[t], g_out[t], active[t], dh, d_x[t], d_hp[t])
        np.matmul(d_hp[t], w_hh, out=step)
        dh += step
    flat = d_hp.reshape(-1, G)
    d_w = np.matmul(flat.T, h_prev.reshape(-1, H))
    d_b = flat.sum(axis=0)
    return np.concatenate([d_x.ravel(), d_w.ravel(), d_b.ravel(), dh.ravel()])
