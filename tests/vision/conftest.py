import os
import sysconfig

import numpy as np
import pytest

PHOTO_DIR = os.path.join(sysconfig.get_paths()["purelib"], "sklearn", "datasets", "images")


@pytest.fixture(scope="session")
def photos():
    """The two photos scikit-learn ships, decoded by Pillow as RGB arrays."""
    Image = pytest.importorskip("PIL.Image")
    paths = [os.path.join(PHOTO_DIR, n) for n in ("china.jpg", "flower.jpg")]
    if not all(os.path.exists(p) for p in paths):
        pytest.skip("scikit-learn's sample photos are not installed")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="session")
def photo_paths(photos):
    return [os.path.join(PHOTO_DIR, n) for n in ("china.jpg", "flower.jpg")]
