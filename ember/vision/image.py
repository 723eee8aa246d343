"""Image decoding, encoding and resizing (`ember.image`, `tf.image` in `ember.tf`).

Decoding and encoding use Pillow, imported on first use (`pip install "ember[vision]"`); it
releases the GIL while it decodes, so a threaded `Pipeline.map` decodes in parallel.
Functions accept NumPy arrays or ember Tensors, images as [height, width, channels] or
batches as [batch, height, width, channels] (tf.image's layout), and return ember Tensors.

Note [Resize semantics]: `resize` follows `tf.image.resize`. Pixel i covers [i, i+1) and
output pixel j samples the input at (j + 0.5) * in_size / out_size (half-pixel centres).
Each output value is a weighted sum of input pixels, weights from the method's kernel
(triangle for bilinear, Keys cubic with a = -0.5 for bicubic, Lanczos, ...); weights that
fall outside the image are dropped and the rest renormalized to sum to 1. With
`antialias=True` and downsampling, the kernel is stretched by the scale factor, so every
input pixel contributes (a low-pass filter, as Pillow always does). `area` averages the input
pixels each output pixel covers, weighted by overlap; `nearest` takes pixel
floor((j + 0.5) * scale). Results are float32 (nearest keeps the input dtype).
Measured agreement on real photos (tests/vision/test_image.py): within 1e-3 of TensorFlow's
float output (0.25 for bicubic without antialias, where TensorFlow reads its kernel from a
1024-entry table), and close to Pillow's uint8 `Image.resize` with antialias: bilinear within
1 grey level, bicubic within 8 (Pillow clips to 8 bits between its two passes), nearest
identical except at exact ties. `area` is TensorFlow's (fractional pixel coverage), not
Pillow's BOX (which counts the pixels whose centres fall in the window).
"""

from __future__ import annotations

import io
import math
import struct
import threading

import numpy as np

from ember.data._arrays import to_numpy, to_tensor

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageTooLargeError",
    "ResizeMethod",
    "central_crop",
    "convert_image_dtype",
    "crop_to_bounding_box",
    "decode_image",
    "decode_jpeg",
    "decode_png",
    "encode_jpeg",
    "encode_png",
    "flip_left_right",
    "flip_up_down",
    "pillow",
    "resize",
    "rgb_to_grayscale",
]


# Note [Image size limit]: a few kilobytes of JPEG or PNG may claim 65000x65000 pixels, and
# decoding would allocate gigabytes. Every decoder here (simplejpeg and Pillow alike) reads the
# size from the header first and refuses images with more than MAX_IMAGE_PIXELS pixels (all
# frames together for an animated GIF) with ImageTooLargeError, before allocating anything.
# The default is Pillow's own MAX_IMAGE_PIXELS (89,478,485: about 0.25 GB of RGB). To decode
# larger images you trust, raise it: `ember.vision.image.MAX_IMAGE_PIXELS = 300_000_000`
# (None turns the check off), or set EMBER_MAX_IMAGE_PIXELS in the environment. Pillow still
# refuses images beyond twice its own limit; raise `PIL.Image.MAX_IMAGE_PIXELS` too for those.
MAX_IMAGE_PIXELS: int | None = 89_478_485
# What Pillow's decoders raise on damaged data besides OSError (struct errors, short reads,
# bad tables): all become ValueError("<decoder>: invalid ... data (...)").
_DECODER_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)


class ImageTooLargeError(ValueError):
    """An encoded image claims more pixels than MAX_IMAGE_PIXELS (Note [Image size limit])."""


def _max_pixels() -> int | None:
    import os

    value = os.environ.get("EMBER_MAX_IMAGE_PIXELS", "").strip()
    if value:
        if value.lower() == "none":
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(
                f"EMBER_MAX_IMAGE_PIXELS must be an integer or 'none', got {value!r}"
            ) from None
    return MAX_IMAGE_PIXELS


def _check_pixels(width: int, height: int, where: str, frames: int = 1) -> None:
    limit = _max_pixels()
    pixels = int(width) * int(height) * int(frames)
    if limit is not None and pixels > limit:
        what = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        raise ImageTooLargeError(
            f"{where}: the image claims {what} = {pixels:,} pixels, more than the limit of "
            f"{limit:,} (a decompression bomb?). If you trust it, raise "
            "ember.vision.image.MAX_IMAGE_PIXELS or set EMBER_MAX_IMAGE_PIXELS "
            "(Note [Image size limit])"
        )


def open_image(data, where: str):
    """A lazily decoded Pillow image (from bytes or a binary file) whose size has passed the
    pixel limit (Note [Image size limit]); `where` names the caller or file in errors."""
    Image = pillow()
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{where}: {error} (raise PIL.Image.MAX_IMAGE_PIXELS as well as "
            "ember.vision.image.MAX_IMAGE_PIXELS to decode it; Note [Image size limit])"
        ) from None
    _check_pixels(image.width, image.height, where)
    return image


def pillow():
    """The Pillow `Image` module, imported on first use."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is installed with ember[vision]
        raise ImportError(
            "ember.image needs Pillow to decode and encode images: "
            "pip install 'ember[vision]' (or pip install pillow)"
        ) from None
    return Image


def _bytes_of(contents) -> bytes:
    if isinstance(contents, (bytes, bytearray, memoryview)):
        return bytes(contents)
    if hasattr(contents, "numpy") and not isinstance(contents, np.ndarray):
        contents = contents.numpy()
    if isinstance(contents, np.ndarray) and contents.ndim == 0:
        contents = contents.item()
    if isinstance(contents, np.bytes_):
        return bytes(contents)
    if isinstance(contents, bytes):
        return contents
    raise TypeError(
        f"decode: expected the encoded image as bytes (from ember.io.read_file), "
        f"got {type(contents).__name__}"
    )


_MODES_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _to_array(image, channels: int) -> np.ndarray:
    """A Pillow image as uint8 [H, W, C], converted to `channels` (0: as stored)."""
    if channels:
        mode = _MODES_FOR_CHANNELS[channels]
        if image.mode != mode:
            image = image.convert(mode)
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert(
            "RGBA"
            if "A" in image.mode or "transparency" in image.info
            else ("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
        )
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def _check_channels(channels, allowed, where):
    if channels not in allowed:
        raise ValueError(f"{where}: channels must be one of {allowed}, got {channels}")


def decode_jpeg(
    contents,
    channels: int = 0,
    ratio: int = 1,
    fancy_upscaling: bool = True,
    try_recover_truncated: bool = False,
    acceptable_fraction: float = 1,
    dct_method: str = "",
    name=None,
):
    """Decode a JPEG into a uint8 [height, width, channels] Tensor.

    Args:
        contents: the encoded bytes.
        channels: 0 (as stored), 1 (grayscale) or 3 (RGB).
        ratio: 1, 2, 4 or 8: decode at 1/ratio of the size (JPEG's DCT scaling; much faster).
    """
    _check_channels(channels, (0, 1, 3), "decode_jpeg")
    if ratio not in (1, 2, 4, 8):
        raise ValueError(f"decode_jpeg: ratio must be 1, 2, 4 or 8, got {ratio}")
    data = _bytes_of(contents)
    if ratio == 1 and not try_recover_truncated:
        array = _decode_turbo(data, channels)
        if array is not None:
            return to_tensor(array)
    try:
        image = open_image(data, "decode_jpeg")
        if image.format != "JPEG":
            raise ValueError(
                f"decode_jpeg: expected a JPEG, got {image.format or 'unknown'} "
                f"data; use decode_image for any format"
            )
        if ratio > 1 or (channels == 1 and image.mode != "L"):
            # libjpeg scales while decoding, and decodes a colour JPEG to grayscale as its
            # luma (Y) channel, as TensorFlow and simplejpeg do (Note [JPEG decoders])
            image.draft(
                "L" if channels == 1 else image.mode,
                (max(1, image.width // ratio), max(1, image.height // ratio)),
            )
        if try_recover_truncated:
            _load_truncated(image)
        else:
            image.load()
    except _DECODER_ERRORS as error:
        raise ValueError(f"decode_jpeg: invalid JPEG data ({error})") from error
    return to_tensor(_to_array(image, channels))


# Note [JPEG decoders]: JPEGs decode with simplejpeg (a libjpeg-turbo binding, the `vision`
# extra) where it is installed: the same libjpeg-turbo and settings as Pillow's decoder (slow
# accurate DCT, fancy upsampling), so the same pixels (tests/vision/test_image.py compares
# them), at about two thirds of Pillow's time (0.47 against 0.73 ms for a 400x300 photo:
# no Python-level header parsing, decoding straight into the array, all without the GIL).
# Anything it does not take (other colour spaces, DCT scaling with `ratio`, truncated files,
# data that is not a JPEG) goes to Pillow, which also gives the errors.
# EMBER_JPEG_DECODER=pillow uses Pillow for everything.
_TURBO: list = []  # [module or None] once looked up
_TURBO_SPACES = {"YCbCr": "RGB", "RGB": "RGB", "Gray": "GRAY"}


def _turbo():
    if not _TURBO:
        import os

        module = None
        if os.environ.get("EMBER_JPEG_DECODER", "").lower() != "pillow":
            try:
                import simplejpeg as module
            except ImportError:
                module = None
        _TURBO.append(module)
    return _TURBO[0]


def _decode_turbo(data: bytes, channels: int, where: str = "decode_jpeg"):
    """uint8 [H, W, C] decoded by simplejpeg (Note [JPEG decoders]), or None for Pillow."""
    turbo = _turbo()
    if turbo is None:
        return None
    try:
        height, width, colour_space, _ = turbo.decode_jpeg_header(data)
    except (ValueError, TypeError, RuntimeError, OSError):
        return None
    _check_pixels(width, height, where)
    try:
        space = _TURBO_SPACES.get(colour_space)
        if space is None:
            return None
        if channels:
            space = "GRAY" if channels == 1 else "RGB"
        array = turbo.decode_jpeg(data, colorspace=space, strict=True)
    except (ValueError, TypeError, RuntimeError, OSError):
        return None
    return array if array.ndim == 3 else array[:, :, None]


_TRUNCATED_LOCK = threading.Lock()


def _load_truncated(image) -> None:
    """Load what a truncated file holds (the rest grey), with Pillow's process-wide switch
    turned on for this image only."""
    from PIL import ImageFile

    with _TRUNCATED_LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def decode_png(contents, channels: int = 0, dtype=None, name=None):
    """Decode a PNG into a uint8 [height, width, channels] Tensor (channels 0-4)."""
    _check_channels(channels, (0, 1, 2, 3, 4), "decode_png")
    Image = pillow()
    try:
        image = open_image(_bytes_of(contents), "decode_png")
        if image.format != "PNG":
            raise ValueError(f"decode_png: expected a PNG, got {image.format or 'unknown'} data")
        image.load()
    except _DECODER_ERRORS as error:
        raise ValueError(f"decode_png: invalid PNG data ({error})") from error
    if image.mode in ("I;16", "I;16B", "I"):
        # 16-bit grey: ember has no uint16, so scale to 8 bits as convert_image_dtype would.
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray((wide >> 8).astype(np.uint8), "L")
    return to_tensor(_to_array(image, channels))


def decode_image(
    contents, channels: int | None = None, dtype=None, name=None, expand_animations: bool = True
):
    """Decode a JPEG, PNG, GIF or BMP by its header. Animated GIFs give [frames, H, W, 3]
    unless `expand_animations=False` (then the first frame). `dtype=float32` scales to [0, 1].
    """
    channels = channels or 0
    _check_channels(channels, (0, 1, 3, 4), "decode_image")
    data = _bytes_of(contents)
    if data[:2] == b"\xff\xd8" and channels != 4:  # a JPEG: Note [JPEG decoders]
        array = _decode_turbo(data, channels, "decode_image")
        if array is not None:
            return convert_image_dtype(array, dtype) if dtype is not None else to_tensor(array)
    try:
        image = open_image(data, "decode_image")
        if image.format == "GIF" and expand_animations:
            _check_pixels(image.width, image.height, "decode_image", image.n_frames)
        image.load()
    except _DECODER_ERRORS as error:
        raise ValueError(f"decode_image: unknown or invalid image data ({error})") from error
    if image.format == "GIF" and expand_animations:
        frames = []
        try:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frames.append(_to_array(image.convert("RGB"), channels or 3))
        except _DECODER_ERRORS as error:
            raise ValueError(f"decode_image: invalid GIF frame ({error})") from error
        array = np.stack(frames)
    else:
        array = _to_array(image, channels)
    if dtype is not None:
        return convert_image_dtype(array, dtype)
    return to_tensor(array)


def _encode(image, format: str, **options) -> bytes:
    Image = pillow()
    array = to_numpy(image)
    if array.dtype != np.uint8:
        raise TypeError(f"encode_{format.lower()}: expected a uint8 image, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            f"encode_{format.lower()}: expected [height, width, channels] with "
            f"1-4 channels, got shape {array.shape}"
        )
    if array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=format, **options)
    return buffer.getvalue()


def encode_jpeg(
    image,
    format: str = "",
    quality: int = 95,
    progressive: bool = False,
    optimize_size: bool = False,
    chroma_downsampling: bool = True,
    **_,
) -> bytes:
    """Encode a uint8 [H, W, 1 or 3] image as JPEG bytes."""
    return _encode(
        image,
        "JPEG",
        quality=int(quality),
        progressive=progressive,
        optimize=optimize_size,
        subsampling=-1 if chroma_downsampling else 0,
    )


def encode_png(image, compression: int = -1, name=None) -> bytes:
    """Encode a uint8 [H, W, 1-4] image as PNG bytes (compression 0-9, -1 default)."""
    level = 6 if compression == -1 else int(compression)
    return _encode(image, "PNG", compress_level=level)


def convert_image_dtype(image, dtype, saturate: bool = False):
    """Convert between uint8 ([0, 255]) and floating ([0, 1]) images."""
    from ember.dtypes import as_dtype

    target = as_dtype(dtype).numpy
    array = to_numpy(image)
    if array.dtype == target:
        return to_tensor(array)
    if array.dtype.kind == "u" and target.kind == "f":
        return to_tensor(array.astype(target) / np.iinfo(array.dtype).max)
    if array.dtype.kind == "f" and target.kind == "u":
        scaled = np.clip(array, 0, 1) * np.iinfo(target).max + 0.5
        return to_tensor(scaled.astype(target))
    return to_tensor(array.astype(target))


# --- resize (Note [Resize semantics]) -----------------------------------------------------------


class ResizeMethod:
    BILINEAR = "bilinear"
    NEAREST_NEIGHBOR = "nearest"
    BICUBIC = "bicubic"
    AREA = "area"
    LANCZOS3 = "lanczos3"
    LANCZOS5 = "lanczos5"
    GAUSSIAN = "gaussian"
    MITCHELLCUBIC = "mitchellcubic"


def _triangle(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(
        x < 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
    )


def _lanczos(radius):
    def kernel(x):
        x = np.abs(x)
        return np.where(x < radius, np.sinc(x) * np.sinc(x / radius), 0.0)

    return kernel


def _gaussian(x):
    sigma = 1.5 / 3.0
    return np.where(np.abs(x) < 1.5, np.exp(-x * x / (2 * sigma * sigma)), 0.0)


def _mitchell(x):
    x = np.abs(x)
    b = c = 1.0 / 3.0
    near = ((12 - 9 * b - 6 * c) * x**3 + (-18 + 12 * b + 6 * c) * x**2 + (6 - 2 * b)) / 6
    far = (
        (-b - 6 * c) * x**3 + (6 * b + 30 * c) * x**2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)
    ) / 6
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


_KERNELS = {
    "bilinear": (_triangle, 1.0),
    "bicubic": (_keys_cubic, 2.0),
    "lanczos3": (_lanczos(3), 3.0),
    "lanczos5": (_lanczos(5), 5.0),
    "gaussian": (_gaussian, 1.5),
    "mitchellcubic": (_mitchell, 2.0),
}
_WEIGHT_CACHE: dict = {}


def _axis_weights(in_size: int, out_size: int, method: str, antialias: bool):
    """(indices, weights), each [out_size, taps]: output j = sum_t w[j, t] * x[idx[j, t]]."""
    key = (in_size, out_size, method, antialias)
    cached = _WEIGHT_CACHE.get(key)
    if cached is not None:
        return cached
    scale = in_size / out_size
    outputs = np.arange(out_size, dtype=np.float64)
    if method == "nearest":
        index = np.minimum(np.floor((outputs + 0.5) * scale), in_size - 1).astype(np.intp)
        result = (index[:, None], np.ones((out_size, 1), np.float32))
    elif method == "area":
        starts, stops = outputs * scale, (outputs + 1) * scale
        first = np.floor(starts).astype(np.intp)
        taps = math.ceil(scale) + 1
        index = first[:, None] + np.arange(taps)
        overlap = np.minimum(stops[:, None], index + 1.0) - np.maximum(
            starts[:, None], index.astype(np.float64)
        )
        weights = np.where(index < in_size, np.maximum(overlap, 0.0), 0.0) / scale
        result = (np.minimum(index, in_size - 1), weights.astype(np.float32))
    elif method == "bilinear" and (not antialias or scale <= 1.0):
        # The triangle kernel at unit width covers two pixels: the general path below gives
        # the same table (edge weights renormalized = clamped indices), computed directly.
        # (few NumPy calls: a pipeline resizing photos of many sizes builds a table per image)
        centers = (outputs + 0.5) * scale - 0.5
        lower = np.floor(centers)
        index = np.empty((out_size, 2), np.intp)
        index[:, 0] = lower
        index[:, 1] = index[:, 0] + 1
        np.minimum(np.maximum(index, 0, out=index), in_size - 1, out=index)
        weights = np.empty((out_size, 2), np.float32)
        fraction = np.subtract(centers, lower, out=centers)
        weights[:, 1] = fraction
        weights[:, 0] = np.subtract(1.0, fraction, out=lower)
        result = (index, weights)
    else:
        try:
            kernel, support = _KERNELS[method]
        except KeyError:
            raise ValueError(
                f"resize: unknown method {method!r}; expected one of "
                f"{sorted(list(_KERNELS) + ['nearest', 'area'])}"
            ) from None
        kernel_scale = max(scale, 1.0) if antialias else 1.0
        radius = support * kernel_scale
        centers = (outputs + 0.5) * scale
        first = np.floor(centers - radius - 0.5).astype(np.intp)
        taps = math.ceil(2 * radius) + 2
        index = first[:, None] + np.arange(taps)
        weights = kernel((index + 0.5 - centers[:, None]) / kernel_scale)
        weights = np.where((index >= 0) & (index < in_size), weights, 0.0)
        totals = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(np.abs(totals) > 1e-12, totals, 1.0)
        keep = np.flatnonzero(np.abs(weights).max(axis=0) > 0)  # drop all-zero tap columns
        index, weights = index[:, keep[0] : keep[-1] + 1], weights[:, keep[0] : keep[-1] + 1]
        result = (np.clip(index, 0, in_size - 1), weights.astype(np.float32))
    if len(_WEIGHT_CACHE) > 256:
        _WEIGHT_CACHE.clear()
    _WEIGHT_CACHE[key] = result
    return result


_SCRATCH = threading.local()
_SCRATCH_LIMIT = 1 << 24  # bytes per buffer kept between calls; larger ones are not kept


def _scratch(slot: int, shape: tuple, dtype) -> np.ndarray:
    """A per-thread work buffer, reused across calls. Fresh multi-megabyte temporaries cost a
    page fault per 4 KiB page each time (the allocator returns freed memory to the system),
    which on a busy machine costs more than the arithmetic; reused buffers are already mapped."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > _SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    buffer = buffers.get(slot)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = buffers[slot] = np.empty(max(nbytes, 1 << 16), np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def _axis_plan(in_size: int, out_size: int, channels: int, method: str, antialias: bool):
    """Gather indices and weights for one axis, laid out for the two passes: per tap, the
    input row of every output row (`rows`, float32 weights shaped [out, 1, 1]) and the same
    expanded over the channels of a flattened [rows, width * channels] image (`flat`)."""
    key = ("plan", in_size, out_size, channels, method, antialias)
    cached = _WEIGHT_CACHE.get(key)
    if cached is not None:
        return cached
    index, weights = _axis_weights(in_size, out_size, method, antialias)
    lanes = np.arange(channels)
    taps = []
    for tap in range(index.shape[1]):
        rows = np.ascontiguousarray(index[:, tap])
        flat = (rows[:, None] * channels + lanes).reshape(-1)
        row_weight = np.ascontiguousarray(weights[:, tap])[:, None, None]
        flat_weight = np.repeat(weights[:, tap], channels)
        taps.append((rows, flat, row_weight, flat_weight))
    if len(_WEIGHT_CACHE) > 256:
        _WEIGHT_CACHE.clear()
    _WEIGHT_CACHE[key] = taps
    return taps


def _weighted_sum(source: np.ndarray, taps, axis: int, kind: int, out: np.ndarray) -> np.ndarray:
    """out = sum over taps of weight * take(source, index, axis), in float32, with the
    gathered values and the products in per-thread scratch buffers."""
    shape = list(source.shape)
    shape[axis] = out.shape[axis]
    shape = tuple(shape)
    gathered = _scratch(0, shape, source.dtype)
    for position, tap in enumerate(taps):
        index, weight = tap[kind], tap[kind + 2]
        np.take(source, index, axis=axis, out=gathered, mode="clip")
        if position == 0:
            np.multiply(gathered, weight, out=out, dtype=np.float32)
        elif gathered.dtype == np.float32:
            out += np.multiply(gathered, weight, out=gathered)
        else:
            out += np.multiply(
                gathered, weight, out=_scratch(1, shape, np.float32), dtype=np.float32
            )
    return out


def _resample_height(array: np.ndarray, taps, nearest: bool, out=None) -> np.ndarray:
    """Resample axis -3 of [..., H, W, C]: each tap gathers whole rows (contiguous copies)."""
    if nearest:
        return np.take(array, taps[0][0], axis=-3)
    shape = array.shape[:-3] + (len(taps[0][0]),) + array.shape[-2:]
    if out is None:
        out = np.empty(shape, np.float32)
    return _weighted_sum(array, taps, array.ndim - 3, 0, out)


def _resample_width(array: np.ndarray, taps, nearest: bool, out=None) -> np.ndarray:
    """Resample axis -2 of [..., H, W, C] without transposing: the image is seen as
    [..., H, W * C] and each tap gathers channel-expanded columns along the last axis."""
    *lead, width, channels = array.shape
    flat = array.reshape(*lead, width * channels)
    if nearest:
        return np.take(flat, taps[0][1], axis=-1).reshape(*lead, -1, channels)
    shape = tuple(lead) + (len(taps[0][1]),)
    flat_out = np.empty(shape, np.float32) if out is None else out.reshape(shape)
    return _weighted_sum(flat, taps, flat.ndim - 1, 1, flat_out).reshape(*lead, -1, channels)


# Note [Compiled resampling]: with numba (the `fast` extra), each separable pass is one
# compiled call that holds no GIL: per output row (height pass) or pixel (width pass), the
# float32 sum over taps of weight * float32(input), taps in the same order and float32 products
# and sums as the NumPy path, so both give the same bits (no fused multiply-adds). The NumPy
# path gathers whole rows per tap (np.take) and holds the GIL between its many calls, so two
# threads resizing at once mostly wait for each other; the compiled pass runs in parallel and
# reads each input value once per tap instead of copying it. EMBER_FAST_KERNELS=0 or no numba
# gives the NumPy path; tests/vision/test_image.py checks the two against each other.
_HEIGHT_SOURCE = """
def resample_height(source, index, weights, out):
    # source [N, H, R], out [N, OH, R] float32: out[b, i] = sum_t w[i, t] * source[b, idx[i, t]]
    for b in range(source.shape[0]):
        for i in range(index.shape[0]):
            row = out[b, i]
            first = source[b, index[i, 0]]
            w = weights[i, 0]
            for k in range(row.shape[0]):
                row[k] = w * np.float32(first[k])
            for t in range(1, index.shape[1]):
                line = source[b, index[i, t]]
                w = weights[i, t]
                for k in range(row.shape[0]):
                    row[k] += w * np.float32(line[k])
"""
# The width pass gathers along the pixels of a row: with the channel count and (for short
# filters) the tap count spelled as constants, numba unrolls the inner loops, 3-4x faster
# than with run-time bounds; unsigned indices spare the negative-index checks.
_WIDTH_SOURCE = """
def resample_width(source, index, weights, out):
    # source [N, H, W, C], out [N, H, OW, C] float32:
    # out[.., j, c] = sum_t w[j, t] * source[.., idx[j, t], c]
    for b in range(source.shape[0]):
        for y in range(source.shape[1]):
            line = source[b, y]
            target = out[b, y]
            for j in range(index.shape[0]):
                for c in range(CHANNELS):
                    total = weights[j, 0] * np.float32(line[index[j, 0], c])
                    for t in range(1, TAPS):
                        total += weights[j, t] * np.float32(line[index[j, t], c])
                    target[j, c] = total
"""


def _compiled_resampler(which: str, channels: int, taps: int):
    """The compiled pass (Note [Compiled resampling]) for `which` ("height" or "width"), or
    None without numba (numba_kernels caches each kernel by its source)."""
    from ember.backend import numba_kernels

    if which == "height":
        return numba_kernels.jit_source(_HEIGHT_SOURCE, "resample_height")
    source = _WIDTH_SOURCE.replace(
        "CHANNELS", str(channels) if channels <= 4 else "source.shape[3]"
    ).replace("TAPS", str(taps) if taps <= 4 else "index.shape[1]")
    return numba_kernels.jit_source(source, "resample_width")


def _height_first(shape, new_height: int, new_width: int, taps_rows: int, taps_cols: int):
    """Whether resizing the height first computes fewer weighted taps than the width first
    (both the NumPy and the compiled passes take this order, so they give the same bits)."""
    height, width = shape[-3], shape[-2]
    height_first = new_height * width * taps_rows + new_height * new_width * taps_cols
    width_first = height * new_width * taps_cols + new_height * new_width * taps_rows
    return height_first <= width_first


def _compiled_weights(size: int, new_size: int, method: str, antialias: bool):
    """`_axis_weights` with unsigned indices, for the compiled passes."""
    key = ("compiled", size, new_size, method, antialias)
    cached = _WEIGHT_CACHE.get(key)
    if cached is None:
        index, weights = _axis_weights(size, new_size, method, antialias)
        cached = _WEIGHT_CACHE[key] = (index.astype(np.uint64), weights)
    return cached


def _resize_compiled(array, new_height, new_width, method, antialias):
    """`_resize_images` with the compiled passes (Note [Compiled resampling]): the same pass
    order and weights (so the same bits), the intermediate in a per-thread scratch buffer.
    None where a pass has no compiled kernel."""
    height, width, channels = array.shape[-3:]
    lead = array.shape[:-3]
    do_height = new_height != height or method == "area"
    do_width = new_width != width or method == "area"
    rows = _compiled_weights(height, new_height, method, antialias) if do_height else None
    cols = _compiled_weights(width, new_width, method, antialias) if do_width else None
    height_pass = _compiled_resampler("height", channels, 0) if rows is not None else None
    width_pass = (
        _compiled_resampler("width", channels, cols[0].shape[1]) if cols is not None else None
    )
    if (rows is not None and height_pass is None) or (cols is not None and width_pass is None):
        return None
    if array.dtype not in (np.uint8, np.float32):
        array = array.astype(np.float32)
    source = np.ascontiguousarray(array).reshape(-1, height, width, channels)
    count = source.shape[0]

    def by_height(image, out):
        rows_out = rows[0].shape[0]
        flat = image.shape[2] * channels
        height_pass(
            image.reshape(count, -1, flat), rows[0], rows[1], out.reshape(count, rows_out, flat)
        )
        return out

    def by_width(image, out):
        width_pass(image, cols[0], cols[1], out.reshape(count, image.shape[1], -1, channels))
        return out

    out = np.empty((count, new_height, new_width, channels), np.float32)
    if rows is not None and cols is not None:
        if _height_first(array.shape, new_height, new_width, rows[0].shape[1], cols[0].shape[1]):
            middle = _scratch(2, (count, new_height, width, channels), np.float32)
            by_width(by_height(source, middle), out)
        else:
            middle = _scratch(2, (count, height, new_width, channels), np.float32)
            by_height(by_width(source, middle), out)
    elif rows is not None:
        by_height(source, out)
    elif cols is not None:
        by_width(source, out)
    else:
        out[...] = source
    return out.reshape(lead + out.shape[1:])


def _resize_images(
    array: np.ndarray, new_height: int, new_width: int, method: str, antialias: bool
) -> np.ndarray:
    """Separable resize of [..., H, W, C] (Note [Resize semantics]): one pass per axis whose
    size changes (`area` always filters), in the order that computes fewer values; indices and
    weights come from a cache; the intermediate image lives in a per-thread scratch buffer."""
    height, width, channels = array.shape[-3:]
    lead = array.shape[:-3]
    nearest = method == "nearest"
    do_height = new_height != height or method == "area"
    do_width = new_width != width or method == "area"
    if not nearest and array.size:
        out = _resize_compiled(array, new_height, new_width, method, antialias)
        if out is not None:
            return out
    rows = _axis_plan(height, new_height, channels, method, antialias) if do_height else None
    cols = _axis_plan(width, new_width, channels, method, antialias) if do_width else None
    if rows is not None and cols is not None:
        if nearest:
            out = _resample_width(_resample_height(array, rows, True), cols, True)
        elif _height_first(array.shape, new_height, new_width, len(rows), len(cols)):
            middle = _scratch(2, lead + (new_height, width, channels), np.float32)
            out = _resample_width(_resample_height(array, rows, False, middle), cols, False)
        else:
            middle = _scratch(2, lead + (height, new_width, channels), np.float32)
            out = _resample_height(_resample_width(array, cols, False, middle), rows, False)
    elif rows is not None:
        out = _resample_height(array, rows, nearest)
    elif cols is not None:
        out = _resample_width(array, cols, nearest)
    else:
        out = array.copy()
    if not nearest and out.dtype != np.float32:
        out = out.astype(np.float32)
    return np.ascontiguousarray(out)


def _target_size(height: int, width: int, size, preserve_aspect_ratio: bool):
    size = (
        [int(s) for s in to_numpy(size).reshape(-1)]
        if not isinstance(size, (list, tuple))
        else [int(s) for s in size]
    )
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(
            f"resize: size must be [new_height, new_width] with positive entries, got {size}"
        )
    new_height, new_width = size
    if preserve_aspect_ratio:
        scale = min(new_height / height, new_width / width)
        new_height = max(1, round(height * scale))
        new_width = max(1, round(width * scale))
    return new_height, new_width


def resize(
    images,
    size,
    method: str = "bilinear",
    preserve_aspect_ratio: bool = False,
    antialias: bool = False,
    name=None,
):
    """Resize [H, W, C] or [N, H, W, C] images to `size = [new_height, new_width]`.

    Follows `tf.image.resize` (Note [Resize semantics]): float32 results (nearest keeps the
    dtype), methods bilinear, nearest, bicubic, area, lanczos3, lanczos5, gaussian,
    mitchellcubic; `antialias=True` low-pass filters when downsampling.

    Example:
        >>> import numpy as np
        >>> tuple(resize(np.zeros((4, 6, 3), np.uint8), [2, 3]).shape)
        (2, 3, 3)
    """
    method = getattr(method, "value", method)
    method = {"nearest_neighbor": "nearest"}.get(str(method).lower(), str(method).lower())
    array = to_numpy(images)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"resize: expected images of shape [H, W, C] or [N, H, W, C], got shape {array.shape}"
        )
    height_axis = array.ndim - 3
    height, width = array.shape[height_axis], array.shape[height_axis + 1]
    new_height, new_width = _target_size(height, width, size, preserve_aspect_ratio)
    if method not in _KERNELS and method not in ("nearest", "area"):
        raise ValueError(
            f"resize: unknown method {method!r}; expected one of "
            f"{sorted(list(_KERNELS) + ['nearest', 'area'])}"
        )
    return to_tensor(_resize_images(array, new_height, new_width, method, antialias))


# --- small geometric helpers ----------------------------------------------------------------------


def crop_to_bounding_box(
    image, offset_height: int, offset_width: int, target_height: int, target_width: int
):
    """The [target_height, target_width] window whose top-left corner is at the offsets."""
    array = to_numpy(image)
    h_axis = array.ndim - 3
    height, width = array.shape[h_axis], array.shape[h_axis + 1]
    if (
        offset_height < 0
        or offset_width < 0
        or offset_height + target_height > height
        or offset_width + target_width > width
    ):
        raise ValueError(
            f"crop_to_bounding_box: window ({offset_height}, {offset_width}, "
            f"{target_height}, {target_width}) does not fit an image of "
            f"{height}x{width}"
        )
    index = [slice(None)] * array.ndim
    index[h_axis] = slice(offset_height, offset_height + target_height)
    index[h_axis + 1] = slice(offset_width, offset_width + target_width)
    return to_tensor(array[tuple(index)])


def central_crop(image, central_fraction: float):
    """The central `central_fraction` of the image in each dimension (tf.image's rounding)."""
    if not 0.0 < central_fraction <= 1.0:
        raise ValueError(
            f"central_crop: central_fraction must be in (0, 1], got {central_fraction}"
        )
    array = to_numpy(image)
    h_axis = array.ndim - 3
    height, width = array.shape[h_axis], array.shape[h_axis + 1]
    top = int((height - height * central_fraction) / 2)
    left = int((width - width * central_fraction) / 2)
    return crop_to_bounding_box(array, top, left, height - 2 * top, width - 2 * left)


def flip_left_right(image):
    array = to_numpy(image)
    return to_tensor(np.ascontiguousarray(np.flip(array, axis=array.ndim - 2)))


def flip_up_down(image):
    array = to_numpy(image)
    return to_tensor(np.ascontiguousarray(np.flip(array, axis=array.ndim - 3)))


def rgb_to_grayscale(images):
    """ITU-R 601 luma, keeping a channel dimension of 1 (tf.image's weights)."""
    array = to_numpy(images)
    weights = np.array([0.2989, 0.587, 0.114], np.float32)
    gray = np.tensordot(array.astype(np.float32), weights, axes=([-1], [0]))[..., None]
    if array.dtype == np.uint8:
        gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return to_tensor(gray)
