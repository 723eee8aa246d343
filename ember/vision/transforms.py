"""Image transforms with torchvision's documented semantics (`ember.vision.transforms`).

An image is one of three things, and every transform keeps its kind:
- a Pillow `Image` (what `ImageFolder` loads, as torchvision does): geometry and colour go
  through Pillow, exactly as torchvision's PIL path;
- a NumPy array [H, W, C] (Pillow's layout);
- an ember Tensor [..., C, H, W] (torchvision's tensor layout), e.g. after `ToTensor`.

Randomness comes from ember's default CPU generator, which the DataLoader seeds per batch
(Note [Worker seeding] in ember/data/_worker.py), so augmented batches are reproducible.

Example:
    >>> import numpy as np
    >>> transform = Compose([CenterCrop(2), ToTensor()])
    >>> tuple(transform(np.zeros((4, 4, 3), np.uint8)).shape)
    (3, 2, 2)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from ember.data._arrays import is_tensor, to_numpy, to_tensor
from ember.vision import image as _image

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "InterpolationMode",
    "Lambda",
    "Normalize",
    "PILToTensor",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ToTensor",
]


class InterpolationMode:
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    LANCZOS = "lanczos"


_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4}
_ARRAY_METHODS = {
    "nearest": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "box": "area",
    "lanczos": "lanczos3",
}


def _rng():
    from ember.backend.random import default_generator

    return default_generator("cpu").rng


def _is_pil(image) -> bool:
    return hasattr(image, "getbands") and hasattr(image, "resize")


def _size(image) -> tuple[int, int]:
    """(height, width)."""
    if _is_pil(image):
        return image.height, image.width
    if is_tensor(image):
        return tuple(image.shape[-2:])
    if isinstance(image, np.ndarray):
        return image.shape[0], image.shape[1]
    raise TypeError(
        f"transforms: expected a Pillow image, a NumPy [H, W, C] array or an ember "
        f"Tensor [..., C, H, W], got {type(image).__name__}"
    )


def _pair(size, name: str) -> tuple[int, int]:
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{name}: size should be an int or a sequence of 1 or 2 ints, got {size}")
    return size


def _crop(image, top: int, left: int, height: int, width: int):
    """torchvision's `F.crop`: regions outside the image are zero-filled."""
    if _is_pil(image):
        return image.crop((left, top, left + width, top + height))
    tensor = is_tensor(image)
    array = to_numpy(image)
    h_axis = array.ndim - 2 if tensor else 0
    img_h, img_w = array.shape[h_axis], array.shape[h_axis + 1]
    if top < 0 or left < 0 or top + height > img_h or left + width > img_w:
        pad = [(0, 0)] * array.ndim
        pad[h_axis] = (max(0, -top), max(0, top + height - img_h))
        pad[h_axis + 1] = (max(0, -left), max(0, left + width - img_w))
        array = np.pad(array, pad)
        top, left = top + pad[h_axis][0], left + pad[h_axis + 1][0]
    index = [slice(None)] * array.ndim
    index[h_axis] = slice(top, top + height)
    index[h_axis + 1] = slice(left, left + width)
    out = array[tuple(index)]
    return to_tensor(out) if tensor else out


def _resize(image, height: int, width: int, interpolation: str, antialias: bool = True):
    if _is_pil(image):
        return image.resize((width, height), _PIL_FILTERS[interpolation])
    tensor = is_tensor(image)
    array = to_numpy(image)
    if not tensor and array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] in (1, 3, 4):
        Image = _image.pillow()
        pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        out = np.asarray(pil.resize((width, height), _PIL_FILTERS[interpolation]))
        return out[:, :, None] if out.ndim == 2 else out
    if tensor:  # [..., C, H, W] -> [N, H, W, C]
        lead = array.shape[:-3]
        hwc = np.moveaxis(array.reshape((-1,) + array.shape[-3:]), 1, -1)
    else:
        hwc = array if array.ndim == 3 else array[:, :, None]
    out = to_numpy(
        _image.resize(
            hwc, [height, width], method=_ARRAY_METHODS[interpolation], antialias=antialias
        )
    )
    if array.dtype == np.uint8:
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    elif out.dtype != array.dtype:
        out = out.astype(array.dtype)
    if tensor:
        return to_tensor(
            np.ascontiguousarray(np.moveaxis(out, -1, 1)).reshape(
                lead + (array.shape[-3], height, width)
            )
        )
    return out if array.ndim == 3 else out[:, :, 0]


def _hflip(image):
    if _is_pil(image):
        return image.transpose(0)  # Image.FLIP_LEFT_RIGHT
    array = to_numpy(image)
    axis = array.ndim - 1 if is_tensor(image) else 1
    out = np.ascontiguousarray(np.flip(array, axis=axis))
    return to_tensor(out) if is_tensor(image) else out


def _vflip(image):
    if _is_pil(image):
        return image.transpose(1)  # Image.FLIP_TOP_BOTTOM
    array = to_numpy(image)
    axis = array.ndim - 2 if is_tensor(image) else 0
    out = np.ascontiguousarray(np.flip(array, axis=axis))
    return to_tensor(out) if is_tensor(image) else out


class Compose:
    """Apply transforms one after another."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t}" for t in self.transforms)
        return f"Compose({inner}\n)"


class Lambda:
    """Wrap a function as a transform."""

    def __init__(self, lambd: Callable):
        if not callable(lambd):
            raise TypeError(f"Lambda: argument should be callable, got {type(lambd).__name__}")
        self.lambd = lambd

    def __call__(self, image):
        return self.lambd(image)

    def __repr__(self) -> str:
        return "Lambda()"


class Resize:
    """Resize to `size`: an int matches the smaller edge (keeping the aspect ratio, the longer
    edge `int(size * long / short)`, capped by `max_size`); (h, w) resizes to exactly that."""

    def __init__(
        self,
        size,
        interpolation: str = InterpolationMode.BILINEAR,
        max_size: int | None = None,
        antialias: bool | None = True,
    ):
        if isinstance(size, Sequence) and len(size) not in (1, 2):
            raise ValueError(
                f"Resize: size should be an int or a sequence of 1 or 2 ints, got {size}"
            )
        self.size = size
        self.interpolation = getattr(interpolation, "value", interpolation)
        self.max_size = max_size
        self.antialias = True if antialias is None else antialias

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        size = self.size
        if isinstance(size, Sequence) and len(size) == 2:
            return int(size[0]), int(size[1])
        requested = int(size[0] if isinstance(size, Sequence) else size)
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = requested, int(requested * long / short)
        if self.max_size is not None:
            if self.max_size <= requested:
                raise ValueError(
                    f"Resize: max_size = {self.max_size} must be strictly greater "
                    f"than the requested size {requested}"
                )
            if new_long > self.max_size:
                new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def __call__(self, image):
        height, width = _size(image)
        new_height, new_width = self.output_size(height, width)
        if (new_height, new_width) == (height, width):
            return image
        return _resize(image, new_height, new_width, self.interpolation, self.antialias)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation})"


class CenterCrop:
    """Crop the centre (top = round((H - h) / 2)); zero-pads an image smaller than `size`."""

    def __init__(self, size):
        self.size = _pair(size, "CenterCrop")

    def __call__(self, image):
        height, width = _size(image)
        crop_h, crop_w = self.size
        if _is_pil(image) and (crop_h > height or crop_w > width):
            from PIL import ImageOps

            pad_w, pad_h = max(0, crop_w - width), max(0, crop_h - height)
            image = ImageOps.expand(
                image, (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2), fill=0
            )
            height, width = _size(image)
        top = round((height - crop_h) / 2.0)
        left = round((width - crop_w) / 2.0)
        return _crop(image, top, left, crop_h, crop_w)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


def _pad(image, padding, fill=0, padding_mode: str = "constant"):
    if isinstance(padding, numbers.Number):
        left = top = right = bottom = int(padding)
    elif len(padding) == 2:
        left = right = int(padding[0])
        top = bottom = int(padding[1])
    else:
        left, top, right, bottom = (int(p) for p in padding)
    mode = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}[
        padding_mode
    ]
    pil = _is_pil(image)
    array = np.asarray(image) if pil else to_numpy(image)
    if is_tensor(image):
        widths = [(0, 0)] * (array.ndim - 2) + [(top, bottom), (left, right)]
    else:
        widths = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    kwargs = {"constant_values": fill} if mode == "constant" else {}
    out = np.pad(array, widths, mode=mode, **kwargs)
    if pil:
        return _image.pillow().fromarray(out, image.mode)
    return to_tensor(out) if is_tensor(image) else out


class RandomCrop:
    """Crop at a random place; optional padding first (torchvision's arguments)."""

    def __init__(
        self,
        size,
        padding=None,
        pad_if_needed: bool = False,
        fill=0,
        padding_mode: str = "constant",
    ):
        self.size = _pair(size, "RandomCrop")
        self.padding = padding
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.padding_mode = padding_mode

    @staticmethod
    def get_params(image, output_size) -> tuple[int, int, int, int]:
        height, width = _size(image)
        crop_h, crop_w = output_size
        if height < crop_h or width < crop_w:
            raise ValueError(
                f"RandomCrop: required crop size {(crop_h, crop_w)} is larger than "
                f"input image size {(height, width)}"
            )
        if (height, width) == (crop_h, crop_w):
            return 0, 0, height, width
        rng = _rng()
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        return top, left, crop_h, crop_w

    def __call__(self, image):
        if self.padding is not None:
            image = _pad(image, self.padding, self.fill, self.padding_mode)
        height, width = _size(image)
        if self.pad_if_needed and width < self.size[1]:
            image = _pad(image, [self.size[1] - width, 0], self.fill, self.padding_mode)
        if self.pad_if_needed and height < self.size[0]:
            image = _pad(image, [0, self.size[0] - height], self.fill, self.padding_mode)
        return _crop(image, *self.get_params(image, self.size))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomResizedCrop:
    """A random crop of random area (`scale`) and aspect ratio (`ratio`), resized to `size`
    (torchvision's 10-attempt sampler with its centre-crop fallback)."""

    def __init__(
        self,
        size,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = InterpolationMode.BILINEAR,
        antialias: bool | None = True,
    ):
        self.size = _pair(size, "RandomResizedCrop")
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError("RandomResizedCrop: scale and ratio should be of kind (min, max)")
        self.scale = scale
        self.ratio = ratio
        self.interpolation = getattr(interpolation, "value", interpolation)
        self.antialias = True if antialias is None else antialias

    @staticmethod
    def get_params(image, scale, ratio) -> tuple[int, int, int, int]:
        height, width = _size(image)
        area = height * width
        rng = _rng()
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(scale[0], scale[1])
            aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            w = round(math.sqrt(target_area * aspect_ratio))
            h = round(math.sqrt(target_area / aspect_ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(ratio):
            w = width
            h = round(w / min(ratio))
        elif in_ratio > max(ratio):
            h = height
            w = round(h * max(ratio))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image):
        top, left, h, w = self.get_params(image, self.scale, self.ratio)
        cropped = _crop(image, top, left, h, w)
        return _resize(cropped, self.size[0], self.size[1], self.interpolation, self.antialias)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Flip left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image):
        return _hflip(image) if _rng().random() < self.p else image

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip:
    """Flip top-bottom with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image):
        return _vflip(image) if _rng().random() < self.p else image


# --- colour (torchvision's formulas; Pillow's ImageEnhance on Pillow images) ---------------------


def _float_view(image):
    """(float32 array in [0, bound], bound, restore-fn) for arrays and tensors (channels last
    for arrays, first for tensors)."""
    array = to_numpy(image)
    bound = 255.0 if array.dtype == np.uint8 else 1.0
    channel_axis = -3 if is_tensor(image) else -1

    def restore(values):
        values = np.clip(values, 0, bound)
        out = (
            values.astype(array.dtype)
            if array.dtype == np.uint8
            else values.astype(array.dtype, copy=False)
        )
        return to_tensor(out) if is_tensor(image) else out

    return array.astype(np.float32), bound, channel_axis, restore


def _grayscale(values: np.ndarray, channel_axis: int) -> np.ndarray:
    r, g, b = (np.take(values, i, axis=channel_axis) for i in range(3))
    return np.expand_dims(0.2989 * r + 0.587 * g + 0.114 * b, channel_axis)


def adjust_brightness(image, factor: float):
    if _is_pil(image):
        from PIL import ImageEnhance

        return ImageEnhance.Brightness(image).enhance(factor)
    values, _, _, restore = _float_view(image)
    return restore(values * factor)


def adjust_contrast(image, factor: float):
    if _is_pil(image):
        from PIL import ImageEnhance

        return ImageEnhance.Contrast(image).enhance(factor)
    values, _, axis, restore = _float_view(image)
    gray = _grayscale(values, axis) if values.shape[axis] == 3 else values
    if to_numpy(image).dtype == np.uint8:
        gray = np.floor(gray)  # torchvision converts the grey image back to uint8 first
    mean = gray.mean(axis=(-3, -2, -1), keepdims=True)
    return restore(factor * values + (1.0 - factor) * mean)


def adjust_saturation(image, factor: float):
    if _is_pil(image):
        from PIL import ImageEnhance

        return ImageEnhance.Color(image).enhance(factor)
    values, _, axis, restore = _float_view(image)
    if values.shape[axis] == 1:
        return image
    gray = _grayscale(values, axis)
    if to_numpy(image).dtype == np.uint8:
        gray = np.floor(gray)
    return restore(factor * values + (1.0 - factor) * gray)


def adjust_hue(image, hue_factor: float):
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"adjust_hue: hue_factor ({hue_factor}) is not in [-0.5, 0.5]")
    if _is_pil(image):
        Image = _image.pillow()
        if image.mode in ("L", "1", "I", "F"):
            return image
        h, s, v = image.convert("HSV").split()
        shifted = np.asarray(h, dtype=np.uint8).copy()
        shifted += np.uint8(int(hue_factor * 255) % 256)
        return Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert(image.mode)
    values, bound, axis, restore = _float_view(image)
    if values.shape[axis] == 1:
        return image
    rgb = np.moveaxis(values / bound, axis, -1)
    hsv = _rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + hue_factor) % 1.0
    out = np.moveaxis(_hsv_to_rgb(hsv), -1, axis) * bound
    if to_numpy(image).dtype == np.uint8:
        out = np.round(out)
    return restore(out)


def _rgb_to_hsv(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc, minc = rgb.max(-1), rgb.min(-1)
    v = maxc
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], -1)


def _hsv_to_rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1)


class ColorJitter:
    """Randomly change brightness, contrast, saturation and hue, in a random order.

    A number b for brightness/contrast/saturation means a factor drawn from
    [max(0, 1 - b), 1 + b]; a pair is the range itself. Hue takes h in [0, 0.5] (range
    [-h, h]) or a pair within [-0.5, 0.5].
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        self.brightness = self._range(brightness, "brightness")
        self.contrast = self._range(contrast, "contrast")
        self.saturation = self._range(saturation, "saturation")
        self.hue = self._range(hue, "hue", center=0, bound=(-0.5, 0.5), clip_first=False)

    @staticmethod
    def _range(value, name, center=1.0, bound=(0, float("inf")), clip_first=True):
        if isinstance(value, numbers.Number):
            if value < 0:
                raise ValueError(
                    f"ColorJitter: if {name} is a single number, it must be "
                    f"non negative, got {value}"
                )
            value = [center - float(value), center + float(value)]
            if clip_first:
                value[0] = max(value[0], 0.0)
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            value = [float(value[0]), float(value[1])]
        else:
            raise TypeError(
                f"ColorJitter: {name} should be a single number or a list/tuple "
                f"with length 2, got {value!r}"
            )
        if not bound[0] <= value[0] <= value[1] <= bound[1]:
            raise ValueError(f"ColorJitter: {name} values should be between {bound}, got {value}")
        return None if value[0] == value[1] == center else tuple(value)

    @staticmethod
    def get_params(brightness, contrast, saturation, hue):
        rng = _rng()
        order = rng.permutation(4).tolist()
        factors = [
            None if r is None else float(rng.uniform(r[0], r[1]))
            for r in (brightness, contrast, saturation, hue)
        ]
        return (order, *factors)

    def __call__(self, image):
        order, b, c, s, h = self.get_params(
            self.brightness, self.contrast, self.saturation, self.hue
        )
        for index in order:
            if index == 0 and b is not None:
                image = adjust_brightness(image, b)
            elif index == 1 and c is not None:
                image = adjust_contrast(image, c)
            elif index == 2 and s is not None:
                image = adjust_saturation(image, s)
            elif index == 3 and h is not None:
                image = adjust_hue(image, h)
        return image

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue})"
        )


class ToTensor:
    """Pillow image or uint8 [H, W, C] array -> float32 Tensor [C, H, W] scaled to [0, 1].
    Other dtypes are transposed but not scaled (torchvision's rule)."""

    def __call__(self, picture):
        if _is_pil(picture):
            if picture.mode == "1":
                array = np.asarray(picture, dtype=np.uint8) * 255
            else:
                array = np.asarray(picture)
        elif isinstance(picture, np.ndarray):
            array = picture
        else:
            raise TypeError(
                f"ToTensor: picture should be a Pillow image or a NumPy array, "
                f"got {type(picture).__name__}"
            )
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(
                f"ToTensor: picture should be 2 or 3 dimensional, got {array.ndim} dimensions"
            )
        chw = array.transpose(2, 0, 1)
        if array.dtype == np.uint8:
            out = np.empty(chw.shape, np.float32)
            np.divide(chw, np.float32(255.0), out=out)  # torchvision divides (not * 1/255)
            return to_tensor(out)
        return to_tensor(np.ascontiguousarray(chw))

    def __repr__(self) -> str:
        return "ToTensor()"


class PILToTensor:
    """Pillow image -> uint8 Tensor [C, H, W] (no scaling)."""

    def __call__(self, picture):
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        return to_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))


class Normalize:
    """(x - mean) / std per channel of a float Tensor [..., C, H, W]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        self.mean = list(mean)
        self.std = list(std)
        self.inplace = inplace
        if any(s == 0 for s in self.std):
            raise ValueError(
                f"Normalize: std evaluated to zero after conversion to float, "
                f"leading to division by zero (std={self.std})"
            )

    def __call__(self, tensor):
        if not (is_tensor(tensor) or isinstance(tensor, np.ndarray)):
            raise TypeError(f"Normalize: input should be a Tensor, got {type(tensor).__name__}")
        array = to_numpy(tensor)
        if array.dtype.kind != "f":
            raise TypeError(f"Normalize: input tensor should be a float tensor, got {array.dtype}")
        if array.ndim < 3:
            raise ValueError(
                f"Normalize: expected a tensor image of size (..., C, H, W), got "
                f"shape {array.shape}"
            )
        mean = np.asarray(self.mean, dtype=array.dtype).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=array.dtype).reshape(-1, 1, 1)
        if self.inplace:
            array -= mean
            array /= std
            return tensor
        out = (array - mean) / std
        return to_tensor(out) if is_tensor(tensor) else out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"
