"""`import ember.tf as tf`: the TensorFlow-flavoured face of ember (names only).

TF1 graphs (`placeholder`, `Variable`, `Session`) map onto `ember.graph.tf1`, which replays
them through ember's compiler; `tf.train.*Optimizer` are ember.optim's optimizers under
TensorFlow's names (one update rule per algorithm for both faces); `tf.function` is
`ember.compile`; `tf.data` is ember's data pipeline (loaded on first use).

Example:
    >>> import ember.tf as tf
    >>> x = tf.placeholder(tf.float32)
    >>> y = tf.reduce_sum(x * 2.0)
    >>> with tf.Session() as sess:
    ...     float(sess.run(y, {x: [1.0, 2.0]}))
    6.0
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys

from ember.dtypes import (
    bool_ as bool,  # noqa: A001, F401  (tf.bool)
    float16 as float16,
    bfloat16 as bfloat16,
    float32 as float32,
    float64 as float64,
    int8 as int8,
    int16 as int16,
    int32 as int32,
    int64 as int64,
    uint8 as uint8,
)
from ember.graph import tf1 as _tf1
from ember.graph.compile import compile as function  # noqa: F401  (tf.function)
from ember.graph.tf1 import (
    Graph as Graph,
    Operation as Operation,
    Session as Session,
    Tensor as Tensor,
    TensorShape as TensorShape,
    Variable as Variable,
    abs as abs,  # noqa: A004
    add as add,
    argmax as argmax,
    cast as cast,
    constant as constant,
    divide as divide,
    equal as equal,
    errors as errors,
    exp as exp,
    get_default_graph as get_default_graph,
    global_variables as global_variables,
    global_variables_initializer as global_variables_initializer,
    GraphKeys as GraphKeys,
    add_to_collection as add_to_collection,
    get_collection as get_collection,
    gradients as gradients,
    group as group,
    log as log,
    matmul as matmul,
    maximum as maximum,
    minimum as minimum,
    multiply as multiply,
    negative as negative,
    ones as ones,
    placeholder as placeholder,
    random as random,
    random_normal as random_normal,
    random_uniform as random_uniform,
    rank as rank,
    reset_default_graph as reset_default_graph,
    reshape as reshape,
    shape as shape,
    sigmoid as sigmoid,
    size as size,
    sqrt as sqrt,
    square as square,
    subtract as subtract,
    tanh as tanh,
    trainable_variables as trainable_variables,
    truncated_normal as truncated_normal,
    variables_initializer as variables_initializer,
    zeros as zeros,
)
from ember.graph import tf1_flags as flags  # noqa: F401  (tf.flags)
from ember.io import tf1_saver as _saver
from ember.graph.tf1_nn import (
    AUTO_REUSE as AUTO_REUSE,
    InteractiveSession as InteractiveSession,
    app as app,
    constant_initializer as constant_initializer,
    disable_eager_execution as disable_eager_execution,
    disable_v2_behavior as disable_v2_behavior,
    get_variable as get_variable,
    get_variable_scope as get_variable_scope,
    glorot_normal_initializer as glorot_normal_initializer,
    glorot_uniform_initializer as glorot_uniform_initializer,
    initialize_all_variables as initialize_all_variables,
    layers as layers,
    name_scope as name_scope,
    nn as nn,
    ones_initializer as ones_initializer,
    random_normal_initializer as random_normal_initializer,
    random_uniform_initializer as random_uniform_initializer,
    reduce_logsumexp as reduce_logsumexp,
    reduce_max as reduce_max,
    reduce_mean as reduce_mean,
    reduce_min as reduce_min,
    reduce_prod as reduce_prod,
    reduce_sum as reduce_sum,
    truncated_normal_initializer as truncated_normal_initializer,
    variable_scope as variable_scope,
    zeros_initializer as zeros_initializer,
)

double = float64
half = float16
DType = type(float32)


# --- tf.train: TensorFlow's optimizer names over ember.optim ----------------------------------
class _OptimOptimizer(_tf1.Optimizer):
    """A TF1 optimizer that runs an ember.optim optimizer over the variables it minimizes."""

    def __init__(self, learning_rate, name):
        super().__init__(learning_rate, name)
        self.optimizers: dict = {}  # ids of the variables -> their ember.optim optimizer

    def _make(self, params):
        raise NotImplementedError

    def _apply(self, pairs):
        pairs = [(g, v) for g, v in pairs if g is not None]
        key = tuple(id(v) for _, v in pairs)
        optimizer = self.optimizers.get(key)
        if optimizer is None:
            optimizer = self.optimizers[key] = self._make([v.tensor for _, v in pairs])
        for g, v in pairs:
            v.tensor.grad = g
        try:
            optimizer.step()
        finally:
            for _, v in pairs:
                v.tensor.grad = None


class GradientDescentOptimizer(_OptimOptimizer):
    """var -= learning_rate * gradient (ember.optim.SGD)."""

    def __init__(self, learning_rate, use_locking=False, name="GradientDescent"):
        super().__init__(learning_rate, name)

    def _make(self, params):
        from ember.optim import SGD

        return SGD(params, lr=self.learning_rate)


class MomentumOptimizer(_OptimOptimizer):
    """accum = momentum * accum + g; var -= lr * accum (Nesterov: lr * (g + momentum * accum)):
    ember.optim.SGD with momentum, whose buffer starts as the first gradient, as accum does."""

    def __init__(
        self, learning_rate, momentum, use_locking=False, name="Momentum", use_nesterov=False
    ):
        super().__init__(learning_rate, name)
        self.momentum = momentum
        self.use_nesterov = use_nesterov

    def _make(self, params):
        from ember.optim import SGD

        return SGD(
            params, lr=self.learning_rate, momentum=self.momentum, nesterov=self.use_nesterov
        )


class AdamOptimizer(_OptimOptimizer):
    """ember.optim.Adam under TF1's name. TF1 adds epsilon to sqrt(v) before the bias
    correction of v (its "epsilon hat"), PyTorch and ember after: the two differ by
    epsilon * (1 - sqrt(1 - beta2^t)), far below float32 rounding for the default 1e-8."""

    def __init__(
        self,
        learning_rate=0.001,
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-8,
        use_locking=False,
        name="Adam",
    ):
        super().__init__(learning_rate, name)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def _make(self, params):
        from ember.optim import Adam

        return Adam(params, lr=self.learning_rate, betas=(self.beta1, self.beta2), eps=self.epsilon)


class train:  # noqa: N801  (tf.train namespace)
    Optimizer = _tf1.Optimizer
    GradientDescentOptimizer = GradientDescentOptimizer
    MomentumOptimizer = MomentumOptimizer
    AdamOptimizer = AdamOptimizer
    Saver = _saver.Saver
    latest_checkpoint = staticmethod(_saver.latest_checkpoint)
    checkpoint_exists = staticmethod(_saver.checkpoint_exists)


# tf.data, tf.io and tf.image come from ember's data, io and vision layers, loaded when first
# used. tf.data holds TensorFlow's names for ember's chained Pipeline.
def _tf_data():
    import types

    from ember.data import pipeline as _pipeline

    experimental = types.SimpleNamespace(AUTOTUNE=_pipeline.AUTOTUNE)
    return types.SimpleNamespace(
        Dataset=_pipeline.Pipeline,
        AUTOTUNE=_pipeline.AUTOTUNE,
        INFINITE_CARDINALITY=_pipeline.INFINITE_CARDINALITY,
        UNKNOWN_CARDINALITY=_pipeline.UNKNOWN_CARDINALITY,
        experimental=experimental,
    )


class compat:  # noqa: N801  (tf.compat: `tf.compat.v1` is this face)
    v1 = _sys.modules[__name__]


_LAZY = {"io": "ember.io", "image": "ember.vision.image"}


def _tf_summary():
    import types

    from ember.train import tf1_summary as _summary

    return types.SimpleNamespace(
        FileWriter=_summary.FileWriter,
        scalar=_summary.scalar,
        histogram=_summary.histogram,
        merge=_summary.merge,
        merge_all=_summary.merge_all,
    )


def __getattr__(name: str):
    if name == "data":
        value = _tf_data()
        globals()[name] = value
        return value
    if name == "summary":
        value = globals()[name] = _tf_summary()
        return value
    module = _LAZY.get(name)
    if module is not None:
        try:
            value = _importlib.import_module(module)
        except ImportError as error:
            raise AttributeError(
                f"ember.tf.{name} needs {module}, which is not available: {error}"
            ) from error
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.tf' has no attribute {name!r}")
