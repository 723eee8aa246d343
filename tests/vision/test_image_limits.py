"""Decompression bombs (issue 19, item 2): every decoder checks the claimed size first."""

import io
import struct
import time
import zlib

import numpy as np
import pytest

from ember.vision import image as ember_image
from ember.vision.image import ImageTooLargeError

Image = pytest.importorskip("PIL.Image")


def _jpeg(width=16, height=16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _patched_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _patched_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _decoders():
    import ember.tf as tf

    return {
        "decode_jpeg": ember_image.decode_jpeg,
        "decode_image": ember_image.decode_image,
        "tf.image.decode_jpeg": tf.image.decode_jpeg,
        "decode_jpeg(pillow)": lambda data: ember_image.decode_jpeg(
            data, try_recover_truncated=True
        ),
        "decode_image(4 channels, pillow)": lambda data: ember_image.decode_image(data, 4),
    }


@pytest.mark.parametrize("name", list(_decoders()))
def test_a_jpeg_claiming_65000_squared_pixels_is_refused_at_once(name):
    bomb = _patched_jpeg(65000, 65000)
    assert len(bomb) < 2048
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"4,?225,?000,?000 pixels.*MAX_IMAGE_PIXELS"):
        _decoders()[name](bomb)
    assert time.perf_counter() - start < 2.0  # refused from the header, not after decoding


@pytest.mark.parametrize("decode", [ember_image.decode_png, ember_image.decode_image])
def test_a_png_claiming_too_many_pixels_is_refused(decode):
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_PIXELS"):
        decode(_patched_png(20000, 20000))  # 4e8 pixels: between Pillow's 1x and 2x limits


def test_the_limit_is_documented_and_overridable(monkeypatch):
    small = _jpeg(100, 80)
    monkeypatch.setattr(ember_image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageTooLargeError, match="100x80 = 8,000 pixels.*5,000"):
        ember_image.decode_jpeg(small)
    monkeypatch.setenv("EMBER_MAX_IMAGE_PIXELS", "none")
    assert tuple(ember_image.decode_jpeg(small).shape) == (80, 100, 3)
    monkeypatch.setenv("EMBER_MAX_IMAGE_PIXELS", "8000")
    assert tuple(ember_image.decode_image(small).shape) == (80, 100, 3)


def test_image_folder_loader_names_the_file(tmp_path):
    from ember.vision.datasets import default_loader

    path = tmp_path / "bomb.jpg"
    path.write_bytes(_patched_jpeg(65000, 65000))
    with pytest.raises(ImageTooLargeError, match="bomb.jpg"):
        default_loader(str(path))


# ---------------------------------------------------------------- IDX files (items 11 and 13)


def _idx(shape, payload: bytes) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_idx_gzip_bomb_is_refused_before_inflating(tmp_path):
    import gzip

    from ember.vision.datasets import read_idx

    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx((64 << 20,), b""))  # claims 64 MiB
        f.write(bytes(64 << 20))
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match="bomb-idx1-ubyte.gz.*67,108,864 bytes.*max_bytes"):
        read_idx(str(path), max_bytes=1 << 20)
    assert read_idx(str(path)).shape == (64 << 20,)  # within the default limit: reads


@pytest.mark.parametrize(
    "content, message",
    [
        (_idx((0xFFFFFFFF, 0xFFFFFFFF), b""), "limit"),
        (_idx((3,), b"ab"), "holds 2 bytes.*promises 3"),
        (_idx((3,), b"abcd"), "holds more than 3 bytes"),
        (b"\x00\x00\x08\x02\x00", "truncated inside its header"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "damaged"),
        (b"PK\x03\x04", "not an IDX file"),
    ],
)
def test_idx_errors_name_the_file(tmp_path, content, message):
    from ember.vision.datasets import read_idx

    path = tmp_path / "labels.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"labels.idx.*{message}"):
        read_idx(str(path))
