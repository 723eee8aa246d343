"""ember.image against TensorFlow's tf.image and Pillow on real photos.

Stated tolerances (values on the 0-255 scale), see Note [Resize semantics]:
- vs tf.image.resize (float32 results): 0.05 for bilinear/area/lanczos3/mitchellcubic with
  and without antialias and for bicubic with antialias; 0.25 for bicubic without antialias
  (TensorFlow's legacy bicubic kernel reads its weights from a 1024-entry table); nearest exact.
- vs Pillow's uint8 Image.resize (always antialiased): bilinear within 1 grey level, bicubic
  within 8 (Pillow clips to uint8 between its passes), mean below 0.5; nearest equal except
  at exact ties.
- decode_jpeg vs tf.io.decode_jpeg: different IDCT/upsampling implementations, mean absolute
  difference below 2 grey levels.
"""

import io

import numpy as np
import pytest

from ember.data._arrays import to_numpy
from ember.io.files import read_file
from ember.vision import image

TF_TOLERANCE = {
    "bilinear": 0.05,
    "area": 0.05,
    "lanczos3": 0.05,
    "mitchellcubic": 0.05,
    "bicubic": 0.05,
    "nearest": 0.0,
}
SIZES = [(256, 300), (700, 900), (100, 500), (37, 41)]


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("method", sorted(TF_TOLERANCE))
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_matches_tensorflow(tf, photos, method, antialias):
    tolerance = TF_TOLERANCE[method]
    if method == "bicubic" and not antialias:
        tolerance = 0.25
    for photo in photos:
        for size in SIZES:
            ours = to_numpy(image.resize(photo, size, method=method, antialias=antialias))
            theirs = tf.image.resize(photo, size, method=method, antialias=antialias).numpy()
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            assert np.abs(ours.astype(np.float64) - theirs).max() <= tolerance, (size, method)


def test_resize_batch_and_preserve_aspect_ratio(tf, photos):
    batch = np.stack([photos[0], photos[0]])
    ours = to_numpy(image.resize(batch, [100, 100], preserve_aspect_ratio=True))
    theirs = tf.image.resize(batch, [100, 100], preserve_aspect_ratio=True).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.05


@pytest.mark.parametrize("method,pil_filter", [("bilinear", 2), ("bicubic", 3), ("nearest", 0)])
def test_resize_matches_pillow(photos, method, pil_filter):
    from PIL import Image

    for photo in photos:
        for height, width in [(256, 300), (120, 90), (600, 800)]:
            ours = to_numpy(image.resize(photo, [height, width], method=method, antialias=True))
            theirs = np.asarray(Image.fromarray(photo).resize((width, height), pil_filter))
            diff = np.abs(np.clip(np.round(ours), 0, 255) - theirs.astype(np.float64))
            if method == "nearest":  # equal but at exact ties, where rounding order differs

                def ties(n_in, n_out):
                    position = (np.arange(n_out) + 0.5) * n_in / n_out
                    return np.isclose(position, np.round(position))

                tie = ties(photo.shape[0], height)[:, None] | ties(photo.shape[1], width)[None]
                assert not diff.any(axis=2)[~tie].any()
            else:
                assert diff.max() <= {"bilinear": 1, "bicubic": 8}[method], (height, width)
                assert diff.mean() < 0.5


def test_decode_encode_roundtrip(tf, photo_paths):
    data = read_file(photo_paths[0])
    ours = to_numpy(image.decode_jpeg(data, channels=3))
    theirs = tf.io.decode_jpeg(data, channels=3).numpy()
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs).mean() < 2
    gray = to_numpy(image.decode_jpeg(data, channels=1))
    assert gray.shape == ours.shape[:2] + (1,)
    small = to_numpy(image.decode_jpeg(data, ratio=2))
    assert small.shape[0] == -(-ours.shape[0] // 2)
    png = image.encode_png(ours)
    assert np.array_equal(to_numpy(image.decode_png(png)), ours)
    assert np.array_equal(to_numpy(image.decode_image(png)), ours)
    jpeg = image.encode_jpeg(ours, quality=95)
    assert np.abs(to_numpy(image.decode_jpeg(jpeg)).astype(int) - ours).mean() < 3
    floats = to_numpy(image.decode_image(png, dtype="float32"))
    assert floats.dtype == np.float32 and floats.max() <= 1.0


def test_truncated_jpeg_fails_unless_recovery_is_asked_for(photo_paths):
    from PIL import ImageFile

    data = read_file(photo_paths[0])
    truncated = data[: len(data) * 2 // 3]
    with pytest.raises(ValueError, match="decode_jpeg: invalid JPEG data"):
        image.decode_jpeg(truncated)
    recovered = to_numpy(image.decode_jpeg(truncated, channels=3, try_recover_truncated=True))
    whole = to_numpy(image.decode_jpeg(data, channels=3))
    assert recovered.shape == whole.shape
    assert np.array_equal(recovered[:10], whole[:10])  # the rows the file still holds
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's global switch is left alone
    with pytest.raises(ValueError, match="decode_jpeg: invalid JPEG data"):
        image.decode_jpeg(truncated)


def test_decode_errors_are_clear():
    with pytest.raises(ValueError, match="decode_jpeg"):
        image.decode_jpeg(b"not an image")
    with pytest.raises(ValueError, match="channels"):
        image.decode_jpeg(b"", channels=2)
    with pytest.raises(ValueError, match="resize: expected images"):
        image.resize(np.zeros((3, 3)), [2, 2])


def test_central_crop_matches_tf(tf, photos):
    ours = to_numpy(image.central_crop(photos[0], 0.5))
    theirs = tf.image.central_crop(photos[0], 0.5).numpy()
    assert np.array_equal(ours, theirs)


def test_import_ember_does_not_import_pillow():
    import subprocess
    import sys

    code = (
        "import sys, ember, ember.data, ember.vision, ember.io.files; "
        "print([m for m in ('PIL', 'simplejpeg', 'multiprocessing', 'concurrent.futures') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "area", "nearest"])
def test_resize_both_pass_orders_and_batches_agree(photos, method):
    """The separable resize runs the cheaper axis first; either order and a batch of images
    give the same result as resizing each image with the slow reference (the weight tables
    applied as dense matrices, float64)."""
    photo = photos[0][:97, :131]
    for size in ([40, 200], [200, 40], [97, 60], [50, 131]):
        ours = to_numpy(image.resize(photo, size, method=method, antialias=True))
        rows_index, rows_weight = image._axis_weights(97, size[0], method, True)
        cols_index, cols_weight = image._axis_weights(131, size[1], method, True)
        rows = np.zeros((size[0], 97))
        cols = np.zeros((size[1], 131))
        for tap in range(rows_index.shape[1]):
            np.add.at(rows, (np.arange(size[0]), rows_index[:, tap]), rows_weight[:, tap])
        for tap in range(cols_index.shape[1]):
            np.add.at(cols, (np.arange(size[1]), cols_index[:, tap]), cols_weight[:, tap])
        if method == "nearest":
            rows, cols = rows[:, :97], cols[:, :131]
            if size[0] == 97:
                rows = np.eye(97)
            if size[1] == 131:
                cols = np.eye(131)
        reference = np.einsum("ih,jw,hwc->ijc", rows, cols, photo.astype(np.float64))
        error = np.abs(ours.astype(np.float64) - reference).max()
        assert error < 1e-3, (size, error)
        batch = to_numpy(image.resize(np.stack([photo, photo[::-1]]), size, method=method))
        single = to_numpy(image.resize(photo[::-1], size, method=method))
        assert np.array_equal(batch[1], single)


def test_bilinear_tables_match_the_general_kernel():
    """The direct two-tap bilinear table equals the triangle kernel with renormalized edges."""
    for in_size, out_size in [(1, 5), (7, 3), (240, 256), (420, 256), (331, 224)]:
        index, weights = image._axis_weights(in_size, out_size, "bilinear", False)
        dense = np.zeros((out_size, in_size))
        for tap in range(index.shape[1]):
            np.add.at(dense, (np.arange(out_size), index[:, tap]), weights[:, tap])
        centers = (np.arange(out_size) + 0.5) * in_size / out_size
        kernel = np.maximum(0, 1 - np.abs(np.arange(in_size)[None, :] + 0.5 - centers[:, None]))
        kernel /= kernel.sum(axis=1, keepdims=True)
        assert np.abs(dense - kernel).max() < 1e-6, (in_size, out_size)


COMPILED_CASES = [
    # (image shape, dtype, size): one image and a batch, 1/3/4/5 channels, up and down
    ((97, 131, 3), np.uint8, [40, 200]),
    ((97, 131, 3), np.uint8, [256, 341]),
    ((2, 50, 70, 3), np.float32, [33, 90]),
    ((61, 47, 1), np.uint8, [61, 20]),
    ((30, 40, 4), np.float64, [90, 40]),
    ((3, 25, 19, 5), np.float32, [12, 57]),
]


@pytest.mark.parametrize("shape,dtype,size", COMPILED_CASES)
@pytest.mark.parametrize("method", ["bilinear", "bicubic", "area", "lanczos3", "gaussian"])
@pytest.mark.parametrize("antialias", [False, True])
def test_compiled_resize_gives_the_same_bits_as_numpy(shape, dtype, size, method, antialias):
    """Note [Compiled resampling]: the numba passes and the NumPy passes compute the same
    float32 sums in the same order."""
    from ember.backend import numba_kernels

    if not numba_kernels.available():
        pytest.skip("numba is not installed (the `fast` extra): only the NumPy path exists")
    values = np.random.default_rng(len(shape) + size[0]).random(shape) * 255
    array = values.astype(dtype)
    compiled = image._resize_compiled(array, *size, method, antialias)
    assert compiled is not None
    with numba_kernels.disable_for_tests():
        assert image._resize_compiled(array, *size, method, antialias) is None
        reference = to_numpy(image.resize(array, size, method=method, antialias=antialias))
    assert compiled.dtype == reference.dtype == np.float32
    assert compiled.shape == reference.shape
    assert np.array_equal(compiled, reference)


def _jpeg_variants(photo):
    """JPEG bytes of one photo in the layouts decoders treat differently."""
    from PIL import Image

    rgb = Image.fromarray(photo[:120, :160])
    out = {}
    for label, picture, options in (
        ("ycbcr-444", rgb, {"subsampling": 0}),
        ("ycbcr-420", rgb, {"subsampling": 2}),
        ("gray", rgb.convert("L"), {}),
        ("cmyk", rgb.convert("CMYK"), {}),
        ("progressive", rgb, {"progressive": True}),
    ):
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90, **options)
        out[label] = buffer.getvalue()
    return out


@pytest.mark.parametrize("channels", [0, 1, 3])
def test_jpeg_decoders_give_the_same_pixels(photos, channels):
    """Note [JPEG decoders]: simplejpeg and Pillow decode every layout to the same array
    (grayscale as libjpeg's luma in both), and what simplejpeg does not take goes to Pillow."""
    pytest.importorskip("simplejpeg")
    for label, data in _jpeg_variants(photos[0]).items():
        fast = to_numpy(image.decode_jpeg(data, channels=channels))
        saved = list(image._TURBO)
        image._TURBO[:] = [None]  # Pillow only
        try:
            slow = to_numpy(image.decode_jpeg(data, channels=channels))
        finally:
            image._TURBO[:] = saved
        assert fast.dtype == slow.dtype == np.uint8, label
        assert fast.shape == slow.shape, (label, fast.shape, slow.shape)
        assert np.array_equal(fast, slow), (label, np.abs(fast.astype(int) - slow).max())
    assert image._decode_turbo(_jpeg_variants(photos[0])["cmyk"], 0) is None  # Pillow's
    assert image._decode_turbo(image.encode_png(photos[0][:8, :8]), 3) is None
