"""ember.set_num_threads / get_num_threads control the BLAS library NumPy runs matmuls on."""

import numpy as np
import pytest

import ember
from ember.backend import threads


def test_set_and_get_num_threads_round_trip():
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        assert ember.get_num_threads() == 1
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        np.testing.assert_allclose(
            (ember.tensor(a) @ ember.tensor(a)).numpy(), a @ a, rtol=1e-5, atol=1e-5
        )
    finally:
        ember.set_num_threads(before)
    assert ember.get_num_threads() == before


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="positive"):
        ember.set_num_threads(0)


def test_the_blas_library_is_found_on_linux():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("BLAS discovery reads /proc/self/maps, which only Linux has")
    assert threads._find_blas(), "NumPy's BLAS library was not found among the loaded libraries"
