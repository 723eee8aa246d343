"""The examples in ember's docstrings run (STYLE.md habit 14): every module's doctests, each
example importing what it uses."""

import doctest
import importlib
import pathlib

import numpy as np
import pytest

import ember

PACKAGE = pathlib.Path(ember.__file__).parent


def _modules():
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if "import" not in path.read_text() or ">>>" not in path.read_text():
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional dependency this machine lacks
        pytest.skip(f"{name} needs an optional dependency: {error}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    state = np.get_printoptions()
    ember.manual_seed(0)
    try:
        for test in finder.find(module, name):
            runner.run(test)
    finally:
        np.set_printoptions(**state)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed"
