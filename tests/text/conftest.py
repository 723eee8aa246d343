import pytest


@pytest.fixture(scope="session")
def hf_transformers():
    pytest.importorskip("tokenizers")
    return pytest.importorskip("transformers")
