"""Note [Error classes]: where PyTorch raises a builtin error class, ember's error is an
instance of it too (and keeps its own clear message), so ported `except` clauses work."""

from __future__ import annotations

import pytest

import ember

CASES = {
    "matmul inner dims": lambda m: m.ones(2, 3) @ m.ones(4, 5),
    "broadcast": lambda m: m.ones(2, 3) + m.ones(4, 5),
    "cat sizes": lambda m: m.cat([m.ones(2, 3), m.ones(2, 4)]),
    "view size": lambda m: m.ones(2, 3).view(4),
    "reshape size": lambda m: m.ones(2, 3).reshape(4),
    "stack shapes": lambda m: m.stack([m.ones(2), m.ones(3)]),
    "expand": lambda m: m.ones(3, 2).expand(2, 3, 4),
    "Linear in_features": lambda m: m.nn.Linear(3, 4)(m.ones(2, 5)),
    "Conv2d channels": lambda m: m.nn.Conv2d(3, 4, 3)(m.ones(1, 2, 8, 8)),
    "index out of range": lambda m: m.ones(3)[5],
    "Embedding index": lambda m: m.nn.Embedding(3, 2)(m.tensor([4])),
    "mse_loss shapes": lambda m: m.nn.functional.mse_loss(m.ones(2, 3), m.ones(3, 2)),
    "BCE input outside [0, 1]": lambda m: m.nn.functional.binary_cross_entropy(
        m.tensor([1.5]), m.tensor([1.0])
    ),
    "integer // 0": lambda m: m.tensor([4]) // 0,
    "integer % 0": lambda m: m.tensor([4]) % m.tensor([0]),
    "Embedding index -1": lambda m: m.nn.Embedding(3, 2)(m.tensor([-1])),
    "zeros('3')": lambda m: m.zeros("3"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_errors_are_instances_of_torchs_classes(case):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception) as theirs:
        CASES[case](torch)
    with pytest.raises(Exception) as ours:
        CASES[case](ember)
    builtin = [
        c for c in type(theirs.value).__mro__ if c.__module__ == "builtins" and c is not object
    ]
    missing = [c.__name__ for c in builtin if not isinstance(ours.value, c)]
    assert not missing, f"{case}: ember raised {type(ours.value).__name__}, not {missing}"
    assert str(ours.value)  # and says what went wrong
