"""Recurrent layers: fused whole-sequence primitives for the LSTM, GRU and Elman (tanh/relu)
recurrences, their decompositions into per-step cells, and the layer functions that nn.RNN,
nn.LSTM and nn.GRU call.

Note [Fused recurrence]: a recurrent layer splits into the input projection, one GEMM over all
time steps (`linear(x, w_ih, b)`, shape (T, B, G*H)), and the recurrence, which must run step by
step. Recorded op by op, the recurrence costs about a dozen dispatched ops per step forward and
as many backward; the primitives here (`lstm_recurrence`, `gru_recurrence`, `rnn_recurrence`)
run the whole loop in one kernel and its backward in one more (`*_recurrence_grad`, through
time in reverse), with the weight gradient as one GEMM over all steps. Layout:
- inputs: `xproj` (T, B, G*H) the projected input (time-major), `w_hh` (G*H, H), the initial
  state(s) (B, H); GRU also takes `b_hh` (3H,), which sits inside the reset gate's product;
- attributes: `reverse` (run t = T-1 .. 0) and `lengths` (None, or one length per batch row:
  a row takes part in step t only while t < length, else its state is carried and its output
  is masked by the caller; a reversed row starts at its own last step from the initial state);
- output: each step's state after the step, (T, B, H), so h_n (and c_n) are slices of it (the
  last step run, carried states included). The LSTM's is (T, B, 6H): [h_t, c_t, i, f, g, o],
  the step's gate activations kept for the backward pass (0 where a row is masked), which
  then needs no GEMM to rebuild them.
The gradient ops return every input gradient flattened and concatenated in input order (one
array; the VJP slices it), and are not differentiable again (their VJP raises
NotImplementedError, never a silent zero): a second-order gradient through a recurrence uses
the decompositions (`lstm_cell_reference` and friends, the spec the fused ops
are tested against).
The gate order and formulas are PyTorch's: LSTM (i, f, g, o), GRU (r, z, n).
"""

from __future__ import annotations

from ember._util.errors import ShapeError
from ember.backend import rnn_kernels as _rnn_kernels
from ember.ops import elementwise as E
from ember.ops import shape as S
from ember.ops.linalg import linear
from ember.ops.registry import apply, defop, onnx_lowering

__all__ = [
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
    "lstm_cell_reference",
    "gru_cell_reference",
    "rnn_cell_reference",
    "lstm_layer",
    "gru_layer",
    "rnn_layer",
    "recurrent_layer_reference",
]


# --- NumPy kernels (the reference forward and backward of the fused ops) ----------------------
def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _masks(xp, T, B, lengths, dtype):
    """(T, B, 1) bool: row b takes part in step t."""
    if lengths is None:
        return None
    return (xp.arange(T)[:, None] < xp.asarray(lengths)[None, :])[:, :, None]


def _previous(xp, states, first, reverse):
    """Each step's incoming state: the state after the step before it (in run order)."""
    if reverse:
        return xp.concatenate([states[1:], first[None]], axis=0)
    return xp.concatenate([first[None], states[:-1]], axis=0)


def _lstm_forward(xp, xproj, w_hh, h0, c0, reverse=False, lengths=None):
    T, B, G = xproj.shape
    H = G // 4
    out = xp.empty((T, B, 6 * H), dtype=xproj.dtype)
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    w_t = w_hh.T
    h, c = h0, c0
    for t in _steps(T, reverse):
        gates = xproj[t] + h @ w_t
        i = _sigmoid(xp, gates[:, :H])
        f = _sigmoid(xp, gates[:, H : 2 * H])
        g = xp.tanh(gates[:, 2 * H : 3 * H])
        o = _sigmoid(xp, gates[:, 3 * H :])
        c_new = f * c + i * g
        h_new = o * xp.tanh(c_new)
        acts = xp.concatenate([i, f, g, o], axis=1)
        if masks is not None:
            h_new = xp.where(masks[t], h_new, h)
            c_new = xp.where(masks[t], c_new, c)
            acts = xp.where(masks[t], acts, 0)
        h, c = h_new, c_new
        out[t, :, :H] = h
        out[t, :, H : 2 * H] = c
        out[t, :, 2 * H :] = acts
    return out


def _lstm_grad(xp, g_out, out, xproj, w_hh, h0, c0, reverse=False, lengths=None):
    T, B, G = xproj.shape
    H = G // 4
    h_prev = _previous(xp, out[:, :, :H], h0, reverse)
    c_prev = _previous(xp, out[:, :, H : 2 * H], c0, reverse)
    i, f, g, o = (out[..., (2 + k) * H : (3 + k) * H] for k in range(4))
    # an active step's own cell is the state it leaves (inactive steps get no gate gradient)
    tanh_c = xp.tanh(out[..., H : 2 * H])
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    d_gates = xp.zeros_like(xproj)
    dh = xp.zeros_like(h0)
    dc = xp.zeros_like(c0)
    for t in _steps(T, not reverse):
        dh_t = g_out[t, :, :H] + dh
        dc_t = g_out[t, :, H : 2 * H] + dc
        d_o = dh_t * tanh_c[t]
        dc_all = dc_t + dh_t * o[t] * (1 - tanh_c[t] * tanh_c[t])
        dg = d_gates[t]
        dg[:, :H] = dc_all * g[t] * i[t] * (1 - i[t])
        dg[:, H : 2 * H] = dc_all * c_prev[t] * f[t] * (1 - f[t])
        dg[:, 2 * H : 3 * H] = dc_all * i[t] * (1 - g[t] * g[t])
        dg[:, 3 * H :] = d_o * o[t] * (1 - o[t])
        dc_new = dc_all * f[t]
        if masks is not None:
            dg *= masks[t]
            dh = xp.where(masks[t], dg @ w_hh, dh_t)
            dc = xp.where(masks[t], dc_new, dc_t)
        else:
            dh = dg @ w_hh
            dc = dc_new
    d_w = d_gates.reshape(-1, G).T @ h_prev.reshape(-1, H)
    return xp.concatenate([d_gates.ravel(), d_w.ravel(), dh.ravel(), dc.ravel()])


def _gru_forward(xp, xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    T, B, G = xproj.shape
    H = G // 3
    out = xp.empty((T, B, H), dtype=xproj.dtype)
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    w_t = w_hh.T
    h = h0
    for t in _steps(T, reverse):
        hp = h @ w_t + b_hh
        x = xproj[t]
        r = _sigmoid(xp, x[:, :H] + hp[:, :H])
        z = _sigmoid(xp, x[:, H : 2 * H] + hp[:, H : 2 * H])
        n = xp.tanh(x[:, 2 * H :] + r * hp[:, 2 * H :])
        h_new = n + z * (h - n)
        if masks is not None:
            h_new = xp.where(masks[t], h_new, h)
        h = h_new
        out[t] = h
    return out


def _gru_grad(xp, g_out, out, xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    T, B, G = xproj.shape
    H = G // 3
    h_prev = _previous(xp, out, h0, reverse)
    hp = h_prev @ w_hh.T + b_hh
    r = _sigmoid(xp, xproj[..., :H] + hp[..., :H])
    z = _sigmoid(xp, xproj[..., H : 2 * H] + hp[..., H : 2 * H])
    n = xp.tanh(xproj[..., 2 * H :] + r * hp[..., 2 * H :])
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    d_x = xp.zeros_like(xproj)
    d_hp = xp.zeros_like(xproj)
    dh = xp.zeros_like(h0)
    for t in _steps(T, not reverse):
        dh_t = g_out[t] + dh
        dn = dh_t * (1 - z[t]) * (1 - n[t] * n[t])
        dz = dh_t * (h_prev[t] - n[t]) * z[t] * (1 - z[t])
        dr = dn * hp[t, :, 2 * H :] * r[t] * (1 - r[t])
        dx, dhp = d_x[t], d_hp[t]
        dx[:, :H] = dr
        dx[:, H : 2 * H] = dz
        dx[:, 2 * H :] = dn
        dhp[:, : 2 * H] = dx[:, : 2 * H]
        dhp[:, 2 * H :] = dn * r[t]
        if masks is not None:
            dx *= masks[t]
            dhp *= masks[t]
            dh = xp.where(masks[t], dh_t * z[t] + dhp @ w_hh, dh_t)
        else:
            dh = dh_t * z[t] + dhp @ w_hh
    d_w = d_hp.reshape(-1, G).T @ h_prev.reshape(-1, H)
    d_b = d_hp.reshape(-1, G).sum(axis=0)
    return xp.concatenate([d_x.ravel(), d_w.ravel(), d_b.ravel(), dh.ravel()])


def _rnn_forward(xp, xproj, w_hh, h0, nonlinearity="tanh", reverse=False, lengths=None):
    T, B, H = xproj.shape
    out = xp.empty((T, B, H), dtype=xproj.dtype)
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    w_t = w_hh.T
    h = h0
    for t in _steps(T, reverse):
        pre = xproj[t] + h @ w_t
        h_new = xp.tanh(pre) if nonlinearity == "tanh" else xp.maximum(pre, 0)
        if masks is not None:
            h_new = xp.where(masks[t], h_new, h)
        h = h_new
        out[t] = h
    return out


def _rnn_grad(xp, g_out, out, xproj, w_hh, h0, nonlinearity="tanh", reverse=False, lengths=None):
    T, B, H = xproj.shape
    h_prev = _previous(xp, out, h0, reverse)
    if nonlinearity == "tanh":
        slope = 1 - out * out
    else:
        slope = (out > 0).astype(out.dtype)
    masks = _masks(xp, T, B, lengths, xproj.dtype)
    if masks is not None:
        slope = slope * masks  # a carried state's slope is not the step's
    d_pre = xp.zeros_like(xproj)
    dh = xp.zeros_like(h0)
    for t in _steps(T, not reverse):
        dh_t = g_out[t] + dh
        d_pre[t] = dh_t * slope[t]
        if masks is not None:
            dh = xp.where(masks[t], d_pre[t] @ w_hh, dh_t)
        else:
            dh = d_pre[t] @ w_hh
    d_w = d_pre.reshape(-1, H).T @ h_prev.reshape(-1, H)
    return xp.concatenate([d_pre.ravel(), d_w.ravel(), dh.ravel()])


# --- shape rules ------------------------------------------------------------------------------
def _check(name, gates, xproj, w_hh, states, lengths):
    if len(xproj) != 3 or xproj[2] % gates:
        raise ShapeError(
            f"{name}: projected input must be (T, B, {gates}*hidden), got {tuple(xproj)}"
        )
    T, B, G = xproj
    H = G // gates
    if tuple(w_hh) != (G, H):
        raise ShapeError(f"{name}: w_hh must be ({G}, {H}), got {tuple(w_hh)}")
    for s in states:
        if tuple(s) != (B, H):
            raise ShapeError(f"{name}: initial state must be ({B}, {H}), got {tuple(s)}")
    if lengths is not None and len(lengths) != B:
        raise ShapeError(f"{name}: {len(lengths)} lengths for a batch of {B}")
    return T, B, H


def _lstm_shape(xproj, w_hh, h0, c0, reverse=False, lengths=None):
    T, B, H = _check("lstm_recurrence", 4, xproj, w_hh, (h0, c0), lengths)
    return (T, B, 6 * H)


def _gru_shape(xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    T, B, H = _check("gru_recurrence", 3, xproj, w_hh, (h0,), lengths)
    if tuple(b_hh) != (3 * H,):
        raise ShapeError(f"gru_recurrence: b_hh must be ({3 * H},), got {tuple(b_hh)}")
    return (T, B, H)


def _rnn_shape(xproj, w_hh, h0, nonlinearity="tanh", reverse=False, lengths=None):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            f"rnn_recurrence: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
        )
    T, B, H = _check("rnn_recurrence", 1, xproj, w_hh, (h0,), lengths)
    return (T, B, H)


def _flat_size(*shapes):
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return (total,)


def _split(flat, *likes):
    """Cut a flat gradient into pieces shaped like `likes` (None where no grad is wanted)."""
    out, start = [], 0
    for like in likes:
        n = like.numel()
        piece = flat[start : start + n].reshape(tuple(like.shape))
        out.append(piece if getattr(like, "requires_grad", True) else None)
        start += n
    return tuple(out)


def _lstm_vjp(g, out, xproj, w_hh, h0, c0, reverse=False, lengths=None):
    flat = apply(LSTM_GRAD, g, out, xproj, w_hh, h0, c0, reverse=reverse, lengths=lengths)
    return _split(flat, xproj, w_hh, h0, c0)


def _gru_vjp(g, out, xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    flat = apply(GRU_GRAD, g, out, xproj, w_hh, b_hh, h0, reverse=reverse, lengths=lengths)
    return _split(flat, xproj, w_hh, b_hh, h0)


def _rnn_vjp(g, out, xproj, w_hh, h0, nonlinearity="tanh", reverse=False, lengths=None):
    flat = apply(
        RNN_GRAD,
        g,
        out,
        xproj,
        w_hh,
        h0,
        nonlinearity=nonlinearity,
        reverse=reverse,
        lengths=lengths,
    )
    return _split(flat, xproj, w_hh, h0)


def _no_second_order(name):
    def vjp(*args, **attrs):
        raise NotImplementedError(
            f"{name}: second-order gradients through the fused recurrence are not supported; "
            "differentiate ember.ops.rnn.recurrent_layer_reference (the per-step "
            "decomposition) instead (Note [Fused recurrence])"
        )

    return vjp


_FUSED_DOC = " (Note [Fused recurrence] in ember/ops/rnn.py)."
LSTM_RECURRENCE = defop(
    "lstm_recurrence",
    _lstm_forward,
    _lstm_vjp,
    shape=_lstm_shape,
    dtype=lambda x, *rest, **a: x,
    promote="common",
    save_output=True,
    doc="The LSTM recurrence over a projected sequence: each step's [h, c, gate activations]"
    + _FUSED_DOC,
)
LSTM_GRAD = defop(
    "lstm_recurrence_grad",
    lambda xp, g, out, *rest, **a: _lstm_grad(xp, g, out, *rest, **a),
    _no_second_order("lstm_recurrence_grad"),
    shape=lambda g, out, x, w, h0, c0, **a: _flat_size(x, w, h0, c0),
    dtype=lambda g, *rest, **a: g,
    promote="common",
    doc="Gradients of lstm_recurrence's inputs, flattened and concatenated" + _FUSED_DOC,
)
GRU_RECURRENCE = defop(
    "gru_recurrence",
    _gru_forward,
    _gru_vjp,
    shape=_gru_shape,
    dtype=lambda x, *rest, **a: x,
    promote="common",
    save_output=True,
    doc="The GRU recurrence over a projected sequence: each step's h" + _FUSED_DOC,
)
GRU_GRAD = defop(
    "gru_recurrence_grad",
    lambda xp, g, out, *rest, **a: _gru_grad(xp, g, out, *rest, **a),
    _no_second_order("gru_recurrence_grad"),
    shape=lambda g, out, x, w, b, h0, **a: _flat_size(x, w, b, h0),
    dtype=lambda g, *rest, **a: g,
    promote="common",
    doc="Gradients of gru_recurrence's inputs, flattened and concatenated" + _FUSED_DOC,
)
RNN_RECURRENCE = defop(
    "rnn_recurrence",
    _rnn_forward,
    _rnn_vjp,
    shape=_rnn_shape,
    dtype=lambda x, *rest, **a: x,
    promote="common",
    save_output=True,
    doc="The Elman (tanh or relu) recurrence over a projected sequence: each step's h" + _FUSED_DOC,
)
RNN_GRAD = defop(
    "rnn_recurrence_grad",
    lambda xp, g, out, *rest, **a: _rnn_grad(xp, g, out, *rest, **a),
    _no_second_order("rnn_recurrence_grad"),
    shape=lambda g, out, x, w, h0, **a: _flat_size(x, w, h0),
    dtype=lambda g, *rest, **a: g,
    promote="common",
    doc="Gradients of rnn_recurrence's inputs, flattened and concatenated" + _FUSED_DOC,
)


# --- ONNX lowerings ----------------------------------------------------------------------------
# Note [Recurrences in ONNX]: ONNX's LSTM/GRU/RNN ops return each step's h but only the last c,
# and no gate activations, and they project the input themselves; the fused recurrences here
# take the projected input and return [h, c, i, f, g, o] per step. So each lowers to a Scan over
# time (Note [ONNX loops] in ember.onnx) whose body is the step of the reference kernel above,
# in PyTorch's gate order; `reverse` becomes the Scan's directions (each step's output still
# lands at its own time), and `lengths` a (T, B, 1) mask scanned beside the input.


def _onnx_mask(b, xproj, lengths):
    """(T, B, 1) bool: row b takes part in step t (None without lengths)."""
    if lengths is None:
        return None
    steps = (
        b.op("Squeeze", b.op("Shape", xproj, start=0, end=1))
        if b.opset >= 15
        else b.op("Squeeze", b.op("Gather", b.op("Shape", xproj), b.const([0], "int64")))
    )
    t = b.op("Range", b.const(0, "int64"), steps, b.const(1, "int64"))
    t = b.op("Unsqueeze", t, b.const([1], "int64"))
    keep = b.op("Less", t, b.const(list(lengths), "int64"))
    return b.op("Unsqueeze", keep, b.const([2], "int64"))


def _onnx_recurrence(b, xproj, states, lengths, reverse, step):
    """A Scan over time of `step(h..., x_t)` -> (new states, step output)."""
    mask = _onnx_mask(b, xproj, lengths)
    dtype = b.out.dtype

    def body(*names):
        n = len(states)
        olds, x_t = list(names[:n]), names[n]
        news, out = step(*olds, x_t)
        if mask is not None:
            keep = names[n + 1]
            news = [b.op("Where", keep, new, old) for new, old in zip(news, olds)]
            out = step.masked(keep, news, out)
        return news, [out]

    scan_inputs = [xproj] + ([mask] if mask is not None else [])
    scan_dtypes = [dtype] + (["bool"] if mask is not None else [])
    results = b.scan(body, states, scan_inputs, [dtype] * len(states), scan_dtypes, [dtype],
                     reverse=reverse)  # fmt: skip
    return results[-1]


def _gates(b, x, count):
    return b.op("Split", x, b.const([b.ins[0].shape[2] // count] * count, "int64"), axis=1,
                outputs=count)  # fmt: skip


@onnx_lowering("lstm_recurrence")
def _lstm_onnx(b, xproj, w_hh, h0, c0, reverse=False, lengths=None):
    w_t = b.op("Transpose", w_hh, perm=[1, 0])

    def step(h, c, x_t):
        i, f, g, o = _gates(b, b.op("Add", x_t, b.op("MatMul", h, w_t)), 4)
        i, f, o = (b.op("Sigmoid", v) for v in (i, f, o))
        g = b.op("Tanh", g)
        c_new = b.op("Add", b.op("Mul", f, c), b.op("Mul", i, g))
        h_new = b.op("Mul", o, b.op("Tanh", c_new))
        step.acts = b.op("Concat", i, f, g, o, axis=1)
        return [h_new, c_new], b.op("Concat", h_new, c_new, step.acts, axis=1)

    def masked(keep, news, out):
        acts = b.op("Where", keep, step.acts, b.const(0.0, b.out.dtype))
        return b.op("Concat", news[0], news[1], acts, axis=1)

    step.masked = masked
    return _onnx_recurrence(b, xproj, [h0, c0], lengths, reverse, step)


@onnx_lowering("gru_recurrence")
def _gru_onnx(b, xproj, w_hh, b_hh, h0, reverse=False, lengths=None):
    w_t = b.op("Transpose", w_hh, perm=[1, 0])

    def step(h, x_t):
        hp = b.op("Add", b.op("MatMul", h, w_t), b_hh)
        xr, xz, xn = _gates(b, x_t, 3)
        hr, hz, hn = _gates(b, hp, 3)
        r = b.op("Sigmoid", b.op("Add", xr, hr))
        z = b.op("Sigmoid", b.op("Add", xz, hz))
        n = b.op("Tanh", b.op("Add", xn, b.op("Mul", r, hn)))
        h_new = b.op("Add", n, b.op("Mul", z, b.op("Sub", h, n)))
        return [h_new], h_new

    step.masked = lambda keep, news, out: news[0]
    return _onnx_recurrence(b, xproj, [h0], lengths, reverse, step)


@onnx_lowering("rnn_recurrence")
def _rnn_onnx(b, xproj, w_hh, h0, nonlinearity="tanh", reverse=False, lengths=None):
    w_t = b.op("Transpose", w_hh, perm=[1, 0])

    def step(h, x_t):
        pre = b.op("Add", x_t, b.op("MatMul", h, w_t))
        h_new = b.op("Tanh" if nonlinearity == "tanh" else "Relu", pre)
        return [h_new], h_new

    step.masked = lambda keep, news, out: news[0]
    return _onnx_recurrence(b, xproj, [h0], lengths, reverse, step)


# --- cells: the decompositions (reference) and the fused single steps --------------------------
def lstm_cell_reference(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One LSTM step in ember ops (PyTorch's formulas); returns (h', c'). With `w_hr` (the
    projection of proj_size), h' = w_hr (o * tanh(c'))."""
    gates = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, -1)
    c_new = E.sigmoid(f) * c + E.sigmoid(i) * E.tanh(g)
    h_new = E.sigmoid(o) * E.tanh(c_new)
    if w_hr is not None:
        h_new = linear(h_new, w_hr)
    return h_new, c_new


def gru_cell_reference(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step in ember ops (PyTorch's formulas)."""
    xr, xz, xn = linear(x, w_ih, b_ih).chunk(3, -1)
    hr, hz, hn = linear(h, w_hh, b_hh).chunk(3, -1)
    r = E.sigmoid(xr + hr)
    z = E.sigmoid(xz + hz)
    n = E.tanh(xn + r * hn)
    return n + z * (h - n)


def rnn_cell_reference(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman step in ember ops: act(x w_ih^T + b_ih + h w_hh^T + b_hh)."""
    pre = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    if nonlinearity == "tanh":
        return E.tanh(pre)
    if nonlinearity == "relu":
        return E.relu(pre)
    raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _bias(b_ih, b_hh):
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh


def _zeros_like_bias(w_hh):
    return w_hh.new_zeros((w_hh.shape[0],))


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step through the fused recurrence (T = 1); returns (h', c')."""
    xproj = linear(x, w_ih, _bias(b_ih, b_hh)).unsqueeze(0)
    out = apply(LSTM_RECURRENCE, xproj, w_hh, h, c)[0]
    H = h.shape[-1]
    return out[:, :H], out[:, H : 2 * H]


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step through the fused recurrence (T = 1)."""
    xproj = linear(x, w_ih, b_ih).unsqueeze(0)
    b = b_hh if b_hh is not None else _zeros_like_bias(w_hh)
    return apply(GRU_RECURRENCE, xproj, w_hh, b, h)[0]


def rnn_tanh_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    xproj = linear(x, w_ih, _bias(b_ih, b_hh)).unsqueeze(0)
    return apply(RNN_RECURRENCE, xproj, w_hh, h, nonlinearity="tanh")[0]


def rnn_relu_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    xproj = linear(x, w_ih, _bias(b_ih, b_hh)).unsqueeze(0)
    return apply(RNN_RECURRENCE, xproj, w_hh, h, nonlinearity="relu")[0]


# --- layers: one direction of one layer over a (T, B, F) sequence ------------------------------
def _mask(x, lengths):
    """(T, B, 1) 0/1 mask of the steps each row takes part in, as a constant of x's dtype."""
    import numpy as np

    T = x.shape[0]
    keep = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    return x.new_tensor(keep[:, :, None].astype(np.dtype(x.dtype.numpy)))


def _final_step(out, reverse):
    return out[0] if reverse else out[-1]


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """One direction of an LSTM layer: x (T, B, F) -> (outputs (T, B, H), h_n, c_n).

    `lengths` (one per batch row, or None) masks the steps past each row's length: their
    outputs are 0 and h_n, c_n are the states at each row's last step (packed sequences)."""
    xproj = linear(x, w_ih, _bias(b_ih, b_hh))
    out = apply(LSTM_RECURRENCE, xproj, w_hh, h0, c0, reverse=reverse, lengths=lengths)
    H = h0.shape[-1]
    # the three results are cut from [h_t, c_t] (T, B, 2H), itself one slice of the (T, B, 6H)
    # output: their gradients meet at 2H, and one scatter (Note [Scatter into zeros] in
    # ember/ops/shape.py) widens them to 6H, instead of three 6H scatters and their sum
    states = out[..., : 2 * H]
    last = _final_step(states, reverse)
    y = states[..., :H]
    if lengths is not None:
        y = y * _mask(x, lengths)
    return y, last[:, :H], last[:, H:]


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """One direction of a GRU layer: x (T, B, F) -> (outputs (T, B, H), h_n)."""
    xproj = linear(x, w_ih, b_ih)
    b = b_hh if b_hh is not None else _zeros_like_bias(w_hh)
    out = apply(GRU_RECURRENCE, xproj, w_hh, b, h0, reverse=reverse, lengths=lengths)
    last = _final_step(out, reverse)
    if lengths is not None:
        out = out * _mask(x, lengths)
    return out, last


def rnn_layer(
    x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False, lengths=None
):
    """One direction of an Elman RNN layer: x (T, B, F) -> (outputs (T, B, H), h_n)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    xproj = linear(x, w_ih, _bias(b_ih, b_hh))
    out = apply(
        RNN_RECURRENCE, xproj, w_hh, h0, nonlinearity=nonlinearity, reverse=reverse, lengths=lengths
    )
    last = _final_step(out, reverse)
    if lengths is not None:
        out = out * _mask(x, lengths)
    return out, last


def recurrent_layer_reference(
    mode, x, state, weights, nonlinearity="tanh", reverse=False, lengths=None
):
    """One direction of a recurrent layer as a loop of cell decompositions (the spec of the
    fused layers, and the path for LSTM with proj_size and for second-order gradients).

    `mode` is "LSTM", "GRU" or "RNN"; `state` is (h0,) or (h0, c0); `weights` is
    (w_ih, w_hh, b_ih, b_hh) (biases may be None), plus w_hr for a projected LSTM.
    Returns (outputs (T, B, H_out), final state tuple)."""
    T = x.shape[0]
    mask = _mask(x, lengths) if lengths is not None else None
    outputs = [None] * T
    state = tuple(state)
    for t in _steps(T, reverse):
        if mode == "LSTM":
            new = lstm_cell_reference(x[t], *state, *weights)
        elif mode == "GRU":
            new = (gru_cell_reference(x[t], state[0], *weights),)
        else:
            new = (rnn_cell_reference(x[t], state[0], *weights, nonlinearity=nonlinearity),)
        if mask is not None:
            m = mask[t]
            new = tuple(E.where(m > 0, n, s) for n, s in zip(new, state))
            outputs[t] = new[0] * m
        else:
            outputs[t] = new[0]
        state = new
    return S.stack(outputs, 0), state


# --- compiled kernels (ember/backend/rnn_kernels.py), each checked against the reference ------
for _op, _fast in (
    (LSTM_RECURRENCE, _rnn_kernels.lstm_forward),
    (LSTM_GRAD, _rnn_kernels.lstm_grad),
    (GRU_RECURRENCE, _rnn_kernels.gru_forward),
    (GRU_GRAD, _rnn_kernels.gru_grad),
):
    _op.def_fast_kernel("numpy", _fast)  # the reference forward where it returns None
