"""Bad arguments raise as torch does, naming the function or layer (issue 19, item 6); the
op-level cases (index ranges, integer division by zero, BCE's domain, topk) are op-table rows."""

import pytest

import ember
import ember.nn.functional as F
from ember import nn

torch = pytest.importorskip("torch", reason="PyTorch is the reference")

CASES = [
    # (name, ember call, torch call, ember error, message)
    ("zeros-str", lambda: ember.zeros("3"), lambda: torch.zeros("3"), TypeError, "zeros: size"),
    ("ones-float", lambda: ember.ones(2.5), lambda: torch.ones(2.5), TypeError, "ones: size"),
    ("empty-negative", lambda: ember.empty(-1), lambda: torch.empty(-1), ValueError, "negative"),
    (
        "full-nan-int64",
        lambda: ember.full((2,), float("nan"), dtype=ember.int64),
        lambda: torch.full((2,), float("nan"), dtype=torch.int64),
        ValueError,
        "full: fill_value nan cannot be converted to int64",
    ),
    (
        "linear-float",
        lambda: nn.Linear(3.5, 4),
        lambda: torch.nn.Linear(3.5, 4),
        TypeError,
        "Linear: in_features must be an int, got 3.5",
    ),
    (
        "embedding-str",
        lambda: nn.Embedding("10", 4),
        lambda: torch.nn.Embedding("10", 4),
        TypeError,
        "Embedding: num_embeddings",
    ),
    (
        "conv-float-channels",
        lambda: nn.Conv2d(3.0, 4, 3),
        lambda: torch.nn.Conv2d(3.0, 4, 3),
        TypeError,
        "Conv2d: in_channels",
    ),
    (
        "conv-kernel-larger-than-input",
        lambda: F.conv2d(ember.ones(1, 1, 2, 2), ember.ones(1, 1, 3, 3)),
        lambda: torch.nn.functional.conv2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3)),
        ValueError,
        r"kernel \(3, 3\).*larger than the padded input \(2, 2\)",
    ),
    (
        "conv1d-kernel-larger-than-input",
        lambda: F.conv1d(ember.ones(1, 1, 2), ember.ones(1, 1, 3)),
        lambda: torch.nn.functional.conv1d(torch.ones(1, 1, 2), torch.ones(1, 1, 3)),
        ValueError,
        "larger than the padded input",
    ),
]


@pytest.mark.parametrize("name, ours, theirs, error, match", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_raise_where_torch_raises(name, ours, theirs, error, match):
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        theirs()  # the reference refuses it too
    with pytest.raises(error, match=match):
        ours()


def test_padding_makes_a_larger_kernel_fit():
    out = F.conv2d(ember.ones(1, 1, 2, 2), ember.ones(1, 1, 3, 3), padding=1)
    assert tuple(out.shape) == (1, 1, 2, 2)


def test_valid_sizes_still_accepted():
    import numpy as np

    assert tuple(ember.zeros(np.int64(2), ember.tensor(3).item()).shape) == (2, 3)
    assert tuple(nn.Linear(np.int32(3), 4).weight.shape) == (4, 3)
    assert ember.full((2,), 3.5, dtype=ember.int64).tolist() == [3, 3]  # truncates, as torch
