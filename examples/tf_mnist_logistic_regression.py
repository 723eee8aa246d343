"""TF1-style logistic regression on MNIST, run with `import ember.tf as tf`.

Placeholders for images and one-hot labels, softmax_cross_entropy_with_logits,
GradientDescentOptimizer, and an accuracy op from equal/cast/reduce_mean (the classic TF1
tutorial). Reaches about 92% test accuracy.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))
from _mnist import load_mnist as _load_uint8  # noqa: E402

import ember.tf as tf  # noqa: E402


def load_mnist(split):
    """(images float32 [n, 784] in [0, 1], labels int64 [n])."""
    images, labels = _load_uint8(split)
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels


def main(epochs: int = 5, batch_size: int = 100, learning_rate: float = 0.5, seed: int = 0):
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    onehot = np.eye(10, dtype=np.float32)

    x = tf.placeholder(tf.float32, [None, 784])
    y_ = tf.placeholder(tf.float32, [None, 10])
    W = tf.Variable(tf.zeros([784, 10]))
    b = tf.Variable(tf.zeros([10]))
    y = tf.matmul(x, W) + b

    cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=y))
    train_step = tf.train.GradientDescentOptimizer(learning_rate).minimize(cross_entropy)
    correct_prediction = tf.equal(tf.argmax(y, 1), tf.argmax(y_, 1))
    accuracy = tf.reduce_mean(tf.cast(correct_prediction, tf.float32))

    rng = np.random.default_rng(seed)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for epoch in range(epochs):
            order = rng.permutation(len(train_x))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                sess.run(train_step, {x: train_x[idx], y_: onehot[train_y[idx]]})
            acc = sess.run(accuracy, {x: test_x, y_: onehot[test_y]})
            print(f"epoch {epoch + 1}: test accuracy {acc:.4f}")
    return float(acc)


if __name__ == "__main__":
    main()
