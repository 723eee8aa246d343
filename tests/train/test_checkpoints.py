"""Checkpoints: atomic writes that survive SIGKILL, rotation, RNG state round trips."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np

import ember
from ember.train import Trainer, TrainingArguments, get_last_checkpoint, strip_runtime
from ember.train.checkpointing import (
    list_checkpoints,
    rng_states,
    rotate_checkpoints,
    set_rng_states,
    write_checkpoint,
)
from tests.train.trainer_helpers import classification_data, make_model, weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import sys
    from ember.train import Trainer
    from tests.train.test_checkpoints import kill_args
    from tests.train.trainer_helpers import classification_data, make_model
    Trainer(make_model(dropout=0.2), kill_args(sys.argv[1]),
            train_dataset=classification_data(40)).train()
""")


def kill_args(out):
    return TrainingArguments(
        out,
        per_device_train_batch_size=4,
        max_steps=8,
        save_steps=2,
        logging_steps=1,
        learning_rate=1e-2,
        disable_tqdm=True,
        seed=3,
    )


def test_sigkill_during_checkpoint_write_resumes_from_last_complete(tmp_path):
    out = str(tmp_path / "killed")
    env = dict(os.environ, EMBER_TEST_CHECKPOINT_SLEEP="0.5", PYTHONPATH=ROOT)
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, out],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if "checkpoint-4: writing" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    names = sorted(os.listdir(out))
    print("after the kill:", names)
    assert "checkpoint-2" in names and "checkpoint-4" not in names
    assert any(n.startswith(".tmp-checkpoint-4-") for n in names)  # the interrupted write
    assert get_last_checkpoint(out).endswith("checkpoint-2")

    resumed = Trainer(
        make_model(seed=99, dropout=0.2), kill_args(out), train_dataset=classification_data(40)
    )
    resumed.train(resume_from_checkpoint=True)
    assert not any(n.startswith(".tmp-") for n in os.listdir(out))  # cleaned by the next save
    full = Trainer(
        make_model(dropout=0.2),
        kill_args(str(tmp_path / "full")),
        train_dataset=classification_data(40),
    )
    full.train()
    for name, value in weights(full.model).items():
        assert np.array_equal(weights(resumed.model)[name], value), name
    assert strip_runtime(resumed.state.log_history) == strip_runtime(full.state.log_history)


def _fake_checkpoint(out, step):
    def write(folder):
        with open(os.path.join(folder, "model.safetensors"), "wb") as f:
            f.write(b"x" * 10)

    return write_checkpoint(out, step, write)


def test_rotation_never_deletes_newest_or_best(tmp_path):
    out = str(tmp_path)
    for step in (1, 2, 3, 4, 5):
        _fake_checkpoint(out, step)
    os.makedirs(os.path.join(out, "checkpoint-9"))  # incomplete: never counted, never deleted
    deleted = rotate_checkpoints(out, 2, best_checkpoint=os.path.join(out, "checkpoint-1"))
    assert [os.path.basename(d) for d in deleted] == ["checkpoint-2", "checkpoint-3"]
    assert [os.path.basename(c) for c in list_checkpoints(out)] == [
        "checkpoint-1",
        "checkpoint-4",
        "checkpoint-5",
    ]
    assert os.path.isdir(os.path.join(out, "checkpoint-9"))
    assert get_last_checkpoint(out).endswith("checkpoint-5")
    # the newest is kept even when the limit is 1 and the best is older
    rotate_checkpoints(out, 1, best_checkpoint=os.path.join(out, "checkpoint-1"))
    assert [os.path.basename(c) for c in list_checkpoints(out)] == ["checkpoint-1", "checkpoint-5"]


def test_failed_write_leaves_no_checkpoint(tmp_path):
    def write(folder):
        open(os.path.join(folder, "model.safetensors"), "wb").close()
        raise OSError("disk full")

    try:
        write_checkpoint(str(tmp_path), 3, write)
    except OSError:
        pass
    assert os.listdir(tmp_path) == []


def test_rewriting_a_step_replaces_it(tmp_path):
    _fake_checkpoint(str(tmp_path), 4)
    _fake_checkpoint(str(tmp_path), 4)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]


def test_rng_states_round_trip():
    import json

    ember.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    saved = json.loads(json.dumps(rng_states()))
    expected = (ember.rand(3).numpy(), random.random(), np.random.rand(2), np.random.randn())
    ember.rand(10)
    random.random()
    np.random.randn(3)
    set_rng_states(saved)
    got = (ember.rand(3).numpy(), random.random(), np.random.rand(2), np.random.randn())
    assert np.array_equal(got[0], expected[0]) and got[1] == expected[1]
    assert np.array_equal(got[2], expected[2]) and got[3] == expected[3]
