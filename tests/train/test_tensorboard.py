"""ember's event-file writer, read back by TensorBoard's own EventAccumulator."""

import os
import time

import numpy as np
import pytest

from ember.train import SummaryWriter
from ember.train.tensorboard import crc32c

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _accumulate(folder):
    accumulator = event_accumulator.EventAccumulator(
        str(folder),
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    return accumulator.Reload()


def test_crc32c_known_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA


def test_scalars_read_back(tmp_path):
    losses = [2.5, 1.25, 0.75, 0.5, -1e-3, 123456.0]
    with SummaryWriter(tmp_path) as writer:
        for step, loss in enumerate(losses):
            writer.add_scalar("train/loss", loss, step * 10)
            writer.add_scalar(
                "lr", np.float64(1e-3 * step), global_step=step, walltime=1000.0 + step
            )
        writer.add_scalar("big_step", 1.0, 2**40)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
    accumulator = _accumulate(tmp_path)
    assert set(accumulator.Tags()["scalars"]) == {"train/loss", "lr", "big_step"}
    events = accumulator.Scalars("train/loss")
    assert [e.step for e in events] == [0, 10, 20, 30, 40, 50]
    np.testing.assert_allclose([e.value for e in events], losses, rtol=1e-7)
    lr = accumulator.Scalars("lr")
    assert [e.wall_time for e in lr] == [1000.0 + s for s in range(6)]
    assert accumulator.Scalars("big_step")[0].step == 2**40


def test_add_scalars_writes_one_run_per_key(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        for step in range(3):
            writer.add_scalars("loss", {"train": 1.0 / (step + 1), "eval": 2.0 + step}, step)
    assert sorted(d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d)) == [
        "loss_eval",
        "loss_train",
    ]
    evals = _accumulate(tmp_path / "loss_eval").Scalars("loss")
    assert [(e.step, e.value) for e in evals] == [(0, 2.0), (1, 3.0), (2, 4.0)]


def test_text_read_back(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_text("notes", "hello **world** ✓", 3)
    accumulator = _accumulate(tmp_path)
    assert "notes" in accumulator.Tags()["tensors"]
    (event,) = accumulator.Tensors("notes")
    assert event.step == 3
    assert event.tensor_proto.string_val[0].decode() == "hello **world** ✓"
    assert accumulator.SummaryMetadata("notes").plugin_data.plugin_name == "text"


@pytest.mark.parametrize("bins", ["tensorflow", 20, "auto"])
def test_histogram_read_back(tmp_path, bins):
    values = np.random.default_rng(0).standard_normal(1000)
    with SummaryWriter(tmp_path) as writer:
        writer.add_histogram("weights", values, 5, bins=bins)
        writer.add_histogram("weights", values * 2, 6, bins=bins)
    events = _accumulate(tmp_path).Histograms("weights")
    assert [e.step for e in events] == [5, 6]
    histogram = events[0].histogram_value
    assert histogram.num == 1000 and histogram.min == values.min() and histogram.max == values.max()
    assert sum(histogram.bucket) == 1000
    np.testing.assert_allclose(histogram.sum, values.sum())
    np.testing.assert_allclose(histogram.sum_squares, (values**2).sum())
    # each bucket's count equals the count of values in (previous limit, limit]
    limits = np.asarray(histogram.bucket_limit)
    for i in range(1, len(limits)):
        inside = np.sum((values >= limits[i - 1]) & (values < limits[i]))
        if bins == "tensorflow":
            assert histogram.bucket[i] == inside


def test_errors_and_closed_writer(tmp_path):
    writer = SummaryWriter(tmp_path)
    with pytest.raises(TypeError, match="add_scalar.*expected a number"):
        writer.add_scalar("x", "not a number", 0)
    with pytest.raises(TypeError, match="non-empty str tag"):
        writer.add_scalar("", 1.0, 0)
    with pytest.raises(ValueError, match="no finite values"):
        writer.add_histogram("h", [np.nan], 0)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("x", 1.0, 0)
    writer.close()  # twice is fine


def test_flush_makes_events_visible_before_close(tmp_path):
    writer = SummaryWriter(tmp_path, max_queue=1000, flush_secs=1e9)
    writer.add_scalar("a", 1.0, 1)
    writer.flush()
    assert [e.value for e in _accumulate(tmp_path).Scalars("a")] == [1.0]
    writer.close()


def _scalar_steps(folder, tag):
    return [(e.step, e.value) for e in _accumulate(folder).Scalars(tag)]


@pytest.mark.parametrize("purge_step", [0, 3, 8])
def test_purge_step_hides_the_crashed_runs_later_steps(tmp_path, monkeypatch, purge_step):
    """Run 1 logs steps 0..7 and 'crashes'; run 2 resumes at purge_step in the same folder."""
    now = time.time()
    # run 1 an hour ago: event file names start with the time, so the resumed run's sorts last
    monkeypatch.setattr(time, "time", lambda: now - 3600)
    with SummaryWriter(tmp_path) as first:
        for step in range(8):
            first.add_scalar("loss", float(step), step)
            first.add_scalar("lr", 0.1, step)
            first.add_scalars("acc", {"eval": float(step)}, step)
            first.add_histogram("w", np.arange(4.0) + step, step)
    monkeypatch.undo()
    with SummaryWriter(tmp_path, purge_step=purge_step) as resumed:
        for step in range(purge_step, purge_step + 2):
            resumed.add_scalar("loss", 100.0 + step, step)
            resumed.add_scalars("acc", {"eval": 100.0 + step}, step)
    kept = [(s, float(s)) for s in range(min(purge_step, 8))]
    new = [(s, 100.0 + s) for s in range(purge_step, purge_step + 2)]
    assert _scalar_steps(tmp_path, "loss") == kept + new
    # every tag is purged, also the ones the resumed run does not write again
    assert [s for s, _ in _scalar_steps(tmp_path, "lr")] == [s for s, _ in kept]
    assert [e.step for e in _accumulate(tmp_path).Histograms("w")] == [s for s, _ in kept]
    assert _scalar_steps(tmp_path / "acc_eval", "acc") == kept + new


def test_purge_step_without_restart_changes_nothing(tmp_path):
    with SummaryWriter(tmp_path, purge_step=4) as writer:
        for step in range(6):
            writer.add_scalar("loss", float(step), step)
    assert [s for s, _ in _scalar_steps(tmp_path, "loss")] == list(range(6))
    with pytest.raises(TypeError, match="purge_step must be an int step, got '3'"):
        SummaryWriter(tmp_path, purge_step="3")


def test_values_beyond_float32_are_written_as_inf_like_torch(tmp_path):
    """Issue 19, item 10: a huge metric must not crash a Trainer's logging."""
    values = [1e39, -1e300, 10**400, float("nan"), 3.4028235e38]
    with SummaryWriter(tmp_path) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("huge", value, step)
    got = [e.value for e in _accumulate(tmp_path).Scalars("huge")]
    assert got[:3] == [float("inf"), float("-inf"), float("inf")]
    assert np.isnan(got[3]) and got[4] == np.float32(3.4028235e38)
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    with torch_tb.SummaryWriter(str(tmp_path / "torch")) as writer:
        writer.add_scalar("huge", 1e39, 0)
    assert _accumulate(tmp_path / "torch").Scalars("huge")[0].value == float("inf")


@pytest.mark.parametrize("step", [2**64, 2**63, -(2**63) - 1, 1.5, float("nan")])
def test_steps_outside_int64_raise_instead_of_wrapping(tmp_path, step):
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises((ValueError, TypeError), match="global_step"):
            writer.add_scalar("x", 1.0, step)


def test_extreme_int64_steps_are_exact(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("x", 1.0, 2**63 - 1)
        writer.add_scalar("x", 2.0, 2**53 + 1)  # not representable as a float64
    steps = sorted(e.step for e in _accumulate(tmp_path).Scalars("x"))
    assert steps == [2**53 + 1, 2**63 - 1]
