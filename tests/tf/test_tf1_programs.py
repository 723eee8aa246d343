"""What TF1 programs use around the graph: static shapes (`t.shape`, `set_shape`, `tf.shape`),
`tf.gradients` with respect to intermediate tensors, tf.summary ops written by FileWriter,
`tf.app.flags`, and `tf.train.Saver`; checked against TensorFlow (tensorflow-cpu,
tf.compat.v1) and absl.flags where they are installed."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember.tf as tf
from ember.graph import tf1_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def fresh_graph():
    tf.reset_default_graph()
    yield


@pytest.fixture(scope="module")
def tf1():
    tensorflow = pytest.importorskip("tensorflow")
    return tensorflow.compat.v1


# --- static shapes ---------------------------------------------------------------------------
# (name, input shapes (None: unknown dimension; "?" an unknown-rank input), build(lib, *inputs))
SHAPES = [
    ("matmul", [(None, 784), (784, 10)], lambda t, x, w: t.matmul(x, w)),
    ("matmul_t", [(None, 5), (7, 5)], lambda t, x, w: t.matmul(x, w, transpose_b=True)),
    ("broadcast_add", [(None, 1, 4), (3, 1)], lambda t, x, y: x + y),
    ("reshape", [(None, 784)], lambda t, x: t.reshape(x, [-1, 28, 28, 1])),
    ("reshape_known", [(6, 4)], lambda t, x: t.reshape(x, [3, -1])),
    ("reduce_sum_axis", [(None, 5, 3)], lambda t, x: t.reduce_sum(x, 1)),
    ("reduce_mean_all", [(None, 5)], lambda t, x: t.reduce_mean(x)),
    ("reduce_max_keep", [(2, None)], lambda t, x: t.reduce_max(x, 1, keepdims=True)),
    ("argmax", [(None, 10)], lambda t, x: t.argmax(x, 1)),
    ("equal_cast", [(None, 10)], lambda t, x: t.cast(t.equal(x, x), t.float32)),
    (
        "conv_same",
        [(None, 28, 28, 1), (5, 5, 1, 32)],
        lambda t, x, w: t.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME"),
    ),
    (
        "conv_valid_stride",
        [(None, 9, 8, 3), (3, 3, 3, 4)],
        lambda t, x, w: t.nn.conv2d(x, w, strides=[1, 2, 2, 1], padding="VALID"),
    ),
    (
        "max_pool",
        [(None, 28, 28, 32)],
        lambda t, x: t.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME"),
    ),
    ("softmax_ce", [(None, 10), (None, 10)], lambda t, y, z: t.nn.softmax(z) * y),
    ("dropout_unknown_keep", [(None, 1024), "?"], lambda t, x, k: t.nn.dropout(x, k)),
    ("slice", [(None, 6)], lambda t, x: x[:, 1:4]),
    ("unknown_rank", ["?"], lambda t, x: x * 2.0),
]


def _placeholders(lib, shapes):
    return [
        lib.placeholder(lib.float32, None if s == "?" else list(s), name=f"in{i}")
        for i, s in enumerate(shapes)
    ]


def _dims(shape):
    return None if shape.ndims is None else shape.as_list()


@pytest.mark.parametrize("name, shapes, build", SHAPES, ids=[r[0] for r in SHAPES])
def test_static_shapes_match_tensorflow(tf1, name, shapes, build):
    graph = tf1.Graph()
    with graph.as_default():
        want = build(tf1, *_placeholders(tf1, shapes))
    have = build(tf, *_placeholders(tf, shapes))
    assert _dims(have.shape) == _dims(want.shape), name
    assert have.get_shape() == have.shape
    assert have.dtype.name == want.dtype.name


def test_set_shape_merges_and_refuses(tf1):
    x = tf.placeholder(tf.float32, [None, None])
    y = x * 2.0
    y.set_shape([None, 3])
    assert y.shape.as_list() == [None, 3]
    y.set_shape([5, None])
    assert y.shape.as_list() == [5, 3] and y.shape.is_fully_defined()
    with pytest.raises(ValueError, match=r"Shapes \(5, 3\) and \(5, 4\) are not compatible"):
        y.set_shape([5, 4])
    u = tf.placeholder(tf.float32)
    assert u.shape.ndims is None and repr(u.shape) == "TensorShape(None)"
    with pytest.raises(ValueError, match="unknown TensorShape"):
        u.shape.as_list()
    u.set_shape([2, 2])
    assert (u + 1.0).shape.as_list() == [2, 2]


def test_dynamic_shape_rank_size(tf1):
    x = tf.placeholder(tf.float32, [None, 3])
    shape, rank, size = tf.shape(x), tf.rank(x), tf.size(x)
    assert shape.shape.as_list() == [2] and shape.dtype is tf.int32
    with tf.Session() as sess:
        got = sess.run([shape, rank, size], {x: np.zeros((7, 3), np.float32)})
    assert got[0].tolist() == [7, 3] and int(got[1]) == 2 and int(got[2]) == 21
    with tf.Session() as sess:  # a reshape from the dynamic shape
        flat = tf.reshape(x, [-1])
        assert sess.run(tf.shape(flat), {x: np.zeros((4, 3), np.float32)}).tolist() == [12]


# --- gradients with respect to intermediate tensors ---------------------------------------------
def _mlp(lib, x_value, w_value):
    x = lib.placeholder(lib.float32, [None, 4])
    w = lib.Variable(w_value)
    pre = lib.matmul(x, w)
    h = lib.tanh(pre)
    loss = lib.reduce_sum(h * h) + lib.reduce_sum(pre)
    weights = lib.constant(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    grads = lib.gradients(loss, [h, pre, w, x])
    weighted = lib.gradients([h], [pre], grad_ys=[weights])
    return x, grads + weighted


def test_gradients_of_intermediate_tensors_match_tensorflow(tf1):
    rng = np.random.default_rng(0)
    x_value = rng.standard_normal((2, 4)).astype(np.float32)
    w_value = rng.standard_normal((4, 3)).astype(np.float32)
    graph = tf1.Graph()
    with graph.as_default():
        x, fetches = _mlp(tf1, x_value, w_value)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            want = sess.run(fetches, {x: x_value})
    x, fetches = _mlp(tf, x_value, w_value)
    assert [f.shape.as_list() for f in fetches] == [[None, 3], [None, 3], [4, 3], [None, 4]] + [
        [None, 3]
    ]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        have = sess.run(fetches, {x: x_value})
    for a, b in zip(have, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_gradients_of_unconnected_tensors_are_none(tf1):
    x = tf.placeholder(tf.float32, [3])
    other = tf.placeholder(tf.float32, [3])
    y = tf.reduce_sum(x * x)
    assert tf.gradients(y, [other]) == [None]
    gx, gother = tf.gradients(y, [x, other])
    assert gother is None
    with tf.Session() as sess:
        np.testing.assert_allclose(sess.run(gx, {x: [1.0, 2.0, 3.0]}), [2.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="grad_ys has 2 tensors for 1 ys"):
        tf.gradients(y, [x], grad_ys=[x, x])


# --- tf.summary ---------------------------------------------------------------------------------
def _summaries(lib, values):
    x = lib.placeholder(lib.float32, [None])
    with lib.name_scope("train"):
        mean = lib.reduce_mean(x)
        lib.summary.scalar("mean", mean)
        lib.summary.histogram("values", x)
    lib.summary.scalar("mean", mean * 2.0)  # TF's names: 'train/Mean' took 'train/mean'
    merged = lib.summary.merge_all()
    return x, merged


def _parsed(tf1, blob):
    summary = tf1.Summary.FromString(blob)
    out = {}
    for v in summary.value:
        h = v.histo
        buckets = [(lim, c) for lim, c in zip(h.bucket_limit, h.bucket) if c > 0]
        out[v.tag] = (
            v.simple_value if v.WhichOneof("value") == "simple_value" else None,
            (h.min, h.max, h.num, h.sum, h.sum_squares, buckets) if v.HasField("histo") else None,
        )
    return out


def test_summaries_match_tensorflow_and_tensorboard_reads_them(tf1, tmp_path):
    values = np.array([0.0, 0.5, 1.5, -2.0, 3.25, 100.0, 1e-3], np.float32)
    graph = tf1.Graph()
    with graph.as_default():
        x, merged = _summaries(tf1, values)
        with tf1.Session(graph=graph) as sess:
            want = _parsed(tf1, sess.run(merged, {x: values}))
    x, merged = _summaries(tf, values)
    writer = tf.summary.FileWriter(str(tmp_path), tf.get_default_graph())
    with tf.Session() as sess:
        blob = sess.run(merged, {x: values})
        for step in range(3):
            writer.add_summary(sess.run(merged, {x: values + step}), step)
    writer.close()
    have = _parsed(tf1, blob)
    assert set(have) == set(want) == {"train/mean_1", "train/values", "mean"}
    for tag in want:
        (s_have, h_have), (s_want, h_want) = have[tag], want[tag]
        if s_want is not None:
            np.testing.assert_allclose(s_have, s_want, rtol=1e-6)
        if h_want is not None:
            np.testing.assert_allclose(h_have[:5], h_want[:5], rtol=1e-6)
            lim_have, n_have = zip(*h_have[5])
            lim_want, n_want = zip(*h_want[5])
            np.testing.assert_allclose(lim_have, lim_want, rtol=1e-9)
            assert n_have == n_want
    # TensorBoard's reader (TensorFlow's summary_iterator) reads the event file back
    (path,) = glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))
    scalars = [
        (e.step, v.tag, v.simple_value)
        for e in tf1.train.summary_iterator(path)
        for v in e.summary.value
        if v.WhichOneof("value") == "simple_value"
    ]
    means = [(step, value) for step, tag, value in scalars if tag == "train/mean_1"]
    assert [s for s, _ in means] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in means], values.mean() + np.arange(3), rtol=1e-6)


def test_summary_errors():
    x = tf.placeholder(tf.float32, [None])
    s = tf.summary.scalar("x", x)
    with tf.Session() as sess:
        with pytest.raises(tf.errors.InvalidArgumentError, match="must be a scalar, got shape"):
            sess.run(s, {x: np.zeros(3, np.float32)})
    with pytest.raises(TypeError, match="expected summary nodes"):
        tf.summary.merge([x])
    tf.reset_default_graph()
    assert tf.summary.merge_all() is None


# --- tf.app.flags -------------------------------------------------------------------------------
def _define(module, values):
    module.DEFINE_string("data_dir", "/tmp/data", "where", flag_values=values)
    module.DEFINE_integer("steps", 100, "how many", flag_values=values)
    module.DEFINE_float("lr", 0.5, "rate", flag_values=values)
    module.DEFINE_boolean("fake", False, "fake data", flag_values=values)
    module.DEFINE_bool("verbose", True, "talk", flag_values=values)
    module.DEFINE_list("layers", "a,b", "names", flag_values=values)
    module.DEFINE_enum("mode", "train", ["train", "eval"], "what", flag_values=values)


ARGVS = [
    ["prog"],
    ["prog", "--steps=7", "--lr", "0.25", "--fake", "--noverbose", "rest1"],
    ["prog", "--data_dir", "/x y", "--fake=false", "--verbose=true", "--layers=c,d,e"],
    ["prog", "-steps", "3", "--mode=eval", "--", "--steps=9", "tail"],
    ["prog", "positional", "--steps=0x10"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=[" ".join(a[1:]) or "none" for a in ARGVS])
def test_flags_parse_as_absl(argv):
    absl_flags = pytest.importorskip("absl.flags")
    want_values = absl_flags.FlagValues()
    _define(absl_flags, want_values)
    want_rest = want_values(argv)
    have_values = tf1_flags.FlagValues()
    _define(tf1_flags, have_values)
    assert have_values(argv) == want_rest
    assert have_values.flag_values_dict() == {
        k: v for k, v in want_values.flag_values_dict().items() if k in have_values
    }


def test_flag_errors():
    values = tf1_flags.FlagValues()
    _define(tf1_flags, values)
    with pytest.raises(tf1_flags.IllegalFlagValueError, match=r"--steps=ten.*integer"):
        values(["p", "--steps=ten"])
    with pytest.raises(tf1_flags.IllegalFlagValueError, match=r"--mode=test.*one of"):
        values(["p", "--mode=test"])
    with pytest.raises(tf1_flags.UnrecognizedFlagError, match="Unknown command line flag 'nope'"):
        values(["p", "--nope=1"])
    with pytest.raises(tf1_flags.DuplicateFlagError, match="'steps' is defined twice"):
        tf1_flags.DEFINE_integer("steps", 1, "again", flag_values=values)
    with pytest.raises(tf1_flags.IllegalFlagValueError, match="a value is expected"):
        values(["p", "--steps"])
    with pytest.raises(AttributeError, match="no flag named 'missing'"):
        values.missing  # noqa: B018


def test_app_run_parses_flags(tmp_path):
    program = tmp_path / "flags_program.py"
    program.write_text(
        textwrap.dedent(
            """
            import ember.tf as tf

            flags = tf.app.flags
            flags.DEFINE_integer("steps", 10, "training steps")
            flags.DEFINE_string("name", "run", "a name")
            FLAGS = flags.FLAGS


            def main(argv):
                print("steps", FLAGS.steps, "name", FLAGS.name, "argv", argv[1:])


            if __name__ == "__main__":
                print("early", tf.flags.FLAGS.steps)  # read before run: argv parsed lazily
                tf.app.run()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(program), "--steps=3", "extra", "--name", "x"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["early 3", "steps 3 name x argv ['extra']"]


# --- tf.train.Saver -----------------------------------------------------------------------------
def _model():
    with tf.variable_scope("layer"):
        w = tf.get_variable("W", [3, 2], initializer=tf.random_normal_initializer())
        b = tf.get_variable("b", [2], initializer=tf.zeros_initializer())
    step = tf.Variable(0, name="global_step", trainable=False)
    return w, b, step


def test_saver_round_trip_latest_and_max_to_keep(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver(max_to_keep=2)
    prefix = str(tmp_path / "model.ckpt")
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        saved = []
        for i in range(3):
            sess.run(b.assign(np.full(2, float(i), np.float32)))
            saved.append(saver.save(sess, prefix, global_step=i))
        w_value = sess.run(w)
    assert saved == [f"{prefix}-{i}" for i in range(3)]
    assert tf.train.latest_checkpoint(str(tmp_path)) == saved[-1]
    assert not tf.train.checkpoint_exists(saved[0])  # max_to_keep=2 removed the oldest
    assert saver.last_checkpoints == [os.path.abspath(p) for p in saved[1:]]
    state = (tmp_path / "checkpoint").read_text()
    assert state.splitlines() == [
        'model_checkpoint_path: "model.ckpt-2"',
        'all_model_checkpoint_paths: "model.ckpt-1"',
        'all_model_checkpoint_paths: "model.ckpt-2"',
    ]
    with tf.Session() as sess:  # a fresh session: restore initialises the variables
        saver.restore(sess, saved[1])
        np.testing.assert_array_equal(sess.run(b), [1.0, 1.0])
        np.testing.assert_array_equal(sess.run(w), w_value)
        saver.restore(sess, tf.train.latest_checkpoint(str(tmp_path)))
        np.testing.assert_array_equal(sess.run(b), [2.0, 2.0])


def test_saver_errors(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver({"layer/W": w, "layer/b": b})
    with tf.Session() as sess:
        with pytest.raises(tf.errors.FailedPreconditionError, match="uninitialized value"):
            saver.save(sess, str(tmp_path / "m"))
        sess.run(tf.global_variables_initializer())
        path = saver.save(sess, str(tmp_path / "m"))
        with pytest.raises(tf.errors.NotFoundError, match="does not exist"):
            saver.restore(sess, str(tmp_path / "nothing"))
    tf.reset_default_graph()
    with tf.variable_scope("layer"):
        tf.get_variable("W", [3, 5])  # another shape
        tf.get_variable("c", [2])  # a name the checkpoint lacks
    with tf.Session() as sess:
        with pytest.raises(tf.errors.NotFoundError, match="key layer/c not found in checkpoint"):
            tf.train.Saver().restore(sess, path)
        wide = tf.train.Saver([v for v in tf.global_variables() if v.op_name == "layer/W"])
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"layer/W has shape \[3, 5\].*but \[3, 2\]"
        ):
            wide.restore(sess, path)
    with pytest.raises(ValueError, match="parent directory"):
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(tmp_path / "no" / "such" / "m"))
