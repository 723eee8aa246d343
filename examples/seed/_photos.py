"""Builds a small ImageFolder of real photos for the seed examples: crops of the photos that
scikit-learn and scikit-image ship, re-encoded as JPEGs, one class per source photo."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

SOURCES = [
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
]


def source_photos() -> list[tuple[str, str]]:
    """(class name, path) of the bundled photos found, located without importing packages."""
    found = []
    for package, relative in SOURCES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            path = os.path.join(location, relative)
            if os.path.exists(path):
                found.append((os.path.splitext(os.path.basename(path))[0], path))
                break
    if not found:
        raise FileNotFoundError("no bundled photos found: install scikit-learn or scikit-image")
    return found


def build_photo_folder(root: str, per_class: int = 40, seed: int = 0) -> str:
    """Write `per_class` random crops (240-420 px) of each photo to root/<class>/<n>.jpg."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, path in source_photos():
        photo = Image.open(path).convert("RGB")
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(per_class):
            w = int(rng.integers(240, min(420, photo.width) + 1))
            h = int(rng.integers(240, min(420, photo.height) + 1))
            left = int(rng.integers(0, photo.width - w + 1))
            top = int(rng.integers(0, photo.height - h + 1))
            crop = photo.crop((left, top, left + w, top + h))
            crop.save(os.path.join(root, name, f"{index:04d}.jpg"), quality=90)
    return root
