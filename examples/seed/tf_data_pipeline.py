"""SEED.md 4.1, ported: a tf.data input pipeline for images, on ember.

Only the import, the file names and the prints are new; the pipeline is the seed's.
Run: python examples/seed/tf_data_pipeline.py
"""

import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import ember.tf as tf  # noqa: E402

from _photos import build_photo_folder

root = build_photo_folder(tempfile.mkdtemp(prefix="ember-seed-photos-"), per_class=16)

# list of file names
filenames = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))

# create a dataset from file names
dataset = tf.data.Dataset.from_tensor_slices(filenames)


# load and preprocess images
def load_and_preprocess_image(filename):
    image = tf.io.read_file(filename)
    image = tf.image.decode_jpeg(image, channels=3)
    image = tf.image.resize(image, [224, 224])
    image /= 255.0  # normalize to [0,1] range
    return image


# apply the function to each item in the dataset
dataset = dataset.map(load_and_preprocess_image)

# batch and prefetch
dataset = dataset.batch(32).prefetch(1)

start = time.perf_counter()
count = 0
for batch in dataset:
    count += batch.shape[0]
    print(
        f"batch {tuple(batch.shape)} {batch.dtype} range [{float(batch.min()):.3f}, "
        f"{float(batch.max()):.3f}]"
    )
elapsed = time.perf_counter() - start
print(
    f"{count} images from {len(filenames)} files in {elapsed:.2f} s "
    f"({count / elapsed:.0f} images/s, sequential map as in the seed)"
)

# The same pipeline with tf.data's performance knobs: parallel map and AUTOTUNE prefetch.
fast = (
    tf.data.Dataset.from_tensor_slices(filenames)
    .map(load_and_preprocess_image, num_parallel_calls=tf.data.AUTOTUNE)
    .batch(32)
    .prefetch(tf.data.AUTOTUNE)
)
start = time.perf_counter()
count = sum(batch.shape[0] for batch in fast)
elapsed = time.perf_counter() - start
print(f"with num_parallel_calls=AUTOTUNE: {count / elapsed:.0f} images/s")
