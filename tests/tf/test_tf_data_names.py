"""ember.tf's data, io and image names map onto ember's pipeline, io and vision layers."""

import numpy as np

import ember.tf as tf


def test_tf_data_is_the_chained_pipeline():
    ds = (
        tf.data.Dataset.from_tensor_slices(np.arange(6))
        .map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(4)
        .prefetch(1)
    )
    batches = [b.tolist() for b in ds.as_numpy_iterator()]
    assert batches == [[0, 2, 4, 6], [8, 10]]
    assert tf.data.experimental.AUTOTUNE == tf.data.AUTOTUNE
    assert tf.data.Dataset.range(3).cardinality() == 3


def test_tf_io_and_image(tmp_path):
    image = (np.arange(4 * 6 * 3) % 255).astype(np.uint8).reshape(4, 6, 3)
    path = tmp_path / "a.png"
    tf.io.write_file(str(path), tf.image.encode_png(image))
    decoded = tf.image.decode_png(tf.io.read_file(str(path)), channels=3)
    np.testing.assert_array_equal(np.asarray(decoded), image)
    assert tuple(tf.image.resize(decoded, [8, 12]).shape) == (8, 12, 3)
