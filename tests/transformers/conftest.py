import os

import pytest


@pytest.fixture(scope="session")
def hf():
    """HuggingFace transformers on PyTorch, the reference (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")
