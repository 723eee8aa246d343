"""Module API: registration, iteration, state dicts (strictness and reports), repr, modes,
`to`, `apply`, error paths, init defaults, gradient clipping, import direction."""

from __future__ import annotations

import ast
import copy
import math
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember._util.errors import ShapeError

torch = pytest.importorskip("torch")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 3)})
        self.blocks = nn.ModuleList([nn.Dropout(0.1), nn.Dropout(0.1)])
        self.register_buffer("scale", ember.ones(1))
        self.register_buffer("cache", ember.zeros(2), persistent=False)

    def forward(self, x):
        h = self.body(x)
        return self.heads["a"](h) * self.scale, self.heads["b"](h)


def test_named_parameters_buffers_modules():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.1.bias",
        "heads.a.weight",
        "heads.a.bias",
        "heads.b.weight",
        "heads.b.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "scale",
        "cache",
        "body.1.running_mean",
        "body.1.running_var",
        "body.1.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_modules()] == [
        "",
        "body",
        "body.0",
        "body.1",
        "body.2",
        "heads",
        "heads.a",
        "heads.b",
        "blocks",
        "blocks.0",
        "blocks.1",
    ]
    assert [n for n, _ in net.named_children()] == ["body", "heads", "blocks"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


def test_state_dict_keys_match_pytorch():
    ours = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.Flatten(),
        nn.Linear(2, 2),
        nn.MultiheadAttention(4, 2),
        nn.LayerNorm(3),
        nn.MultiheadAttention(4, 2, add_bias_kv=True, kdim=3),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(2, 2),
        torch.nn.MultiheadAttention(4, 2),
        torch.nn.LayerNorm(3),
        torch.nn.MultiheadAttention(4, 2, add_bias_kv=True, kdim=3),
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert tuple(a.shape) == tuple(b.shape), k


def test_non_persistent_buffer_not_in_state_dict():
    assert "cache" not in Net().state_dict()
    assert "scale" in Net().state_dict()


def test_load_state_dict_strict_reports_all_problems():
    model = nn.Linear(3, 4)
    bad = {"weight": ember.zeros(4, 2), "bias2": ember.zeros(4)}
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "Error(s) in loading state_dict for Linear" in message
    assert 'Missing key(s) in state_dict: "bias".' in message
    assert 'Unexpected key(s) in state_dict: "bias2".' in message
    assert (
        "size mismatch for weight: copying a param with shape (4, 2) from checkpoint, the "
        "shape in current model is (4, 3)." in message
    )
    # nothing was copied
    assert not np.allclose(np.asarray(model.weight.detach()), 0.0)


def test_load_state_dict_non_strict_returns_keys():
    model = nn.Linear(3, 4)
    result = model.load_state_dict(
        {"weight": ember.ones(4, 3), "extra": ember.ones(1)}, strict=False
    )
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    assert np.allclose(np.asarray(model.weight.detach()), 1.0)
    assert repr(model.load_state_dict(model.state_dict())) == "<All keys matched successfully>"
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        model.load_state_dict({"weight": ember.ones(2, 3)}, strict=False)


def test_load_state_dict_copies_in_place_and_keeps_identity():
    model = MLP()
    weight = model.fc1.weight
    other = MLP()
    model.load_state_dict(other.state_dict())
    assert model.fc1.weight is weight
    np.testing.assert_array_equal(
        np.asarray(weight.detach()), np.asarray(other.fc1.weight.detach())
    )


def test_state_dict_round_trip_through_pytorch():
    ours = Net()
    theirs = torch.nn.Module()
    theirs.body = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU()
    )
    theirs.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 2), "b": torch.nn.Linear(8, 3)})
    theirs.register_buffer("scale", torch.ones(1))
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    back = Net()
    back.load_state_dict({k: ember.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)


def test_save_load_round_trip(tmp_path):
    model = Net()
    ember.save(model.state_dict(), tmp_path / "model.safetensors")
    back = Net()
    back.load_state_dict(ember.load(tmp_path / "model.safetensors"))
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)


def test_repr_matches_pytorch():
    def build(lib):
        n = lib.nn
        return n.Sequential(
            n.Conv2d(1, 2, 3, stride=2, padding=1, bias=False),
            n.BatchNorm2d(2),
            n.ReLU(),
            n.MaxPool2d(2),
            n.Flatten(),
            n.Linear(8, 4),
            n.Dropout(0.2),
            n.GELU("tanh"),
            n.LayerNorm(4),
            n.Embedding(10, 3, padding_idx=0),
            n.GroupNorm(2, 4),
            n.Embedding(10, 3, max_norm=1.0, norm_type=1.0, scale_grad_by_freq=True),
            n.MultiheadAttention(8, 2),
            n.TransformerEncoderLayer(8, 2, 16),
            n.ModuleList([n.ReLU(), n.ReLU(), n.Tanh()]),
            n.ModuleDict({"x": n.Identity()}),
            n.Conv1d(2, 3, 3),
            n.AvgPool2d(2),
            n.AdaptiveAvgPool2d(1),
            n.Softmax(dim=1),
            n.LogSoftmax(dim=1),
            n.LeakyReLU(0.2),
            n.ELU(),
            n.SiLU(),
            n.Sigmoid(),
            n.Tanh(),
            n.CrossEntropyLoss(),
            n.Bilinear(2, 3, 4),
            n.BatchNorm1d(3, affine=False),
        )

    assert repr(build(ember)) == repr(build(torch))


def test_embedding_sparse_in_a_compiled_graph_says_why_and_what_to_use():
    # eager sparse gradients: tests/optim/test_sparse_gradients.py
    table = nn.Embedding(10, 3, sparse=True)
    with pytest.raises(
        NotImplementedError,
        match=r"sparse gradients are eager only.*use sparse=False.*test_module_api\.py",
    ):
        ember.compile(lambda i: table(i).sum())(ember.tensor([1, 2]))


def test_embedding_functional_max_norm_matches_pytorch():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((8, 5)).astype(np.float32) * 2
    index = np.array([[1, 7, 1], [7, 0, 1]])
    ew, tw = ember.tensor(weight), torch.tensor(weight)
    out = nn.functional.embedding(ember.tensor(index), ew, max_norm=1.25, norm_type=3.0)
    expected = torch.nn.functional.embedding(torch.tensor(index), tw, max_norm=1.25, norm_type=3.0)
    error = max(
        float(np.abs(out.numpy() - expected.numpy()).max()),
        float(np.abs(ew.numpy() - tw.numpy()).max()),
    )
    print(f"F.embedding max_norm: max abs error {error:.2e}")
    assert error < 1e-6
    # rows 1, 7 and 0 were rescaled in place; the rest untouched
    assert np.array_equal(ew.numpy()[2:7], weight[2:7])
    assert not np.allclose(ew.numpy()[[0, 1, 7]], weight[[0, 1, 7]])


@pytest.mark.parametrize("max_norm", [None, 1.0])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_embedding_compiles_like_eager(max_norm, scale_grad_by_freq):
    """An Embedding module in a compiled training step (max_norm's in-place renorm included)
    gives eager's loss, gradient and renormalised weight, call after call."""
    index = ember.tensor(np.array([[1, 2], [3, 1]]))
    runs = []
    for compiled in (True, False):
        ember.manual_seed(0)
        layer = nn.Embedding(10, 4, max_norm=max_norm, scale_grad_by_freq=scale_grad_by_freq)

        def step(i, layer=layer):
            loss = (layer(i) ** 2).sum()
            loss.backward()
            return loss

        run = ember.compile(step) if compiled else step
        seen = []
        for _ in range(2):
            layer.weight.grad = None
            loss = run(index)
            seen.append(
                (
                    float(loss),
                    layer.weight.grad.numpy().copy(),
                    layer.weight.detach().numpy().copy(),
                )
            )
        runs.append(seen)
    for (loss_c, grad_c, weight_c), (loss_e, grad_e, weight_e) in zip(*runs):
        assert loss_c == loss_e
        assert np.array_equal(grad_c, grad_e) and np.array_equal(weight_c, weight_e)


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_batchnorm_eval_uses_running_stats():
    bn = nn.BatchNorm1d(3)
    x = ember.randn(16, 3) * 3.0 + 2.0
    bn(x)
    assert int(bn.num_batches_tracked.item()) == 1
    bn.eval()
    out = bn(x)
    mean = np.asarray(bn.running_mean)
    var = np.asarray(bn.running_var)
    expected = (np.asarray(x) - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(np.asarray(out.detach()), expected, rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1


def test_zero_grad_requires_grad_apply_to():
    net = MLP()
    net(ember.randn(2, 784)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Linear", "MLP"]
    weight = net.fc1.weight
    assert net.to(ember.float64) is net
    assert net.fc1.weight is weight and net.fc1.weight.dtype is ember.float64
    assert net.float().fc1.weight.dtype is ember.float32


def test_deepcopy_and_parameter_sharing():
    net = MLP()
    twin = copy.deepcopy(net)
    assert twin.fc1.weight is not net.fc1.weight
    assert isinstance(twin.fc1.weight, nn.Parameter)
    np.testing.assert_array_equal(
        np.asarray(twin.fc1.weight.detach()), np.asarray(net.fc1.weight.detach())
    )
    shared = nn.Sequential(net.fc1, net.fc1)
    assert len(list(shared.parameters())) == 2  # de-duplicated, as in PyTorch


def test_registration_errors():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign"):
        m.weight = ember.zeros(2, 2)
    with pytest.raises(KeyError):
        m.register_buffer("a.b", ember.zeros(1))
    m.weight = nn.Parameter(ember.zeros(2, 2))
    assert list(dict(m.named_parameters())) == ["weight", "bias"]
    del m.bias
    assert list(dict(m.named_parameters())) == ["weight"]


def test_sequential_and_modulelist_indexing():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(seq[1], nn.ReLU) and isinstance(seq[-1], nn.Linear)
    assert len(seq[:2]) == 2 and isinstance(seq[:2], nn.Sequential)
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and tuple(seq(ember.zeros(5, 2)).shape) == (5, 1)
    ml = nn.ModuleList([nn.ReLU()])
    ml.append(nn.Tanh())
    ml.extend([nn.Sigmoid()])
    assert [type(m).__name__ for m in ml] == ["ReLU", "Tanh", "Sigmoid"]
    with pytest.raises(IndexError):
        ml[5]


# --- errors name the module's path --------------------------------------------------------------
def test_wrong_input_shape_names_the_module_path():
    with pytest.raises(ShapeError) as info:
        MLP()(ember.zeros(32, 64))
    assert str(info.value).startswith(
        "fc1 (Linear 784→128): input (32, 64) last dim 64 ≠ in_features 784"
    )


def test_nested_error_path():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), nn.Flatten())
    with pytest.raises(
        ShapeError,
        match=r"^0\.0 \(Conv2d 3→8\): input \(2, 1, 8, 8\) has 1 "
        r"channels",
    ):
        net(ember.zeros(2, 1, 8, 8))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2)
    with pytest.raises(ShapeError, match=r"^layers\.0\.self_attn \(MultiheadAttention"):
        enc(ember.zeros(5, 2, 6))


def test_error_from_an_op_inside_a_layer_is_prefixed_once():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(5))
    with pytest.raises(ShapeError) as info:
        net(ember.zeros(2, 4))
    assert str(info.value).startswith("1 (LayerNorm (5,)): input (2, 4)")
    assert str(info.value).count("LayerNorm") == 1


# --- init -----------------------------------------------------------------------------------------
def test_default_init_bounds_follow_pytorch():
    ember.manual_seed(0)
    fc = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) gives 1/sqrt(fan_in) too
    w = np.asarray(fc.weight.detach())
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    b = np.asarray(fc.bias.detach())
    assert np.abs(b).max() <= bound
    conv = nn.Conv2d(16, 32, 3)
    fan_in = 16 * 9
    assert np.abs(np.asarray(conv.weight.detach())).max() <= 1 / math.sqrt(fan_in)
    emb = nn.Embedding(1000, 64, padding_idx=3)
    e = np.asarray(emb.weight.detach())
    assert abs(e.std() - 1.0) < 0.05 and not e[3].any()
    mha = nn.MultiheadAttention(16, 4)
    assert not np.asarray(mha.in_proj_bias.detach()).any()
    xavier = math.sqrt(6 / (16 + 48))
    assert np.abs(np.asarray(mha.in_proj_weight.detach())).max() <= xavier


@pytest.mark.parametrize(
    "fn,kwargs,check",
    [
        ("xavier_normal_", {}, lambda w: abs(w.std() - math.sqrt(2 / (200 + 100))) < 0.005),
        (
            "kaiming_normal_",
            {"nonlinearity": "relu"},
            lambda w: abs(w.std() - math.sqrt(2 / 100)) < 0.01,
        ),
        (
            "trunc_normal_",
            {"std": 0.02, "a": -0.04, "b": 0.04},
            lambda w: np.abs(w).max() <= 0.04 and 0.012 < w.std() < 0.02,
        ),
        ("constant_", {"val": 0.3}, lambda w: np.allclose(w, 0.3)),
        ("zeros_", {}, lambda w: not w.any()),
        ("ones_", {}, lambda w: np.all(w == 1)),
        ("uniform_", {"a": -2, "b": -1}, lambda w: w.min() >= -2 and w.max() <= -1),
        ("normal_", {"mean": 5, "std": 0.1}, lambda w: abs(w.mean() - 5) < 0.01),
    ],
)
def test_init_functions(fn, kwargs, check):
    t = nn.Parameter(ember.empty(200, 100))
    out = getattr(nn.init, fn)(t, **kwargs)
    assert out is t
    assert check(np.asarray(t.detach()))


def test_calculate_gain_matches_pytorch():
    for name, param in [
        ("relu", None),
        ("tanh", None),
        ("leaky_relu", 0.2),
        ("linear", None),
        ("selu", None),
        ("sigmoid", None),
    ]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param)
        )


# --- clip_grad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_pytorch(norm_type):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,)]]
    ours = [nn.Parameter(ember.zeros(*g.shape)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(*g.shape)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad = ember.tensor(g)
        q.grad = torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours, 0.5, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_value():
    p = nn.Parameter(ember.zeros(4))
    p.grad = ember.tensor([-3.0, -0.1, 0.2, 5.0])
    nn.utils.clip_grad_value_([p], 1.0)
    assert np.asarray(p.grad).tolist() == pytest.approx([-1.0, -0.1, 0.2, 1.0])


# --- layers ---------------------------------------------------------------------------------
LAYERS = {"nn": 5, "optim": 5}
ORDER = {
    "_util": 0,
    "dtypes": 0,
    "backend": 1,
    "ops": 2,
    "tensor": 3,
    "autograd": 3,
    "graph": 4,
    "nn": 5,
    "optim": 5,
    "data": 5,
    "io": 5,
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_only_from_lower_layers(package):
    root = pathlib.Path(ember.__file__).parent / package
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] in ("torch", "tensorflow", "jax", "transformers"):
                    pytest.fail(f"{path}: imports {name}")
                if parts[0] != "ember" or len(parts) < 2:
                    continue
                layer = ORDER.get(parts[1])
                assert layer is not None and layer <= LAYERS[package], f"{path}: {name}"


def test_import_ember_does_not_load_nn():
    import subprocess
    import sys

    code = "import sys, ember; print('ember.nn' in sys.modules, 'ember.optim' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=pathlib.Path(ember.__file__).parent.parent,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]


# --- Note [Module attribute mirror] ----------------------------------------------------------
def _lookup_agrees(module):
    """Every registered name reads back as its registry entry, and no stale name remains."""
    registered = {}
    for registry in ("_parameters", "_buffers", "_modules"):
        for name, value in getattr(module, registry).items():
            registered.setdefault(name, value)
    for name, value in registered.items():
        assert getattr(module, name) is value, name
    return registered


def _drop_fc1(m):
    del m.fc1


def _pop_fc1(m):
    m._modules.pop("fc1")


def _popitem_fc2(m):
    m._modules.popitem()


def _clear_modules(m):
    m._modules.clear()


def _replace_modules(m):
    m._modules = {"fc9": nn.Linear(2, 2)}


MIRROR_CHANGES = [
    ("setattr parameter", lambda m: setattr(m, "scale", nn.Parameter(ember.ones(1))), "scale"),
    (
        "registry setitem",
        lambda m: m._parameters.__setitem__("s", nn.Parameter(ember.ones(1))),
        "s",
    ),
    ("registry update", lambda m: m._buffers.update(b=ember.zeros(2)), "b"),
    ("registry |=", lambda m: m._buffers.__ior__({"b": ember.zeros(2)}), "b"),
    ("registry setdefault", lambda m: m._buffers.setdefault("b", ember.zeros(2)), "b"),
    ("parameter set to None", lambda m: setattr(m.fc1, "bias", None), None),
    ("delattr", _drop_fc1, "-fc1"),
    ("registry pop", _pop_fc1, "-fc1"),
    ("registry popitem", _popitem_fc2, "-fc2"),
    ("registry clear", _clear_modules, "-fc1"),
    ("registry replaced", _replace_modules, "-fc1"),
    ("module replaces buffer", lambda m: setattr(m, "fc1", nn.Linear(3, 3)), "fc1"),
]


@pytest.mark.parametrize("change", MIRROR_CHANGES, ids=[c[0] for c in MIRROR_CHANGES])
def test_registry_changes_reach_attribute_lookup(change):
    _, apply_change, name = change
    m = MLP()
    apply_change(m)
    registered = _lookup_agrees(m)
    if name is not None and name.startswith("-"):
        assert name[1:] not in registered
        with pytest.raises(AttributeError, match=name[1:]):
            getattr(m, name[1:])
    elif name is not None:
        assert name in registered
    assert m.fc1.bias is None if change[0] == "parameter set to None" else True


def test_copies_and_pickles_keep_their_own_mirror():
    import pickle

    m = MLP()
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), copy.copy(m)):
        assert other.fc1 is other._modules["fc1"]
        other.fc1 = nn.Linear(784, 5)  # changes the copy only
        assert other.fc1.out_features == 5 and m.fc1.out_features == 128
        _lookup_agrees(other)
    copied = m._parameters.copy() if m._parameters else m._modules.copy()
    copied["x"] = nn.Linear(1, 1)  # a registry's copy is bound to no module
    assert not hasattr(m, "x")


def test_module_is_freed_without_the_cycle_collector():
    import gc
    import weakref

    gc.disable()
    try:
        m = MLP()
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()
