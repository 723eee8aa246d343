"""Autograd semantics, and gradient parity with PyTorch on an MLP and on attention."""

import numpy as np
import pytest

import ember
from ember.autograd import AutogradError

torch = pytest.importorskip("torch", reason="PyTorch is the reference; `make test` installs it")


def _pair(shape, rng, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    return ember.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _report(name, ours, theirs):
    diff = np.abs(np.asarray(ours) - theirs)
    rel = diff.max() / max(np.abs(theirs).max(), 1e-30)
    print(f"{name}: max abs err {diff.max():.3g}, rel err {rel:.3g}")
    return diff.max()


def test_three_layer_mlp_gradients_match_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 20)).astype(np.float32)
    y = rng.integers(0, 5, 16)
    params = [_pair(s, rng, 0.3) for s in [(20, 32), (32,), (32, 32), (32,), (32, 5), (5,)]]
    ours = [p[0] for p in params]
    theirs = [p[1] for p in params]

    def forward(lib, ps, x, y):
        w1, b1, w2, b2, w3, b3 = ps
        h = (x @ w1 + b1).relu()
        h = (h @ w2 + b2).tanh()
        logits = h @ w3 + b3
        if lib is ember:
            return ember.ops.nn.cross_entropy(logits, y)
        return torch.nn.functional.cross_entropy(logits, y)

    lo = forward(ember, ours, ember.tensor(x), ember.tensor(y))
    lt = forward(torch, theirs, torch.tensor(x), torch.tensor(y))
    lo.backward()
    lt.backward()
    assert abs(lo.item() - lt.item()) < 1e-5
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert _report(f"mlp param {i} grad", a.grad, b.grad.numpy()) < 1e-5


@pytest.mark.parametrize("masked", [False, True])
def test_attention_gradients_match_torch(masked):
    rng = np.random.default_rng(1)
    (q, tq), (k, tk), (v, tv) = (_pair((2, 3, 6, 8), rng) for _ in range(3))
    mask = rng.random((6, 6)) > 0.3
    np.fill_diagonal(mask, True)
    out = ember.ops.nn.scaled_dot_product_attention(
        q, k, v, attn_mask=ember.tensor(mask) if masked else None
    )
    tout = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=torch.tensor(mask) if masked else None
    )
    cot = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(ember.tensor(cot))
    tout.backward(torch.tensor(cot))
    assert _report("sdpa out", out.detach(), tout.detach().numpy()) < 1e-5
    for name, a, b in (("q", q, tq), ("k", k, tk), ("v", v, tv)):
        assert _report(f"sdpa d{name}", a.grad, b.grad.numpy()) < 1e-5


def test_second_order_tanh_matmul_matches_torch():
    rng = np.random.default_rng(2)
    (x, tx), (w, tw) = _pair((4, 5), rng), _pair((5, 3), rng)
    (gx,) = ember.autograd.grad(ember.tanh(x @ w).sum(), [x], create_graph=True)
    (tgx,) = torch.autograd.grad(torch.tanh(tx @ tw).sum(), [tx], create_graph=True)
    (gx * gx).sum().backward()
    (tgx * tgx).sum().backward()
    assert _report("d/dx", gx.detach(), tgx.detach().numpy()) < 1e-5
    assert _report("d2 wrt x", x.grad, tx.grad.numpy()) < 1e-5
    assert _report("d2 wrt w", w.grad, tw.grad.numpy()) < 1e-5


def test_gradients_accumulate_and_retain_graph():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(AutogradError, match="second time"):
        y.backward()


def test_dynamic_graph_with_python_control_flow():
    x = ember.tensor(3.0, requires_grad=True)
    y = x
    while y.item() < 100:
        y = y * x if y.item() % 2 else y + x
    y.backward()
    tx = torch.tensor(3.0, requires_grad=True)
    ty = tx
    while ty.item() < 100:
        ty = ty * tx if ty.item() % 2 else ty + tx
    ty.backward()
    assert x.grad.item() == pytest.approx(tx.grad.item())


def test_grad_modes():
    x = ember.ones(2, requires_grad=True)
    with ember.no_grad():
        assert not (x * 2).requires_grad
        with ember.enable_grad():
            assert (x * 2).requires_grad
    with ember.inference_mode():
        assert not (x * 2).requires_grad
    with ember.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad

    @ember.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert ember.is_grad_enabled()


def test_hooks_and_retain_grad():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    y = x * 3
    y.retain_grad()
    handle = y.register_hook(lambda g: g * 2)
    y.sum().backward()
    np.testing.assert_allclose(seen[0], [6.0, 6.0])
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])
    np.testing.assert_allclose(y.grad.numpy(), [2.0, 2.0])
    handle.remove()


def test_autograd_grad_and_unused_inputs():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    z = ember.tensor([1.0], requires_grad=True)
    (g,) = ember.autograd.grad((x**3).sum(), x)
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0])
    assert x.grad is None
    with pytest.raises(AutogradError, match="not used"):
        ember.autograd.grad((x * 2).sum(), [x, z])
    gx, gz = ember.autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gz is None


def test_custom_function():
    class Cube(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x

    x = ember.tensor([1.0, -2.0], requires_grad=True)
    y = Cube.apply(x)
    assert y.grad_fn.name() == "CubeBackward0" or "Cube" in repr(y.grad_fn)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])


class _Exp(ember.autograd.Function):
    """Saves its own output (Note [Saved outputs of Functions])."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y, x)
        return y

    @staticmethod
    def backward(ctx, g):
        y, x = ctx.saved_tensors
        assert x is not None
        return g * y


def test_custom_function_saving_its_output_forms_no_cycle():
    import gc
    import weakref

    x = ember.tensor([0.5, -1.0], requires_grad=True)
    gc.disable()
    try:
        for backward in (False, True):
            y = _Exp.apply(x)
            assert y.grad_fn.op._ctx.saved_tensors[0] is y  # outside backward: the output
            refs = [weakref.ref(y), weakref.ref(y.grad_fn), weakref.ref(y.grad_fn.op._ctx)]
            if backward:
                x.grad = None
                y.sum().backward()
                np.testing.assert_allclose(x.grad.numpy(), np.exp([0.5, -1.0]), rtol=1e-6)
            del y
            assert [r() is None for r in refs] == [True, True, True]
    finally:
        gc.enable()


def test_custom_function_saved_output_second_order_and_version_check():
    x = ember.tensor([0.5, -1.0], requires_grad=True)
    y = _Exp.apply(x)
    (g,) = ember.autograd.grad(y.sum(), x, create_graph=True)  # g = exp(x), with history
    (gg,) = ember.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), np.exp([0.5, -1.0]), rtol=1e-6)
    y = _Exp.apply(x)
    y.mul_(2)
    with pytest.raises(AutogradError, match="the output of _Exp.*mul_"):
        y.sum().backward()


def test_in_place_modification_error_names_op_and_lines():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    w = ember.tensor([3.0, 4.0], requires_grad=True)
    y = x.tanh()  # made here
    z = y * w  # mul saves y (for w's gradient)
    y.add_(1)  # modified here
    with pytest.raises(AutogradError) as info:
        z.sum().backward()
    message = str(info.value)
    assert "mul" in message and "tanh" in message and "add_" in message
    assert "test_autograd.py" in message
    assert "version 1" in message


def test_changed_saved_output_error_names_the_op():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x.tanh()  # tanh's backward reads its own output
    y.mul_(2)
    with pytest.raises(AutogradError) as info:
        y.sum().backward()
    message = str(info.value)
    assert "the output of tanh" in message and "mul_" in message and "version 1" in message


def test_graph_holds_no_reference_cycles():
    """Note [Autograd graph]: a node never references itself, so a graph (with or without a
    backward) is freed as soon as its tensors are, without the cyclic collector; a backward
    frees each node's saved tensors while the root is still alive."""
    import gc
    import weakref

    x = ember.randn(4, 8, requires_grad=True)
    w = ember.randn(8, 8, requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        # softmax and tanh save their outputs: their version records once named the node
        y = ember.nn.functional.softmax(x @ w, dim=-1).tanh()
        del y  # a graph dropped without a backward
        h = x @ w
        saved = weakref.ref(h)
        loss = (ember.nn.functional.softmax(h, dim=-1) * h).tanh().sum()
        del h
        loss.backward()
        assert saved() is None  # freed by the backward, while `loss` holds the graph
        del loss
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert x.grad is not None and w.grad is not None


FAN_OUT_GRAPHS = {
    # a hidden state feeding three projections and a residual (MiniLM's layer input)
    "qkv_and_residual": lambda lib, x, w: (x @ w).tanh() + (x @ w.T).sin() + x * (x @ w) + x,
    # one gradient tensor delivered twice to the same node (add's VJP passes g on to both)
    "same_tensor_twice": lambda lib, x, w: ((x @ w) + (x @ w)) * 3,
    "reshaped_views": lambda lib, x, w: (
        (x @ w).reshape(2, 2, 8).reshape(4, 8) * 2 + (x @ w).reshape(32).reshape(4, 8)
    ),
    "broadcast_and_sum": lambda lib, x, w: x * x.sum(-1, keepdim=True) + (x @ w).exp() + x,
}


@pytest.mark.parametrize("name", sorted(FAN_OUT_GRAPHS))
def test_fan_out_gradient_sums_match_torch(name):
    """A node fed by several consumers sums their gradients, in place where the engine alone
    holds the sum (`_add_into_buffer`); the sums and a retained gradient match PyTorch's."""
    rng = np.random.default_rng(3)
    x, tx = _pair((4, 8), rng)
    w, tw = _pair((8, 8), rng, 0.3)
    graph = FAN_OUT_GRAPHS[name]
    h = x * 1.5
    h.retain_grad()
    th = tx * 1.5
    th.retain_grad()
    kept = []
    h.register_hook(lambda g: kept.append(g))
    (graph(ember, h, w) ** 2).sum().backward()
    (graph(torch, th, tw) ** 2).sum().backward()
    for ours, theirs in ((x.grad, tx.grad), (w.grad, tw.grad), (h.grad, th.grad)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kept[0].numpy(), th.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_in_place_on_leaf_requiring_grad_is_refused():
    x = ember.ones(2, requires_grad=True)
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        x.add_(1)
    with ember.no_grad():
        x.add_(1)
    assert x._version_value == 1


def test_in_place_ops_on_non_leaf_record_history():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    y.mul_(x)
    y[0] = y[0] * 3
    y.sum().backward()
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    ty = tx * 1
    ty.mul_(tx)
    ty[0] = ty[0] * 3
    ty.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())


def test_version_counters_shared_with_views():
    x = ember.zeros(4)
    v = x[1:3]
    v.fill_(1.0)
    assert x._version_value == v._version_value == 1
    np.testing.assert_array_equal(x.numpy(), [0, 1, 1, 0])


def test_requires_grad_rules():
    with pytest.raises(AutogradError, match="floating point"):
        ember.tensor([1, 2]).requires_grad_()
    x = ember.ones(2, requires_grad=True)
    assert x.is_leaf and not (x * 2).is_leaf
    assert (x * 2).grad_fn.name() == "MulBackward0"
    assert not (x > 0).requires_grad
    with pytest.raises(AutogradError, match="requires grad"):
        x.numpy()
    assert x.detach().numpy().tolist() == [1.0, 1.0]


def test_manual_seed_reproducibility():
    ember.manual_seed(7)
    a = ember.randn(5).tolist() + ember.rand(3).tolist() + ember.randperm(6).tolist()
    ember.manual_seed(7)
    b = ember.randn(5).tolist() + ember.rand(3).tolist() + ember.randperm(6).tolist()
    assert a == b
    g = ember.Generator().manual_seed(3)
    state = g.get_state()
    first = ember.rand(4, generator=g).tolist()
    g.set_state(state)
    assert ember.rand(4, generator=g).tolist() == first


def test_accumulated_gradients_never_share_memory():
    """The engine hands a gradient buffer to `.grad` without a copy only when nothing else holds
    it (engine._accumulate_into): add's VJP passes one gradient to both inputs, the retained
    output and the caller's seed, and each `.grad` must still be its own array."""
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    z = ember.tensor([3.0, 4.0], requires_grad=True)
    y = x + z
    y.retain_grad()
    seed = ember.ones(2)
    y.backward(seed)
    arrays = [seed._data, y.grad._data, x.grad._data, z.grad._data]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j]), (i, j)
    x.grad.add_(1.0)
    assert y.grad.tolist() == z.grad.tolist() == seed.tolist() == [1.0, 1.0]
    # a second backward accumulates in place into each .grad separately
    (x * 3 + z).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0] and z.grad.tolist() == [2.0, 2.0]


def test_vjps_skip_inputs_that_need_no_gradient(monkeypatch):
    """add/sub VJPs skip the gradient of an input that did not require grad when recorded
    (TensorMeta.requires_grad): sub's VJP negates the gradient only for a second input that
    needs it, and the gradients still match PyTorch."""
    from ember.ops.elementwise import NEG

    calls = []
    forward = NEG.forward
    monkeypatch.setattr(NEG, "forward", lambda xp, x: calls.append(1) or forward(xp, x))
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ((x - ember.tensor([0.5, 0.5, 0.5])) ** 2).sum().backward()
    assert calls == []  # no -g for the constant
    w = ember.tensor([0.5, 0.5, 0.5], requires_grad=True)
    ((x - w) ** 2).sum().backward()
    assert calls == [1]
    tx = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    tw = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    ((tx - torch.tensor([0.5, 0.5, 0.5])) ** 2).sum().backward()
    ((tx - tw) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6)


class _Scale(ember.autograd.Function):
    """Saves a tensor made inside forward, which only its ctx holds."""

    @staticmethod
    def forward(ctx, x):
        factor = x * 0 + 3
        ctx.save_for_backward(factor)
        return x * factor

    @staticmethod
    def backward(ctx, g):
        (factor,) = ctx.saved_tensors
        return g * factor


def test_custom_function_saved_tensors_freed_after_backward():
    import weakref

    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = _Scale.apply(x)
    ctx = y.grad_fn.op._ctx
    saved = weakref.ref(ctx.saved_tensors[0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    assert saved() is None  # dropped as built-in ops drop theirs
    with pytest.raises(AutogradError, match="saved_tensors.*retain_graph=True"):
        _ = ctx.saved_tensors
    with pytest.raises(AutogradError, match="retain_graph"):
        y.sum().backward()

    x.grad = None
    y = _Scale.apply(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()  # the first kept them
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


# Note [Slot gradients]: views of one non-leaf tensor whose gradients the engine adds straight
# into that tensor's gradient buffer, each graph against PyTorch and against the VJP path
SLOT_GRAPHS = {
    # GPT-2's attention: query, key and value as selects of one product, used transposed
    "qkv_selects": lambda lib, h: (
        (h[:, :, 0] * h[:, :, 1]).sum(-1) + (h[:, :, 2].transpose(0, 1) ** 2).sum((0, 2)).sum()
    ),
    "overlapping_slices": lambda lib, h: h[:, 0:4].tanh() + h[:, 2:6] * 3,
    "slices_and_the_whole": lambda lib, h: h[:, :, 1] * 2 + (h * h).sum(2) + h[:, :, 1].exp(),
    "split_last_dim": lambda lib, h: sum(
        part.sin() * (i + 1) for i, part in enumerate(h.reshape(4, 6, 15).split(5, -1))
    ),  # fmt: skip
    "steps_and_ints": lambda lib, h: h[:, ::2, 2].cos() + h[1, None, 1:4, 0, ::2].sum(),
    "tensor_index": lambda lib, h: h[lib.tensor([0, 2, 2])] * 2 + h[:, 1:3].sum(),
}


def _slot_case(lib, name, x):
    h = x * 1.5
    h.retain_grad()
    part = h[:, :, 1]
    part.retain_grad()
    seen = []
    part.register_hook(lambda g: seen.append(g))
    out = SLOT_GRAPHS[name](lib, h)
    return h, part, seen, (out * out).sum() + (part * part.sin()).sum()


@pytest.mark.parametrize("name", sorted(SLOT_GRAPHS))
def test_slot_gradients_match_torch_and_the_vjp_path(name, monkeypatch):
    """Basic-index views of a non-leaf add their gradients into its buffer in place (Note [Slot
    gradients]): gradients, retained gradients and hooks as PyTorch's, bit-equal to the views'
    VJP (a scatter into zeros, then a sum), and twice over with retain_graph."""
    from ember.ops.shape import GETITEM, INDEX_ADD

    rng = np.random.default_rng(5)
    x, tx = _pair((4, 6, 3, 5), rng)
    th, tpart, tseen, tloss = _slot_case(torch, name, tx)
    tloss.backward()
    scatters = []
    scatter = INDEX_ADD.forward
    monkeypatch.setattr(INDEX_ADD, "forward", lambda xp, *a, **k: scatters.append(1) or
                        scatter(xp, *a, **k))  # fmt: skip
    results = {}
    for slots in (True, False):
        if not slots:
            monkeypatch.setattr(GETITEM, "slot_gradient", None)
        x.grad = None
        scatters.clear()
        h, part, seen, loss = _slot_case(ember, name, x)
        loss.backward(retain_graph=True)
        results[slots] = [t.numpy().copy() for t in (x.grad, h.grad, part.grad, seen[0])]
        if slots and name != "tensor_index":  # no scatter into zeros: the views' slots
            assert scatters == []
        loss.backward()  # retain_graph: the same gradients once more
        np.testing.assert_array_equal(x.grad.numpy(), 2 * results[slots][0])
    for ours, theirs in zip(results[True], (tx.grad, th.grad, tpart.grad, tseen[0])):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)
    for with_slots, with_vjp in zip(results[True], results[False]):
        np.testing.assert_array_equal(with_slots, with_vjp)


def test_slot_gradients_second_order_use_the_vjp():
    """With create_graph the views' VJP runs (a differentiable graph): second derivatives of a
    function of selects match PyTorch's."""
    rng = np.random.default_rng(6)
    x, tx = _pair((3, 4, 2), rng)
    grads = []
    for lib, t in ((ember, x), (torch, tx)):
        h = t * 2.0
        y = (h[:, :, 0] ** 2 * h[:, :, 1]).sum()
        (g,) = lib.autograd.grad(y, t, create_graph=True)
        (g * g).sum().backward()
        grads.append(t.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)


# Note [Eager VJPs]: linear's gradients from its eager VJP (kernels on arrays) against the plain
# VJP (ember ops) and PyTorch; rows: (x shape, bias, the inputs that require grad, x strided);
# sizes above MKL's cut, so that the products take a model's BLAS paths
EAGER_LINEAR = {
    "batched_bias": ((4, 48, 40), True, "xwb", False),
    "matrix_no_bias": ((96, 40), False, "xw", False),
    "vector_input": ((40,), True, "xwb", False),
    "frozen_weight": ((4, 48, 40), True, "x", False),
    "data_input": ((4, 48, 40), True, "wb", False),
    "strided_input": ((4, 48, 40), True, "xwb", True),
}


def _eager_linear_loss(lib, x, w, b, strided):
    h = (x.transpose(0, 2) * 1.0).transpose(0, 2) if strided else x * 1.0
    y = lib.nn.functional.linear(h, w, b)
    return (y * y.tanh()).sum()


@pytest.mark.parametrize("name", sorted(EAGER_LINEAR))
def test_linear_eager_vjp_matches_the_vjp_and_torch(name, monkeypatch):
    """The backward engine runs linear's `eager_vjp` where it records no graph (Note [Eager
    VJPs]): the same gradients, bit for bit, as the VJP written with ember ops, and PyTorch's
    within float32 rounding; with create_graph the plain VJP runs (second derivatives)."""
    from ember.ops.linalg import LINEAR
    from ember.testing.parity import assert_close

    shape, bias, needs, strided = EAGER_LINEAR[name]
    rng = np.random.default_rng(7)
    x, tx = _pair(shape, rng)
    w, tw = _pair((24, 40), rng, 0.2)
    b, tb = _pair((24,), rng) if bias else (None, None)
    pairs = []
    for t, tt, key in ((x, tx, "x"), (w, tw, "w"), (b, tb, "b")):
        if t is not None and key in needs:
            pairs.append((t, tt))
        elif t is not None:
            t.requires_grad_(False)
            tt.requires_grad_(False)
    _eager_linear_loss(torch, tx, tw, tb, strided).backward()
    eager = LINEAR.eager_vjp
    calls = []
    results = {}
    for mode, vjp in (
        ("eager", lambda *a, **k: calls.append(1) or eager(*a, **k)),
        ("plain", None),
    ):
        monkeypatch.setattr(LINEAR, "eager_vjp", vjp)
        for t, _ in pairs:
            t.grad = None
        _eager_linear_loss(ember, x, w, b, strided).backward()
        results[mode] = [t.grad.numpy().copy() for t, _ in pairs]
    assert calls  # it ran (it declines only strided gradients and mixed dtypes)
    for ours, plain, (_, tt) in zip(results["eager"], results["plain"], pairs):
        np.testing.assert_array_equal(ours, plain)
        assert_close(ours, tt.grad, rtol=1e-5)

    # create_graph: the plain VJP records the gradient's graph; its derivative matches PyTorch's
    monkeypatch.setattr(LINEAR, "eager_vjp", eager)
    second = []
    for lib, leaf, xs, ws, bs in ((ember, pairs[0][0], x, w, b), (torch, pairs[0][1], tx, tw, tb)):
        leaf.grad = None
        (g,) = lib.autograd.grad(
            _eager_linear_loss(lib, xs, ws, bs, strided), leaf, create_graph=True
        )
        (g * g).sum().backward()
        second.append(leaf.grad)
    assert_close(second[0].numpy(), second[1], rtol=1e-4)


# Note [Gradients into buffers]: a hidden state feeding linear layers and a residual, as in a
# Transformer block; rows: the inputs' shape and how many projections read it
INTO_BUFFERS = {"block": ((4, 48, 40), 3), "matrix": ((96, 40), 1)}


def _into_buffers_loss(lib, x, weights, hooked):
    h = x * 1.5
    h.retain_grad()
    h.register_hook(lambda g: hooked.append(g))
    y = lib.nn.functional.linear(h, weights[0]).sin()
    for w in weights[1:]:
        y = y + lib.nn.functional.linear(h, w).sin()
    y = y + h.tanh()  # the walk runs this branch first: its gradient makes h's buffer
    return (y * y).sum(), h


@pytest.mark.parametrize("name", sorted(INTO_BUFFERS))
def test_linear_gradients_into_buffers(name, monkeypatch):
    """A linear input gradient that meets an existing buffer which the engine alone holds is
    added into it by the product itself (Note [Gradients into buffers]): no separate add, the
    gradients, retained gradients and hooks within float32 rounding of PyTorch's and of the
    add path, the same bits from run to run."""
    from ember.autograd import engine
    from ember.backend import get_backend
    from ember.testing.parity import assert_close

    shape, n_weights = INTO_BUFFERS[name]
    rng = np.random.default_rng(11)
    x, tx = _pair(shape, rng)
    pairs = [_pair((40, 40), rng, 0.2) for _ in range(n_weights)]
    theirs_seen = []
    tloss, th = _into_buffers_loss(torch, tx, [p[1] for p in pairs], theirs_seen)
    tloss.backward()
    accumulated, adds = [], []
    xp = get_backend("cpu").xp
    matmul, add = xp.matmul, engine._add_into_buffer
    monkeypatch.setattr(xp, "matmul", lambda *a, **k: (accumulated.append(1) if k.get(
        "accumulate") else None) or matmul(*a, **k))  # fmt: skip
    monkeypatch.setattr(engine, "_add_into_buffer", lambda *a: adds.append(1) or add(*a))
    monkeypatch.setattr(engine, "_BUFFER_REFS", engine._BUFFER_REFS + 1)  # the lambda's frame
    runs = {}
    for mode in ("into", "into again", "adds"):
        if mode == "adds":
            monkeypatch.setattr(engine, "_INTO_REFS", 0)  # no buffer qualifies
        accumulated.clear()
        adds.clear()
        x.grad = None
        for w, _ in pairs:
            w.grad = None
        seen = []
        loss, h = _into_buffers_loss(ember, x, [p[0] for p in pairs], seen)
        loss.backward()
        runs[mode] = [t.numpy().copy() for t in (x.grad, h.grad, seen[0], pairs[0][0].grad)]
        # y * y: y's two gradients meet in one more add (no product makes either)
        if mode == "adds":
            assert not accumulated and len(adds) == n_weights + 1
        else:
            assert len(accumulated) == n_weights and len(adds) == 1
    for a, b in zip(runs["into"], runs["into again"]):
        np.testing.assert_array_equal(a, b)
    for ours, plain, theirs in zip(
        runs["into"], runs["adds"], (tx.grad, th.grad, theirs_seen[0], pairs[0][1].grad)
    ):
        assert_close(ours, plain, rtol=1e-6)
        assert_close(ours, theirs, rtol=1e-5)
