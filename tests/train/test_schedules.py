"""Learning-rate schedules against HuggingFace's get_scheduler, step by step."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.train import get_scheduler

CASES = [
    ("linear", {}),
    ("cosine", {}),
    ("cosine", {"num_cycles": 1.5}),
    ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {"power": 2.0, "lr_end": 1e-6}),
    ("constant", {}),
    ("constant_with_warmup", {}),
    ("inverse_sqrt", {}),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}{k or ''}" for n, k in CASES])
@pytest.mark.parametrize("warmup", [0, 7])
def test_schedule_matches_huggingface(name, kwargs, warmup):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    total, lr = 50, 3e-4
    weight = torch.nn.Parameter(torch.zeros(2))
    reference_opt = torch.optim.SGD([weight], lr=lr)
    reference = transformers.get_scheduler(
        name,
        reference_opt,
        num_warmup_steps=warmup,
        num_training_steps=total,
        scheduler_specific_kwargs=kwargs,
    )
    ours_opt = ember.optim.AdamW([ember.zeros(2, requires_grad=True)], lr=lr)
    ours = get_scheduler(
        name,
        ours_opt,
        num_warmup_steps=warmup,
        num_training_steps=total,
        scheduler_specific_kwargs=kwargs,
    )
    theirs, mine = [], []
    for _ in range(total + 5):  # past the end too
        theirs.append(reference.get_last_lr()[0])
        mine.append(ours.get_last_lr()[0])
        assert ours_opt.param_groups[0]["lr"] == mine[-1]
        reference_opt.step()
        reference.step()
        ours.step()
    error = np.abs(np.array(mine) - np.array(theirs)).max()
    print(f"{name} {kwargs} warmup={warmup}: max abs lr difference {error:.3e}")
    assert error <= 1e-12


def test_scheduler_state_round_trips():
    opt = ember.optim.AdamW([ember.zeros(2, requires_grad=True)], lr=1.0)
    sched = get_scheduler(
        "polynomial",
        opt,
        num_warmup_steps=3,
        num_training_steps=20,
        scheduler_specific_kwargs={"power": 2.0},
    )
    for _ in range(5):
        sched.step()
    state = sched.state_dict()
    opt2 = ember.optim.AdamW([ember.zeros(2, requires_grad=True)], lr=1.0)
    sched2 = get_scheduler(
        "polynomial",
        opt2,
        num_warmup_steps=3,
        num_training_steps=20,
        scheduler_specific_kwargs={"power": 2.0},
    )
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 5 and sched2.get_last_lr() == sched.get_last_lr()
    assert state["lr_lambdas"][0]["power"] == 2.0


def test_bad_schedules():
    opt = ember.optim.AdamW([ember.zeros(2, requires_grad=True)], lr=1e-3)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        get_scheduler("step", opt, 0, 10)
    with pytest.raises(ValueError, match="needs num_training_steps"):
        get_scheduler("linear", opt, 0)
    with pytest.raises(ValueError, match="lr_end"):
        get_scheduler("polynomial", opt, 0, 10, {"lr_end": 1.0})
