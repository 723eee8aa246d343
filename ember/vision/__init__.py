"""L6: images. `ember.vision.image` (exposed as `ember.image`: decode, encode, resize),
`ember.vision.transforms` (torchvision's transforms) and `ember.vision.datasets`
(ImageFolder, MNIST). Pillow is imported only when an image is decoded or encoded."""

from ember.vision import datasets as datasets
from ember.vision import image as image
from ember.vision import transforms as transforms

__all__ = ["datasets", "image", "transforms"]
