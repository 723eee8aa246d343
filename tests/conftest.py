"""Shared test setup: deterministic seeds, and a summary line with op and skip counts."""

import numpy as np
import pytest

import ember


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
        f"skipped cases: {len(skipped)} in total, {len(table_skips)} in the op table")
