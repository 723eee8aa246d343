"""ember.distributed on 2 MPI ranks (127.0.0.1), launched by `mpiexec -n 2` from the test with
a hard timeout: DDP training equals one process on the global batch, collectives equal NumPy,
DistributedSampler covers each sample once, a failed rank is named, in-process hooks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import cases  # noqa: E402

requires_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None,
    reason="mpi4py is not installed (pip install 'ember[distributed]' brings mpi4py and mpich)",
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.pop("PMI_RANK", None)
    return env


def _mpiexec(tmp, *program, launcher=("plain",), timeout=240):
    """Run `program` on 2 ranks on 127.0.0.1; (returncode, output, seconds)."""
    from ember.distributed.launch import find_mpiexec

    if launcher == ("plain",):
        command = [find_mpiexec(), "-n", "2", "-hosts", "127.0.0.1", sys.executable, *program]
    else:
        command = [sys.executable, "-m", "ember.cli", "launch", "-n", "2", *launcher, *program]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(command)} ran past {timeout} s:\n{e.stdout}\n{e.stderr}")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


@pytest.fixture(scope="module")
def mpi_run(tmp_path_factory):
    """One 2-rank job running every case (one MPI start-up for all the checks)."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed")
    out = str(tmp_path_factory.mktemp("mpi"))
    names = ["collectives", "sampler", "shape_mismatch", "unused_error", *cases.DDP_CASES]
    code, output, _ = _mpiexec(out, os.path.join(HERE, "cases.py"), out, *names)
    assert code == 0, output[-4000:]
    return out


def _load(out, name, rank, ext="npz"):
    path = os.path.join(out, f"{name}.rank{rank}.{ext}")
    if ext == "npz":
        return dict(np.load(path))
    with open(path) as f:
        return json.load(f)


# -------------------------------------------------------------------- DDP parity
@requires_mpi
@pytest.mark.parametrize("case", list(cases.DDP_CASES))
def test_ddp_equals_one_process_on_the_global_batch(mpi_run, case):
    """20 steps on 2 ranks (rank 1 starting from other weights) end at the weights of one process
    trained on the concatenated batches: float64 <= 1e-12, float32 <= 1e-6 (relative to the
    weights' scale); with no_sync accumulation, small buckets and bucket views too."""
    reference, ref_losses = cases.reference(case)
    tolerance = 1e-12 if "float64" in case else 1e-6
    for rank in (0, 1):
        got = _load(mpi_run, case, rank)
        assert sorted(got) == sorted(reference)
        for name, expected in reference.items():
            error = np.abs(got[name] - expected).max() / max(1.0, np.abs(expected).max())
            assert error <= tolerance, f"{case} rank {rank} {name}: {error:.2e} > {tolerance}"
    losses0 = np.array(_load(mpi_run, case, 0, "json")["losses"])
    losses1 = np.array(_load(mpi_run, case, 1, "json")["losses"])
    # each rank's loss is the mean over its half: the two halves average to the global loss
    np.testing.assert_allclose((losses0 + losses1) / 2, ref_losses, rtol=1e-5, atol=1e-6)
    buckets = _load(mpi_run, case, 0, "json")["buckets"]
    if "bucket_cap_mb" in cases.DDP_CASES[case][1]:
        assert len(buckets) > 1, f"{case}: a small bucket_cap_mb should give several buckets"
    # a parameter no rank used keeps .grad None (the optimizer skips it), as in one process
    expected_unused = ["spare.weight", "spare.bias"] if case.endswith("unused") else []
    for rank in (0, 1):
        assert _load(mpi_run, case, rank, "json")["no_grad"] == expected_unused


@requires_mpi
def test_ddp_error_names_parameters_without_gradient(mpi_run):
    for rank in (0, 1):
        message = _load(mpi_run, "unused_error", rank, "json")
        assert message is not None and "'spare.weight'" in message
        assert "find_unused_parameters=True" in message


@requires_mpi
def test_ddp_error_names_the_parameter_whose_shape_differs(mpi_run):
    for rank in (0, 1):
        message = _load(mpi_run, "shape_mismatch", rank, "json")
        assert message is not None, "DDP wrapped models of different shapes"
        assert "'0.weight'" in message and "(5, 4)" in message and "(6, 4)" in message


# -------------------------------------------------------------------- collectives, sampler
@requires_mpi
def test_collectives_equal_numpy(mpi_run):
    r0, r1 = (_load(mpi_run, "collectives", r) for r in (0, 1))
    a, b = r0["input"], r1["input"]
    expected = {
        "all_reduce_SUM": a + b,
        "all_reduce_AVG": (a + b) / 2,
        "all_reduce_MAX": np.maximum(a, b),
        "all_reduce_MIN": np.minimum(a, b),
        "all_reduce_PRODUCT": a * b,
        "all_reduce_async": a + b,
        "all_reduce_int32": a.astype(np.int32) + b.astype(np.int32) + 1,
        "broadcast_src1": b,
        "all_gather": np.stack([a, b]),
        "all_gather_into_tensor": np.concatenate([a, b]),
        "objects": np.array([0, 1]),
    }
    for got in (r0, r1):
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-15, err_msg=key)
    # reduce_scatter: rank r gets sum over ranks of input_list[r] = base * (r + 1)
    np.testing.assert_allclose(r0["reduce_scatter"], (a + b) * 1, rtol=1e-15)
    np.testing.assert_allclose(r1["reduce_scatter"], (a + b) * 2, rtol=1e-15)
    np.testing.assert_array_equal(r0["gather"], np.stack([a, b]))
    np.testing.assert_array_equal(r0["scatter_src1"], b + 0)
    np.testing.assert_array_equal(r1["scatter_src1"], b + 1)
    np.testing.assert_array_equal(r1["recv"], a)
    assert int(r1["recv_sender"]) == 0
    np.testing.assert_array_equal(r0["recv"], b)
    big = np.arange(300_000, dtype=np.float64) * 1.5  # the blocking path for large buffers
    for got in (r0, r1):
        np.testing.assert_array_equal(got["all_reduce_big_avg"], big)
        np.testing.assert_array_equal(got["broadcast_big"], big[:10])
    errors = _load(mpi_run, "collectives_errors", 0, "json")
    assert "src=5 is not a rank" in errors[0]
    assert "unknown reduce op 'median'" in errors[1]
    assert "tensor_list should hold 2 tensors" in errors[2]


@requires_mpi
def test_distributed_sampler_covers_every_sample_once_per_epoch(mpi_run):
    s0, s1 = (_load(mpi_run, "sampler", r, "json") for r in (0, 1))
    for key in s0:
        n, drop_last, epoch = key.split("_")
        n = int(n)
        both = s0[key] + s1[key]
        assert len(s0[key]) == len(s1[key])
        if drop_last == "True":
            assert len(both) == n - n % 2 and len(set(both)) == len(both)
        else:
            assert sorted(set(both)) == list(range(n))  # every sample, padding repeats one
            assert len(both) == n + n % 2
    assert s0["10_False_0"] != s0["10_False_1"], "set_epoch should reshuffle"


def test_distributed_sampler_matches_pytorch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler

    from ember.data import DistributedSampler

    for n, replicas, drop_last in ((10, 3, False), (11, 2, True), (2, 4, False), (7, 4, True)):
        for rank in range(replicas):
            ours = DistributedSampler(
                range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last
            )
            theirs = TorchSampler(
                range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last
            )
            assert list(ours) == list(theirs) and len(ours) == len(theirs), (n, replicas, rank)
    assert torch is not None


# -------------------------------------------------------------------- faults
@requires_mpi
@pytest.mark.parametrize("mode", ["kill", "raise", "exit"])
def test_a_failed_rank_ends_the_others_with_an_error_naming_it(tmp_path, mode):
    """Rank 1 is SIGKILLed (or raises, or calls sys.exit) at step 5 of a DDP run under `ember
    launch`: rank 0 ends within the timeout with a DistributedError naming rank 1, no rank is
    left running and no MPI shared memory is left in /dev/shm."""
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    code, output, seconds = _mpiexec(
        str(tmp_path),
        os.path.join(HERE, "faults.py"),
        str(tmp_path),
        mode,
        "1",
        launcher=(),
        timeout=90,
    )
    assert code != 0, output[-3000:]
    assert "DistributedError: all_reduce on rank 0: rank 1 (host" in output, output[-3000:]
    if mode == "raise":
        assert "failed: ValueError: boom at step 5" in output
    elif mode == "exit":
        assert "rank 1 (host" in output and "ended its program (sys.exit" in output
    else:
        assert "ended without a word" in output and "rank 1 (pid" in output
    assert "finished every step" not in output
    assert seconds < 60
    for rank in (0, 1):
        with open(tmp_path / f"pid.rank{rank}") as f:
            pid = int(f.read())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    leaked = {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("mpich")}
    assert not leaked, f"shared memory left behind: {leaked}"


@requires_mpi
def test_a_killed_rank_under_plain_mpiexec_ends_the_job(tmp_path):
    """Under a plain `mpiexec` MPICH's launcher ends the others itself: no hang."""
    code, output, seconds = _mpiexec(
        str(tmp_path), os.path.join(HERE, "faults.py"), str(tmp_path), "kill", "1", timeout=90
    )
    assert code != 0 and seconds < 60, output[-3000:]
    assert "finished every step" not in output


# -------------------------------------------------------------------- in-process pieces
def test_post_accumulate_grad_hooks_fire_during_backward_in_reverse_order():
    import ember
    from ember.autograd.engine import queue_callback

    ember.manual_seed(0)
    layers = [ember.nn.Linear(4, 4, dtype=ember.float64) for _ in range(3)]
    events = []
    for i, layer in enumerate(layers):
        layer.weight.register_post_accumulate_grad_hook(
            lambda p, i=i: events.append(("ready", i, float(p.grad.numpy().sum())))
        )
    x = ember.randn(2, 4, dtype=ember.float64)
    h = x
    for layer in layers:
        h = layer(h).tanh()
    loss = h.sum()
    h.register_hook(lambda g: queue_callback(lambda: events.append(("end",))))
    loss.backward()
    assert [e[:2] for e in events] == [("ready", 2), ("ready", 1), ("ready", 0), ("end",)]
    for (_, _index, total), layer in zip(events, layers[::-1]):
        assert total == pytest.approx(float(layer.weight.grad.numpy().sum()))
    with pytest.raises(Exception, match="only leaf tensors"):
        h.register_post_accumulate_grad_hook(lambda p: None)


def test_ddp_without_a_process_group_says_how_to_make_one():
    import ember
    from ember._util.errors import DistributedError
    from ember.nn.parallel import DistributedDataParallel

    with pytest.raises(DistributedError, match="init_process_group"):
        DistributedDataParallel(ember.nn.Linear(2, 2))


def test_launch_builds_the_mpiexec_command(tmp_path):
    from ember.distributed.launch import main, mpiexec_command

    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1:4\nnode2:4\n")
    command = mpiexec_command(8, ["train.py", "--lr", "1"], str(hostfile), mpiexec="mpiexec")
    assert command[:3] == ["mpiexec", "-n", "8"]
    assert command[-3:] == ["train.py", "--lr", "1"] and sys.executable in command
    assert main(["-n", "0", "train.py"]) == 2
    assert main(["-n", "2", "--hostfile", str(tmp_path / "missing"), "train.py"]) == 2


# -------------------------------------------------------------------- the Trainer
@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    """The same Trainer script on 2 ranks x 4 per device and on 1 process x 8."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed")
    import trainer_cases

    two = str(tmp_path_factory.mktemp("trainer2"))
    code, output, _ = _mpiexec(two, os.path.join(HERE, "trainer_cases.py"), two, "4")
    assert code == 0, output[-4000:]
    one = str(tmp_path_factory.mktemp("trainer1"))
    arrays, info = trainer_cases.run(one, 8)
    return two, arrays, info, output


@requires_mpi
def test_trainer_on_2_ranks_equals_1_rank_with_twice_the_batch(trainer_runs):
    two, arrays, info, _ = trainer_runs
    for rank in (0, 1):
        got = _load(two, "trainer", rank)
        for key, expected in arrays.items():
            if key.startswith("final."):
                error = np.abs(got[key] - expected).max()
                assert error <= 1e-6, f"rank {rank} {key}: {error:.2e}"
        # the logged (global) losses are one process's
        logs = _load(two, "trainer", rank, "json")["log_history"]
        assert len(logs) == len(info["log_history"])
        for theirs, ours in zip(logs, info["log_history"]):
            assert theirs.keys() == ours.keys()
            for k in ours:
                assert theirs[k] == pytest.approx(ours[k], rel=1e-9, abs=1e-12), k
        assert _load(two, "trainer", rank, "json")["world_size"] == 2
    assert info["world_size"] == 1


@requires_mpi
def test_trainer_gathers_evaluation_across_ranks(trainer_runs):
    two, arrays, info, _ = trainer_runs
    for rank in (0, 1):
        got = _load(two, "trainer", rank)
        metrics = _load(two, "trainer", rank, "json")["eval"]
        assert metrics["eval_accuracy"] == info["eval"]["eval_accuracy"]
        assert metrics["eval_loss"] == pytest.approx(info["eval"]["eval_loss"], rel=1e-12)
        np.testing.assert_allclose(got["predictions"], arrays["predictions"], rtol=1e-12)
        np.testing.assert_array_equal(got["label_ids"], arrays["label_ids"])  # 21 rows, in order


@requires_mpi
def test_trainer_resumed_on_2_ranks_equals_the_uninterrupted_run(trainer_runs):
    two, _, _, _ = trainer_runs
    for rank in (0, 1):
        got = _load(two, "trainer", rank)
        for key in got:
            if key.startswith("final."):
                resumed = got["resumed." + key[len("final.") :]]
                assert np.array_equal(resumed, got[key]), key


@requires_mpi
def test_trainer_logs_and_saves_on_rank_0_only(trainer_runs):
    two, _, info, output = trainer_runs
    files = _load(two, "trainer", 0, "json")["files"]

    def shape(names):  # event files carry a time stamp and a pid in their names
        names = [n for n in names if n.startswith(("run/", "resumed/"))]
        return sorted(n if "/runs/" not in n else n.split("/runs/")[0] + "/runs" for n in names)

    assert shape(files) == shape(info["files"])  # one set of checkpoints and event files
    assert output.count("'train_runtime'") == 2  # printed once per run, by rank 0
