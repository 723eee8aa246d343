"""ember refuses what torch refuses, with torch's error class and a message of its own
(Note [Error classes] in ember/_util/errors.py).

Each row runs one bad call on torch and on ember: torch must raise (so the row stays honest
when torch changes), ember must raise an instance of every builtin class torch's error is
(RuntimeError, IndexError, ValueError, NotImplementedError...), and its message must name the
op or layer and what was wrong (the pattern).
"""

from __future__ import annotations

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def _z(m, *shape, dtype=None):
    return m.tensor(np.zeros(shape) if dtype is None else np.zeros(shape, dtype=dtype))


def _F(m):
    return m.nn.functional


# name -> (call on a library `m`, pattern ember's message matches)
CASES = {
    # a kernel larger than the (padded) input: the layer, the kernel and the padded size
    "conv1d kernel > input": (
        lambda m: _F(m).conv1d(_z(m, 1, 2, 3), _z(m, 4, 2, 5)),
        r"conv1d: kernel \(5,\) .*larger than the padded input \(3,\)",
    ),
    "conv2d kernel > padded input": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 3, 3), _z(m, 4, 2, 6, 6), padding=1),
        r"conv2d: kernel \(6, 6\) .*larger than the padded input \(5, 5\)",
    ),
    "conv2d dilated kernel > input": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 4, 4), _z(m, 4, 2, 3, 3), dilation=2),
        r"conv2d: kernel \(3, 3\) \(dilation \(2, 2\)\) is larger than the padded input \(4, 4\)",
    ),
    "conv3d kernel > input": (
        lambda m: _F(m).conv3d(_z(m, 1, 2, 3, 3, 3), _z(m, 4, 2, 2, 5, 5)),
        r"conv3d: kernel \(2, 5, 5\) .*larger than the padded input \(3, 3, 3\)",
    ),
    "Conv2d module kernel > input": (
        lambda m: m.nn.Conv2d(2, 4, 5)(_z(m, 1, 2, 3, 3)),
        r"Conv2d.*conv2d: kernel \(5, 5\) .*padded input \(3, 3\)",
    ),
    "max_pool1d kernel > input": (
        lambda m: _F(m).max_pool1d(_z(m, 1, 2, 3), 5),
        r"max_pool1d: kernel \(5,\) .*larger than the input",
    ),
    "max_pool2d kernel > input": (
        lambda m: _F(m).max_pool2d(_z(m, 1, 2, 3, 3), 5),
        r"max_pool2d: kernel \(5, 5\) .*larger than the input",
    ),
    "max_pool3d kernel > input": (
        lambda m: _F(m).max_pool3d(_z(m, 1, 2, 3, 3, 3), 5),
        r"max_pool3d: kernel \(5, 5, 5\)",
    ),
    "avg_pool2d kernel > input": (
        lambda m: _F(m).avg_pool2d(_z(m, 1, 2, 3, 3), 5),
        r"avg_pool2d: kernel \(5, 5\) .*larger than the input",
    ),
    "MaxPool2d module kernel > input": (
        lambda m: m.nn.MaxPool2d(5)(_z(m, 1, 2, 3, 3)),
        r"MaxPool2d.*kernel \(5, 5\)",
    ),
    "max_pool2d padding > half kernel": (
        lambda m: _F(m).max_pool2d(_z(m, 1, 2, 6, 6), 2, padding=2),
        "at most half the kernel",
    ),
    # conv and pool arguments
    "conv2d stride 0": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 5, 5), _z(m, 4, 2, 3, 3), stride=0),
        r"conv2d: stride must be positive, got \(0, 0\)",
    ),
    "conv2d negative padding": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 5, 5), _z(m, 4, 2, 3, 3), padding=-1),
        "conv2d: padding must be non-negative",
    ),
    "conv2d dilation 0": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 5, 5), _z(m, 4, 2, 3, 3), dilation=0),
        "conv2d: dilation must be positive",
    ),
    "conv2d groups 0": (
        lambda m: _F(m).conv2d(_z(m, 1, 2, 5, 5), _z(m, 4, 2, 3, 3), groups=0),
        "conv2d: groups must be positive",
    ),
    "conv1d channels": (
        lambda m: _F(m).conv1d(_z(m, 1, 3, 5), _z(m, 4, 2, 3)),
        r"conv1d: input has 3 channels \(shape \(1, 3, 5\)\) but weight \(4, 2, 3\) with "
        r"groups=1 expects 2",
    ),
    "max_pool2d stride 0": (
        lambda m: _F(m).max_pool2d(_z(m, 1, 2, 4, 4), 2, stride=0),
        "max_pool2d: stride must be at least 1",
    ),
    "avg_pool2d negative padding": (
        lambda m: _F(m).avg_pool2d(_z(m, 1, 2, 4, 4), 2, padding=-1),
        "avg_pool2d: padding must be at least 0",
    ),
    # dtypes torch refuses with RuntimeError
    "mean of integers": (lambda m: _z(m, 3, dtype=np.int64).mean(), "mean: input dtype"),
    "var of integers": (lambda m: _z(m, 3, dtype=np.int64).var(), "var: input dtype"),
    "std of integers": (lambda m: _z(m, 3, dtype=np.int64).std(), "var: input dtype"),
    "index_select float index": (
        lambda m: _z(m, 2, 3).index_select(0, _z(m, 1)),
        "index_select: index must be an integer tensor",
    ),
    "gather float index": (
        lambda m: _z(m, 2, 3).gather(1, _z(m, 2, 2)),
        "gather: index must be an integer tensor",
    ),
    "embedding float indices": (
        lambda m: _F(m).embedding(_z(m, 2), _z(m, 5, 2)),
        "embedding: indices must be integer",
    ),
    "masked_fill float mask": (
        lambda m: _z(m, 2, 3).masked_fill(_z(m, 3), 0.0),
        "masked_fill: mask must be a bool tensor",
    ),
    "where float condition": (
        lambda m: m.where(_z(m, 3), _z(m, 2, 3), _z(m, 2, 3)),
        "where: the condition must be a bool tensor",
    ),
    # shapes
    "gather index dims": (
        lambda m: _z(m, 2, 3).gather(1, _z(m, 2, dtype=np.int64)),
        "gather: index must have the same number of dims",
    ),
    "scatter index dims": (
        lambda m: _z(m, 2, 3).scatter(1, _z(m, 1, 1, 2, dtype=np.int64), _z(m, 1, 2)),
        "scatter: index must have the same number of dims",
    ),
    "setitem values shape": (
        lambda m: _z(m, 2, 3).__setitem__(0, _z(m, 4)),
        r"setitem: values of shape \(4,\) do not broadcast to the indexed shape \(3,\)",
    ),
    "setitem values shape, advanced": (
        lambda m: _z(m, 2, 3).__setitem__((slice(None), m.tensor([0, 1])), _z(m, 3)),
        r"setitem: values of shape \(3,\) do not broadcast to the indexed shape \(2, 2\)",
    ),
    "dot of matrices": (
        lambda m: m.dot(_z(m, 3, 3), _z(m, 3)),
        "dot: expects two 1-D tensors",
    ),
    "dot sizes": (lambda m: m.dot(_z(m, 3), _z(m, 4)), "dot: expects two 1-D tensors"),
    "item of many": (lambda m: _z(m, 3).item(), "item: a Tensor with 3 elements"),
    "flip a dim twice": (lambda m: _z(m, 2, 3).flip(0, 0), "flip: a dim appears more than once"),
    "chunk 0": (lambda m: _z(m, 4, 3).chunk(0), "chunk: chunks must be greater than 0"),
    "binary_cross_entropy shapes": (
        lambda m: _F(m).binary_cross_entropy(m.tensor([0.5, 0.5]), m.tensor([1.0])),
        "binary_cross_entropy: target size",
    ),
    # values
    "bernoulli p > 1": (
        lambda m: m.bernoulli(m.tensor([0.5, 1.5])),
        r"bernoulli: probabilities must lie in \[0, 1\]",
    ),
    "multinomial negative": (
        lambda m: m.multinomial(m.tensor([-1.0, 2.0]), 1),
        "multinomial: the probability tensor holds",
    ),
    "multinomial too many": (
        lambda m: m.multinomial(m.tensor([1.0, 2.0]), 3),
        "multinomial: cannot draw 3 samples from 2 categories",
    ),
    "zeros negative size": (lambda m: m.zeros(-1, 2), "negative dimension -1"),
    "arange step 0": (lambda m: m.arange(0, 5, 0), "arange: step must be non-zero"),
    "clamp without bounds": (lambda m: _z(m, 3).clamp(), "clamp: at least one of min and max"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_as_torch(case):
    call, pattern = CASES[case]
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(Exception, match=pattern) as ours:
        call(ember)
    builtin = [
        c for c in type(theirs.value).__mro__ if c.__module__ == "builtins" and c is not object
    ]
    missing = [c.__name__ for c in builtin if not isinstance(ours.value, c)]
    assert not missing, (
        f"{case}: ember raised {type(ours.value).__name__}, not {missing} as torch "
        f"({type(theirs.value).__name__}: {theirs.value})"
    )


def test_the_refusals_keep_ember_s_python_classes():
    """The classes stay what ember's own code and NumPy users catch (Note [Error classes])."""
    with pytest.raises(TypeError):
        _z(ember, 3, dtype=np.int64).mean()
    with pytest.raises(ValueError):
        _z(ember, 2, 3)[0] = _z(ember, 4)
    with pytest.raises(ValueError):
        ember.zeros(-1)
