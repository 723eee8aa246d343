"""Every optimizer and learning-rate schedule against PyTorch's trajectory over 100 steps: the same
model, weights, data and loss in both, parameters compared after every step (float32)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.optim as optim

torch = pytest.importorskip("torch")

STEPS = 100

# (id, class name, kwargs); PyTorch is run on its single-tensor path (foreach=False), the CPU
# default, which is the algorithm written in each ember optimizer's docstring.
OPTIMIZERS = [
    ("sgd", "SGD", {"lr": 0.05}),
    ("sgd_momentum", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}),
    (
        "sgd_nesterov_wd",
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    ("sgd_maximize", "SGD", {"lr": 0.01, "momentum": 0.5, "maximize": True}),
    (
        "sgd_nesterov_wd_reference",
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "fused": False},
    ),
    (
        "sgd_maximize_reference",
        "SGD",
        {"lr": 0.01, "momentum": 0.5, "dampening": 0.1, "maximize": True, "fused": False},
    ),
    ("adam", "Adam", {"lr": 0.01}),
    (
        "adam_wd_amsgrad",
        "Adam",
        {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True},
    ),
    ("adam_maximize", "Adam", {"lr": 0.001, "maximize": True}),
    ("adamw", "AdamW", {"lr": 0.01}),
    ("adamw_amsgrad", "AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "eps": 1e-6}),
    # fused=False: ember's reference `update` (Tensor ops) instead of its fused array path
    ("adam_reference", "Adam", {"lr": 0.01, "fused": False}),
    (
        "adam_wd_amsgrad_maximize_reference",
        "Adam",
        {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True, "fused": False},
    ),
    (
        "adam_wd_amsgrad_maximize",
        "Adam",
        {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    ),
    ("adamw_reference", "AdamW", {"lr": 0.01, "fused": False}),
    ("rmsprop", "RMSprop", {"lr": 0.01}),
    (
        "rmsprop_centered_momentum",
        "RMSprop",
        {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.01},
    ),
    ("adagrad", "Adagrad", {"lr": 0.1}),
    (
        "adagrad_decay",
        "Adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    (
        "adadelta_wd_maximize",
        "Adadelta",
        {"lr": 0.5, "rho": 0.8, "weight_decay": 0.01, "maximize": True},
    ),
    ("adamax_wd", "Adamax", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.05}),
    ("nadam_wd", "NAdam", {"lr": 0.01, "weight_decay": 0.05, "momentum_decay": 0.01}),
    (
        "nadam_decoupled",
        "NAdam",
        {"lr": 0.01, "weight_decay": 0.05, "decoupled_weight_decay": True},
    ),
    ("radam_wd_maximize", "RAdam", {"lr": 0.01, "weight_decay": 0.05, "maximize": True}),
    (
        "radam_decoupled",
        "RAdam",
        {"lr": 0.01, "weight_decay": 0.05, "decoupled_weight_decay": True},
    ),
]


def _models():
    torch.manual_seed(0)
    t_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    e_model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    e_model.load_state_dict({k: ember.tensor(v.numpy()) for k, v in t_model.state_dict().items()})
    return t_model, e_model


def _data(step):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    return x, y


def _assert_same_params(e_model, t_model, step, name):
    t_params = dict(t_model.named_parameters())
    for key, p in e_model.named_parameters():
        np.testing.assert_allclose(
            np.asarray(p.detach()),
            t_params[key].detach().numpy(),
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{name}: parameter {key} after step {step}",
        )


def _train(e_model, t_model, e_opt, t_opt, name, e_sched=None, t_sched=None, steps=STEPS):
    """Both optimizers get the same gradients (PyTorch's, copied into ember's .grad): the
    optimizer is what is under test, and 1-ulp differences between the two backward passes
    would otherwise be amplified by ill-conditioned updates such as centered RMSprop's
    sqrt(v - m^2). The end-to-end check (ember's own gradients) is in test_end_to_end."""
    for step in range(steps):
        x, y = _data(step)
        t_opt.zero_grad()
        out = t_model(torch.tensor(x))
        torch.nn.functional.cross_entropy(out, torch.tensor(y)).backward()
        t_grads = {k: p.grad.numpy().copy() for k, p in t_model.named_parameters()}
        t_opt.step()
        e_opt.zero_grad()
        for key, p in e_model.named_parameters():
            p.grad = ember.tensor(t_grads[key])
        e_opt.step()
        if e_sched is not None:
            e_sched.step()
            t_sched.step()
            assert e_sched.get_last_lr() == pytest.approx(
                t_sched.get_last_lr(), rel=1e-12, abs=1e-15
            ), f"{name}: step {step}"
        _assert_same_params(e_model, t_model, step, name)


@pytest.mark.parametrize("name,cls,kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_trajectory_matches_pytorch(name, cls, kwargs):
    t_model, e_model = _models()
    t_opt = getattr(torch.optim, cls)(t_model.parameters(), foreach=False, **kwargs)
    e_opt = getattr(optim, cls)(e_model.parameters(), **kwargs)
    _train(e_model, t_model, e_opt, t_opt, name)
    # the state has PyTorch's structure: same keys per parameter index, same values
    e_state, t_state = e_opt.state_dict(), t_opt.state_dict()
    assert set(e_state["state"]) == set(t_state["state"])
    for index, t_entry in t_state["state"].items():
        assert set(e_state["state"][index]) == set(t_entry)
        for key, value in t_entry.items():
            np.testing.assert_allclose(
                np.asarray(e_state["state"][index][key]), value.numpy(), rtol=1e-4, atol=1e-6
            )
    e_groups = [{k: v for k, v in g.items()} for g in e_state["param_groups"]]
    t_groups = [{k: v for k, v in g.items()} for g in t_state["param_groups"]]
    assert [g["params"] for g in e_groups] == [g["params"] for g in t_groups]
    for eg, tg in zip(e_groups, t_groups):
        for key in ("lr", "weight_decay"):
            assert eg[key] == tg[key]


# (id, builder(lib_optim, optimizer) -> scheduler); each lambda builds the same schedule for
# both libraries from the library's lr_scheduler module.
SCHEDULERS = [
    ("lambda", lambda S, o: S.LambdaLR(o, lambda e: 0.95**e)),
    ("step", lambda S, o: S.StepLR(o, step_size=7, gamma=0.5)),
    ("multistep", lambda S, o: S.MultiStepLR(o, milestones=[10, 30, 30, 60], gamma=0.3)),
    ("exponential", lambda S, o: S.ExponentialLR(o, gamma=0.97)),
    ("cosine", lambda S, o: S.CosineAnnealingLR(o, T_max=40, eta_min=1e-4)),
    ("linear", lambda S, o: S.LinearLR(o, start_factor=0.1, total_iters=20)),
    ("onecycle", lambda S, o: S.OneCycleLR(o, max_lr=0.1, total_steps=STEPS)),
    (
        "onecycle_linear_3phase",
        lambda S, o: S.OneCycleLR(
            o, max_lr=0.05, total_steps=STEPS, anneal_strategy="linear", three_phase=True
        ),
    ),
    (
        "sequential",
        lambda S, o: S.SequentialLR(
            o,
            [S.LinearLR(o, start_factor=0.1, total_iters=10), S.CosineAnnealingLR(o, T_max=50)],
            milestones=[10],
        ),
    ),
]


@pytest.mark.parametrize("name,build", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_scheduler_trajectory_matches_pytorch(name, build, opt_name):
    t_model, e_model = _models()
    kwargs = {"lr": 0.05, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.01}
    t_opt = getattr(torch.optim, opt_name)(t_model.parameters(), foreach=False, **kwargs)
    e_opt = getattr(optim, opt_name)(e_model.parameters(), **kwargs)
    t_sched = build(torch.optim.lr_scheduler, t_opt)
    e_sched = build(optim.lr_scheduler, e_opt)
    assert e_sched.get_last_lr() == pytest.approx(t_sched.get_last_lr())
    _train(
        e_model,
        t_model,
        e_opt,
        t_opt,
        f"{name}/{opt_name}",
        e_sched,
        t_sched,
        steps=STEPS - 1 if name.startswith("onecycle") else STEPS,
    )


def test_scheduler_state_dict_round_trip():
    _, e_model = _models()
    opt = optim.SGD(e_model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state and state["last_epoch"] == 7
    opt2 = optim.SGD(e_model.parameters(), lr=0.1)
    sched2 = optim.lr_scheduler.StepLR(opt2, step_size=3, gamma=0.5)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 7 and sched2.get_last_lr() == sched.get_last_lr()


def test_sequential_state_dict_holds_children():
    _, e_model = _models()
    opt = optim.SGD(e_model.parameters(), lr=0.1)
    S = optim.lr_scheduler
    sched = S.SequentialLR(opt, [S.ExponentialLR(opt, 0.9), S.StepLR(opt, 2)], milestones=[3])
    for _ in range(5):
        sched.step()
    state = sched.state_dict()
    assert len(state["_schedulers"]) == 2 and state["_schedulers"][1]["last_epoch"] >= 1


@pytest.mark.parametrize(
    "cls,kwargs", [("Adam", {"lr": 0.01}), ("SGD", {"lr": 0.1, "momentum": 0.9})]
)
def test_end_to_end_training_matches_pytorch(cls, kwargs):
    """ember's own forward, backward and update against PyTorch's over 100 steps."""
    t_model, e_model = _models()
    t_opt = getattr(torch.optim, cls)(t_model.parameters(), foreach=False, **kwargs)
    e_opt = getattr(optim, cls)(e_model.parameters(), **kwargs)
    for step in range(STEPS):
        x, y = _data(step)
        for model, opt, lib, F in (
            (e_model, e_opt, ember, nn.functional),
            (t_model, t_opt, torch, torch.nn.functional),
        ):
            opt.zero_grad()
            F.cross_entropy(model(lib.tensor(x)), lib.tensor(y)).backward()
            opt.step()
    t_params = dict(t_model.named_parameters())
    for key, p in e_model.named_parameters():
        np.testing.assert_allclose(
            np.asarray(p.detach()),
            t_params[key].detach().numpy(),
            rtol=1e-4,
            atol=1e-5,
            err_msg=key,
        )


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("Adam", {"weight_decay": 0.1, "amsgrad": True}),
        ("Adam", {"maximize": True}),
        ("AdamW", {"weight_decay": 0.1}),
        ("SGD", {}),
        ("SGD", {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
        ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "maximize": True}),
    ],
)
def test_fused_update_equals_reference_update(cls, kwargs):
    """Note [Optimizer structure]: the fused array path against the reference Tensor-op path."""
    _, model_a = _models()
    _, model_b = _models()
    opt_a = getattr(optim, cls)(model_a.parameters(), lr=0.01, **kwargs)
    opt_b = getattr(optim, cls)(model_b.parameters(), lr=0.01, fused=False, **kwargs)
    for step in range(30):
        x, y = _data(step)
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(ember.tensor(x)), ember.tensor(y)).backward()
            opt.step()
    for (key, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        np.testing.assert_allclose(
            np.asarray(a.detach()), np.asarray(b.detach()), rtol=1e-6, atol=1e-7, err_msg=key
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("Adam", {}),
        ("Adam", {"weight_decay": 0.1}),
        ("AdamW", {"weight_decay": 0.01}),
        ("AdamW", {"betas": (0.8, 0.99), "eps": 1e-6}),
    ],
)
def test_compiled_adam_step_gives_the_numpy_bits(cls, kwargs, dtype):
    """Note [Compiled Adam step]: the one-pass numba kernel and the NumPy passes of
    update_arrays compute the same values, bit for bit, over 20 steps."""
    from ember.backend import numba_kernels
    from ember.optim import adam

    if not numba_kernels.available():
        pytest.skip("numba is not installed (the `fast` extra): only the NumPy path exists")
    import contextlib

    results = []
    for compiled in (True, False):
        with contextlib.nullcontext() if compiled else numba_kernels.disable_for_tests():
            start = np.random.default_rng(1).standard_normal((37, 53)).astype(dtype)
            param = ember.tensor(start, requires_grad=True)
            opt = getattr(optim, cls)([param], lr=0.01, **kwargs)
            assert (adam._compiled_step(*(param._data,) * 4) is not None) == compiled
            for step in range(20):
                grad = np.random.default_rng(step).standard_normal((37, 53)).astype(dtype)
                param.grad = ember.tensor(grad)
                opt.step()
            results.append(param.detach().numpy().copy())
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("AdamW", {"weight_decay": 0.01}),
        ("Adam", {"weight_decay": 0.1}),
        ("Adam", {"amsgrad": True}),  # the NumPy rule: the kernel does not cover amsgrad
    ],
)
def test_multi_tensor_adam_step_gives_the_per_parameter_bits(cls, kwargs):
    """Note [Multi-tensor Adam step]: two parameter groups (one with a late-starting
    parameter, so the groups' step counts differ), large parameters cut into pieces on the
    pool at 2 threads, against the one-thread step and the NumPy rule without numba."""
    import contextlib

    from ember.backend import numba_kernels
    from ember.optim import adam

    shapes = [(adam._PIECE * 2 + 17,), (300, 700), (5,), (64, 3)]
    runs = [(1, True), (2, True), (2, False)]
    if not numba_kernels.available():
        runs = [(1, False), (2, False)]
    results = []
    before = ember.get_num_threads()
    try:
        for threads, compiled in runs:
            ember.set_num_threads(threads)
            rng = np.random.default_rng(7)
            params = [
                ember.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                for s in shapes
            ]
            groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]
            opt = getattr(optim, cls)(groups, lr=0.01, **kwargs)
            with contextlib.nullcontext() if compiled else numba_kernels.disable_for_tests():
                for step in range(6):
                    for i, p in enumerate(params):
                        p.grad = (
                            None
                            if (i == 3 and step < 2)
                            else ember.tensor(rng.standard_normal(p.shape).astype(np.float32))
                        )
                    opt.step()
            results.append([p.detach().numpy().tobytes() for p in params])
            state = [opt.state[p] for p in params]
            results[-1] += [s[k].numpy().tobytes() for s in state for k in sorted(s)]
    finally:
        ember.set_num_threads(before)
    for other in results[1:]:
        assert other == results[0]


def test_multi_tensor_adam_step_runs_on_the_pool(monkeypatch):
    from ember.backend import numba_kernels, parallel
    from ember.optim import adam

    if not numba_kernels.available():
        pytest.skip("numba is not installed (the `fast` extra): only the NumPy path exists")
    calls = []
    real = parallel.run_chunks
    monkeypatch.setattr(parallel, "run_chunks", lambda fn, a: (calls.append(len(a)), real(fn, a)))
    params = [ember.zeros(adam._PIECE * 3, requires_grad=True), ember.zeros(10, requires_grad=True)]
    for p in params:
        p.grad = ember.ones(*p.shape)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        optim.AdamW(params).step()
        assert calls == [4]  # three pieces of the large parameter and the small one
        ember.set_num_threads(1)
        optim.AdamW(params).step()
        assert calls == [4]
    finally:
        ember.set_num_threads(before)


# (id, kwargs): LBFGS runs several closure evaluations per step; both libraries get the same
# full-batch problem and their own gradients (float64, so the line search's branches agree)
LBFGS_CASES = [
    ("plain", {"lr": 0.5, "max_iter": 5}),
    ("strong_wolfe", {"line_search_fn": "strong_wolfe", "max_iter": 10}),
    ("strong_wolfe_history", {"line_search_fn": "strong_wolfe", "history_size": 3}),
]


@pytest.mark.parametrize("name,kwargs", LBFGS_CASES, ids=[c[0] for c in LBFGS_CASES])
def test_lbfgs_trajectory_matches_pytorch(name, kwargs):
    t_model, e_model = _models()
    t_model.double()
    e_model.to(ember.float64)
    x, y = _data(0)
    x = x.astype(np.float64)
    t_opt = torch.optim.LBFGS(t_model.parameters(), **kwargs)
    e_opt = optim.LBFGS(e_model.parameters(), **kwargs)
    evals = {"torch": 0, "ember": 0}

    def t_closure():
        evals["torch"] += 1
        t_opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(t_model(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        return loss

    def e_closure():
        evals["ember"] += 1
        e_opt.zero_grad()
        loss = ember.nn.functional.cross_entropy(e_model(ember.tensor(x)), ember.tensor(y))
        loss.backward()
        return loss

    first = float(e_closure())
    evals["ember"] = 0
    for step in range(4):
        t_loss = t_opt.step(t_closure)
        e_loss = e_opt.step(e_closure)
        assert float(e_loss) == pytest.approx(float(t_loss.detach()), rel=1e-7, abs=1e-9)
        assert evals["ember"] == evals["torch"], f"{name}: closure calls after step {step}"
        t_params = dict(t_model.named_parameters())
        for key, p in e_model.named_parameters():
            np.testing.assert_allclose(
                np.asarray(p.detach()),
                t_params[key].detach().numpy(),
                rtol=1e-7,
                atol=1e-9,
                err_msg=f"{name}: parameter {key} after step {step}",
            )
    assert float(e_closure()) < 0.5 * first  # and it did optimise


def test_lbfgs_refuses_groups_and_missing_closure():
    _, e_model = _models()
    params = list(e_model.parameters())
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": params[:2]}, {"params": params[2:]}])
    with pytest.raises(ValueError, match="closure"):
        optim.LBFGS(params).step(None)
