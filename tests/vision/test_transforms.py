"""Transforms checked against torchvision's documented semantics, computed with Pillow and
NumPy (torchvision itself is not installable here)."""

import numpy as np
import pytest

from ember.backend import random
from ember.data._arrays import to_numpy
from ember.vision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def reference_seed_pipeline(photo):
    """SEED 4.2's transform by torchvision's documented steps, with Pillow and NumPy."""
    from PIL import Image

    pil = Image.fromarray(photo)
    w, h = pil.size
    if h <= w:
        size = (int(256 * w / h), 256)
    else:
        size = (256, int(256 * h / w))
    pil = pil.resize(size, Image.BILINEAR)
    w, h = pil.size
    top, left = round((h - 224) / 2.0), round((w - 224) / 2.0)
    pil = pil.crop((left, top, left + 224, top + 224))
    x = np.asarray(pil).transpose(2, 0, 1).astype(np.float32) / 255.0
    return (x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[
        :, None, None
    ]


def test_seed_transform_matches_reference(photos):
    from PIL import Image

    transform = T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)]
    )
    for photo in photos:
        expected = reference_seed_pipeline(photo)
        for picture in (Image.fromarray(photo), photo):
            got = to_numpy(transform(picture))
            assert got.shape == (3, 224, 224) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_resize_sizes_follow_torchvision():
    resize = T.Resize(256)
    assert resize.output_size(427, 640) == (256, 383)
    assert resize.output_size(640, 427) == (383, 256)
    assert T.Resize(256, max_size=300).output_size(427, 640) == (200, 300)
    assert T.Resize((10, 20)).output_size(427, 640) == (10, 20)


def test_tensor_resize_is_antialiased_like_pillow(photos):
    from PIL import Image

    tensor = T.PILToTensor()(Image.fromarray(photos[0]))
    got = to_numpy(T.Resize(100)(tensor))
    expected = np.asarray(Image.fromarray(photos[0]).resize((149, 100), Image.BILINEAR))
    assert got.shape == (3, 100, 149)
    assert np.abs(got.transpose(1, 2, 0).astype(int) - expected).max() <= 1


def test_center_crop_pads_small_images():
    image = np.ones((4, 4, 3), np.uint8)
    out = T.CenterCrop(6)(image)
    assert out.shape == (6, 6, 3) and out[0, 0, 0] == 0 and out[1, 1, 0] == 1


def test_random_transforms_reproducible_and_valid(photos):
    transform = T.Compose(
        [
            T.RandomResizedCrop(64),
            T.RandomHorizontalFlip(),
            T.RandomCrop(48, padding=4),
            T.ColorJitter(0.4, 0.4, 0.4, 0.1),
            T.ToTensor(),
        ]
    )
    random.manual_seed(0)
    first = to_numpy(transform(photos[0]))
    random.manual_seed(0)
    second = to_numpy(transform(photos[0]))
    random.manual_seed(1)
    third = to_numpy(transform(photos[0]))
    assert first.shape == (3, 48, 48)
    assert np.array_equal(first, second) and not np.array_equal(first, third)
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_random_resized_crop_params_in_range(photos):
    random.manual_seed(0)
    for _ in range(50):
        top, left, h, w = T.RandomResizedCrop.get_params(photos[0], (0.08, 1.0), (3 / 4, 4 / 3))
        area = h * w / (photos[0].shape[0] * photos[0].shape[1])
        assert 0 <= top and top + h <= photos[0].shape[0] and left + w <= photos[0].shape[1]
        assert 0.07 <= area <= 1.0


def test_horizontal_flip_always_and_never(photos):
    assert np.array_equal(T.RandomHorizontalFlip(1.0)(photos[0]), photos[0][:, ::-1])
    assert T.RandomHorizontalFlip(0.0)(photos[0]) is photos[0]


def test_color_adjustments_follow_torchvision_formulas(photos):
    from PIL import Image, ImageEnhance

    from ember.vision.transforms import adjust_brightness, adjust_contrast, adjust_saturation

    photo = photos[1]
    tensor = T.PILToTensor()(Image.fromarray(photo))
    # brightness on uint8 tensors: clamp(x * f) truncated to uint8 (torchvision's _blend)
    got = to_numpy(adjust_brightness(tensor, 1.3)).transpose(1, 2, 0)
    expected = np.clip(photo.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    # on Pillow images: Pillow's ImageEnhance, exactly as torchvision's PIL path
    pil = Image.fromarray(photo)
    for fn, enhancer in (
        (adjust_contrast, ImageEnhance.Contrast),
        (adjust_saturation, ImageEnhance.Color),
    ):
        assert np.array_equal(np.asarray(fn(pil, 0.6)), np.asarray(enhancer(pil).enhance(0.6)))
    floats = T.ToTensor()(photo)
    gray = to_numpy(adjust_saturation(floats, 0.0))
    np.testing.assert_allclose(gray[0], gray[1], atol=1e-6)


def test_hue_roundtrip_identity(photos):
    from ember.vision.transforms import adjust_hue

    x = T.ToTensor()(photos[0][:50, :50])
    np.testing.assert_allclose(to_numpy(adjust_hue(x, 0.0)), to_numpy(x), atol=1e-5)
    with pytest.raises(ValueError):
        adjust_hue(x, 0.7)


def test_to_tensor_and_normalize_errors():
    x = T.ToTensor()(np.full((2, 3, 3), 255, np.uint8))
    assert to_numpy(x).shape == (3, 2, 3) and float(to_numpy(x).max()) == 1.0
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.Normalize([0.0], [0.0])
    with pytest.raises(TypeError, match="float tensor"):
        T.Normalize([0.0], [1.0])(T.PILToTensor()(np.zeros((2, 2, 1), np.uint8)))
    assert T.Lambda(lambda v: v + 1)(1) == 2
