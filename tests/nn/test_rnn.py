"""Recurrent layers against PyTorch (one table row per configuration) and the fused
recurrences against their decompositions (Note [Fused recurrence] in ember/ops/rnn.py).

For each row, the PyTorch module's state dict is copied into the ember module (so the weight
names and shapes must match), both get the same input and initial states (float64), and the
outputs, final states, and gradients of input, states and every parameter must agree to
rtol=atol=1e-5 relative to the values' scale.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.backend import numba_kernels
from ember.nn.utils import rnn as rnn_utils
from ember.ops import rnn as R

torch = pytest.importorskip("torch")

RTOL = 1e-5
ATOL = 1e-5


def _close(ours, theirs, what):
    ours = np.asarray(ours)
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch {theirs.shape}"
    scale = max(1.0, float(np.abs(theirs).max()) if theirs.size else 1.0)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def _copy_state(torch_module, ember_module):
    state = {k: ember.tensor(v.detach().numpy()) for k, v in torch_module.state_dict().items()}
    result = ember_module.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys


# (id, class, args, kwargs, input shape, with initial states, packed lengths or None)
ROWS = [
    ("rnn_tanh", "RNN", (4, 6), {}, (5, 3, 4), False, None),
    ("rnn_relu_2layer_h0", "RNN", (4, 6, 2), {"nonlinearity": "relu"}, (5, 3, 4), True, None),
    (
        "rnn_bidir_batch_first",
        "RNN",
        (4, 6),
        {"bidirectional": True, "batch_first": True},
        (3, 5, 4),
        True,
        None,
    ),
    ("rnn_unbatched", "RNN", (4, 6), {}, (5, 4), True, None),
    ("lstm", "LSTM", (4, 6), {}, (5, 3, 4), False, None),
    ("lstm_2layer_h0", "LSTM", (4, 6, 2), {}, (5, 3, 4), True, None),
    (
        "lstm_bidir_2layer",
        "LSTM",
        (4, 6),
        {"num_layers": 2, "bidirectional": True},
        (5, 3, 4),
        True,
        None,
    ),
    (
        "lstm_batch_first_nobias",
        "LSTM",
        (4, 6),
        {"batch_first": True, "bias": False},
        (3, 5, 4),
        False,
        None,
    ),
    ("lstm_proj", "LSTM", (4, 6), {"proj_size": 3, "num_layers": 2}, (5, 3, 4), True, None),
    (
        "lstm_proj_bidir",
        "LSTM",
        (4, 6),
        {"proj_size": 2, "bidirectional": True},
        (5, 3, 4),
        True,
        None,
    ),
    ("lstm_unbatched", "LSTM", (4, 6), {}, (5, 4), True, None),
    ("lstm_packed", "LSTM", (4, 6), {}, (5, 3, 4), True, (5, 3, 2)),
    (
        "lstm_packed_unsorted_bidir",
        "LSTM",
        (4, 6, 2),
        {"bidirectional": True},
        (5, 4, 4),
        True,
        (2, 5, 1, 3),
    ),
    ("lstm_packed_batch_first", "LSTM", (4, 6), {"batch_first": True}, (3, 5, 4), True, (4, 5, 2)),
    ("gru", "GRU", (4, 6), {}, (5, 3, 4), False, None),
    ("gru_2layer_bidir_h0", "GRU", (4, 6, 2), {"bidirectional": True}, (5, 3, 4), True, None),
    (
        "gru_nobias_batch_first",
        "GRU",
        (4, 6),
        {"bias": False, "batch_first": True},
        (3, 5, 4),
        True,
        None,
    ),
    ("gru_packed_unsorted", "GRU", (4, 6), {"bidirectional": True}, (6, 3, 4), True, (3, 6, 4)),
    ("rnn_packed_unsorted", "RNN", (4, 6), {"nonlinearity": "relu"}, (6, 3, 4), True, (3, 6, 4)),
]


def _states(module, shape, rng, batched):
    directions = 2 if module.bidirectional else 1
    batch = (shape[0] if module.batch_first else shape[1]) if batched else None
    out_size = module.proj_size or module.hidden_size
    lead = (module.num_layers * directions,) + ((batch,) if batched else ())
    h = rng.standard_normal(lead + (out_size,))
    if module.mode == "LSTM":
        return (h, rng.standard_normal(lead + (module.hidden_size,)))
    return (h,)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_recurrent_layer_matches_torch(row):
    _, cls, args, kwargs, shape, with_states, lengths = row
    rng = np.random.default_rng(0)
    tm = getattr(torch.nn, cls)(*args, **kwargs).double()
    em = getattr(nn, cls)(*args, **kwargs, dtype=ember.float64)
    _copy_state(tm, em)
    x = rng.standard_normal(shape)
    states = _states(tm, shape, rng, len(shape) == 3) if with_states else ()
    tx = torch.tensor(x, requires_grad=True)
    ex = ember.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    es = [ember.tensor(s, requires_grad=True) for s in states]

    def run(module, lib, x_in, s_in, utils):
        inp = x_in
        if lengths is not None:
            inp = utils.pack_padded_sequence(
                x_in, list(lengths), batch_first=module.batch_first, enforce_sorted=False
            )
        hx = None
        if s_in:
            hx = tuple(s_in) if cls == "LSTM" else s_in[0]
        out, hn = module(inp, hx)
        if lengths is not None:
            out, out_lengths = utils.pad_packed_sequence(out, batch_first=module.batch_first)
            assert list(out_lengths.tolist()) == list(lengths)
        finals = hn if cls == "LSTM" else (hn,)
        return out, finals

    t_out, t_fin = run(tm, torch, tx, ts, torch.nn.utils.rnn)
    e_out, e_fin = run(em, ember, ex, es, rnn_utils)
    _close(e_out.detach().numpy(), t_out.detach().numpy(), "output")
    for k, (a, b) in enumerate(zip(e_fin, t_fin)):
        _close(a.detach().numpy(), b.detach().numpy(), f"final state {k}")
    # a loss that weighs every output and state differently
    w_out = rng.standard_normal(tuple(t_out.shape))
    w_fin = [rng.standard_normal(tuple(f.shape)) for f in t_fin]
    t_loss = (t_out * torch.tensor(w_out)).sum() + sum(
        (f * torch.tensor(w)).sum() for f, w in zip(t_fin, w_fin)
    )
    e_loss = (e_out * ember.tensor(w_out)).sum() + sum(
        (f * ember.tensor(w)).sum() for f, w in zip(e_fin, w_fin)
    )
    t_loss.backward()
    e_loss.backward()
    _close(ex.grad.numpy(), tx.grad.numpy(), "input grad")
    for k, (a, b) in enumerate(zip(es, ts)):
        _close(a.grad.numpy(), b.grad.numpy(), f"state {k} grad")
    t_params = dict(tm.named_parameters())
    for name, p in em.named_parameters():
        _close(p.grad.numpy(), t_params[name].grad.numpy(), f"grad of {name}")


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_state_dict_moves_both_ways_and_init_matches_torch(cls):
    kwargs = {"num_layers": 2, "bidirectional": True}
    tm = getattr(torch.nn, cls)(5, 8, **kwargs)
    em = getattr(nn, cls)(5, 8, **kwargs)
    t_state, e_state = tm.state_dict(), em.state_dict()
    assert list(e_state) == list(t_state)
    bound = 1 / np.sqrt(8)
    for name, value in e_state.items():
        assert tuple(value.shape) == tuple(t_state[name].shape), name
        v = value.numpy()
        assert np.all(np.abs(v) <= bound) and v.std() > bound / 3, name  # uniform(-b, b)
    tm.load_state_dict({k: torch.tensor(v.numpy()) for k, v in e_state.items()})
    x = np.random.default_rng(1).standard_normal((4, 2, 5)).astype(np.float32)
    _close(em(ember.tensor(x))[0].detach().numpy(), tm(torch.tensor(x))[0].detach().numpy(), cls)


CELL_ROWS = [
    ("rnn_cell", "RNNCell", (4, 6), {}, 2),
    ("rnn_cell_relu_nobias", "RNNCell", (4, 6), {"bias": False, "nonlinearity": "relu"}, 2),
    ("lstm_cell", "LSTMCell", (4, 6), {}, 2),
    ("lstm_cell_unbatched", "LSTMCell", (4, 6), {}, 1),
    ("gru_cell", "GRUCell", (4, 6), {}, 2),
    ("gru_cell_unbatched_nobias", "GRUCell", (4, 6), {"bias": False}, 1),
]


@pytest.mark.parametrize("row", CELL_ROWS, ids=[r[0] for r in CELL_ROWS])
@pytest.mark.parametrize("with_state", [False, True])
def test_cell_matches_torch(row, with_state):
    _, cls, args, kwargs, ndim = row
    rng = np.random.default_rng(2)
    tm = getattr(torch.nn, cls)(*args, **kwargs).double()
    em = getattr(nn, cls)(*args, **kwargs, dtype=ember.float64)
    _copy_state(tm, em)
    lead = (3,) if ndim == 2 else ()
    x = rng.standard_normal(lead + (4,))
    n_states = 2 if cls == "LSTMCell" else 1
    states = [rng.standard_normal(lead + (6,)) for _ in range(n_states)] if with_state else []
    tx, ex = torch.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    es = [ember.tensor(s, requires_grad=True) for s in states]
    hx_t = (tuple(ts) if n_states == 2 else ts[0]) if states else None
    hx_e = (tuple(es) if n_states == 2 else es[0]) if states else None
    t_out, e_out = tm(tx, hx_t), em(ex, hx_e)
    t_out = t_out if n_states == 2 else (t_out,)
    e_out = e_out if n_states == 2 else (e_out,)
    t_loss = sum((o * (k + 1.5)).sin().sum() for k, o in enumerate(t_out))
    e_loss = sum((o * (k + 1.5)).sin().sum() for k, o in enumerate(e_out))
    for a, b in zip(e_out, t_out):
        _close(a.detach().numpy(), b.detach().numpy(), "output")
    t_loss.backward()
    e_loss.backward()
    _close(ex.grad.numpy(), tx.grad.numpy(), "input grad")
    for a, b in zip(es, ts):
        _close(a.grad.numpy(), b.grad.numpy(), "state grad")
    t_params = dict(tm.named_parameters())
    for name, p in em.named_parameters():
        _close(p.grad.numpy(), t_params[name].grad.numpy(), f"grad of {name}")


# --- the fused recurrences against their decompositions ---------------------------------------
FUSED_ROWS = [
    (mode, reverse, lengths)
    for mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
    for reverse in (False, True)
    for lengths in (None, (5, 2, 4))
]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("mode,reverse,lengths", FUSED_ROWS)
def test_fused_recurrence_matches_decomposition(mode, reverse, lengths, compiled):
    if compiled and not numba_kernels.available():
        pytest.skip("numba is not installed: the compiled recurrence kernels are off")
    context = contextlib.nullcontext() if compiled else numba_kernels.disable_for_tests()
    with context:
        _check_fused_against_decomposition(mode, reverse, lengths)


def _check_fused_against_decomposition(mode, reverse, lengths):
    rng = np.random.default_rng(3)
    T, B, F, H = 5, 3, 4, 6
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    arrays = [rng.standard_normal((T, B, F))] + [rng.standard_normal((B, H)) for _ in range(2)]
    arrays += [
        rng.standard_normal(s) * 0.5
        for s in [(gates * H, F), (gates * H, H), (gates * H,), (gates * H,)]
    ]

    def run(fused):
        x, h0, c0, *weights = [ember.tensor(a, requires_grad=True) for a in arrays]
        nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
        if fused:
            if mode == "LSTM":
                y, *final = R.lstm_layer(x, h0, c0, *weights, reverse=reverse, lengths=lengths)
            elif mode == "GRU":
                y, *final = R.gru_layer(x, h0, *weights, reverse=reverse, lengths=lengths)
            else:
                y, *final = R.rnn_layer(
                    x, h0, *weights, nonlinearity=nonlinearity, reverse=reverse, lengths=lengths
                )
        else:
            state = (h0, c0) if mode == "LSTM" else (h0,)
            y, final = R.recurrent_layer_reference(
                mode[:4].rstrip("_"), x, state, weights, nonlinearity, reverse, lengths
            )
        loss = (y * y).sum() + sum(f.sin().sum() for f in final)
        loss.backward()
        grads = [t.grad.numpy() if t.grad is not None else None for t in (x, h0, c0, *weights)]
        return [y.detach().numpy()] + [f.detach().numpy() for f in final], grads

    (out_f, grads_f), (out_r, grads_r) = run(True), run(False)
    for a, b in zip(out_f, out_r):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_f, grads_r):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_compiled_recurrence_kernels_match_numpy_reference_on_larger_shapes(mode, dtype):
    from ember.backend import rnn_kernels as K

    if not numba_kernels.available():
        pytest.skip("numba is not installed: the compiled recurrence kernels are off")
    rng = np.random.default_rng(4)
    T, B, H = 9, 7, 33
    G = (4 if mode == "LSTM" else 3) * H
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    x, w = cast(rng.standard_normal((T, B, G)) * 2), cast(rng.standard_normal((G, H)) * 0.3)
    h0, c0, b = (
        cast(rng.standard_normal((B, H))),
        cast(rng.standard_normal((B, H))),
        cast(rng.standard_normal(G)),
    )
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for reverse in (False, True):
        for lengths in (None, tuple(int(n) for n in rng.integers(1, T + 1, B))):
            kw = {"reverse": reverse, "lengths": lengths}
            if mode == "LSTM":
                ours, ref = (
                    K.lstm_forward(x, w, h0, c0, **kw),
                    R._lstm_forward(np, x, w, h0, c0, **kw),
                )
                g = cast(rng.standard_normal(ref.shape))
                d_ours = K.lstm_grad(g, ref, x, w, h0, c0, **kw)
                d_ref = R._lstm_grad(np, g, ref, x, w, h0, c0, **kw)
            else:
                ours, ref = K.gru_forward(x, w, b, h0, **kw), R._gru_forward(np, x, w, b, h0, **kw)
                g = cast(rng.standard_normal(ref.shape))
                d_ours = K.gru_grad(g, ref, x, w, b, h0, **kw)
                d_ref = R._gru_grad(np, g, ref, x, w, b, h0, **kw)
            assert ours.dtype == ref.dtype == d_ours.dtype == d_ref.dtype == dtype
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)
            scale = float(np.abs(d_ref).max())
            np.testing.assert_allclose(d_ours, d_ref, rtol=tol, atol=tol * scale)


def test_fused_recurrence_refuses_second_order_with_a_clear_error():
    lstm = nn.LSTM(3, 4, dtype=ember.float64)
    x = ember.randn(2, 1, 3, dtype=ember.float64, requires_grad=True)
    (out, _) = lstm(x)
    (g,) = ember.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="lstm_recurrence_grad: second-order"):
        g.sum().backward()


# --- packing helpers and errors ---------------------------------------------------------------
def test_pack_and_pad_match_torch():
    seqs = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 10 * n for n in (3, 5, 1)]
    e = rnn_utils.pack_sequence([ember.tensor(s) for s in seqs], enforce_sorted=False)
    t = torch.nn.utils.rnn.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False)
    np.testing.assert_array_equal(e.data.numpy(), t.data.numpy())
    assert e.batch_sizes.tolist() == t.batch_sizes.tolist()
    assert e.sorted_indices.tolist() == t.sorted_indices.tolist()
    assert e.unsorted_indices.tolist() == t.unsorted_indices.tolist()
    for batch_first in (False, True):
        ep, el = rnn_utils.pad_packed_sequence(e, batch_first, -1.0, total_length=6)
        tp, tl = torch.nn.utils.rnn.pad_packed_sequence(t, batch_first, -1.0, total_length=6)
        np.testing.assert_array_equal(ep.numpy(), tp.numpy())
        assert el.tolist() == tl.tolist()
    for side in ("left", "right"):
        ep = rnn_utils.pad_sequence([ember.tensor(s) for s in seqs], True, 7.0, side)
        tp = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], True, 7.0, side)
        np.testing.assert_array_equal(ep.numpy(), tp.numpy())
    back = rnn_utils.unpack_sequence(e)
    for a, b in zip(back, seqs):
        np.testing.assert_array_equal(a.numpy(), b)


ERROR_ROWS = [
    (
        "unsorted",
        lambda: rnn_utils.pack_padded_sequence(ember.zeros(3, 2, 1), [1, 3]),
        ValueError,
        "sorted in decreasing order",
    ),
    (
        "zero length",
        lambda: rnn_utils.pack_padded_sequence(ember.zeros(3, 2, 1), [3, 0]),
        ValueError,
        "greater than 0",
    ),
    ("input size", lambda: nn.LSTM(4, 5)(ember.zeros(2, 3, 7)), ValueError, "Expected 4, got 7"),
    ("input rank", lambda: nn.GRU(4, 5)(ember.zeros(2, 3, 1, 4)), ValueError, "2D or 3D"),
    (
        "hidden shape",
        lambda: nn.RNN(4, 5)(ember.zeros(2, 3, 4), ember.zeros(1, 2, 5)),
        ValueError,
        r"expected hidden size \(1, 3, 5\)",
    ),
    ("proj on GRU", lambda: nn.GRU(4, 5, proj_size=2), ValueError, "only supported for LSTM"),
    ("proj too big", lambda: nn.LSTM(4, 5, proj_size=5), ValueError, "smaller than hidden"),
    (
        "dtype",
        lambda: nn.LSTM(4, 5)(ember.zeros(2, 3, 4, dtype=ember.float64)),
        ValueError,
        "does not match weight dtype",
    ),
    (
        "cell size",
        lambda: nn.LSTMCell(4, 5)(ember.zeros(2, 3)),
        ValueError,
        "inconsistent input_size",
    ),
]


@pytest.mark.parametrize("case", ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS])
def test_bad_input_raises_a_clear_error(case):
    _, fn, error, match = case
    with pytest.raises(error, match=match):
        fn()


def test_dropout_between_layers_only_in_training():
    lstm = nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = ember.randn(6, 2, 3)
    lstm.eval()
    a, _ = lstm(x)
    b, _ = lstm(x)
    a, b = a.detach(), b.detach()
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    lstm.train()
    ember.manual_seed(0)
    c, _ = lstm(x)
    assert not np.allclose(c.detach().numpy(), a.numpy())
    assert repr(lstm) == "LSTM(3, 4, num_layers=2, dropout=0.5)"


def test_float32_lstm_step_saturates_and_keeps_nan_as_the_reference():
    """The float32 LSTM step computes tanh as a rational approximation (Note [Vectorized tanh]
    in ember/backend/rnn_kernels.py): saturated gates (|x| up to 60, and +-inf) and NaN inputs
    give the reference's values."""
    from ember.backend import rnn_kernels as K

    if not numba_kernels.available():
        pytest.skip("numba is not installed: the compiled recurrence kernels are off")
    rng = np.random.default_rng(5)
    T, B, H = 6, 4, 9
    x = (rng.uniform(-60, 60, (T, B, 4 * H))).astype(np.float32)
    x[0, 0, :3] = [np.inf, -np.inf, np.nan]
    w = (rng.standard_normal((4 * H, H)) * 2).astype(np.float32)
    h0, c0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    ours, ref = K.lstm_forward(x, w, h0, c0), R._lstm_forward(np, x, w, h0, c0)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-5 * np.abs(ref[~np.isnan(ref)]).max())


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_backward_widens_its_slices_once_from_a_broadcast_zero(bidirectional, monkeypatch):
    """Note [Scatter into zeros] (ember/ops/shape.py): the output, h_n and c_n are cut from the
    [h, c] part of the fused recurrence's (T, B, 6H) result, so backward scatters into 6H once
    per direction, onto a broadcast zero (no full array of zeros is read); the gradients still
    match PyTorch's. The slices' VJP is what is checked: without it the engine adds the slices'
    gradients into the result's buffer itself (Note [Slot gradients] in
    ember/autograd/engine.py; the other LSTM tests run that path)."""
    from ember.ops.registry import REGISTRY

    monkeypatch.setattr(REGISTRY["getitem"], "slot_gradient", None)
    T, B, F, H = 5, 3, 4, 6
    op = REGISTRY["index_add"]
    forward, bases = op.forward, []

    def spy(xp, base, values, *indices, spec):
        bases.append((tuple(base.shape), base.strides))
        return forward(xp, base, values, *indices, spec=spec)

    monkeypatch.setattr(op, "forward", spy)
    rng = np.random.default_rng(1)
    tm = torch.nn.LSTM(F, H, bidirectional=bidirectional).double()
    em = nn.LSTM(F, H, bidirectional=bidirectional, dtype=ember.float64)
    _copy_state(tm, em)
    x = rng.standard_normal((T, B, F))
    tx, ex = torch.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    (t_out, (t_h, t_c)), (e_out, (e_h, e_c)) = tm(tx), em(ex)
    w = rng.standard_normal(tuple(t_out.shape))
    (t_out * torch.tensor(w)).sum().backward(retain_graph=True)
    (t_h.sum() * 2 + t_c.sum() * 3).backward()
    bases.clear()
    ((e_out * ember.tensor(w)).sum() + e_h.sum() * 2 + e_c.sum() * 3).backward()
    wide = [strides for shape, strides in bases if shape == (T, B, 6 * H)]
    assert len(wide) == (2 if bidirectional else 1), bases
    assert all(not any(strides) for _, strides in bases), bases  # broadcast zeros only
    _close(ex.grad.numpy(), tx.grad.numpy(), "input grad")
    t_params = dict(tm.named_parameters())
    for name, p in em.named_parameters():
        _close(p.grad.numpy(), t_params[name].grad.numpy(), f"grad of {name}")
