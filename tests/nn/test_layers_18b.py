"""The layers issue 18 still lacked, against torch.nn: LPPool1d/2d/3d, PixelShuffle,
PixelUnshuffle, InstanceNorm1d/2d/3d (affine, track_running_stats, train and eval, unbatched
input, state dicts both ways), LocalResponseNorm, CosineSimilarity, PairwiseDistance: outputs,
input and parameter gradients, repr and errors (the functional forms have op-table rows)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn

torch = pytest.importorskip("torch")

# name -> (constructor args, kwargs, input shapes)
LAYERS = {
    "LPPool1d": ((2, 3), {"stride": 2}, [(2, 3, 9)]),
    "LPPool2d": ((3, (2, 3)), {"ceil_mode": True}, [(2, 3, 5, 7)]),
    "LPPool3d": ((2, 2), {}, [(1, 2, 4, 4, 4)]),
    "PixelShuffle": ((2,), {}, [(2, 8, 3, 3)]),
    "PixelUnshuffle": ((3,), {}, [(2, 1, 6, 9)]),
    "InstanceNorm1d": ((3,), {"affine": True}, [(2, 3, 7)]),
    "InstanceNorm2d": ((3,), {}, [(2, 3, 4, 5)]),
    "InstanceNorm3d": ((2,), {"affine": True, "track_running_stats": True}, [(2, 2, 3, 3, 3)]),
    "LocalResponseNorm": ((3,), {"alpha": 0.1, "k": 2.0}, [(2, 6, 4, 4)]),
    "CosineSimilarity": ((), {"dim": -1}, [(4, 5), (4, 5)]),
    "PairwiseDistance": ((), {"p": 1.5, "keepdim": True}, [(4, 5), (4, 5)]),
}
POSITIVE = {"LPPool1d", "LPPool2d", "LPPool3d"}  # odd p over a negative window sum: NaN grads


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch(name):
    args, kwargs, shapes = LAYERS[name]
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    ours.load_state_dict({k: ember.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s) for s in shapes]
    if name in POSITIVE:
        inputs = [np.abs(x) + 0.1 for x in inputs]
    e_in = [ember.tensor(x.astype(np.float32), requires_grad=True) for x in inputs]
    t_in = [torch.tensor(x.astype(np.float32), requires_grad=True) for x in inputs]
    out, expected = ours(*e_in), theirs(*t_in)
    assert tuple(out.shape) == tuple(expected.shape)
    np.testing.assert_allclose(np.asarray(out.detach()), expected.detach(), rtol=1e-5, atol=1e-5)
    cot = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(ember.tensor(cot))
    expected.backward(torch.tensor(cot))
    for a, b in zip(e_in, t_in):
        np.testing.assert_allclose(np.asarray(a.grad), b.grad, rtol=1e-4, atol=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for key, p in ours.named_parameters():
        np.testing.assert_allclose(
            np.asarray(p.grad), theirs_params[key].grad, rtol=1e-4, atol=1e-5, err_msg=key
        )


@pytest.mark.parametrize("momentum", [0.1, None])
def test_instance_norm_running_stats_train_and_eval(momentum):
    """Three training steps update the running statistics as torch's; eval uses them; the
    state dict moves both ways."""
    kwargs = {"affine": True, "track_running_stats": True, "momentum": momentum}
    ours, theirs = nn.InstanceNorm2d(3, **kwargs), torch.nn.InstanceNorm2d(3, **kwargs)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
        np.testing.assert_allclose(
            np.asarray(ours(ember.tensor(x)).detach()),
            theirs(torch.tensor(x)).detach(),
            rtol=1e-5,
            atol=1e-5,
        )
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(
            np.asarray(ours.state_dict()[key]), value.numpy(), rtol=1e-5, err_msg=key
        )
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(ours(ember.tensor(x))), theirs(torch.tensor(x)).detach(), rtol=1e-5, atol=1e-5
    )
    back = torch.nn.InstanceNorm2d(3, **kwargs)
    back.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    back.eval()
    np.testing.assert_allclose(
        np.asarray(ours(ember.tensor(x))), back(torch.tensor(x)).detach(), rtol=1e-5, atol=1e-5
    )


def test_instance_norm_unbatched_input_and_no_tracking_in_eval():
    ours, theirs = nn.InstanceNorm1d(3), torch.nn.InstanceNorm1d(3)
    ours.eval()
    theirs.eval()  # without tracked statistics, eval still normalises with the input's own
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    out = ours(ember.tensor(x))
    assert tuple(out.shape) == (3, 6)
    np.testing.assert_allclose(np.asarray(out), theirs(torch.tensor(x)).numpy(), atol=1e-5)


def test_instance_norm_errors():
    with pytest.raises(ValueError, match=r"InstanceNorm2d: expected 3D or 4D input \(got 2D"):
        nn.InstanceNorm2d(3)(ember.zeros(2, 3))
    with pytest.raises(ValueError, match="to match num_features \\(3\\), but got: 4"):
        nn.InstanceNorm1d(3, affine=True)(ember.zeros(2, 4, 5))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(3)(ember.randn(2, 4, 5))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm1d(3)(ember.zeros(2, 3, 1))


def test_modules_are_at_torch_paths():
    from ember.nn.modules import distance, instancenorm, normalization, pixelshuffle, pooling

    assert pooling.LPPool2d is nn.LPPool2d and pixelshuffle.PixelUnshuffle is nn.PixelUnshuffle
    assert instancenorm.InstanceNorm3d is nn.InstanceNorm3d
    assert normalization.LocalResponseNorm is nn.LocalResponseNorm
    assert distance.PairwiseDistance is nn.PairwiseDistance


def test_layers_compile_and_train():
    """A small super-resolution-style model with these layers compiles, and a few SGD steps
    lower its loss."""
    ember.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.InstanceNorm2d(8, affine=True),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.PixelShuffle(2),
        nn.LPPool2d(2, 2),
    )
    x = ember.randn(4, 1, 6, 6)
    target = ember.randn(4, 1, 6, 6)
    opt = ember.optim.SGD(model.parameters(), lr=0.05)

    def step(x, target):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    eager_first = float(((model(x) - target) ** 2).mean())
    compiled = ember.compile(step)
    losses = [float(compiled(x, target)) for _ in range(5)]
    assert abs(losses[0] - eager_first) < 1e-4 * max(1.0, abs(eager_first))
    assert losses[-1] < losses[0]
