"""L6: images. `ember.vision.image` (exposed as `ember.image`: decode, encode, resize),
`ember.vision.transforms` (torchvision's transforms) and `ember.vision.datasets`
(ImageFolder, MNIST), `ember.vision.utils` (make_grid, save_image). Pillow is imported only
when an image is decoded or encoded."""

from ember.vision import datasets as datasets
from ember.vision import image as image
from ember.vision import transforms as transforms
from ember.vision import utils as utils

__all__ = ["datasets", "image", "transforms", "utils"]
